//! Cluster security: the shared [`ClusterSecret`], the cluster CA derived from it, node
//! certificates, and the rustls (0.23, ring) configurations for mutual TLS over QUIC.
//!
//! * The CA key is an Ed25519 key whose seed is `HKDF-SHA256(secret)`; the CA certificate has a
//!   fixed subject, serial and validity, and Ed25519 signatures are deterministic, so every node
//!   holding the secret derives the byte-identical CA certificate ([`ClusterCa::derive`]).
//! * The public [`ClusterId`] is the SHA-256 of the CA certificate DER (safe to announce in mDNS).
//! * Each node certificate is issued by the CA for the node's persisted Ed25519 key, afresh at
//!   every start, valid for [`NODE_CERT_LIFETIME`] (from [`CERT_CLOCK_SKEW`] before the start,
//!   so peers whose clocks lag a little accept it); an expired or not-yet-valid peer
//!   certificate fails the handshake (both sides check validity against their clock). It carries
//!   the DNS name [`NodeId::dns_name`] (`<hex[0..32]>.<hex[32..64]>.edgeray`). [`peer_node_id`] recomputes the [`NodeId`] from the
//!   certificate's public key and checks that the name agrees.
//! * Server side: client certificates are required and verified against the CA
//!   (`WebPkiClientVerifier`). Client side: a verifier that checks the CA chain and, when the
//!   server name is a node name ([`server_name_for`]), that the server is that node.
//!   TLS 1.3 only, ALPN [`ALPN`].
//!
//! * Rotation: a node may also trust the CAs of other secrets ([`ClusterSecurity::with_trust`],
//!   `trusted_secrets` in cluster.toml) — peers certified by any of them are accepted, while
//!   this node's own certificate always comes from its `secret`. A running transport switches
//!   to new settings without dropping connections ([`crate::transport::Transport::set_security`]).
//!
//! The secret itself never leaves the node: only certificates and signatures are sent.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hkdf::Hkdf;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519, SanType, SerialNumber, date_time_ymd,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::identity::{NodeId, NodeIdentity};

/// ALPN protocol id of the edgeray transport.
pub const ALPN: &[u8] = b"edgeray/1";
/// DNS suffix of node certificate names (see [`NodeId::dns_name`]).
pub const NODE_DNS_SUFFIX: &str = "edgeray";
/// Server name used when dialling an address whose node id is not known yet: the CA chain is
/// checked, and the node id is checked later against the peer's hello.
pub const ANY_PEER_NAME: &str = "peer.edgeray";

/// How long a node certificate is valid. A node issues its certificate afresh at every start;
/// a stolen certificate (without the secret) is useless after this long.
pub const NODE_CERT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// A node certificate is valid from this long before it is issued, so that peers whose clocks
/// are a little behind accept it at once.
pub const CERT_CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// The validity period of a node certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertValidity {
    /// Valid from.
    pub not_before: SystemTime,
    /// Valid until.
    pub not_after: SystemTime,
}

impl CertValidity {
    /// Valid for `lifetime` from now (and [`CERT_CLOCK_SKEW`] before now).
    pub fn from_now(lifetime: Duration) -> CertValidity {
        CertValidity::starting(SystemTime::now(), lifetime)
    }

    /// Valid for `lifetime` from `issued` (and [`CERT_CLOCK_SKEW`] before it).
    pub fn starting(issued: SystemTime, lifetime: Duration) -> CertValidity {
        CertValidity {
            not_before: issued.checked_sub(CERT_CLOCK_SKEW).unwrap_or(issued),
            not_after: issued + lifetime,
        }
    }
}

impl Default for CertValidity {
    /// [`NODE_CERT_LIFETIME`] from now.
    fn default() -> Self {
        CertValidity::from_now(NODE_CERT_LIFETIME)
    }
}

/// Errors of the security layer.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// The secret text is not 64 hex characters.
    #[error("invalid cluster secret: {0}")]
    BadSecret(String),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Cert(String),
    /// Building a rustls configuration failed.
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    /// A peer certificate carries no valid node identity.
    #[error("peer certificate has no valid edgeray node identity: {0}")]
    NoNodeId(String),
}

