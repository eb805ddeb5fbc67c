//! Making room for an incoming shard: which cached shards to evict, or why it cannot fit.
//!
//! Pure arithmetic over a snapshot of the cache (no file system here), so every rule is
//! unit-tested deterministically; [`super::ShardStore::begin`] takes the snapshot, asks
//! [`plan_room`] and carries the plan out.
//!
//! Rules:
//! - the cache (complete shards + every partial upload + the incoming shard at its full
//!   length) must stay within the budget (`limits.shard_cache`);
//! - the bytes still to be written plus [`Room::headroom`] must fit the free disk space;
//! - shards a running stage uses are never evicted; the others go least recently used first
//!   (last used = last stage start, see [`super::ShardStore`]);
//! - when the shard cannot fit even with every evictable shard gone, nothing is evicted and
//!   the offer is refused: a refusal never costs the cache anything.

use edgeray_runtime::config::ByteSize;
use std::time::SystemTime;

/// One complete shard of the cache, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedShard {
    /// Content hash (the file name).
    pub hash: String,
    /// Bytes on disk (shard + sidecar).
    pub bytes: u64,
    /// Last time a stage started from it (or when it arrived, if never).
    pub last_used: SystemTime,
    /// A running stage holds it: never evicted.
    pub in_use: bool,
}

/// The space an incoming shard must fit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// The cache budget (`limits.shard_cache`).
    pub budget: u64,
    /// Bytes of partial uploads other than the incoming shard's own.
    pub partial_bytes: u64,
    /// Free bytes on the cache's file system (for an unprivileged process).
    pub disk_free: u64,
    /// Bytes always left free on the disk (logs, state, other programs).
    pub headroom: u64,
}

/// Why an incoming shard cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The shard alone is larger than the whole budget.
    #[error(
        "the shard ({}) is larger than this node's whole shard cache (limits.shard_cache = {})",
        ByteSize(*len),
        ByteSize(*budget)
    )]
    LargerThanBudget {
        /// Shard length.
        len: u64,
        /// The budget.
        budget: u64,
    },
    /// Even with every evictable shard gone, the cache would exceed its budget.
    #[error(
        "the shard ({}) does not fit this node's shard cache (limits.shard_cache = {}): {} is held by running stages and {} by other uploads",
        ByteSize(*len),
        ByteSize(*budget),
        ByteSize(*pinned),
        ByteSize(*partial)
    )]
    OverBudget {
        /// Shard length.
        len: u64,
        /// The budget.
        budget: u64,
        /// Bytes of shards in use by running stages.
        pinned: u64,
        /// Bytes of other partial uploads.
        partial: u64,
    },
    /// Even with every evictable shard gone, the disk has too little free space.
    #[error(
        "not enough free disk space for the shard: {} more needed (and {} kept free), {} free even after evicting every unused shard",
        ByteSize(*need),
        ByteSize(*headroom),
        ByteSize(*free)
    )]
    DiskSpace {
        /// Bytes still to write.
        need: u64,
        /// Free bytes once every evictable shard is gone.
        free: u64,
        /// Bytes kept free.
        headroom: u64,
    },
}

