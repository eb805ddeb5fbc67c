//! Cached shards encrypted at rest (`limits.encrypt_shards`): a board's stolen SD card leaks no
//! weights, and rotating the cluster secret makes old copies unreadable.
//!
//! The key is derived from the cluster secret (HKDF-SHA256, [`ShardKey::from_secret`]); each
//! shard gets its own key from it and its content hash, so nonces never repeat across shards.
//! The file is a header — magic `ERSHARD1`, the chunk size (u32 LE) and the plaintext length
//! (u64 LE) — then the plaintext in 1 MiB chunks, each sealed with ChaCha20-Poly1305 (ring)
//! under the chunk's index as nonce and with "last chunk or not" as associated data, so chunks
//! cannot be reordered, dropped or the file truncated without the tag check failing.

use std::io::{Read, Write};
use std::path::Path;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use sha2::{Digest, Sha256};

/// First bytes of an encrypted shard.
pub const MAGIC: &[u8; 8] = b"ERSHARD1";
/// Header length: magic, chunk size, plaintext length.
pub const HEADER: usize = 8 + 4 + 8;
/// Plaintext bytes per sealed chunk.
pub const CHUNK: usize = 1 << 20;
/// Tag bytes per chunk.
const TAG: usize = 16;

/// The key cached shards are encrypted with on this node.
#[derive(Clone)]
pub struct ShardKey([u8; 32]);

impl std::fmt::Debug for ShardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShardKey(<redacted>)")
    }
}

/// Why an encrypted shard could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file is not an encrypted shard, is cut short or was altered, or the key is not the
    /// one it was written with (another cluster secret).
    #[error("encrypted shard does not decrypt: {0}")]
    Invalid(String),
}

impl ShardKey {
    /// The shard key of the cluster whose secret is `secret`.
    pub fn from_secret(secret: &edgeray_runtime::security::ClusterSecret) -> ShardKey {
        ShardKey(secret.derive_key("edgeray shard encryption v1"))
    }

    /// The key of the shard with content hash `hash`.
    fn for_shard(&self, hash: &str) -> LessSafeKey {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(b"shard ");
        h.update(hash.as_bytes());
        let k: [u8; 32] = h.finalize().into();
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &k).expect("a 32-byte key"))
    }
}

