//! A node's on-disk cache of stage shards, addressed by the SHA-256 of their content.
//!
//! An upload writes `<hash>.part` chunk by chunk (each chunk checked against its own SHA-256
//! before it is written), so a transfer cut half-way resumes from the last whole chunk; the
//! finished file is checked against the content hash before it is renamed to `<hash>.gguf`.
//! A shard already in the cache is never sent again.

use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Why a cache operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ShardStoreError {
    /// The name is not a 64-digit lowercase hex SHA-256 (it becomes a file name: never trust it).
    #[error("invalid shard hash `{0}` (expected 64 lowercase hex digits)")]
    BadHash(String),
    /// A chunk's bytes do not match the checksum sent with it.
    #[error("chunk at offset {offset} of shard {hash} is corrupt (checksum mismatch)")]
    ChunkChecksum {
        /// Shard hash.
        hash: String,
        /// Chunk offset.
        offset: u64,
    },
    /// A chunk does not continue the partial file (chunks must arrive in order).
    #[error("chunk at offset {offset} of shard {hash} does not follow the {have} bytes received")]
    OutOfOrder {
        /// Shard hash.
        hash: String,
        /// Chunk offset.
        offset: u64,
        /// Bytes already stored.
        have: u64,
    },
    /// More bytes than the announced length.
    #[error("shard {hash} would exceed its announced length of {len} bytes")]
    TooLong {
        /// Shard hash.
        hash: String,
        /// Announced length.
        len: u64,
    },
    /// The assembled file does not hash to its name: it was discarded.
    #[error("shard {hash} is corrupt after assembly (content hash {got}); discarded")]
    ContentHash {
        /// Expected hash.
        hash: String,
        /// Hash of what was received.
        got: String,
    },
    /// The file is shorter than announced at finish.
    #[error("shard {hash} is incomplete: {have} of {len} bytes")]
    Incomplete {
        /// Shard hash.
        hash: String,
        /// Bytes stored.
        have: u64,
        /// Announced length.
        len: u64,
    },
    /// File system error.
    #[error("shard cache {path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ShardStoreError + '_ {
    move |source| ShardStoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 of a chunk.
pub fn chunk_digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Checks that `hash` is safe to use as a file name and looks like a SHA-256.
pub fn validate_hash(hash: &str) -> Result<(), ShardStoreError> {
    if hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(ShardStoreError::BadHash(hash.chars().take(80).collect()))
    }
}

/// The shard cache in one directory.
#[derive(Debug, Clone)]
pub struct ShardStore {
    dir: PathBuf,
}

impl ShardStore {
    /// Opens (creating it if needed) the cache in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ShardStoreError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(ShardStore { dir })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the complete shard `hash` lives.
    pub fn path(&self, hash: &str) -> Result<PathBuf, ShardStoreError> {
        validate_hash(hash)?;
        Ok(self.dir.join(format!("{hash}.gguf")))
    }

    fn part_path(&self, hash: &str) -> Result<PathBuf, ShardStoreError> {
        validate_hash(hash)?;
        Ok(self.dir.join(format!("{hash}.part")))
    }

    /// Whether the complete shard is cached.
    pub fn contains(&self, hash: &str) -> Result<bool, ShardStoreError> {
        Ok(self.path(hash)?.is_file())
    }

