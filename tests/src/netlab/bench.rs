//! `netlab bench HOSTS [ARGS...]`: `edgeray bench --config` on a lab of HOSTS network-namespace
//! hosts, each pinned to its own CPU (`taskset`), so that every host behaves like a separate
//! one-core board on a small machine. Hosts 2..=HOSTS run `edgeray node --threads 1`; host 1 runs
//! `edgeray bench --config ... --min-nodes HOSTS --threads 1 ARGS...` (its baseline: the whole
//! model on that one core) and its stdout is printed. Set `EDGERAY_BIN` to benchmark a release
//! build. Needs root.
//!
//! ```text
//! EDGERAY_BIN=target/release/edgeray target/debug/netlab bench 2 \
//!     --model models/gemma-3-270m-q4_k_m.gguf --stages 2 --streams 4 --gen-tokens 64 --json
//! ```

use std::process::Command;
use std::time::Duration;

use super::LabBuilder;
use crate::edgeray_bin;

const PORT: u16 = 7400;
const SECRET: &str = "6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e";

/// Runs the subcommand (`args` after `bench`).
pub fn main_with_args(args: &[String]) -> Result<(), String> {
    let hosts: usize = args
        .first()
        .and_then(|h| h.parse().ok())
        .filter(|&h| h >= 1)
        .ok_or("usage: netlab bench HOSTS [edgeray bench args...]")?;
    let lab = LabBuilder::new(hosts)
        .cpus_per_host(1)
        .ipv6(false)
        .build()
        .map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ips: Vec<String> = (1..=hosts)
        .map(|i| lab.ip(i).map(|ip| ip.to_string()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut configs = Vec::new();
    for i in 1..=hosts {
        let seeds: Vec<String> = (1..=hosts)
            .filter(|&j| j != i)
            .map(|j| format!("\"{}:{PORT}\"", ips[j - 1]))
            .collect();
        let path = dir.path().join(format!("h{i}.toml"));
        let text = format!(
            "secret = \"{SECRET}\"\ncluster_name = \"netlab-bench\"\nname = \"h{i}\"\nlisten = \"{}:{PORT}\"\nseeds = [{}]\nmdns = false\nstate_dir = \"{}\"\n",
            ips[i - 1],
            seeds.join(", "),
            dir.path().join(format!("h{i}")).display()
        );
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        configs.push(path);
    }
    let mut nodes = Vec::new();
    for i in 2..=hosts {
        let mut cmd = Command::new(edgeray_bin());
        cmd.args(["node", "--threads", "1", "--config"])
            .arg(&configs[i - 1]);
        nodes.push(lab.spawn(i, "node", cmd).map_err(|e| e.to_string())?);
    }
    let mut cmd = Command::new(edgeray_bin());
    cmd.args([
        "bench",
        "--threads",
        "1",
        "--min-nodes",
        &hosts.to_string(),
        "--config",
    ])
    .arg(&configs[0])
    .args(&args[1..]);
    let out = lab
        .run(1, "bench", cmd, Duration::from_secs(1800))
        .map_err(|e| e.to_string())?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(20).collect();
        for l in tail.into_iter().rev() {
            eprintln!("{l}");
        }
        return Err(format!("edgeray bench failed: {}", out.status));
    }
    drop(nodes);
    Ok(())
}
