//! How `edgeray models` shows a cache, and which shard a typed prefix names.

use std::path::Path;
use std::time::SystemTime;

use edgeray_runtime::config::ByteSize;
use serde_json::{Value, json};

use crate::pipeline::stage::CacheListing;

/// Shortest prefix `models rm` accepts.
pub const MIN_PREFIX: usize = 6;

/// How long ago `t` was, in words (`12s ago`, `5m ago`, `3h ago`, `2d ago`).
pub fn age(t: SystemTime) -> String {
    let s = SystemTime::now()
        .duration_since(t)
        .map_or(0, |d| d.as_secs());
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// The table: one row per shard (least recently used first), then a summary line.
pub fn listing_table(dir: &Path, budget: u64, l: &CacheListing) -> String {
    let mut s = format!(
        "{:<64}  {:>10}  {:>10}  {}\n",
        "SHARD", "SIZE", "LAST USED", "IN USE"
    );
    for sh in &l.shards {
        s.push_str(&format!(
            "{:<64}  {:>10}  {:>10}  {}\n",
            sh.hash,
            ByteSize(sh.bytes).to_string(),
            age(sh.last_used),
            if sh.in_use { "yes" } else { "no" }
        ));
    }
    s.push_str(&format!(
        "{} shard(s), {} of a {} budget ({} in partial uploads) in {}\n",
        l.shards.len(),
        ByteSize(l.total_bytes()),
        ByteSize(budget),
        ByteSize(l.partial_bytes),
        dir.display()
    ));
    s
}

/// `--json`: `{dir, budget_bytes, total_bytes, partial_bytes, shards: [{hash, bytes,
/// last_used_unix, in_use}]}`, shards least recently used first.
pub fn listing_json(dir: &Path, budget: u64, l: &CacheListing) -> Value {
    json!({
        "dir": dir.display().to_string(),
        "budget_bytes": budget,
        "total_bytes": l.total_bytes(),
        "partial_bytes": l.partial_bytes,
        "shards": l.shards.iter().map(|s| json!({
            "hash": s.hash,
            "bytes": s.bytes,
            "last_used_unix": s.last_used.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "in_use": s.in_use,
        })).collect::<Vec<_>>(),
    })
}

/// Why a typed shard name does not name exactly one cached shard.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrefixError {
    /// Too short to be safe.
    #[error("give at least {MIN_PREFIX} characters of the shard's hash (`edgeray models list`)")]
    TooShort,
    /// No cached shard starts with it.
    #[error("no cached shard starts with {0} (`edgeray models list` shows them)")]
    NotFound(String),
    /// Several do.
    #[error("{prefix} names {count} shards; give more characters")]
    Ambiguous {
        /// The prefix.
        prefix: String,
        /// How many match.
        count: usize,
    },
}

/// The full hash of the one cached shard whose hash starts with `prefix` (lower-cased).
pub fn resolve_prefix(l: &CacheListing, prefix: &str) -> Result<String, PrefixError> {
    let p = prefix.trim().to_ascii_lowercase();
    if p.len() < MIN_PREFIX {
        return Err(PrefixError::TooShort);
    }
    let hits: Vec<&str> = l
        .shards
        .iter()
        .map(|s| s.hash.as_str())
        .filter(|h| h.starts_with(&p))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(PrefixError::NotFound(p)),
        many => Err(PrefixError::Ambiguous {
            prefix: p,
            count: many.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::stage::CachedShard;
    use std::time::Duration;

    fn listing(hashes: &[&str]) -> CacheListing {
        CacheListing {
            shards: hashes
                .iter()
                .map(|h| CachedShard {
                    hash: h.to_string(),
                    bytes: 1 << 20,
                    last_used: SystemTime::now() - Duration::from_secs(7200),
                    in_use: false,
                })
                .collect(),
            partial_bytes: 0,
        }
    }

    #[test]
    fn prefixes_must_be_long_unique_and_present() {
        let l = listing(&["abcdef01", "abcdef02", "123456ff"]);
        assert_eq!(resolve_prefix(&l, "123456").unwrap(), "123456ff");
        assert_eq!(resolve_prefix(&l, "ABCDEF01").unwrap(), "abcdef01");
        assert_eq!(resolve_prefix(&l, "12345"), Err(PrefixError::TooShort));
        assert_eq!(
            resolve_prefix(&l, "abcdef"),
            Err(PrefixError::Ambiguous {
                prefix: "abcdef".into(),
                count: 2
            })
        );
        assert_eq!(
            resolve_prefix(&l, "999999"),
            Err(PrefixError::NotFound("999999".into()))
        );
    }

    #[test]
    fn table_and_json_show_every_shard() {
        let l = listing(&["abcdef01"]);
        let t = listing_table(Path::new("/c"), 8 << 30, &l);
        assert!(
            t.contains("abcdef01") && t.contains("2h ago") && t.contains("1 shard(s)"),
            "{t}"
        );
        let j = listing_json(Path::new("/c"), 8 << 30, &l);
        assert_eq!(j["shards"][0]["bytes"], 1 << 20);
        assert_eq!(j["budget_bytes"], 8u64 << 30);
    }
}
