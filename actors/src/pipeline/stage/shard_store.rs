//! A node's on-disk cache of stage shards, addressed by the SHA-256 of their content.
//!
//! An upload writes `<hash>.part` chunk by chunk (each chunk checked against its own SHA-256
//! before it is written), so a transfer cut half-way resumes from the last whole chunk; the
//! finished file is checked against the content hash before it is renamed to `<hash>.gguf`,
//! next to its sidecar checksum `<hash>.sum` ([`sidecar`]). A shard already in the cache is
//! never sent again.
//!
//! The cache is bounded by a budget (`limits.shard_cache`). An offer first makes room
//! ([`budget::plan_room`]): the least recently used shards that no running stage holds are
//! evicted; an offer that cannot fit (larger than the budget, or than the free disk space) is
//! refused with [`ShardStoreError::NoRoom`], and a disk that fills up during a write ends the
//! upload with [`ShardStoreError::DiskFull`] and removes its partial file. Partial files
//! nobody has written to for [`STALE_PART_AGE`] are removed when a store is opened.
//!
//! Least recently used: a shard's **modification time** is the last time a stage started from
//! it ([`ShardStore::open_for_stage`] sets it; a new shard starts at its arrival). It costs one
//! `futimens` per stage start, survives restarts, and needs no index file that could itself be
//! lost or disagree with the folder. In use: a running stage holds a shared `flock` on its
//! shard ([`ShardLease`]); eviction takes the exclusive lock without waiting and skips any
//! shard it cannot lock, which also protects shards used by another node process sharing the
//! folder.
//!
//! Before an offer is answered "already cached", and before a stage starts from a cached
//! shard, the shard is checked against its sidecar; a damaged shard is discarded
//! ([`ShardStoreError::Corrupt`]), so the coordinator ships it again. A stage starting within
//! a minute of the offer that verified its unchanged shard (or of its arrival) does not hash
//! it again ([`fresh`]).
//!
//! Concurrent uploads to one node are each checked against what is on disk when they are
//! offered (a partial file counts at its current size), so they may overshoot the budget by
//! the part of one another not yet written; free space is re-checked by the writes themselves.

mod admin;
mod budget;
pub mod crypt;
mod disk;
mod fresh;
pub mod sidecar;

pub use admin::{CacheListing, GcReport, RemoveOutcome};
pub use budget::{CachedShard, Refusal, Room, plan_room};
pub use crypt::ShardKey;

use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fresh::{Fingerprint, Fresh};
use sidecar::{Checksum, Summer};

/// Shards verified a moment ago in this process (see [`fresh`]).
static FRESH: std::sync::LazyLock<parking_lot::Mutex<Fresh>> =
    std::sync::LazyLock::new(Default::default);

/// A partial upload nobody has written to for this long is abandoned (a resuming transfer
/// writes again within seconds).
pub const STALE_PART_AGE: Duration = Duration::from_secs(3600);

