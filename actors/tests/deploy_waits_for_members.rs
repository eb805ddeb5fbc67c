//! `edgeray run --config` started before the boards waits (bounded by `--discover`, saying so)
//! until the members `--stages` needs have joined; past the bound it fails naming what is up.

mod cli_util;

use cli_util::{Proc, edgeray, free_udp_port, model, write_config};
use std::time::Duration;

fn run_cmd(
    model: &std::path::Path,
    cfg: &std::path::Path,
    discover: &str,
) -> std::process::Command {
    let mut c = edgeray();
    c.args([
        "run",
        "--quiet",
        "--listen",
        "127.0.0.1:0",
        "--stages",
        "2",
        "--discover",
        discover,
        "--threads",
        "1",
        "--ctx",
        "256",
        "--max-tokens",
        "4",
        "--temperature",
        "0",
        "--prompt",
        "The capital of France is",
        "--model",
    ])
    .arg(model)
    .arg("--config")
    .arg(cfg);
    c
}

#[test]
fn run_waits_for_the_second_member_then_deploys() {
    let Some(model) = model("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let coord = write_config(dir.path(), "coord", 0, &[port]);
    let worker = write_config(dir.path(), "w1", port, &[]);

    let mut run = Proc::spawn(run_cmd(&model, &coord, "90s"), "run");
    let line = run.wait_for("waiting up to", Duration::from_secs(60));
    assert!(line.contains("the placement needs 2, up: 1"), "{line}");
    // The board comes up only now.
    std::thread::sleep(Duration::from_secs(2));
    let mut node = edgeray();
    node.arg("node").arg("--config").arg(&worker);
    let _node = Proc::spawn(node, "node");
    let up = run.wait_for("member(s) up", Duration::from_secs(60));
    assert!(
        up.starts_with("2 member(s) up") && up.contains("w1"),
        "{up}"
    );
    let status = run.wait_exit(Duration::from_secs(180)).expect("run ends");
    assert!(status.success(), "run failed: {:?}", run.drain());
}

#[test]
fn run_gives_up_after_the_bound_naming_the_members_up() {
    let Some(model) = model("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let coord = write_config(dir.path(), "coord", 0, &[free_udp_port()]);
    let t = std::time::Instant::now();
    let out = run_cmd(&model, &coord, "2s").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("waiting up to 2s for 1 more member(s)")
            && err.contains("only 1 of the 2 members the placement needs came up within 2s"),
        "{err}"
    );
    assert!(t.elapsed() >= Duration::from_secs(2));
    assert!(!err.contains("offers no 2-stage candidate"), "{err}");
}
