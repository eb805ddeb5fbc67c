//! The operator's view of a shard cache (`edgeray models list|rm|gc`, a node's `/metrics`):
//! list the shards, remove one, shrink the cache to a budget. Shards a running stage holds are
//! never removed (their lock is checked as eviction does).

use super::{CachedShard, ShardStore, ShardStoreError, io, validate_hash};

/// The cache's content: complete shards, least recently used first, and partial uploads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheListing {
    /// Complete shards (bytes include the sidecar), least recently used first.
    pub shards: Vec<CachedShard>,
    /// Bytes of partial uploads.
    pub partial_bytes: u64,
}

impl CacheListing {
    /// Bytes of complete shards and partial uploads together.
    pub fn total_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.bytes).sum::<u64>() + self.partial_bytes
    }
}

/// What [`ShardStore::remove`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveOutcome {
    /// Removed; its bytes (shard + sidecar).
    Removed(u64),
    /// A running stage holds it: left in place.
    InUse,
}

/// What [`ShardStore::gc`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// The shards evicted, in eviction order (least recently used first).
    pub evicted: Vec<CachedShard>,
    /// Cache bytes afterwards (complete shards + partial uploads).
    pub remaining_bytes: u64,
    /// The budget applied.
    pub budget: u64,
}

impl GcReport {
    /// Whether the cache is within the budget now (it stays over when running stages hold more).
    pub fn within_budget(&self) -> bool {
        self.remaining_bytes <= self.budget
    }
}

impl ShardStore {
    /// The complete shards (least recently used first) and the partial-upload bytes.
    pub fn list(&self) -> Result<CacheListing, ShardStoreError> {
        let (mut shards, partial_bytes) = self.snapshot("")?;
        shards.sort_by(|a, b| (a.last_used, &a.hash).cmp(&(b.last_used, &b.hash)));
        Ok(CacheListing {
            shards,
            partial_bytes,
        })
    }

    /// Removes the complete shard `hash` and its sidecar, unless a running stage holds it.
    pub fn remove(&self, hash: &str) -> Result<RemoveOutcome, ShardStoreError> {
        validate_hash(hash)?;
        let path = self.path(hash)?;
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ShardStoreError::Missing {
                    hash: hash.into(),
                    dir: self.dir.clone(),
                });
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let sum = std::fs::metadata(self.sum_path(hash)?).map_or(0, |m| m.len());
        let shard = CachedShard {
            hash: hash.into(),
            bytes: meta.len() + sum,
            last_used: meta.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH),
            in_use: false,
        };
        Ok(if self.evict(&shard)? {
            RemoveOutcome::Removed(shard.bytes)
        } else {
            RemoveOutcome::InUse
        })
    }

    /// Evicts least recently used shards no stage holds until the cache (complete shards and
    /// partial uploads) fits `budget`.
    pub fn gc(&self, budget: u64) -> Result<GcReport, ShardStoreError> {
        let _one_at_a_time = super::ROOM.lock();
        let listing = self.list()?;
        let mut remaining = listing.total_bytes();
        let mut evicted = Vec::new();
        for shard in listing.shards.iter().filter(|s| !s.in_use) {
            if remaining <= budget {
                break;
            }
            if self.evict(shard)? {
                remaining -= shard.bytes;
                evicted.push(shard.clone());
            }
        }
        Ok(GcReport {
            evicted,
            remaining_bytes: remaining,
            budget,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{chunk_digest, content_hash};
    use super::*;
    use std::time::{Duration, SystemTime};

    /// Stores `bytes` as a complete shard, last used `age_s` seconds ago; its hash.
    fn put(store: &ShardStore, bytes: &[u8], age_s: u64) -> String {
        let hash = content_hash(bytes);
        let len = bytes.len() as u64;
        store.begin(&hash, len, len).unwrap();
        store
            .write_chunk(&hash, len, 0, bytes, &chunk_digest(bytes))
            .unwrap();
        let path = store.finish(&hash, len).unwrap();
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(age_s))
            .unwrap();
        hash
    }

    #[test]
    fn list_remove_and_gc_to_a_small_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::with_budget(dir.path(), 1 << 20).unwrap();
        let old = put(&store, &[1u8; 4000], 300);
        let mid = put(&store, &[2u8; 3000], 200);
        let new = put(&store, &[3u8; 2000], 100);
        let l = store.list().unwrap();
        let order: Vec<&str> = l.shards.iter().map(|s| s.hash.as_str()).collect();
        assert_eq!(order, [old.as_str(), mid.as_str(), new.as_str()]);
        assert!(l.shards[0].bytes > 4000, "the sidecar counts");
        let total = l.total_bytes();

        // A running stage holds the oldest: gc skips it and evicts the next.
        let lease = store.open_for_stage(&old).unwrap();
        let r = store.gc(total - 1).unwrap();
        assert_eq!(r.evicted.len(), 1);
        assert_eq!(r.evicted[0].hash, mid);
        assert!(r.within_budget());
        assert_eq!(store.remove(&old).unwrap(), RemoveOutcome::InUse);
        drop(lease);

        // Nothing fits a zero budget but everything unused goes.
        let r = store.gc(0).unwrap();
        assert_eq!(r.evicted.len(), 2);
        assert_eq!(r.remaining_bytes, 0);
        assert!(store.list().unwrap().shards.is_empty());
        assert!(matches!(
            store.remove(&new),
            Err(ShardStoreError::Missing { .. })
        ));
        assert!(matches!(
            store.remove("not-a-hash"),
            Err(ShardStoreError::BadHash(_))
        ));
    }
}