/// Bytes an upload always leaves free on the disk (for logs, state and other programs).
pub const DISK_HEADROOM: u64 = 64 << 20;

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
    /// The cached shard has another length than the offer announces.
    #[error("shard {hash} is cached with {cached} bytes, but {offered} were offered")]
    LengthMismatch {
        /// Shard hash.
        hash: String,
        /// Length of the cached shard.
        cached: u64,
        /// Length in the offer.
        offered: u64,
    },
    /// The shard cannot fit the cache budget or the disk: the offer is refused for good.
    #[error("no room for shard {hash} on this node: {reason}")]
    NoRoom {
        /// Shard hash.
        hash: String,
        /// Why.
        reason: Refusal,
    },
    /// The disk filled up while the shard was written; its partial file was removed.
    #[error("the disk holding {} is full: shard {hash} could not be written; its partial file was removed", dir.display())]
    DiskFull {
        /// Shard hash.
        hash: String,
        /// The cache folder.
        dir: PathBuf,
    },
    /// A cached shard no longer matches its sidecar checksum: it was discarded.
    #[error("cached shard {hash} is damaged ({why}); it was discarded and must be shipped again")]
    Corrupt {
        /// Shard hash.
        hash: String,
        /// What did not match.
        why: String,
    },
    /// The shard is not in the cache.
    #[error("shard {hash} is not in this node's cache ({})", dir.display())]
    Missing {
        /// Shard hash.
        hash: String,
        /// The cache folder.
        dir: PathBuf,
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

impl ShardStoreError {
    /// Whether the node has no room for the shard (budget, free space or a full disk): sending
    /// it again, to this node, cannot succeed until an operator frees space.
    pub fn is_no_room(&self) -> bool {
        self.no_room().is_some()
    }

    /// Why the node has no room for the shard, in words for the sender (who knows the shard),
    /// if that is the error.
    pub fn no_room(&self) -> Option<String> {
        match self {
            ShardStoreError::NoRoom { reason, .. } => Some(reason.to_string()),
            ShardStoreError::DiskFull { dir, .. } => Some(format!(
                "the disk holding {} filled up during the transfer (the partial file was removed)",
                dir.display()
            )),
            _ => None,
        }
    }
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

/// A cached shard a stage runs from: while the lease lives, the shard is never evicted (it
/// holds a shared lock on the file).
#[derive(Debug)]
pub struct ShardLease {
    path: PathBuf,
    hash: String,
    key: Option<ShardKey>,
    _locked: File,
}

impl ShardLease {
    /// The shard file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the shard: mapped from disk, or decrypted into memory when it is stored
    /// encrypted (`limits.encrypt_shards`).
    pub fn open_gguf(&self) -> Result<edgeray_model::gguf::GgufFile, String> {
        open_shard(&self.path, &self.hash, self.key.as_ref())
    }

    /// What [`ShardLease::open_gguf`] needs, to open the shard again later (the stage's
    /// vocabulary for structured output).
    pub fn opener(&self) -> ShardOpener {
        ShardOpener {
            path: self.path.clone(),
            hash: self.hash.clone(),
            key: self.key.clone(),
        }
    }
}

/// Opens one cached shard (plain or encrypted) again.
#[derive(Debug, Clone)]
pub struct ShardOpener {
    path: PathBuf,
    hash: String,
    key: Option<ShardKey>,
}

impl ShardOpener {
    /// See [`ShardLease::open_gguf`].
    pub fn open(&self) -> Result<edgeray_model::gguf::GgufFile, String> {
        open_shard(&self.path, &self.hash, self.key.as_ref())
    }
}

fn open_shard(
    path: &Path,
    hash: &str,
    key: Option<&ShardKey>,
) -> Result<edgeray_model::gguf::GgufFile, String> {
    use edgeray_model::gguf::GgufFile;
    let encrypted = crypt::is_encrypted(path)
        .map_err(|e| format!("cannot read shard {}: {e}", path.display()))?;
    if !encrypted {
        return GgufFile::open(path)
            .map_err(|e| format!("cannot open shard {}: {e}", path.display()));
    }
    let key = key.ok_or_else(|| {
        format!(
            "shard {} is encrypted but this node has no shard key",
            path.display()
        )
    })?;
    let plain = crypt::decrypt_file(key, hash, path).map_err(|e| format!("shard {hash}: {e}"))?;
    GgufFile::from_bytes(plain).map_err(|e| format!("cannot open shard {}: {e}", path.display()))
}

/// Serialises the room-making of the stores in this process (a snapshot, a plan and its
/// evictions must not interleave with another offer's).
static ROOM: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// The shard cache in one directory.
#[derive(Debug, Clone)]
pub struct ShardStore {
    dir: PathBuf,
    budget: u64,
    /// Set: shards are stored encrypted under this key (`limits.encrypt_shards`).
    key: Option<ShardKey>,
}

impl ShardStore {
    /// Opens (creating it if needed) the cache in `dir` with the default budget.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ShardStoreError> {
        Self::with_budget(dir, edgeray_runtime::config::DEFAULT_SHARD_CACHE.0)
    }

    /// Opens (creating it if needed) the cache in `dir`, bounded to `budget` bytes, and removes
    /// partial uploads older than `STALE_PART_AGE`.
    pub fn with_budget(dir: impl Into<PathBuf>, budget: u64) -> Result<Self, ShardStoreError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let store = ShardStore {
            dir,
            budget,
            key: None,
        };
        store.remove_stale(STALE_PART_AGE)?;
        Ok(store)
    }

    /// Stores shards that arrive from now on encrypted under `key` (ChaCha20-Poly1305, see the `crypt` module); reads both
    /// plain and encrypted shards.
    pub fn with_encryption(mut self, key: Option<ShardKey>) -> Self {
        self.key = key;
        self
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cache budget in bytes.
    pub fn budget(&self) -> u64 {
        self.budget
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

    fn sum_path(&self, hash: &str) -> Result<PathBuf, ShardStoreError> {
        validate_hash(hash)?;
        Ok(self.dir.join(format!("{hash}.{}", sidecar::EXT)))
    }

    /// Whether the complete shard is cached (not whether it is intact: see
    /// [`ShardStore::verify`]).
    pub fn contains(&self, hash: &str) -> Result<bool, ShardStoreError> {
        Ok(self.path(hash)?.is_file())
    }

    /// Prepares to receive shard `hash` of `len` bytes in chunks of `chunk` bytes; returns how
    /// many bytes are already stored (`len` when the shard is cached and intact). A partial
    /// file is cut back to its last whole chunk; a damaged cached shard is discarded (and
    /// received again). Room is made for the missing bytes by evicting least recently used
    /// shards; an offer that cannot fit is refused ([`ShardStoreError::NoRoom`]) and its
    /// partial file removed.
    pub fn begin(&self, hash: &str, len: u64, chunk: u64) -> Result<u64, ShardStoreError> {
        let done = self.path(hash)?;
        if done.is_file() {
            let t = std::time::Instant::now();
            let checked = self.verify(hash);
            tracing::debug!(shard = %hash, verify_ms = t.elapsed().as_secs_f64() * 1e3, ok = checked.is_ok(), "cached shard checked at the offer");
            // An encrypted shard's header states its plaintext length.
            let checked = checked.and_then(|c| {
                let plain = crypt::plain_len(&done).map_err(io(&done))?;
                Ok(plain.unwrap_or(c.len))
            });
            match checked {
                Ok(have) if have == len => return Ok(len),
                Ok(have) => {
                    return Err(ShardStoreError::LengthMismatch {
                        hash: hash.into(),
                        cached: have,
                        offered: len,
                    });
                }
                Err(e @ ShardStoreError::Corrupt { .. }) => {
                    tracing::warn!(error = %e, "cached shard discarded; it will be received again");
                }
                Err(ShardStoreError::Missing { .. }) => {}
                Err(e) => return Err(e),
            }
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
        if let Err(e) = self.make_room(hash, len, keep) {
            if e.is_no_room() {
                let _ = std::fs::remove_file(&part);
            }
            return Err(e);
        }
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
    /// new stored length. A full disk removes the partial file ([`ShardStoreError::DiskFull`]).
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
        f.write_all(data)
            .map_err(|e| self.write_failed(hash, &part, e))?;
        Ok(offset + data.len() as u64)
    }

    /// A write to the partial file of `hash` failed: a full disk ends the upload for good.
    fn write_failed(&self, hash: &str, part: &Path, e: std::io::Error) -> ShardStoreError {
        if disk::is_full(&e) {
            let _ = std::fs::remove_file(part);
            ShardStoreError::DiskFull {
                hash: hash.into(),
                dir: self.dir.clone(),
            }
        } else {
            io(part)(e)
        }
    }

    /// Checks the assembled shard against its hash, writes its sidecar checksum and moves it
    /// into the cache.
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
        let (got, sum) = hash_file(&mut f).map_err(io(&part))?;
        if got != hash {
            let _ = std::fs::remove_file(&part);
            return Err(ShardStoreError::ContentHash {
                hash: hash.into(),
                got,
            });
        }
        f.sync_all().map_err(io(&part))?;
        // Encrypted at rest: the sealed file replaces the plaintext, and the sidecar is the
        // sealed file's checksum.
        let (f, part, sum) = match &self.key {
            None => (f, part, sum),
            Some(key) => {
                let sealed = self.dir.join(format!("{hash}.enc.tmp"));
                crypt::encrypt_file(key, hash, &part, &sealed)
                    .map_err(|e| self.write_failed(hash, &sealed, e))?;
                let _ = std::fs::remove_file(&part);
                let mut g = File::open(&sealed).map_err(io(&sealed))?;
                let sum = sidecar::checksum_of(&mut g).map_err(io(&sealed))?;
                (g, sealed, sum)
            }
        };
        self.write_sidecar(hash, sum)
            .map_err(|e| self.write_failed(hash, &part, e))?;
        // Arrival counts as a use: a new shard is not the first to be evicted.
        if let Err(e) = f.set_modified(SystemTime::now()) {
            tracing::debug!(error = %e, "cannot set a new shard's modification time");
        }
        std::fs::rename(&part, &done).map_err(io(&done))?;
        // Just hashed: the stage that follows need not hash it again.
        if let Ok(meta) = f.metadata() {
            FRESH
                .lock()
                .record(&done, Fingerprint::of(&meta), std::time::Instant::now());
        }
        Ok(done)
    }

    fn write_sidecar(&self, hash: &str, sum: Checksum) -> std::io::Result<()> {
        let path = self.sum_path(hash).map_err(std::io::Error::other)?;
        let tmp = path.with_extension(format!("{}.tmp", sidecar::EXT));
        let mut f = File::create(&tmp)?;
        f.write_all(sum.to_line().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    /// Checks cached shard `hash` against its sidecar; returns its checksum. A damaged shard
    /// (or sidecar) is discarded: [`ShardStoreError::Corrupt`]. A shard cached before sidecars
    /// existed is checked against its name (SHA-256) once and gets its sidecar.
    pub fn verify(&self, hash: &str) -> Result<Checksum, ShardStoreError> {
        let path = self.path(hash)?;
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ShardStoreError::Missing {
                    hash: hash.into(),
                    dir: self.dir.clone(),
                });
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let meta = f.metadata().map_err(io(&path))?;
        let sum_path = self.sum_path(hash)?;
        let want = match std::fs::read(&sum_path) {
            Ok(text) => Some(
                std::str::from_utf8(&text)
                    .ok()
                    .and_then(Checksum::parse)
                    .ok_or_else(|| self.discard(hash, "its sidecar checksum is unreadable"))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&sum_path)(e)),
        };
        let sum = match want {
            Some(want) => {
                let size = meta.len();
                if size != want.len {
                    return Err(self.discard(
                        hash,
                        &format!("{size} bytes on disk, {} when it arrived", want.len),
                    ));
                }
                let got = sidecar::checksum_of(&mut f).map_err(io(&path))?;
                if got != want {
                    return Err(self.discard(hash, "content does not match its sidecar checksum"));
                }
                got
            }
            None => {
                let (got, sum) = hash_file(&mut f).map_err(io(&path))?;
                if got != hash {
                    return Err(self.discard(hash, "content does not match its name"));
                }
                self.write_sidecar(hash, sum).map_err(io(&sum_path))?;
                sum
            }
        };
        FRESH
            .lock()
            .record(&path, Fingerprint::of(&meta), std::time::Instant::now());
        Ok(sum)
    }

    /// Removes cached shard `hash` and its sidecar; the [`ShardStoreError::Corrupt`] to report.
    /// Removes cached shard `hash`, which could not be used (`why`: e.g. it does not decrypt
    /// under this node's key after a secret rotation), so that the next offer receives it
    /// again; the [`ShardStoreError::Corrupt`] to report.
    pub fn discard_unusable(&self, hash: &str, why: &str) -> ShardStoreError {
        tracing::warn!(shard = %hash, "cached shard discarded: {why}");
        self.discard(hash, why)
    }

    fn discard(&self, hash: &str, why: &str) -> ShardStoreError {
        for p in [self.path(hash), self.sum_path(hash)].into_iter().flatten() {
            let _ = std::fs::remove_file(p);
        }
        ShardStoreError::Corrupt {
            hash: hash.into(),
            why: why.into(),
        }
    }

    /// Opens cached shard `hash` for a stage: verified against its sidecar (unless an offer
    /// verified it unchanged within `fresh::FRESH_FOR`; a damaged one is discarded), marked
    /// as used now (its place in the eviction order), and held against
    /// eviction while the returned lease lives.
    pub fn open_for_stage(&self, hash: &str) -> Result<ShardLease, ShardStoreError> {
        let path = self.path(hash)?;
        let missing = || ShardStoreError::Missing {
            hash: hash.into(),
            dir: self.dir.clone(),
        };
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
            Err(e) => return Err(io(&path)(e)),
        };
        f.lock_shared().map_err(io(&path))?;
        // Evicted between the open and the lock: the name is gone or names another file.
        if !same_file(&f, &path) {
            return Err(missing());
        }
        let fp = Fingerprint::of(&f.metadata().map_err(io(&path))?);
        if !FRESH.lock().take(&path, fp, std::time::Instant::now()) {
            self.verify(hash)?;
        }
        if let Err(e) = f.set_modified(SystemTime::now()) {
            tracing::warn!(error = %e, path = %path.display(), "cannot record the shard's use (eviction order)");
        }
        Ok(ShardLease {
            path,
            hash: hash.to_string(),
            key: self.key.clone(),
            _locked: f,
        })
    }

    /// The complete shards in the cache, with their size, last use and whether a stage holds
    /// them; and the bytes of partial uploads other than `except`'s.
    fn snapshot(&self, except: &str) -> Result<(Vec<CachedShard>, u64), ShardStoreError> {
        let mut cached = Vec::new();
        let mut partial = 0u64;
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name();
            let Some((hash, ext)) = name.to_str().and_then(|n| n.split_once('.')) else {
                continue;
            };
            if validate_hash(hash).is_err() {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            match ext {
                "part" if hash != except => partial += meta.len(),
                "gguf" => {
                    let sum = std::fs::metadata(self.sum_path(hash)?).map_or(0, |m| m.len());
                    cached.push(CachedShard {
                        hash: hash.to_string(),
                        bytes: meta.len() + sum,
                        last_used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        in_use: self.in_use(&entry.path()),
                    });
                }
                _ => {}
            }
        }
        Ok((cached, partial))
    }

    /// Whether a stage holds the shard at `path` (its shared lock is taken).
    fn in_use(&self, path: &Path) -> bool {
        match File::open(path) {
            Ok(f) => f.try_lock().is_err(),
            Err(_) => false,
        }
    }

    /// Evicts what [`plan_room`] says so that `len` bytes of `hash` (`have` already stored) fit.
    fn make_room(&self, hash: &str, len: u64, have: u64) -> Result<(), ShardStoreError> {
        let _one_at_a_time = ROOM.lock();
        // A shard that became in use between the snapshot and its eviction: plan again.
        for _ in 0..3 {
            let (cached, partial_bytes) = self.snapshot(hash)?;
            let room = Room {
                budget: self.budget,
                partial_bytes,
                disk_free: disk::free_bytes(&self.dir).map_err(io(&self.dir))?,
                headroom: DISK_HEADROOM,
            };
            let plan =
                plan_room(&cached, room, len, have).map_err(|reason| ShardStoreError::NoRoom {
                    hash: hash.into(),
                    reason,
                })?;
            let mut replan = false;
            for i in plan {
                if !self.evict(&cached[i])? {
                    replan = true;
                    break;
                }
            }
            if !replan {
                return Ok(());
            }
        }
        Err(ShardStoreError::NoRoom {
            hash: hash.into(),
            reason: Refusal::OverBudget {
                len,
                budget: self.budget,
                pinned: 0,
                partial: 0,
            },
        })
    }

    /// Removes a cached shard unless a stage holds it; whether it was removed.
    fn evict(&self, shard: &CachedShard) -> Result<bool, ShardStoreError> {
        let path = self.path(&shard.hash)?;
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(io(&path)(e)),
        };
        if f.try_lock().is_err() {
            return Ok(false);
        }
        std::fs::remove_file(&path).map_err(io(&path))?;
        let _ = std::fs::remove_file(self.sum_path(&shard.hash)?);
        tracing::info!(
            shard = %shard.hash,
            bytes = shard.bytes,
            dir = %self.dir.display(),
            "evicted the least recently used shard to make room"
        );
        Ok(true)
    }

    /// Removes partial uploads (and unfinished sidecars) untouched for `age`, and sidecars
    /// whose shard is gone.
    fn remove_stale(&self, age: Duration) -> Result<(), ShardStoreError> {
        let now = SystemTime::now();
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name();
            let Some((hash, ext)) = name.to_str().and_then(|n| n.split_once('.')) else {
                continue;
            };
            if validate_hash(hash).is_err() {
                continue;
            }
            let stale = || {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d >= age))
            };
            let remove = match ext {
                "part" | "sum.tmp" | "enc.tmp" => stale(),
                "sum" => !self.dir.join(format!("{hash}.gguf")).exists(),
                _ => false,
            };
            if remove {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {
                        tracing::info!(file = %entry.path().display(), "removed a stale file from the shard cache")
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&entry.path())(e)),
                }
            }
        }
        Ok(())
    }
}

