//! Checks that need not be repeated: a shard verified against its sidecar a moment ago (by
//! the offer that found it cached) is not hashed again when its stage starts seconds later.
//!
//! An entry holds the file's identity, length and modification time as they were when it was
//! verified; any write (and every stage start, which sets the modification time) makes it
//! stale, and it expires after [`FRESH_FOR`]. Decay of the medium within that window could go
//! unnoticed, but the stage would read the verified bytes from the page cache anyway.

use std::collections::HashMap;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How long a verification vouches for an unchanged file.
pub const FRESH_FOR: Duration = Duration::from_secs(60);

/// What identifies a file's content well enough to skip re-hashing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// Device and inode (0 where unknown).
    pub id: (u64, u64),
    /// Length in bytes.
    pub len: u64,
    /// Last modification.
    pub modified: Option<SystemTime>,
}

impl Fingerprint {
    /// The fingerprint of a file's metadata.
    pub fn of(meta: &Metadata) -> Fingerprint {
        #[cfg(unix)]
        let id = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let id = (0, 0);
        Fingerprint {
            id,
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

/// Recent successful verifications, by shard path.
#[derive(Debug, Default)]
pub struct Fresh {
    seen: HashMap<PathBuf, (Fingerprint, Instant)>,
}

impl Fresh {
    /// Records that `path`, as `fp`, was verified at `now`.
    pub fn record(&mut self, path: &Path, fp: Fingerprint, now: Instant) {
        self.seen
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < FRESH_FOR);
        self.seen.insert(path.to_path_buf(), (fp, now));
    }

    /// Whether `path`, now `fp`, was verified unchanged within [`FRESH_FOR`] of `now`; the
    /// entry is used up either way.
    pub fn take(&mut self, path: &Path, fp: Fingerprint, now: Instant) -> bool {
        self.seen.remove(path).is_some_and(|(was, at)| {
            was == fp && fp.modified.is_some() && now.saturating_duration_since(at) < FRESH_FOR
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(len: u64, secs: u64) -> Fingerprint {
        Fingerprint {
            id: (1, 42),
            len,
            modified: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)),
        }
    }

    #[test]
    fn an_unchanged_file_verified_a_moment_ago_is_fresh_once() {
        let mut f = Fresh::default();
        let t = Instant::now();
        let p = Path::new("/cache/a.gguf");
        f.record(p, fp(10, 5), t);
        assert!(f.take(p, fp(10, 5), t + Duration::from_secs(3)));
        assert!(!f.take(p, fp(10, 5), t + Duration::from_secs(4)), "used up");
    }

    #[test]
    fn a_changed_replaced_or_old_verification_is_not_fresh() {
        let mut f = Fresh::default();
        let t = Instant::now();
        let p = Path::new("/cache/a.gguf");
        for (now, changed) in [
            (t, fp(10, 6)),
            (t, fp(11, 5)),
            (
                t,
                Fingerprint {
                    id: (1, 43),
                    ..fp(10, 5)
                },
            ),
            (
                t,
                Fingerprint {
                    modified: None,
                    ..fp(10, 5)
                },
            ),
            (t + FRESH_FOR, fp(10, 5)),
        ] {
            f.record(p, fp(10, 5), t);
            assert!(!f.take(p, changed, now), "{changed:?} at {:?}", now - t);
        }
        assert!(!f.take(Path::new("/cache/b.gguf"), fp(10, 5), t));
    }
}