/// The 32-byte cluster secret. Its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret([u8; 32]);

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

impl ClusterSecret {
    /// A secret from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> ClusterSecret {
        ClusterSecret(bytes)
    }

    /// Parses 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<ClusterSecret, SecurityError> {
        let bytes = hex::decode(text.trim())
            .map_err(|e| SecurityError::BadSecret(format!("not hex: {e}")))?;
        let arr = <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| SecurityError::BadSecret(format!("{} bytes, expected 32", bytes.len())))?;
        Ok(ClusterSecret(arr))
    }

    /// A fresh random secret (what `edgeray init` writes).
    pub fn random() -> ClusterSecret {
        ClusterSecret(rand::random())
    }

    /// A 32-byte key for `purpose` (e.g. `"edgeray shard encryption v1"`), derived from the
    /// secret with HKDF-SHA256: different purposes get independent keys, and a key reveals
    /// nothing about the secret. Rotating the secret changes every derived key.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        let hk = Hkdf::<Sha256>::new(Some(b"edgeray-derived-key-v1"), &self.0);
        let mut key = [0u8; 32];
        hk.expand(purpose.as_bytes(), &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        key
    }

    /// The raw bytes (to write them into `cluster.toml`; never send them anywhere).
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Public identifier of a cluster: SHA-256 of its CA certificate. Nodes with different secrets
/// have different ids, and the id reveals nothing about the secret.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ClusterId(pub [u8; 32]);

impl ClusterId {
    /// Full hex (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// First 8 hex characters.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterId({})", self.short())
    }
}

/// The cluster certificate authority, derived from the secret.
pub struct ClusterCa {
    params: CertificateParams,
    key: KeyPair,
    cert: CertificateDer<'static>,
    id: ClusterId,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410): the 32-byte seed follows.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// DER prefix of an Ed25519 SubjectPublicKeyInfo: the 32-byte key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

impl ClusterCa {
    /// Derives the CA deterministically from the secret.
    pub fn derive(secret: &ClusterSecret) -> Result<ClusterCa, SecurityError> {
        let hk = Hkdf::<Sha256>::new(Some(b"edgeray-cluster-ca-v1"), &secret.0);
        let mut seed = [0u8; 32];
        hk.expand(b"edgeray ca ed25519 seed", &mut seed)
            .map_err(|e| SecurityError::Cert(format!("hkdf: {e}")))?;
        let mut pkcs8 = ED25519_PKCS8_V1_PREFIX.to_vec();
        pkcs8.extend_from_slice(&seed);
        let key =
            KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(pkcs8), &PKCS_ED25519)
                .map_err(|e| SecurityError::Cert(e.to_string()))?;

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "edgeray cluster CA");
        dn.push(DnType::OrganizationName, "edgeray");
        // A per-cluster name (from the public key), so a certificate of another cluster is
        // reported as "unknown issuer" rather than "bad signature".
        let key_hash = Sha256::digest(key.public_key_raw());
        dn.push(
            DnType::OrganizationalUnitName,
            format!("cluster {}", hex::encode(&key_hash[..8])),
        );
        params.distinguished_name = dn;
        params.serial_number = Some(SerialNumber::from_slice(&[1]));
        params.not_before = date_time_ymd(1975, 1, 1);
        params.not_after = date_time_ymd(4096, 1, 1);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params
            .self_signed(&key)
            .map_err(|e| SecurityError::Cert(e.to_string()))?;
        let cert = cert.der().clone();
        let id = ClusterId(Sha256::digest(&cert).into());
        Ok(ClusterCa {
            params,
            key,
            cert,
            id,
        })
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The public cluster id (hash of the CA certificate).
    pub fn cluster_id(&self) -> ClusterId {
        self.id
    }

    /// Issues the certificate of a node for its identity key, named [`NodeId::dns_name`],
    /// usable for both TLS server and client authentication, valid for [`NODE_CERT_LIFETIME`]
    /// from now.
    pub fn issue_node_cert(
        &self,
        identity: &NodeIdentity,
    ) -> Result<CertificateDer<'static>, SecurityError> {
        self.issue_node_cert_valid(identity, CertValidity::default())
    }

    /// [`ClusterCa::issue_node_cert`] with an explicit validity period.
    pub fn issue_node_cert_valid(
        &self,
        identity: &NodeIdentity,
        validity: CertValidity,
    ) -> Result<CertificateDer<'static>, SecurityError> {
        let id = identity.node_id();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("edgeray node {}", id.short()));
        params.distinguished_name = dn;
        params.subject_alt_names =
            vec![SanType::DnsName(id.dns_name().try_into().map_err(
                |e: rcgen::Error| SecurityError::Cert(e.to_string()),
            )?)];
        params.not_before = time::OffsetDateTime::from(validity.not_before);
        params.not_after = time::OffsetDateTime::from(validity.not_after);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params
            .signed_by(&identity.keypair(), &issuer)
            .map_err(|e| SecurityError::Cert(e.to_string()))?;
        Ok(cert.der().clone())
    }
}

