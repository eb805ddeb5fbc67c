//! `edgeray placement preview` on the real GGUF models with a synthetic nodes file.

use serde_json::Value;
use std::process::Command;

use edgeray_model::test_models::real_model as model;

const NODES: &str = r#"
[default_link]
rtt_ms = 0.5
bandwidth_mbit = 940

[[node]]
name = "pi-01"
memory_mib = 160
power_w = 6
compute_mib_s = 900

[[node]]
name = "pi-02"
memory_mib = 512
power_w = 7
compute_mib_s = 1200

[[node]]
name = "jetson"
memory_mib = 400
power_w = 15
compute_mib_s = 4000

[[node]]
name = "off"
memory_mib = 4096
compute_mib_s = 9000
up = false
"#;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgeray"))
        .args(args)
        .output()
        .expect("run edgeray")
}

#[test]
fn preview_json_places_gemma_within_budgets() {
    let Some(model) = model("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let nodes = dir.path().join("nodes.toml");
    std::fs::write(&nodes, NODES).unwrap();
    for policy in ["memory", "power", "throughput"] {
        let out = run(&[
            "placement",
            "preview",
            "--model",
            model.to_str().unwrap(),
            "--nodes",
            nodes.to_str().unwrap(),
            "--policy",
            policy,
            "--ctx",
            "2048",
            "--json",
            "--compare",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{policy}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_str(&stdout).unwrap();
        let n_layers = v["model"]["layer_bytes"].as_array().unwrap().len();
        assert_eq!(n_layers, 18, "gemma-3-270m has 18 layers");
        assert_eq!(v["model"]["context_length"], 2048);
        assert!(v["model"]["tied_embeddings"].as_bool().unwrap());
        let cands = v["candidates"].as_array().unwrap();
        assert_eq!(
            cands.len(),
            3,
            "3 usable nodes → one candidate per stage count"
        );
        let chosen: Vec<&Value> = cands.iter().filter(|c| c["chosen"] == true).collect();
        assert_eq!(chosen.len(), 1);
        for c in cands {
            assert!(
                c["excluded"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["name"] == "off" && e["reason"]["kind"] == "down")
            );
            if let Some(p) = c["outcome"].get("placed") {
                let mut next = 0;
                for s in p["stages"].as_array().unwrap() {
                    assert_eq!(s["layers"]["start"], next);
                    next = s["layers"]["end"].as_u64().unwrap();
                    assert!(
                        s["memory_bytes"].as_u64().unwrap()
                            <= s["memory_limit_bytes"].as_u64().unwrap()
                    );
                }
                assert_eq!(next as usize, n_layers);
                assert!(p["prediction"]["tokens_per_s"].as_f64().unwrap() > 0.0);
            }
        }
        assert_eq!(v["comparison"]["rows"].as_array().unwrap().len(), 3);
    }
}

#[test]
fn preview_text_and_errors() {
    let Some(model) = model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let nodes = dir.path().join("nodes.toml");
    std::fs::write(&nodes, NODES).unwrap();
    let m = model.to_str().unwrap();
    let n = nodes.to_str().unwrap();
    let out = run(&[
        "placement",
        "preview",
        "--model",
        m,
        "--nodes",
        n,
        "--ctx",
        "1024",
        "--compare",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("<= chosen"), "{stdout}");
    assert!(stdout.contains("left out off: node is down"), "{stdout}");
    assert!(stdout.contains("comparison of all policies"), "{stdout}");

    // too little memory: exit 1 with the shortfall
    let small = dir.path().join("small.toml");
    std::fs::write(
        &small,
        "[[node]]\nname = 'a'\nmemory_mib = 100\ncompute_mib_s = 100\n",
    )
    .unwrap();
    let out = run(&[
        "placement",
        "preview",
        "--model",
        m,
        "--nodes",
        small.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot be placed: needs") && stderr.contains("more: total budget 100 MiB"),
        "{stderr}"
    );

    let out = run(&[
        "placement",
        "preview",
        "--model",
        m,
        "--nodes",
        n,
        "--policy",
        "fastest",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("valid policies: memory, power, throughput")
    );
}