fn nonce(index: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&index.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aad(last: bool) -> Aad<[u8; 1]> {
    Aad::from([last as u8])
}

/// Whether the file at `path` starts like an encrypted shard.
pub fn is_encrypted(path: &Path) -> std::io::Result<bool> {
    let mut f = std::fs::File::open(path)?;
    let mut m = [0u8; 8];
    match f.read_exact(&mut m) {
        Ok(()) => Ok(&m == MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The plaintext length an encrypted shard's header states (`None`: not encrypted).
pub fn plain_len(path: &Path) -> std::io::Result<Option<u64>> {
    let mut f = std::fs::File::open(path)?;
    let mut h = [0u8; HEADER];
    match f.read_exact(&mut h) {
        Ok(()) if &h[..8] == MAGIC => Ok(Some(u64::from_le_bytes(
            h[12..20].try_into().expect("8 bytes"),
        ))),
        Ok(()) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Encrypts the plaintext shard `src` (content hash `hash`) into `dst` (created, synced).
pub fn encrypt_file(key: &ShardKey, hash: &str, src: &Path, dst: &Path) -> std::io::Result<()> {
    let k = key.for_shard(hash);
    let mut input = std::io::BufReader::with_capacity(CHUNK, std::fs::File::open(src)?);
    let len = std::fs::metadata(src)?.len();
    let out = std::fs::File::create(dst)?;
    let mut w = std::io::BufWriter::with_capacity(CHUNK + TAG, &out);
    w.write_all(MAGIC)?;
    w.write_all(&(CHUNK as u32).to_le_bytes())?;
    w.write_all(&len.to_le_bytes())?;
    let chunks = len.div_ceil(CHUNK as u64).max(1);
    let mut buf = Vec::with_capacity(CHUNK + TAG);
    for i in 0..chunks {
        let n = (len - i * CHUNK as u64).min(CHUNK as u64) as usize;
        buf.resize(n, 0);
        input.read_exact(&mut buf)?;
        k.seal_in_place_append_tag(nonce(i), aad(i + 1 == chunks), &mut buf)
            .map_err(|_| std::io::Error::other("encryption failed"))?;
        w.write_all(&buf)?;
    }
    w.flush()?;
    drop(w);
    out.sync_all()
}

/// Decrypts the encrypted shard at `path` (content hash `hash`) into memory: read once, opened
/// chunk by chunk in place and compacted, so the shard is held once (plus its tags).
pub fn decrypt_file(key: &ShardKey, hash: &str, path: &Path) -> Result<Vec<u8>, CryptError> {
    decrypt_in_place(key, hash, std::fs::read(path)?)
}

/// Decrypts an encrypted shard's bytes.
#[cfg(test)]
fn decrypt(key: &ShardKey, hash: &str, data: &[u8]) -> Result<Vec<u8>, CryptError> {
    decrypt_in_place(key, hash, data.to_vec())
}

fn decrypt_in_place(key: &ShardKey, hash: &str, mut data: Vec<u8>) -> Result<Vec<u8>, CryptError> {
    let bad = |m: &str| CryptError::Invalid(m.to_string());
    if data.len() < HEADER || &data[..8] != MAGIC {
        return Err(bad("no encrypted-shard header"));
    }
    let chunk = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes")) as usize;
    let len = u64::from_le_bytes(data[12..20].try_into().expect("8 bytes"));
    if chunk == 0 || chunk > 64 << 20 {
        return Err(bad("chunk size out of range"));
    }
    let chunks = len.div_ceil(chunk as u64).max(1);
    let expected = (HEADER as u64)
        .checked_add(len)
        .and_then(|l| l.checked_add(chunks * TAG as u64));
    if expected != Some(data.len() as u64) {
        return Err(bad("length does not match the header"));
    }
    let k = key.for_shard(hash);
    // Plaintext is written back from the start of the buffer: it always trails the
    // ciphertext still to be read (each chunk shrinks by its tag, the header is dropped).
    let (mut at, mut out) = (HEADER, 0usize);
    for i in 0..chunks {
        let n = (len - i * chunk as u64).min(chunk as u64) as usize + TAG;
        let plain = k
            .open_in_place(nonce(i), aad(i + 1 == chunks), &mut data[at..at + n])
            .map_err(|_| bad("a chunk fails its tag (altered, or another cluster secret)"))?
            .len();
        data.copy_within(at..at + plain, out);
        out += plain;
        at += n;
    }
    data.truncate(out);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeray_runtime::security::ClusterSecret;

    fn key(b: u8) -> ShardKey {
        ShardKey::from_secret(&ClusterSecret::from_bytes([b; 32]))
    }

    #[test]
    fn round_trips_and_hides_the_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 1, CHUNK - 1, CHUNK, CHUNK + 5, 2 * CHUNK + 17] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let (src, dst) = (dir.path().join("p"), dir.path().join("c"));
            std::fs::write(&src, &plain).unwrap();
            encrypt_file(&key(1), "h", &src, &dst).unwrap();
            assert!(is_encrypted(&dst).unwrap() && !is_encrypted(&src).unwrap());
            assert_eq!(plain_len(&dst).unwrap(), Some(len as u64));
            let enc = std::fs::read(&dst).unwrap();
            if len >= 64 {
                assert!(
                    !enc.windows(64).any(|w| w == &plain[..64]),
                    "plaintext visible"
                );
            }
            assert_eq!(decrypt_file(&key(1), "h", &dst).unwrap(), plain, "{len}");
        }
    }

    /// Load-time cost on the real models in `models/` (run with `--ignored --nocapture`): a
    /// plain shard mapped and read through once vs an encrypted one read, decrypted and
    /// parsed, same process, alternating, five rounds each; and the one-time sealing cost.
    #[test]
    #[ignore = "timing on real models; run by hand"]
    fn measure_load_time_of_real_shards() {
        use edgeray_model::gguf::GgufFile;
        use std::time::Instant;
        let k = key(9);
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "gemma-3-270m-q4_k_m.gguf",
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        ] {
            let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../models")
                .join(name);
            if !src.exists() {
                eprintln!("{name}: not present, skipped");
                continue;
            }
            let dst = dir.path().join("sealed");
            let t = Instant::now();
            encrypt_file(&k, "h", &src, &dst).unwrap();
            let seal_ms = t.elapsed().as_secs_f64() * 1e3;
            let touch = |f: &GgufFile| {
                f.raw_bytes()
                    .as_ref()
                    .iter()
                    .step_by(4096)
                    .fold(0u64, |a, &b| a + b as u64)
            };
            let (mut plain, mut sealed) = (Vec::new(), Vec::new());
            for _ in 0..5 {
                let t = Instant::now();
                let f = GgufFile::open(&src).unwrap();
                let a = touch(&f);
                plain.push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                let g = GgufFile::from_bytes(decrypt_file(&k, "h", &dst).unwrap()).unwrap();
                let b = touch(&g);
                sealed.push(t.elapsed().as_secs_f64() * 1e3);
                assert_eq!(a, b);
                assert_eq!(f.raw_bytes().len(), g.raw_bytes().len());
            }
            let mb = std::fs::metadata(&src).unwrap().len() as f64 / 1e6;
            eprintln!(
                "{name} ({mb:.0} MB): sealing once {seal_ms:.0} ms; load plain (mmap + read through) {plain:.0?} ms; encrypted (read + decrypt + parse) {sealed:.0?} ms"
            );
            std::fs::remove_file(&dst).unwrap();
        }
    }

    #[test]
    fn another_key_another_shard_or_any_alteration_fails() {
        let dir = tempfile::tempdir().unwrap();
        let plain = vec![7u8; 2 * CHUNK + 3];
        let (src, dst) = (dir.path().join("p"), dir.path().join("c"));
        std::fs::write(&src, &plain).unwrap();
        encrypt_file(&key(1), "h", &src, &dst).unwrap();
        let enc = std::fs::read(&dst).unwrap();
        assert!(decrypt(&key(2), "h", &enc).is_err(), "rotated secret");
        assert!(
            decrypt(&key(1), "other", &enc).is_err(),
            "another shard's key"
        );
        let mut flipped = enc.clone();
        flipped[HEADER + CHUNK + 40] ^= 1;
        assert!(decrypt(&key(1), "h", &flipped).is_err(), "flipped bit");
        // Truncated to whole chunks, with the header's length patched to match: the last
        // remaining chunk was not sealed as the last one.
        let mut cut = enc[..HEADER + CHUNK + TAG].to_vec();
        cut[12..20].copy_from_slice(&(CHUNK as u64).to_le_bytes());
        assert!(decrypt(&key(1), "h", &cut).is_err(), "truncated");
        // Two chunks swapped.
        let mut swapped = enc.clone();
        let (a, b) = (HEADER, HEADER + CHUNK + TAG);
        let first = enc[a..a + CHUNK + TAG].to_vec();
        let second = enc[b..b + CHUNK + TAG].to_vec();
        swapped[a..a + CHUNK + TAG].copy_from_slice(&second);
        swapped[b..b + CHUNK + TAG].copy_from_slice(&first);
        assert!(decrypt(&key(1), "h", &swapped).is_err(), "reordered");
        assert!(decrypt(&key(1), "h", b"GGUF....").is_err());
    }
}
