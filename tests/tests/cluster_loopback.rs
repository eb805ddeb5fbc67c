//! Three `edgeray node` processes on 127.0.0.1 joined by seeds (mDNS off), observed through
//! `edgeray status --json`: all Up; a SIGKILLed node is Down within 10 s; a SIGTERMed node
//! leaves gracefully (exit 0, Down with reason `left`). Also `edgeray init` safety.
//!
//! Needs the binary: `cargo build -p edgeray` first (see `edgeray_tests::edgeray_bin`).

use edgeray_tests::edgeray_bin;
use serde_json::Value;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills every child on drop (a failing test must not leave nodes behind).
struct Nodes(Vec<(String, Child)>);
impl Drop for Nodes {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(edgeray_bin())
        .args(args)
        .output()
        .expect("run edgeray")
}

fn status(config: &Path) -> Option<Value> {
    let out = run(&[
        "status",
        "--config",
        config.to_str().unwrap(),
        "--json",
        "--timeout",
        "2s",
        "--discover",
        "0s",
    ]);
    if !out.status.success() {
        eprintln!("status failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("status --json prints JSON"))
}

fn member<'a>(st: &'a Value, name: &str) -> Option<&'a Value> {
    st["members"].as_array()?.iter().find(|m| m["name"] == name)
}

fn wait_until(
    what: &str,
    timeout: Duration,
    config: &Path,
    mut ok: impl FnMut(&Value) -> bool,
) -> (Value, Duration) {
    let start = Instant::now();
    let mut last = Value::Null;
    while start.elapsed() < timeout {
        if let Some(st) = status(config) {
            if ok(&st) {
                return (st, start.elapsed());
            }
            last = st;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {timeout:?} waiting for {what}; last status: {last:#}");
}

fn spawn_node(config: &Path, name: &str, port: u16, dir: &Path) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Command::new(edgeray_bin())
        .args(["--log", "info", "node", "--config"])
        .arg(config)
        .args([
            "--name",
            name,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--memory-budget",
            "1GiB",
        ])
        .args(["--power-budget", "5W", "--state-dir"])
        .arg(dir.join(name))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn edgeray node")
}

#[test]
fn init_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let first = run(&["init", "--dir", d]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let path = dir.path().join("cluster.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let again = run(&["init", "--dir", d]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "not overwritten"
    );
    assert!(run(&["init", "--dir", d, "--force"]).status.success());
    assert_ne!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "--force writes a new secret"
    );
}

#[test]
fn three_node_processes_kill_and_leave() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["init", "--dir", dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let config: PathBuf = dir.path().join("cluster.toml");
    // Seeds only (no multicast in this test); `listen` points `status` at node n1.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "listen = \"0.0.0.0:7070\"",
            &format!("listen = \"127.0.0.1:{}\"", ports[0]),
        )
        .replace(
            "seeds = []",
            &format!("seeds = [\"127.0.0.1:{}\"]", ports[0]),
        )
        .replace("mdns = true", "mdns = false");
    std::fs::write(&config, text).unwrap();

    let names = ["n1", "n2", "n3"];
    let mut nodes = Nodes(Vec::new());
    for (i, name) in names.iter().enumerate() {
        nodes.0.push((
            name.to_string(),
            spawn_node(&config, name, ports[i], dir.path()),
        ));
    }
    let (st, took) = wait_until("3 Up members", Duration::from_secs(30), &config, |st| {
        st["members"]
            .as_array()
            .is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["state"] == "Up"))
    });
    eprintln!("3 members Up after {took:?}");
    assert_eq!(st["schema"], 1);
    let heads: Vec<&Value> = st["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["is_head"] == true)
        .collect();
    assert_eq!(heads.len(), 1, "exactly one head");
    assert_eq!(st["head"], heads[0]["node_id"]);
    let n2 = member(&st, "n2").unwrap();
    assert_eq!(n2["memory_budget_bytes"], 1u64 << 30);
    assert_eq!(n2["power_budget_mw"], 5000);
    assert_eq!(n2["backend"], "cpu");
    assert!(n2["compute_score"].as_f64().unwrap() > 0.0);
    assert!(n2["rtt_ms"].as_f64().is_some());
    assert_eq!(n2["address"], format!("127.0.0.1:{}", ports[1]));

    // SIGKILL n3: no goodbye; the QUIC idle timeout / heartbeat silence must mark it Down.
    let killed = Instant::now();
    nodes.0[2].1.kill().unwrap();
    nodes.0[2].1.wait().unwrap();
    let (st, _) = wait_until("n3 Down", Duration::from_secs(15), &config, |st| {
        member(st, "n3").is_some_and(|m| m["state"] == "Down")
    });
    let down_after = killed.elapsed();
    eprintln!(
        "n3 Down after {down_after:?}: {}",
        member(&st, "n3").unwrap()
    );
    assert!(
        down_after < Duration::from_secs(10),
        "Down took {down_after:?}"
    );

    // SIGTERM n2: goodbye, exit code 0, Down with reason `left`.
    let pid = nodes.0[1].1.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let code = wait_exit(&mut nodes.0[1].1, Duration::from_secs(10));
    assert_eq!(code, Some(0), "SIGTERM exits 0");
    let (st, took) = wait_until("n2 Down (left)", Duration::from_secs(5), &config, |st| {
        member(st, "n2").is_some_and(|m| m["state"] == "Down")
    });
    eprintln!("n2 Down after {took:?}: {}", member(&st, "n2").unwrap());
    assert_eq!(member(&st, "n2").unwrap()["down_reason"], "left");
    let log = std::fs::read_to_string(dir.path().join("n1.log")).unwrap();
    assert!(log.contains("member up name=n2"), "{log}");
    assert!(log.contains("member down name=n2"), "{log}");
    let n2_log = std::fs::read_to_string(dir.path().join("n2.log")).unwrap();
    assert!(n2_log.contains("goodbye sent to"), "{n2_log}");
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}