/// The server name to dial a node with: its certificate name when the node id is known (the
/// handshake then fails unless the server is that node), else [`ANY_PEER_NAME`].
pub fn server_name_for(expected: Option<NodeId>) -> String {
    match expected {
        Some(id) => id.dns_name(),
        None => ANY_PEER_NAME.to_string(),
    }
}

/// Parses a node certificate name ([`NodeId::dns_name`]) back into a node id.
fn node_id_from_name(name: &str) -> Option<NodeId> {
    let rest = name.strip_suffix(NODE_DNS_SUFFIX)?.strip_suffix('.')?;
    let (a, b) = rest.split_once('.')?;
    if a.len() != 32 || b.len() != 32 {
        return None;
    }
    format!("{a}{b}").parse().ok()
}

fn node_id_of_parsed(
    cert: &rustls::server::ParsedCertificate<'_>,
) -> Result<NodeId, SecurityError> {
    let spki = cert.subject_public_key_info();
    let raw = spki
        .as_ref()
        .strip_prefix(&ED25519_SPKI_PREFIX[..])
        .filter(|k| k.len() == 32)
        .ok_or_else(|| SecurityError::NoNodeId("certificate key is not Ed25519".into()))?;
    let id = NodeId::from_public_key(raw);
    let name =
        ServerName::try_from(id.dns_name()).map_err(|e| SecurityError::NoNodeId(e.to_string()))?;
    rustls::client::verify_server_name(cert, &name).map_err(|_| {
        SecurityError::NoNodeId(format!(
            "certificate is not named after its key's node id {}",
            id.short()
        ))
    })?;
    Ok(id)
}

/// The [`NodeId`] of a peer certificate: SHA-256 of its Ed25519 key, which must also appear as
/// the certificate's [`NodeId::dns_name`]. Does NOT check the CA signature (the TLS handshake
/// did that).
pub fn peer_node_id(cert: &CertificateDer<'_>) -> Result<NodeId, SecurityError> {
    let parsed = rustls::server::ParsedCertificate::try_from(cert)
        .map_err(|e| SecurityError::NoNodeId(format!("unparsable certificate: {e}")))?;
    node_id_of_parsed(&parsed)
}

/// Everything a node needs for mutual TLS: the CA, its own certificate and key.
#[derive(Debug, Clone)]
pub struct ClusterSecurity {
    inner: Arc<SecurityInner>,
}

