//! `edgeray models list|rm|gc` on a node's shard cache under a small budget
//! (`limits.shard_cache = "1MiB"`): three 400 KB shards of different ages are listed least
//! recently used first, gc evicts the oldest to fit the budget (and the next under an
//! explicit smaller `--budget`), rm removes by prefix, and
//! bad names get clear errors.

mod cli_util;

use cli_util::{edgeray, write_config};
use edgeray::pipeline::stage::{ShardStore, chunk_digest, content_hash};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, SystemTime};

fn put(dir: &Path, fill: u8, age_s: u64) -> String {
    let store = ShardStore::with_budget(dir, 64 << 20).unwrap();
    let bytes = vec![fill; 400_000];
    let hash = content_hash(&bytes);
    let len = bytes.len() as u64;
    store.begin(&hash, len, len).unwrap();
    store
        .write_chunk(&hash, len, 0, &bytes, &chunk_digest(&bytes))
        .unwrap();
    let path = store.finish(&hash, len).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(age_s))
        .unwrap();
    hash
}

fn models(cfg: &Path, args: &[&str]) -> (bool, String, String) {
    let out = edgeray()
        .arg("models")
        .args(args)
        .arg("--config")
        .arg(cfg)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn listed(cfg: &Path) -> Vec<String> {
    let (ok, out, err) = models(cfg, &["list", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["budget_bytes"], 1 << 20);
    v["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["hash"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn list_gc_and_rm_under_a_small_budget() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "pi", 7070, &[]);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("[limits]\nshard_cache = \"1MiB\"\n");
    std::fs::write(&cfg, text).unwrap();

    // No cache yet: a clear error.
    let (ok, _, err) = models(&cfg, &["list"]);
    assert!(!ok && err.contains("no shard cache at"), "{err}");

    let shards = dir.path().join("pi").join("shards");
    std::fs::create_dir_all(&shards).unwrap();
    let oldest = put(&shards, 1, 3000);
    let middle = put(&shards, 2, 2000);
    let newest = put(&shards, 3, 1000);
    assert_eq!(
        listed(&cfg),
        [oldest.as_str(), middle.as_str(), newest.as_str()]
    );
    let (ok, table, _) = models(&cfg, &["list"]);
    assert!(
        ok && table.contains("3 shard(s)") && table.contains("50m ago"),
        "{table}"
    );

    // 1.2 MB in a 1 MiB budget: the least recently used goes.
    let (ok, out, err) = models(&cfg, &["gc"]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("evicted {oldest}")), "{out}");
    assert!(out.contains("1 shard(s) evicted"), "{out}");
    assert_eq!(listed(&cfg), [middle.as_str(), newest.as_str()]);
    let (ok, out, err) = models(&cfg, &["gc", "--budget", "500KiB"]);
    assert!(
        ok && out.contains(&format!("evicted {middle}")),
        "{out}{err}"
    );
    assert_eq!(listed(&cfg), [newest.as_str()]);

    // rm: by a unique prefix; unknown and short prefixes are refused.
    let (ok, _, err) = models(&cfg, &["rm", "00000000"]);
    assert!(
        !ok && err.contains("no cached shard starts with 00000000"),
        "{err}"
    );
    let (ok, _, err) = models(&cfg, &["rm", "abc"]);
    assert!(!ok && err.contains("at least 6 characters"), "{err}");
    let (ok, out, err) = models(&cfg, &["rm", &newest[..10]]);
    assert!(
        ok && out.contains(&format!("removed {newest}")),
        "{out}{err}"
    );
    assert!(listed(&cfg).is_empty());
}
