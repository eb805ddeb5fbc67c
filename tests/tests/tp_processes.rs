//! Tensor-parallel groups across OS processes on 127.0.0.1, driven through the `edgeray`
//! binary (`--tp N`: every stage a group of N boards, each holding a slice of every matrix,
//! pieces all-gathered at every synchronisation point):
//!
//! - `edgeray run --config --tp 2` and `--tp 3` (two `edgeray node` workers plus the
//!   coordinator, a third member) print exactly `edgeray generate`'s greedy answer, for both
//!   real models;
//! - a group member SIGKILLed mid-answer: the pipeline fails over like after a stage loss and
//!   the answer completes identically.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use edgeray_tests::procs::{self, Proc, free_udp_port, wait_for_line, write_cluster_config};
use edgeray_tests::{GEMMA3, QWEN2, edgeray_bin, real_model, workspace_root};

const SECRET: &str = "7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a";

/// `edgeray generate`'s greedy answer (one thread, ctx 512).
fn generate(model: &Path, prompt: &str, tokens: usize) -> String {
    let out = Command::new(edgeray_bin())
        .current_dir(workspace_root())
        .args([
            "generate",
            "--threads",
            "1",
            "--ctx",
            "512",
            "--temperature",
            "0",
        ])
        .args([
            "--max-tokens",
            &tokens.to_string(),
            "--prompt",
            prompt,
            "--model",
        ])
        .arg(model)
        .output()
        .expect("edgeray generate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_command(
    model: &Path,
    cfg: &Path,
    min_nodes: usize,
    tp: usize,
    prompt: &str,
    tokens: usize,
) -> Command {
    let mut c = Command::new(edgeray_bin());
    c.current_dir(workspace_root())
        .args([
            "run",
            "--quiet",
            "--discover",
            "30s",
            "--listen",
            "127.0.0.1:0",
        ])
        .args([
            "--min-nodes",
            &min_nodes.to_string(),
            "--tp",
            &tp.to_string(),
        ])
        .args(["--threads", "1", "--ctx", "512", "--temperature", "0"])
        .args([
            "--max-tokens",
            &tokens.to_string(),
            "--prompt",
            prompt,
            "--model",
        ])
        .arg(model)
        .arg("--config")
        .arg(cfg);
    c
}

/// `n` worker processes (`edgeray node`, no model file) that know each other; returns them
/// and the coordinator's configuration.
fn workers(dir: &Path, n: usize) -> (Vec<(Proc, mpsc::Receiver<String>)>, std::path::PathBuf) {
    let names = ["worker-a", "worker-b", "worker-c", "worker-d"];
    let ports: Vec<u16> = (0..n).map(|_| free_udp_port()).collect();
    let mut out = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        let seeds: Vec<u16> = ports.iter().copied().filter(|&p| p != port).collect();
        let cfg = write_cluster_config(dir, SECRET, names[i], port, &seeds);
        let cwd = dir.join(format!("{}-cwd", names[i]));
        std::fs::create_dir_all(&cwd).unwrap();
        let mut c = Command::new(edgeray_bin())
            .current_dir(&cwd)
            .args(["node", "--threads", "1", "--config"])
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("edgeray node starts");
        let rx = procs::stderr_lines(&mut c, names[i], false);
        out.push((Proc(c), rx));
    }
    for (_, rx) in &out {
        wait_for_line(rx, "listening on", Duration::from_secs(60));
    }
    let coord = write_cluster_config(dir, SECRET, "coord", 0, &ports);
    (out, coord)
}

#[test]
fn tp_2_and_3_over_processes_match_generate() {
    let (Some(gemma), Some(qwen)) = (real_model(GEMMA3), real_model(QWEN2)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_workers, coord) = workers(dir.path(), 2);
    let cases = [
        (&qwen, "qwen2", "The capital of France is"),
        (&gemma, "gemma3", "The tallest mountain in the world is"),
    ];
    for (model, name, prompt) in cases {
        let want = generate(model, prompt, 24);
        for tp in [2, 3] {
            let out = run_command(model, &coord, 3, tp, prompt, 24)
                .output()
                .expect("edgeray run");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{name} --tp {tp}:\n{stderr}");
            assert!(
                stderr.contains(&format!("tp member {}", tp - 1)),
                "{name} --tp {tp}: a group of {tp}:\n{stderr}"
            );
            assert_eq!(
                stdout,
                format!("{want}\n"),
                "{name} --tp {tp} vs generate; stderr:\n{stderr}"
            );
            eprintln!("{name}: --tp {tp} over processes matches generate");
        }
    }
}

#[test]
fn a_killed_group_member_fails_over_and_the_answer_completes_identically() {
    let Some(qwen) = real_model(QWEN2) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut workers, coord) = workers(dir.path(), 3);
    let prompt = "Here is a long story about a dragon and a knight:";
    let tokens = 48;
    let want = generate(&qwen, prompt, tokens);
    let mut child = run_command(&qwen, &coord, 4, 2, prompt, tokens)
        .args(["--stages", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("edgeray run");
    let err = procs::stderr_lines(&mut child, "coord", true);
    // The group member (not the leader) is a worker: find which.
    let line = wait_for_line(&err, "tp member 1 on", Duration::from_secs(120));
    let victim = line
        .split("tp member 1 on")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("member's node")
        .to_string();
    let idx = ["worker-a", "worker-b", "worker-c"]
        .iter()
        .position(|w| victim.starts_with(w))
        .unwrap_or_else(|| panic!("member 1 on {victim}, not a worker"));
    // Kill it once a few tokens have streamed.
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let t = Instant::now();
    while got.len() < 20 && t.elapsed() < Duration::from_secs(120) {
        if let Ok(b) = rx.recv_timeout(Duration::from_millis(50)) {
            got.extend(b);
        }
    }
    assert!(got.len() >= 20, "the answer started streaming");
    eprintln!(
        "killing group member 1 ({victim}) after {} bytes",
        got.len()
    );
    workers[idx].0.0.kill().unwrap();
    let killed = Instant::now();
    while let Ok(b) = rx.recv_timeout(Duration::from_secs(180)) {
        got.extend(b);
    }
    let status = child.wait().unwrap();
    eprintln!("answer completed {:?} after the kill", killed.elapsed());
    assert!(status.success(), "run failed after the member's loss");
    assert_eq!(
        String::from_utf8_lossy(&got),
        format!("{want}\n"),
        "the answer completes identically after a group member's loss"
    );
}