struct SecurityInner {
    /// The CA, to issue this node's next certificate ([`ClusterSecurity::renewed`]).
    ca: Arc<ClusterCa>,
    validity: CertValidity,
    /// CAs of the other secrets this node also trusts (during a rotation), with their ids.
    trusted: Vec<(ClusterId, CertificateDer<'static>)>,
    ca_cert: CertificateDer<'static>,
    cluster_id: ClusterId,
    node_cert: CertificateDer<'static>,
    identity: NodeIdentity,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for SecurityInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSecurity")
            .field("cluster_id", &self.cluster_id)
            .field("node", &self.identity.node_id())
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

impl ClusterSecurity {
    /// Derives the CA from the secret and issues this node's certificate (valid for
    /// [`NODE_CERT_LIFETIME`] from now).
    pub fn new(
        secret: &ClusterSecret,
        identity: &NodeIdentity,
    ) -> Result<ClusterSecurity, SecurityError> {
        ClusterSecurity::with_validity(secret, identity, CertValidity::default())
    }

    /// [`ClusterSecurity::new`] with this node's certificate valid for `validity`.
    pub fn with_validity(
        secret: &ClusterSecret,
        identity: &NodeIdentity,
        validity: CertValidity,
    ) -> Result<ClusterSecurity, SecurityError> {
        ClusterSecurity::build(secret, &[], identity, validity)
    }

    /// [`ClusterSecurity::new`] that also accepts peers certified by the CAs of `trusted`
    /// (other secrets, during a rotation). This node's own certificate comes from `secret`.
    pub fn with_trust(
        secret: &ClusterSecret,
        trusted: &[ClusterSecret],
        identity: &NodeIdentity,
    ) -> Result<ClusterSecurity, SecurityError> {
        ClusterSecurity::build(secret, trusted, identity, CertValidity::default())
    }

    /// The same node with its certificate from `secret`, trusting the CAs of `secret` and
    /// `trusted` (a step of a rotation, applied with
    /// [`crate::transport::Transport::set_security`]).
    pub fn rekeyed(
        &self,
        secret: &ClusterSecret,
        trusted: &[ClusterSecret],
    ) -> Result<ClusterSecurity, SecurityError> {
        ClusterSecurity::build(
            secret,
            trusted,
            &self.inner.identity,
            CertValidity::default(),
        )
    }

    fn build(
        secret: &ClusterSecret,
        trusted: &[ClusterSecret],
        identity: &NodeIdentity,
        validity: CertValidity,
    ) -> Result<ClusterSecurity, SecurityError> {
        let ca = ClusterCa::derive(secret)?;
        let node_cert = ca.issue_node_cert_valid(identity, validity)?;
        let mut others: Vec<(ClusterId, CertificateDer<'static>)> = Vec::new();
        for t in trusted {
            let other = ClusterCa::derive(t)?;
            if other.cluster_id() != ca.cluster_id()
                && !others.iter().any(|(id, _)| *id == other.cluster_id())
            {
                others.push((other.cluster_id(), other.cert_der().clone()));
            }
        }
        Ok(ClusterSecurity {
            inner: Arc::new(SecurityInner {
                ca_cert: ca.cert_der().clone(),
                cluster_id: ca.cluster_id(),
                ca: Arc::new(ca),
                validity,
                trusted: others,
                node_cert,
                identity: identity.clone(),
                provider: Arc::new(rustls::crypto::ring::default_provider()),
            }),
        })
    }

    /// The public cluster id.
    pub fn cluster_id(&self) -> ClusterId {
        self.inner.cluster_id
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.identity.node_id()
    }

    /// The cluster ids whose nodes this node accepts: its own first, then those of the
    /// trusted secrets.
    pub fn trusted_cluster_ids(&self) -> Vec<ClusterId> {
        std::iter::once(self.inner.cluster_id)
            .chain(self.inner.trusted.iter().map(|(id, _)| *id))
            .collect()
    }

    /// This node's certificate (DER).
    pub fn node_cert(&self) -> &CertificateDer<'static> {
        &self.inner.node_cert
    }

    /// When this node's certificate is valid.
    pub fn validity(&self) -> CertValidity {
        self.inner.validity
    }

    /// The same identity and trust with a certificate issued now for `lifetime` (a long-running
    /// node renews its certificate before it expires: see
    /// [`crate::transport::Transport::set_security`]).
    pub fn renewed(&self, lifetime: Duration) -> Result<ClusterSecurity, SecurityError> {
        let validity = CertValidity::from_now(lifetime);
        let node_cert = self
            .inner
            .ca
            .issue_node_cert_valid(&self.inner.identity, validity)?;
        Ok(ClusterSecurity {
            inner: Arc::new(SecurityInner {
                ca: self.inner.ca.clone(),
                validity,
                trusted: self.inner.trusted.clone(),
                ca_cert: self.inner.ca_cert.clone(),
                cluster_id: self.inner.cluster_id,
                node_cert,
                identity: self.inner.identity.clone(),
                provider: self.inner.provider.clone(),
            }),
        })
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, SecurityError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.inner.ca_cert.clone())?;
        for (_, ca) in &self.inner.trusted {
            roots.add(ca.clone())?;
        }
        Ok(Arc::new(roots))
    }

    /// rustls server configuration: TLS 1.3, ALPN `edgeray/1`, client certificates required
    /// and verified against the cluster CA.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, SecurityError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots()?, self.inner.provider.clone())
                .build()
                .map_err(|e| SecurityError::Tls(rustls::Error::General(e.to_string())))?;
        let verifier: Arc<dyn ClientCertVerifier> = verifier;
        let mut cfg = rustls::ServerConfig::builder_with_provider(self.inner.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![self.inner.node_cert.clone()],
                self.inner.identity.private_key_der(),
            )?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }

