//! `edgeray sim` and `edgeray model profile`, run as the binary, on the shipped profiles.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

use edgeray_model::test_models::real_model as model;

fn profiles(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../profiles")
        .join(rel)
        .to_string_lossy()
        .into_owned()
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgeray"))
        .args(args)
        .output()
        .expect("run edgeray")
}

fn sim_json(extra: &[&str]) -> Value {
    let nodes = profiles("clusters/pi5x4-gigabit.toml");
    let m = profiles("models/llama3-8b-q4_k_m.json");
    let mut args = vec!["sim", "--nodes", &nodes, "--model-profile", &m, "--json"];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn sim_json_reports_tokens_per_s_for_a_shipped_model_and_cluster() {
    let one = sim_json(&["--stages", "1", "--gen-tokens", "32"]);
    let tps = one["tokens_per_s"].as_f64().unwrap();
    let decode = one["decode_tokens_per_s"].as_f64().unwrap();
    // one Pi 5 streams ~4.6 GB of Llama 3 8B weights per token at 8000 MiB/s: ~1.8 tokens/s
    assert!((1.5..2.2).contains(&decode), "{decode}");
    assert!(tps > 0.0 && tps <= decode);
    assert_eq!(one["placement"]["stages"].as_array().unwrap().len(), 1);
    assert!(one["joules_per_token"].as_f64().unwrap() > 0.0);
    // a 4-board tensor-parallel group is faster for one stream than one board
    let tp = sim_json(&["--stages", "1", "--tp", "4", "--gen-tokens", "32"]);
    assert!(tp["decode_tokens_per_s"].as_f64().unwrap() > 2.0 * decode);
    assert_eq!(
        tp["pipeline"]["stages"][0]["nodes"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // four streams through four stages: more aggregate tokens/s than one stream
    let streams = sim_json(&["--stages", "4", "--streams", "4", "--gen-tokens", "32"]);
    assert!(streams["tokens_per_s"].as_f64().unwrap() > 2.0 * tps);
}

#[test]
fn sim_failures_replay_and_unknown_nodes_are_named() {
    let r = sim_json(&["--stages", "2", "--gen-tokens", "40", "--fail", "pi5-2@5"]);
    let f = &r["failures"][0];
    assert_eq!(f["in_pipeline"], true);
    assert!(f["replayed_tokens"].as_u64().unwrap() > 16);
    assert_eq!(r["tokens"], 40);
    assert_eq!(r["stalled"], false);
    assert!(
        r["tbt"]["max_s"].as_f64().unwrap() > 8.0,
        "detect 3 s + redeploy 5 s"
    );

    let nodes = profiles("clusters/pi5x4-gigabit.toml");
    let m = profiles("models/llama3-8b-q4_k_m.json");
    let out = run(&[
        "sim",
        "--nodes",
        &nodes,
        "--model-profile",
        &m,
        "--fail",
        "nosuch@3",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`nosuch`") && err.contains("pi5-1"), "{err}");
}

#[test]
fn sim_is_deterministic_for_a_seed() {
    let args = |seed: &'static str| {
        vec![
            "--stages",
            "2",
            "--streams",
            "3",
            "--gen-tokens",
            "24",
            "--jitter",
            "0.1",
            "--seed",
            seed,
        ]
    };
    let a = sim_json(&args("7"));
    let b = sim_json(&args("7"));
    let c = sim_json(&args("8"));
    assert_eq!(a, b);
    assert_ne!(a["duration_s"], c["duration_s"]);
}

#[test]
fn sim_csv_has_a_header_and_a_row() {
    let nodes = profiles("boards/pi4-8gb.toml");
    let m = profiles("models/qwen2.5-7b-q4_k_m.json");
    let out = run(&["sim", "--nodes", &nodes, "--model-profile", &m, "--csv"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with("model,policy,stages,tp,streams,"));
    // fields, with commas inside quotes (the model name has one) not separating
    let cols = |l: &str| {
        let mut quoted = false;
        1 + l
            .chars()
            .filter(|&c| {
                if c == '"' {
                    quoted = !quoted;
                }
                c == ',' && !quoted
            })
            .count()
    };
    assert!(lines[1].starts_with("\"Qwen2.5 7B (Q4_K_M, from"));
    assert_eq!(cols(lines[0]), cols(lines[1]));
}

#[test]
fn model_profile_of_a_gguf_feeds_the_simulator() {
    let Some(gguf) = model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") else {
        return;
    };
    let out = run(&["model", "profile", gguf.to_str().unwrap(), "--ctx", "2048"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["layer_bytes"].as_array().unwrap().len(), 24);
    assert_eq!(p["context_length"], 2048);
    assert_eq!(p["ffn_size"], 4864);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.json");
    std::fs::write(&path, &out.stdout).unwrap();
    let nodes = profiles("boards/pi5-8gb.toml");
    let out = run(&[
        "sim",
        "--nodes",
        &nodes,
        "--model-profile",
        path.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["tokens_per_s"].as_f64().unwrap() > 5.0);
}

#[test]
fn bench_json_predicts_next_to_the_measurement() {
    let Some(gguf) = model("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let out = run(&[
        "bench",
        "--local",
        "2",
        "--model",
        gguf.to_str().unwrap(),
        "--gen-tokens",
        "8",
        "--threads",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let r: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let measured = r["cluster_tokens_per_s"].as_f64().unwrap();
    let predicted = r["predicted_tokens_per_s"].as_f64().unwrap();
    assert!(measured > 0.0 && predicted > 0.0, "{r}");
    assert!(r["predicted_aggregate_tokens_per_s"].as_f64().unwrap() > 0.0);
    // the existing keys stay
    for k in [
        "baseline_tokens_per_s",
        "cluster_aggregate_tokens_per_s",
        "placement",
    ] {
        assert!(r.get(k).is_some(), "{k}");
    }
}

#[test]
fn sim_calibrates_from_a_trace() {
    // records of a known curve: 1e9 B/s, batch cost 0.1, KV reads at 2e9 B/s
    let (c, beta, ckv, l, h) = (1.0e9, 0.1, 2.0e9, 3.0e8, 1.0e8);
    let mut text = String::new();
    for k in [1.0f64, 2.0, 4.0] {
        for kv in [0.0, 1.0e6, 1.0e7] {
            let t = (l + h) / c + beta / c * (l + h) * (k - 1.0) + kv / ckv;
            text.push_str(&format!(
                "{{\"node\":\"pi5\",\"stage\":0,\"layers\":8,\"layer_bytes\":{l},\"head_bytes\":{h},\"positions\":{k},\"sequences\":{k},\"kv_read_bytes\":{kv},\"compute_s\":{t},\"runs\":5}}\n"
            ));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    std::fs::write(&trace, text).unwrap();
    let nodes = profiles("boards/pi5-8gb.toml");
    let m = profiles("models/qwen2.5-7b-q4_k_m.json");
    let base = ["sim", "--nodes", &nodes, "--model-profile", &m, "--json"];
    let out = run(&[&base[..], &["--calibrate", trace.to_str().unwrap()]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cal = &r["calibration"][0];
    let near = |v: &Value, want: f64| (v.as_f64().unwrap() / want - 1.0).abs() < 1e-6;
    assert!(near(&cal["compute_bytes_per_s"], c), "{cal}");
    assert!(near(&cal["batch_cost"], beta), "{cal}");
    assert!(near(&cal["kv_bytes_per_s"], ckv), "{cal}");
    // the simulation runs on the fitted board: 1e9 B/s instead of the file's 8000 MiB/s
    assert!(near(
        &r["pipeline"]["stages"][0]["nodes"][0]["compute_bytes_per_s"],
        c
    ));
    let plain: Value = serde_json::from_slice(&run(&base).stdout).unwrap();
    assert!(r["decode_tokens_per_s"].as_f64() < plain["decode_tokens_per_s"].as_f64());
    // a traced node the nodes file lacks is named
    let other = profiles("boards/pi4-8gb.toml");
    let out = run(&[
        "sim",
        "--nodes",
        &other,
        "--model-profile",
        &m,
        "--calibrate",
        trace.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`pi5`"));
}

#[test]
fn sweep_writes_a_row_per_configuration_and_a_pareto_chart() {
    let a = profiles("clusters/pi5x4-gigabit.toml");
    let b = profiles("boards/pi4-8gb.toml");
    let nodes = format!("{a},{b}");
    let m = profiles("models/llama3-70b-q4_k_m.json");
    let small = profiles("models/llama3-8b-q4_k_m.json");
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("pareto.svg");
    let out = run(&[
        "sim",
        "--sweep",
        "--nodes",
        &nodes,
        "--model-profile",
        &small,
        "--policy",
        "throughput,power",
        "--streams",
        "1,4",
        "--ctx",
        "1024,4096",
        "--gen-tokens",
        "16",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // 2 nodes files × 2 contexts × 2 policies × 2 stream counts
    assert_eq!(lines.len(), 1 + 16);
    assert!(lines[0].starts_with("nodes,policy,ctx,model,stages,tp,streams,"));
    assert!(
        lines[1..].iter().all(|l| l.ends_with(',')),
        "no errors: {text}"
    );
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("Pareto front"));
    assert_eq!(chart.matches("<circle").count(), 16 + 1);
    // a 70B model fits no Pi 4: the rows say why
    let out = run(&["sim", "--sweep", "--nodes", &b, "--model-profile", &m]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let row = text.lines().nth(1).unwrap();
    assert!(
        row.starts_with("pi4-8gb,throughput,4096,") && row.contains("GiB more"),
        "{row}"
    );
    // without --sweep a list is refused
    let out = run(&["sim", "--nodes", &nodes, "--model-profile", &small]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nodes takes one value"));
}
