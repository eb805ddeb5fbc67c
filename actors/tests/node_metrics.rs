//! `edgeray node --http` on loopback: two real node processes; `/metrics` of the first shows
//! its memory, load, shard cache (a shard stored beforehand, the configured budget) and, once
//! measured, the RTT to the second; `/health` names the node.

mod cli_util;

use cli_util::{Proc, edgeray, free_udp_port, write_config};
use edgeray::pipeline::stage::{ShardStore, chunk_digest, content_hash};
use std::time::{Duration, Instant};

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn get(url: &str) -> (u16, String, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(url)
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (code, ct, r.text().await.unwrap())
    })
}

#[test]
fn node_http_serves_metrics_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_udp_port(), free_udp_port());
    let c1 = write_config(dir.path(), "w1", p1, &[]);
    let c2 = write_config(dir.path(), "w2", p2, &[p1]);
    let mut text = std::fs::read_to_string(&c1).unwrap();
    text.push_str("[limits]\nshard_cache = \"64MiB\"\n");
    std::fs::write(&c1, text).unwrap();
    // A shard already in w1's cache (state_dir/shards).
    let store = ShardStore::with_budget(dir.path().join("w1").join("shards"), 64 << 20).unwrap();
    let bytes = vec![5u8; 10_000];
    let hash = content_hash(&bytes);
    store.begin(&hash, 10_000, 10_000).unwrap();
    store
        .write_chunk(&hash, 10_000, 0, &bytes, &chunk_digest(&bytes))
        .unwrap();
    store.finish(&hash, 10_000).unwrap();

    let mut n1 = edgeray();
    n1.args([
        "node",
        "--threads",
        "1",
        "--http",
        "127.0.0.1:0",
        "--config",
    ])
    .arg(&c1);
    let w1 = Proc::spawn(n1, "w1");
    let line = w1.wait_for("metrics at", Duration::from_secs(60));
    let url = line.split_whitespace().last().unwrap().to_string();
    let base = url.trim_end_matches("/metrics").to_string();
    let mut n2 = edgeray();
    n2.args(["node", "--threads", "1", "--config"]).arg(&c2);
    let _w2 = Proc::spawn(n2, "w2");

    let (code, _, health) = get(&format!("{base}/health"));
    assert_eq!(code, 200);
    let h: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(h["node"], "w1");
    assert_eq!(h["status"], "ok");

    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (code, ct, body) = get(&url);
        assert_eq!(code, 200);
        assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
        if value(&body, "edgeray_link_rtt_seconds{peer=\"w2\"}").is_some() {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no RTT to w2 within 30 s:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let rtt = value(&body, "edgeray_link_rtt_seconds{peer=\"w2\"}").unwrap();
    assert!(rtt > 0.0 && rtt < 1.0, "{rtt}");
    assert!(value(&body, "edgeray_node_memory_total_bytes").unwrap() > 0.0);
    assert!(value(&body, "edgeray_node_memory_available_bytes").unwrap() > 0.0);
    assert!(value(&body, "edgeray_node_load1").is_some());
    assert!(value(&body, "edgeray_node_cpus").unwrap() >= 1.0);
    assert_eq!(
        value(&body, "edgeray_cluster_members{state=\"Up\"}"),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        value(&body, "edgeray_shard_cache_shards"),
        Some(1.0),
        "{body}"
    );
    assert!(value(&body, "edgeray_shard_cache_bytes").unwrap() >= 10_000.0);
    assert_eq!(
        value(&body, "edgeray_shard_cache_budget_bytes"),
        Some((64u64 << 20) as f64)
    );
    // Where /sys exposes a thermal zone, the temperature is there too.
    let has_zone = std::fs::read_dir("/sys/class/thermal")
        .map(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("thermal_zone"))
        })
        .unwrap_or(false);
    assert_eq!(
        body.contains("edgeray_node_temperature_celsius{sensor=\"max\"}"),
        has_zone,
        "{body}"
    );
    assert!(body.ends_with("# EOF\n"));
}

#[test]
fn node_http_refuses_an_address_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let c = write_config(dir.path(), "w3", free_udp_port(), &[]);
    let out = edgeray()
        .args(["node", "--threads", "1", "--http", &addr, "--config"])
        .arg(&c)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on {addr} (--http)")),
        "{err}"
    );
}
