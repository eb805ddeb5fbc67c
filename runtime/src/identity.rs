//! Node identity: a persisted Ed25519 key per node, the [`NodeId`] derived from it, and a random
//! [`Incarnation`] per process start.
//!
//! The key lives in `<state_dir>/node.key` (PKCS#8 DER, file mode 0600). The [`NodeId`] is the
//! SHA-256 of the raw 32-byte Ed25519 public key, so it is bound to the key: every node
//! certificate carries that key (see [`crate::security`]) and peers recompute the id from it.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rcgen::{KeyPair, PKCS_ED25519};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// File name of the node key inside the state directory.
pub const KEY_FILE: &str = "node.key";

/// Errors loading or creating a node identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The state directory or key file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file exists but does not hold an Ed25519 PKCS#8 key.
    #[error("{path} is not a valid Ed25519 PKCS#8 key: {reason}")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The key file is readable by other users (mode must be 0600 or stricter).
    #[error("{path} has mode {mode:o}; it must not be readable by group or others (chmod 600)")]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its current permission bits.
        mode: u32,
    },
    /// Key generation failed.
    #[error("key generation failed: {0}")]
    Generate(String),
}

/// Error parsing a [`NodeId`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid node id {0:?}: expected 64 hex characters")]
pub struct NodeIdParseError(pub String);

/// A node's cluster-wide identity: SHA-256 of its Ed25519 public key.
///
/// `Display` prints 64 lowercase hex characters; [`NodeId::short`] the first 8. `Ord` compares
/// the bytes (used for deterministic tie-breaks and head election).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// The id of an Ed25519 public key (raw 32 bytes).
    pub fn from_public_key(raw: &[u8]) -> NodeId {
        NodeId(Sha256::digest(raw).into())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Full lowercase hex (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex characters, for logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// The DNS name carried in this node's certificate: the 64 hex characters split in two
    /// 32-character labels (DNS labels are at most 63 characters), then `.edgeray`:
    /// `<hex[0..32]>.<hex[32..64]>.edgeray`.
    pub fn dns_name(&self) -> String {
        let h = self.to_hex();
        format!(
            "{}.{}.{}",
            &h[..32],
            &h[32..],
            crate::security::NODE_DNS_SUFFIX
        )
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl FromStr for NodeId {
    type Err = NodeIdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(s).map_err(|_| NodeIdParseError(s.to_string()))?;
        let arr =
            <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| NodeIdParseError(s.to_string()))?;
        Ok(NodeId(arr))
    }
}

/// A random number chosen at every process start, so peers can tell a restarted node (same
/// [`NodeId`], new incarnation) from the old one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Incarnation(pub u64);

impl Incarnation {
    /// A fresh random incarnation.
    pub fn random() -> Incarnation {
        Incarnation(rand::random())
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A node's private identity: its Ed25519 key (PKCS#8) and the derived [`NodeId`].
///
/// Never leaves the node; only the public key (inside the certificate) is sent.
pub struct NodeIdentity {
    pkcs8: Vec<u8>,
    public: Vec<u8>,
    id: NodeId,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Clone for NodeIdentity {
    fn clone(&self) -> Self {
        NodeIdentity {
            pkcs8: self.pkcs8.clone(),
            public: self.public.clone(),
            id: self.id,
        }
    }
}

impl NodeIdentity {
    /// A fresh random identity that is not persisted (tests, ephemeral nodes).
    pub fn generate() -> Result<NodeIdentity, IdentityError> {
        let kp = KeyPair::generate_for(&PKCS_ED25519)
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        Ok(Self::from_keypair(&kp))
    }

    /// Builds an identity from an Ed25519 PKCS#8 DER document.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<NodeIdentity, String> {
        let kp = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(der.to_vec()),
            &PKCS_ED25519,
        )
        .map_err(|e| e.to_string())?;
        Ok(Self::from_keypair(&kp))
    }

    fn from_keypair(kp: &KeyPair) -> NodeIdentity {
        let public = kp.public_key_raw().to_vec();
        NodeIdentity {
            pkcs8: kp.serialize_der(),
            id: NodeId::from_public_key(&public),
            public,
        }
    }

    /// Loads `<state_dir>/node.key`, creating the directory and a new key (mode 0600) if absent.
    ///
    /// An existing key readable by group or others is refused ([`IdentityError::Permissions`]).
    pub fn load_or_create(state_dir: &Path) -> Result<NodeIdentity, IdentityError> {
        let path = state_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(der) => {
                check_mode(&path)?;
                Self::from_pkcs8_der(&der).map_err(|reason| IdentityError::BadKey { path, reason })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(state_dir).map_err(|source| IdentityError::Io {
                    action: "cannot create state directory",
                    path: state_dir.to_path_buf(),
                    source,
                })?;
                let id = Self::generate()?;
                write_private(&path, &id.pkcs8)?;
                tracing::info!(node = %id.id.short(), path = %path.display(), "created node identity");
                Ok(id)
            }
            Err(source) => Err(IdentityError::Io {
                action: "cannot read",
                path,
                source,
            }),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key_raw(&self) -> &[u8] {
        &self.public
    }

    /// The rcgen key pair (for signing this node's certificate).
    pub(crate) fn keypair(&self) -> KeyPair {
        KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(self.pkcs8.clone()),
            &PKCS_ED25519,
        )
        .expect("identity key was validated at construction")
    }

    /// The private key in the form rustls wants.
    pub(crate) fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.clone()))
    }
}

#[cfg(unix)]
fn check_mode(path: &Path) -> Result<(), IdentityError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| IdentityError::Io {
        action: "cannot stat",
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_path: &Path) -> Result<(), IdentityError> {
    Ok(())
}

/// Writes `data` to a new file with mode 0600 (atomically: temp file + rename).
fn write_private(path: &Path, data: &[u8]) -> Result<(), IdentityError> {
    let tmp = path.with_extension("key.tmp");
    let io = |action, source| IdentityError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| io("cannot create", e))?;
    f.write_all(data).map_err(|e| io("cannot write", e))?;
    f.sync_all().map_err(|e| io("cannot sync", e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| io("cannot rename into", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_persisted_with_mode_0600_and_reloads_to_same_id() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let a = NodeIdentity::load_or_create(&state).unwrap();
        let b = NodeIdentity::load_or_create(&state).unwrap();
        assert_eq!(a.node_id(), b.node_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(state.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600);
        }
        let other = NodeIdentity::generate().unwrap();
        assert_ne!(a.node_id(), other.node_id());
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        NodeIdentity::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = NodeIdentity::load_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(err, IdentityError::Permissions { mode: 0o644, .. }),
            "{err}"
        );
    }

    #[test]
    fn corrupt_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        write_private(&dir.path().join(KEY_FILE), b"not a key").unwrap();
        let err = NodeIdentity::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityError::BadKey { .. }), "{err}");
    }

    #[test]
    fn node_id_text_forms() {
        let id = NodeId([0xab; 32]);
        assert_eq!(id.to_string().len(), 64);
        assert_eq!(id.short(), "abababab");
        assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        assert!("xyz".parse::<NodeId>().is_err());
        assert!(NodeId([1; 32]) < NodeId([2; 32]));
        assert_eq!(
            id.dns_name(),
            format!("{}.{}.edgeray", &id.to_hex()[..32], &id.to_hex()[32..])
        );
    }

    #[test]
    fn node_id_is_sha256_of_public_key() {
        let id = NodeIdentity::generate().unwrap();
        assert_eq!(id.public_key_raw().len(), 32);
        assert_eq!(id.node_id(), NodeId::from_public_key(id.public_key_raw()));
    }
}