/// Which shards of `cached` to evict (indices, in eviction order) so that a shard of `len`
/// bytes, `have` of which are already stored in its partial file, fits `room`.
pub fn plan_room(
    cached: &[CachedShard],
    room: Room,
    len: u64,
    have: u64,
) -> Result<Vec<usize>, Refusal> {
    if len > room.budget {
        return Err(Refusal::LargerThanBudget {
            len,
            budget: room.budget,
        });
    }
    let cached_bytes: u64 = cached.iter().map(|c| c.bytes).sum();
    let mut used = cached_bytes
        .saturating_add(room.partial_bytes)
        .saturating_add(len);
    let need = len.saturating_sub(have);
    let mut free = room.disk_free;
    let fits =
        |used: u64, free: u64| used <= room.budget && free >= need.saturating_add(room.headroom);
    let mut order: Vec<usize> = (0..cached.len()).filter(|&i| !cached[i].in_use).collect();
    order.sort_by(|&a, &b| {
        (cached[a].last_used, &cached[a].hash).cmp(&(cached[b].last_used, &cached[b].hash))
    });
    let mut evict = Vec::new();
    for i in order {
        if fits(used, free) {
            break;
        }
        used -= cached[i].bytes;
        free = free.saturating_add(cached[i].bytes);
        evict.push(i);
    }
    if used > room.budget {
        let pinned = cached.iter().filter(|c| c.in_use).map(|c| c.bytes).sum();
        return Err(Refusal::OverBudget {
            len,
            budget: room.budget,
            pinned,
            partial: room.partial_bytes,
        });
    }
    if !fits(used, free) {
        return Err(Refusal::DiskSpace {
            need,
            free,
            headroom: room.headroom,
        });
    }
    Ok(evict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn shard(name: char, bytes: u64, age_s: u64, in_use: bool) -> CachedShard {
        CachedShard {
            hash: name.to_string().repeat(64),
            bytes,
            last_used: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 - age_s),
            in_use,
        }
    }

    fn room(budget: u64) -> Room {
        Room {
            budget,
            partial_bytes: 0,
            disk_free: u64::MAX / 4,
            headroom: 0,
        }
    }

    #[test]
    fn nothing_is_evicted_while_the_shard_fits() {
        let cached = [shard('a', 30, 10, false), shard('b', 30, 20, false)];
        assert_eq!(plan_room(&cached, room(100), 40, 0), Ok(vec![]));
        // Exactly at the budget still fits.
        assert_eq!(plan_room(&cached, room(100), 40, 39), Ok(vec![]));
    }

    #[test]
    fn least_recently_used_goes_first_and_only_as_much_as_needed() {
        // c is oldest, then a, then b.
        let cached = [
            shard('a', 30, 20, false),
            shard('b', 30, 10, false),
            shard('c', 30, 30, false),
        ];
        assert_eq!(plan_room(&cached, room(100), 20, 0), Ok(vec![2]));
        assert_eq!(plan_room(&cached, room(100), 50, 0), Ok(vec![2, 0]));
        assert_eq!(plan_room(&cached, room(100), 100, 0), Ok(vec![2, 0, 1]));
    }

    #[test]
    fn shards_in_use_are_never_evicted() {
        let cached = [
            shard('a', 30, 99, true),
            shard('b', 30, 10, false),
            shard('c', 30, 30, true),
        ];
        assert_eq!(plan_room(&cached, room(100), 40, 0), Ok(vec![1]));
        assert_eq!(
            plan_room(&cached, room(100), 50, 0),
            Err(Refusal::OverBudget {
                len: 50,
                budget: 100,
                pinned: 60,
                partial: 0
            }),
            "a refusal evicts nothing"
        );
    }

    #[test]
    fn a_shard_larger_than_the_budget_is_refused_outright() {
        let cached = [shard('a', 30, 10, false)];
        assert_eq!(
            plan_room(&cached, room(100), 101, 0),
            Err(Refusal::LargerThanBudget {
                len: 101,
                budget: 100
            })
        );
    }

    #[test]
    fn partial_uploads_count_against_the_budget() {
        let cached = [shard('a', 30, 10, false)];
        let r = Room {
            partial_bytes: 50,
            ..room(100)
        };
        assert_eq!(plan_room(&cached, r, 20, 0), Ok(vec![]));
        assert_eq!(plan_room(&cached, r, 21, 0), Ok(vec![0]));
        assert!(matches!(
            plan_room(&cached, r, 51, 0),
            Err(Refusal::OverBudget { partial: 50, .. })
        ));
    }

    #[test]
    fn free_disk_space_is_checked_for_the_missing_bytes_plus_headroom() {
        let cached = [shard('a', 30, 10, false), shard('b', 10, 20, false)];
        let r = Room {
            budget: 1000,
            partial_bytes: 0,
            disk_free: 50,
            headroom: 10,
        };
        // 40 missing + 10 headroom = 50: fits.
        assert_eq!(plan_room(&cached, r, 100, 60), Ok(vec![]));
        // 41 missing: the oldest (b) is evicted to free 10 bytes.
        assert_eq!(plan_room(&cached, r, 100, 59), Ok(vec![1]));
        // 91 missing: even both evicted leave 90 free.
        assert_eq!(
            plan_room(&cached, r, 100, 9),
            Err(Refusal::DiskSpace {
                need: 91,
                free: 90,
                headroom: 10
            })
        );
    }

    #[test]
    fn equal_ages_evict_in_hash_order() {
        let cached = [shard('b', 30, 5, false), shard('a', 30, 5, false)];
        assert_eq!(plan_room(&cached, room(60), 30, 0), Ok(vec![1]));
    }

    #[test]
    fn refusals_read_as_sentences() {
        let e = Refusal::LargerThanBudget { len: 10, budget: 5 };
        assert!(e.to_string().contains("limits.shard_cache"), "{e}");
    }
}