/// SHA-256 (hex) and sidecar checksum of a file, in one pass.
fn hash_file(f: &mut File) -> std::io::Result<(String, Checksum)> {
    let mut sha = Sha256::new();
    let mut sum = Summer::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        sum.update(&buf[..n]);
    }
    Ok((hex::encode(sha.finalize()), sum.finish()))
}

/// Whether the open file `f` is the one `path` names now.
#[cfg(unix)]
fn same_file(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_f: &File, path: &Path) -> bool {
    path.is_file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn shards_can_be_kept_encrypted_at_rest() {
        use edgeray_model::test_models::RandomModel;
        use edgeray_runtime::security::ClusterSecret;
        let dir = tempfile::tempdir().unwrap();
        let key = |b: u8| Some(ShardKey::from_secret(&ClusterSecret::from_bytes([b; 32])));
        let store = ShardStore::open(dir.path())
            .unwrap()
            .with_encryption(key(1));
        let data = RandomModel::small("qwen2", 3).to_bytes();
        let hash = content_hash(&data);
        let len = data.len() as u64;
        assert_eq!(store.begin(&hash, len, 4096).unwrap(), 0);
        upload(&store, &data, 4096, 0);
        let path = store.finish(&hash, len).unwrap();
        // On disk: sealed, no plaintext run of the shard, no plaintext left behind.
        let disk = std::fs::read(&path).unwrap();
        assert!(crypt::is_encrypted(&path).unwrap());
        assert!(
            !disk
                .windows(256)
                .any(|w| w == &data[data.len() / 2..][..256])
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.ends_with(".gguf") && !n.ends_with(".sum"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        // Offered again: cached, at its plaintext length.
        assert_eq!(store.begin(&hash, len, 4096).unwrap(), len);
        // A stage opens it: the same tensors as the plaintext.
        let lease = store.open_for_stage(&hash).unwrap();
        let file = lease.open_gguf().unwrap();
        let plain = edgeray_model::gguf::GgufFile::from_bytes(data.clone()).unwrap();
        assert_eq!(file.raw_bytes().as_ref(), plain.raw_bytes().as_ref());
        drop(lease);
        // Another secret (rotated, or a thief's guess) or no key at all: unreadable.
        for other in [key(2), None] {
            let s = ShardStore::open(dir.path()).unwrap().with_encryption(other);
            let e = s.open_for_stage(&hash).unwrap().open_gguf().unwrap_err();
            assert!(e.contains("decrypt") || e.contains("no shard key"), "{e}");
        }
        // The stage discards it, so the next offer receives it again.
        let s = ShardStore::open(dir.path())
            .unwrap()
            .with_encryption(key(2));
        s.discard_unusable(&hash, "does not decrypt");
        assert_eq!(s.begin(&hash, len, 4096).unwrap(), 0);
    }

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

    fn cache(store: &ShardStore, data: &[u8]) -> String {
        let hash = content_hash(data);
        assert_eq!(store.begin(&hash, data.len() as u64, 1024).unwrap(), 0);
        upload(store, data, 1024, 0);
        store.finish(&hash, data.len() as u64).unwrap();
        hash
    }

    fn set_used(store: &ShardStore, hash: &str, secs_ago: u64) {
        let f = File::options()
            .write(true)
            .open(store.path(hash).unwrap())
            .unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs_ago))
            .unwrap();
    }

    #[test]
    fn an_offer_evicts_the_least_recently_used_shard_not_in_use() {
        let dir = tempfile::tempdir().unwrap();
        // Room for two 4000-byte shards (and their sidecars), not three.
        let store = ShardStore::with_budget(dir.path(), 10_000).unwrap();
        let a = cache(&store, &[1u8; 4000]);
        let b = cache(&store, &[2u8; 4000]);
        set_used(&store, &a, 100);
        set_used(&store, &b, 200);
        // b is older, but a stage runs from it: a goes.
        let lease = store.open_for_stage(&b).unwrap();
        let c = cache(&store, &[3u8; 4000]);
        assert!(!store.contains(&a).unwrap(), "a evicted");
        assert!(store.contains(&b).unwrap(), "b is in use");
        assert!(
            !dir.path().join(format!("{a}.sum")).exists(),
            "a's sidecar went too"
        );
        // Both cached shards in use: the next offer cannot fit, and nothing is evicted.
        let lease_c = store.open_for_stage(&c).unwrap();
        let d = [4u8; 4000];
        let hd = content_hash(&d);
        let e = store.begin(&hd, 4000, 1024).unwrap_err();
        assert!(
            matches!(
                &e,
                ShardStoreError::NoRoom {
                    reason: Refusal::OverBudget { .. },
                    ..
                }
            ),
            "{e}"
        );
        assert!(store.contains(&b).unwrap() && store.contains(&c).unwrap());
        // The stages stop: the older of the two goes.
        drop(lease_c);
        drop(lease);
        set_used(&store, &c, 10);
        set_used(&store, &b, 20);
        assert_eq!(store.begin(&hd, 4000, 1024).unwrap(), 0);
        assert!(!store.contains(&b).unwrap() && store.contains(&c).unwrap());
    }

    #[test]
    fn starting_a_stage_makes_a_shard_the_most_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::with_budget(dir.path(), 10_000).unwrap();
        let a = cache(&store, &[1u8; 4000]);
        let b = cache(&store, &[2u8; 4000]);
        set_used(&store, &a, 200);
        set_used(&store, &b, 100);
        drop(store.open_for_stage(&a).unwrap());
        cache(&store, &[3u8; 4000]);
        assert!(store.contains(&a).unwrap(), "a was used last");
        assert!(!store.contains(&b).unwrap());
    }

    #[test]
    fn an_offer_larger_than_the_budget_is_refused_and_its_partial_file_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::with_budget(dir.path(), 10_000).unwrap();
        let a = cache(&store, &[1u8; 4000]);
        let data = vec![9u8; 12_000];
        let hash = content_hash(&data);
        // A partial upload from before the budget was lowered.
        std::fs::write(dir.path().join(format!("{hash}.part")), &data[..2048]).unwrap();
        let e = store.begin(&hash, 12_000, 1024).unwrap_err();
        assert!(e.is_no_room(), "{e}");
        assert!(
            e.to_string().contains("limits.shard_cache"),
            "the reason names the setting: {e}"
        );
        assert!(!dir.path().join(format!("{hash}.part")).exists());
        assert!(store.contains(&a).unwrap(), "a refusal evicts nothing");
    }

    #[test]
    fn an_offer_beyond_the_free_disk_space_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let free = disk::free_bytes(dir.path()).unwrap();
        let store = ShardStore::with_budget(dir.path(), u64::MAX).unwrap();
        let len = free + 1;
        let e = store.begin(&"ab".repeat(32), len, 1024).unwrap_err();
        assert!(
            matches!(
                &e,
                ShardStoreError::NoRoom {
                    reason: Refusal::DiskSpace { .. },
                    ..
                }
            ),
            "{e}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_during_a_write_is_final_and_removes_the_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path()).unwrap();
        let data = vec![7u8; 3000];
        let hash = content_hash(&data);
        // Every write to /dev/full fails with ENOSPC.
        let part = dir.path().join(format!("{hash}.part"));
        std::os::unix::fs::symlink("/dev/full", &part).unwrap();
        let e = store
            .write_chunk(&hash, 3000, 0, &data[..1024], &chunk_digest(&data[..1024]))
            .unwrap_err();
        assert!(matches!(e, ShardStoreError::DiskFull { .. }), "{e}");
        assert!(e.is_no_room());
        assert!(e.to_string().contains("full"), "{e}");
        assert!(
            std::fs::symlink_metadata(&part).is_err(),
            "partial file removed"
        );
    }

    #[test]
    fn a_flipped_byte_is_caught_before_use_and_the_shard_received_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 13 % 256) as u8).collect();
        let hash = cache(&store, &data);
        assert_eq!(
            store.begin(&hash, 5000, 1024).unwrap(),
            5000,
            "intact: cached"
        );
        drop(store.open_for_stage(&hash).unwrap());
        let path = store.path(&hash).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[4321] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let e = store.open_for_stage(&hash).unwrap_err();
        assert!(matches!(e, ShardStoreError::Corrupt { .. }), "{e}");
        assert!(!store.contains(&hash).unwrap(), "discarded");
        assert!(!dir.path().join(format!("{hash}.sum")).exists());
        // Received again, it is good.
        assert_eq!(upload(&store, &data, 1024, 0), 5000);
        store.finish(&hash, 5000).unwrap();
        drop(store.open_for_stage(&hash).unwrap());
    }

    #[test]
    fn an_offer_of_a_damaged_cached_shard_asks_for_all_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path()).unwrap();
        let data = vec![3u8; 5000];
        let hash = cache(&store, &data);
        // Truncated (a lost write) and bit-flipped copies are both caught at the offer.
        let path = store.path(&hash).unwrap();
        std::fs::write(&path, &data[..4999]).unwrap();
        assert_eq!(store.begin(&hash, 5000, 1024).unwrap(), 0);
        assert!(!store.contains(&hash).unwrap());
        upload(&store, &data, 1024, 0);
        store.finish(&hash, 5000).unwrap();
        let mut bad = data.clone();
        bad[0] = 4;
        std::fs::write(&path, &bad).unwrap();
        assert_eq!(store.begin(&hash, 5000, 1024).unwrap(), 0);
        // A damaged sidecar counts as a damaged shard.
        upload(&store, &data, 1024, 0);
        store.finish(&hash, 5000).unwrap();
        std::fs::write(dir.path().join(format!("{hash}.sum")), "garbage").unwrap();
        assert!(matches!(
            store.verify(&hash),
            Err(ShardStoreError::Corrupt { .. })
        ));
        // An offer with another length than the cached shard's is refused.
        upload(&store, &data, 1024, 0);
        store.finish(&hash, 5000).unwrap();
        assert!(matches!(
            store.begin(&hash, 4000, 1024),
            Err(ShardStoreError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn a_shard_cached_without_sidecar_is_checked_by_its_name_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path()).unwrap();
        let data = vec![8u8; 3000];
        let hash = content_hash(&data);
        std::fs::write(store.path(&hash).unwrap(), &data).unwrap();
        drop(store.open_for_stage(&hash).unwrap());
        assert!(
            dir.path().join(format!("{hash}.sum")).exists(),
            "sidecar written"
        );
        // A legacy shard whose content does not match its name is discarded.
        let other = content_hash(b"other");
        std::fs::write(store.path(&other).unwrap(), &data).unwrap();
        assert!(matches!(
            store.open_for_stage(&other),
            Err(ShardStoreError::Corrupt { .. })
        ));
        assert!(!store.contains(&other).unwrap());
    }

    #[test]
    fn stale_partial_files_are_removed_when_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join(format!("{}.part", "a".repeat(64)));
        let fresh = dir.path().join(format!("{}.part", "b".repeat(64)));
        let orphan_sum = dir.path().join(format!("{}.sum", "c".repeat(64)));
        let unrelated = dir.path().join("notes.txt");
        for p in [&old, &fresh, &orphan_sum, &unrelated] {
            std::fs::write(p, b"x").unwrap();
        }
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(SystemTime::now() - STALE_PART_AGE - Duration::from_secs(1))
            .unwrap();
        ShardStore::open(dir.path()).unwrap();
        assert!(!old.exists() && !orphan_sum.exists());
        assert!(fresh.exists() && unrelated.exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_stage_start_right_after_the_offer_reuses_its_check_unless_the_file_changed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path()).unwrap();
        let data = vec![6u8; 5000];
        let hash = cache(&store, &data);
        let path = store.path(&hash).unwrap();
        // Written after the offer's check: the stage start checks again.
        assert_eq!(store.begin(&hash, 5000, 1024).unwrap(), 5000);
        let mut bad = data.clone();
        bad[10] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert!(matches!(
            store.open_for_stage(&hash),
            Err(ShardStoreError::Corrupt { .. })
        ));
        // Unchanged since the offer's check (same file, length and time): not hashed again,
        // which a change that kept the modification time shows.
        upload(&store, &data, 1024, 0);
        store.finish(&hash, 5000).unwrap();
        assert_eq!(store.begin(&hash, 5000, 1024).unwrap(), 5000);
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let f = File::options().write(true).open(&path).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &bad, 0).unwrap();
        f.set_modified(mtime).unwrap();
        drop(
            store
                .open_for_stage(&hash)
                .expect("the offer's check vouches for it"),
        );
        // Used up: the next start hashes.
        let f = File::options().write(true).open(&path).unwrap();
        f.set_modified(mtime).unwrap();
        assert!(matches!(
            store.open_for_stage(&hash),
            Err(ShardStoreError::Corrupt { .. })
        ));
    }
}