    /// Prepares to receive shard `hash` of `len` bytes in chunks of `chunk` bytes; returns how
    /// many bytes are already stored (`len` when the shard is complete). A partial file is cut
    /// back to its last whole chunk.
    pub fn begin(&self, hash: &str, len: u64, chunk: u64) -> Result<u64, ShardStoreError> {
        if self.contains(hash)? {
            return Ok(len);
        }
        let part = self.part_path(hash)?;
        let have = match std::fs::metadata(&part) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io(&part)(e)),
        };
        let keep = if have > len || chunk == 0 {
            0
        } else {
            have - have % chunk
        };
        if keep != have {
            let f = OpenOptions::new()
                .write(true)
                .open(&part)
                .map_err(io(&part))?;
            f.set_len(keep).map_err(io(&part))?;
        }
        Ok(keep)
    }

    /// Appends one chunk at `offset` (which must equal the bytes stored so far); returns the
    /// new stored length.
    pub fn write_chunk(
        &self,
        hash: &str,
        len: u64,
        offset: u64,
        data: &[u8],
        digest: &[u8; 32],
    ) -> Result<u64, ShardStoreError> {
        let part = self.part_path(hash)?;
        if chunk_digest(data) != *digest {
            return Err(ShardStoreError::ChunkChecksum {
                hash: hash.into(),
                offset,
            });
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .map_err(io(&part))?;
        let have = f.seek(SeekFrom::End(0)).map_err(io(&part))?;
        if have != offset {
            return Err(ShardStoreError::OutOfOrder {
                hash: hash.into(),
                offset,
                have,
            });
        }
        if offset + data.len() as u64 > len {
            return Err(ShardStoreError::TooLong {
                hash: hash.into(),
                len,
            });
        }
        f.write_all(data).map_err(io(&part))?;
        Ok(offset + data.len() as u64)
    }

    /// Checks the assembled shard against its hash and moves it into the cache.
    pub fn finish(&self, hash: &str, len: u64) -> Result<PathBuf, ShardStoreError> {
        let done = self.path(hash)?;
        if done.is_file() {
            return Ok(done);
        }
        let part = self.part_path(hash)?;
        let mut f = File::open(&part).map_err(io(&part))?;
        let have = f.metadata().map_err(io(&part))?.len();
        if have != len {
            return Err(ShardStoreError::Incomplete {
                hash: hash.into(),
                have,
                len,
            });
        }
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(io(&part))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let got = hex::encode(h.finalize());
        if got != hash {
            let _ = std::fs::remove_file(&part);
            return Err(ShardStoreError::ContentHash {
                hash: hash.into(),
                got,
            });
        }
        f.sync_all().map_err(io(&part))?;
        std::fs::rename(&part, &done).map_err(io(&done))?;
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(store: &ShardStore, data: &[u8], chunk: usize, from: u64) -> u64 {
        let hash = content_hash(data);
        let mut off = from;
        while (off as usize) < data.len() {
            let end = (off as usize + chunk).min(data.len());
            let c = &data[off as usize..end];
            off = store
                .write_chunk(&hash, data.len() as u64, off, c, &chunk_digest(c))
                .unwrap();
        }
        off
    }

    #[test]
    fn upload_resume_and_cache_hit() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path().join("shards")).unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let hash = content_hash(&data);
        let len = data.len() as u64;
        assert_eq!(store.begin(&hash, len, 4096).unwrap(), 0);
        // Two chunks and a half-written third (as after a crash).
        store
            .write_chunk(&hash, len, 0, &data[..4096], &chunk_digest(&data[..4096]))
            .unwrap();
        store
            .write_chunk(
                &hash,
                len,
                4096,
                &data[4096..8192],
                &chunk_digest(&data[4096..8192]),
            )
            .unwrap();
        let part = dir.path().join("shards").join(format!("{hash}.part"));
        let mut f = OpenOptions::new().append(true).open(&part).unwrap();
        f.write_all(&data[8192..8500]).unwrap();
        drop(f);
        assert_eq!(store.begin(&hash, len, 4096).unwrap(), 8192);
        assert_eq!(upload(&store, &data, 4096, 8192), len);
        let path = store.finish(&hash, len).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert!(store.contains(&hash).unwrap());
        assert_eq!(store.begin(&hash, len, 4096).unwrap(), len);
    }

    #[test]
    fn corrupt_chunk_and_bad_order_are_refused_without_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path()).unwrap();
        let data = vec![5u8; 100];
        let hash = content_hash(&data);
        let e = store
            .write_chunk(&hash, 100, 0, &data[..50], &chunk_digest(&data[..49]))
            .unwrap_err();
        assert!(matches!(e, ShardStoreError::ChunkChecksum { .. }), "{e}");
        let e = store
            .write_chunk(&hash, 100, 50, &data[50..], &chunk_digest(&data[50..]))
            .unwrap_err();
        assert!(
            matches!(e, ShardStoreError::OutOfOrder { have: 0, .. }),
            "{e}"
        );
        let e = store
            .write_chunk(&hash, 40, 0, &data[..50], &chunk_digest(&data[..50]))
            .unwrap_err();
        assert!(matches!(e, ShardStoreError::TooLong { .. }), "{e}");
        assert_eq!(upload(&store, &data, 30, 0), 100);
        store.finish(&hash, 100).unwrap();
    }

    #[test]
    fn wrong_content_is_discarded_at_finish() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path()).unwrap();
        let data = vec![1u8; 64];
        let claimed = content_hash(b"something else");
        store
            .write_chunk(&claimed, 64, 0, &data, &chunk_digest(&data))
            .unwrap();
        let e = store.finish(&claimed, 64).unwrap_err();
        assert!(matches!(e, ShardStoreError::ContentHash { .. }), "{e}");
        assert!(!store.contains(&claimed).unwrap());
        assert_eq!(store.begin(&claimed, 64, 32).unwrap(), 0);
        let e = store.finish(&claimed, 64).unwrap_err();
        assert!(matches!(e, ShardStoreError::Io { .. }), "{e}");
    }

    #[test]
    fn hostile_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path()).unwrap();
        for bad in ["../../etc/passwd", "", &"A".repeat(64), &"0".repeat(63)] {
            assert!(
                matches!(store.path(bad), Err(ShardStoreError::BadHash(_))),
                "{bad}"
            );
            assert!(store.begin(bad, 1, 1).is_err());
        }
    }
}