    /// rustls client configuration: TLS 1.3, ALPN `edgeray/1`, this node's certificate as
    /// client certificate, server verified against the cluster CA (and against the expected
    /// node when dialled with [`server_name_for`]`(Some(id))`).
    pub fn client_config(&self) -> Result<rustls::ClientConfig, SecurityError> {
        let verifier = Arc::new(CaServerVerifier {
            roots: self.roots()?,
            algs: self.inner.provider.signature_verification_algorithms,
        });
        let mut cfg = rustls::ClientConfig::builder_with_provider(self.inner.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(
                vec![self.inner.node_cert.clone()],
                self.inner.identity.private_key_der(),
            )?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }
}

/// Verifies a server certificate chains to the cluster CA, carries a node id, and (when the
/// server name is a node name) is that node.
#[derive(Debug)]
struct CaServerVerifier {
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
}

fn other_cert_error(e: SecurityError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

impl ServerCertVerifier for CaServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        let id = node_id_of_parsed(&cert).map_err(other_cert_error)?;
        if let ServerName::DnsName(name) = server_name
            && let Some(expected) = node_id_from_name(name.as_ref())
            && expected != id
        {
            return Err(other_cert_error(SecurityError::NoNodeId(format!(
                "server is node {} but node {} was expected",
                id.short(),
                expected.short()
            ))));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_deterministic_and_secret_dependent() {
        let s1 = ClusterSecret::from_bytes([7; 32]);
        let a = ClusterCa::derive(&s1).unwrap();
        let b = ClusterCa::derive(&s1).unwrap();
        assert_eq!(a.cert_der().as_ref(), b.cert_der().as_ref());
        assert_eq!(a.cluster_id(), b.cluster_id());
        let c = ClusterCa::derive(&ClusterSecret::from_bytes([8; 32])).unwrap();
        assert_ne!(a.cert_der().as_ref(), c.cert_der().as_ref());
        assert_ne!(a.cluster_id(), c.cluster_id());
        // The CA certificate must not contain the secret bytes.
        let der = a.cert_der().as_ref();
        assert!(!der.windows(32).any(|w| w == [7u8; 32]));
    }

    #[test]
    fn derived_keys_depend_on_secret_and_purpose() {
        let a = ClusterSecret::from_bytes([1; 32]);
        let b = ClusterSecret::from_bytes([2; 32]);
        assert_eq!(a.derive_key("x"), a.derive_key("x"));
        assert_ne!(a.derive_key("x"), a.derive_key("y"));
        assert_ne!(a.derive_key("x"), b.derive_key("x"));
        assert_ne!(a.derive_key("x"), [1; 32]);
    }

    #[test]
    fn secret_hex_parsing() {
        let hexs = "11".repeat(32);
        assert_eq!(
            ClusterSecret::from_hex(&hexs).unwrap().expose_bytes(),
            &[0x11; 32]
        );
        assert!(matches!(
            ClusterSecret::from_hex("zz"),
            Err(SecurityError::BadSecret(_))
        ));
        assert!(matches!(
            ClusterSecret::from_hex("0011"),
            Err(SecurityError::BadSecret(_))
        ));
        assert_eq!(
            format!("{:?}", ClusterSecret::from_bytes([1; 32])),
            "ClusterSecret(<redacted>)"
        );
    }

    #[test]
    fn node_cert_carries_node_id() {
        let ca = ClusterCa::derive(&ClusterSecret::from_bytes([3; 32])).unwrap();
        let id = NodeIdentity::generate().unwrap();
        let cert = ca.issue_node_cert(&id).unwrap();
        assert_eq!(peer_node_id(&cert).unwrap(), id.node_id());
        assert!(
            peer_node_id(ca.cert_der()).is_err(),
            "the CA cert is no node cert"
        );
        assert!(peer_node_id(&CertificateDer::from(vec![1, 2, 3])).is_err());
    }

    #[test]
    fn node_certs_have_a_bounded_lifetime_and_expired_ones_are_refused() {
        let secret = ClusterSecret::from_bytes([4; 32]);
        let ca = ClusterCa::derive(&secret).unwrap();
        let id = NodeIdentity::generate().unwrap();
        let issued = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let validity = CertValidity::starting(issued, Duration::from_secs(30 * 86_400));
        let cert = ca.issue_node_cert_valid(&id, validity).unwrap();
        // The peer's side of the handshake, as a server (checking a client) and as a client
        // (checking a server), at a time we choose.
        let me = ClusterSecurity::new(&secret, &NodeIdentity::generate().unwrap()).unwrap();
        let provider = me.inner.provider.clone();
        let clients =
            WebPkiClientVerifier::builder_with_provider(me.roots().unwrap(), provider.clone())
                .build()
                .unwrap();
        let servers = CaServerVerifier {
            roots: me.roots().unwrap(),
            algs: provider.signature_verification_algorithms,
        };
        let at = |t: SystemTime| {
            UnixTime::since_unix_epoch(t.duration_since(SystemTime::UNIX_EPOCH).unwrap())
        };
        let name = ServerName::try_from(id.node_id().dns_name()).unwrap();
        let check = |t: SystemTime| {
            let c = clients.verify_client_cert(&cert, &[], at(t)).map(|_| ());
            let s = servers
                .verify_server_cert(&cert, &[], &name, &[], at(t))
                .map(|_| ());
            (c, s)
        };
        // Valid from an hour before issue to 30 days after.
        for t in [
            issued,
            issued - Duration::from_secs(1800),
            issued + Duration::from_secs(29 * 86_400),
        ] {
            let (c, s) = check(t);
            assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
        }
        let expired = |r: Result<(), rustls::Error>| {
            matches!(
                r,
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. }
                ))
            )
        };
        let (c, s) = check(issued + Duration::from_secs(31 * 86_400));
        assert!(expired(c.clone()) && expired(s.clone()), "{c:?} {s:?}");
        let (c, s) = check(issued - Duration::from_secs(2 * 3600));
        assert!(c.is_err() && s.is_err(), "not yet valid: {c:?} {s:?}");
        // The default: about NODE_CERT_LIFETIME from now, not the year 4096.
        let v = CertValidity::default();
        let life = v.not_after.duration_since(SystemTime::now()).unwrap();
        assert!(life <= NODE_CERT_LIFETIME && life > NODE_CERT_LIFETIME - Duration::from_secs(60));
    }

    #[test]
    fn server_names() {
        let id = NodeId([0x5a; 32]);
        assert_eq!(node_id_from_name(&server_name_for(Some(id))), Some(id));
        assert_eq!(node_id_from_name(&server_name_for(None)), None);
        assert_eq!(node_id_from_name("x.edgeray"), None);
    }

    #[test]
    fn tls_configs_build() {
        let sec = ClusterSecurity::new(
            &ClusterSecret::from_bytes([9; 32]),
            &NodeIdentity::generate().unwrap(),
        )
        .unwrap();
        let s = sec.server_config().unwrap();
        assert_eq!(s.alpn_protocols, vec![ALPN.to_vec()]);
        let c = sec.client_config().unwrap();
        assert_eq!(c.alpn_protocols, vec![ALPN.to_vec()]);
    }
}
