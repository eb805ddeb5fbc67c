//! Three `edgeray node` processes on 127.0.0.1 joined by seeds (mDNS off), observed through
//! `edgeray status --json`: all Up; a SIGKILLed node is Down within 10 s; a SIGTERMed node
//! leaves gracefully (exit 0, Down with reason `left`). Also `edgeray init` safety, and one
//! process per state directory (a second node on the same folder exits at once).
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

/// Waits until `log` contains `needle` (the node writes its stderr there); false on timeout.
fn wait_for_log(log: &Path, needle: &str, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if std::fs::read_to_string(log).is_ok_and(|t| t.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn a_second_node_on_the_same_state_dir_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let init = run(&["init", "--dir", d.to_str().unwrap()]);
    assert!(init.status.success());
    let config = d.join("cluster.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("mdns = true", "mdns = false")).unwrap();
    // Both nodes get the same --state-dir: `shared` (spawn_node uses dir/<name>).
    let first = spawn_node(&config, "shared", free_port(), d);
    let mut nodes = Nodes(vec![("first".into(), first)]);
    let first_pid = nodes.0[0].1.id();
    assert!(
        wait_for_log(
            &d.join("shared.log"),
            "listening on",
            Duration::from_secs(30)
        ),
        "first node did not start: {}",
        std::fs::read_to_string(d.join("shared.log")).unwrap_or_default()
    );
    // The second process: same state dir, its own port and log.
    let log2 = d.join("second.log");
    let started = Instant::now();
    let mut second = Command::new(edgeray_bin())
        .args(["--log", "info", "node", "--config"])
        .arg(&config)
        .args(["--name", "second", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(["--memory-budget", "1GiB", "--state-dir"])
        .arg(d.join("shared"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log2).unwrap())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = second.kill();
            let _ = second.wait();
            panic!(
                "second node on the same state dir still runs after 10 s: {}",
                std::fs::read_to_string(&log2).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&log2).unwrap();
    assert!(!status.success(), "second node exited {status}: {err}");
    assert!(
        err.contains(&d.join("shared").display().to_string()),
        "names the folder: {err}"
    );
    assert!(
        err.contains(&format!("pid {first_pid}")),
        "names the other process: {err}"
    );
    assert!(!err.contains("listening on"), "{err}");
    // The lock goes with its holder, even killed: the folder is usable again.
    let (_, mut first) = nodes.0.pop().unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    let again = spawn_node(&config, "shared", free_port(), d);
    nodes.0.push(("again".into(), again));
    assert!(
        wait_for_log(
            &d.join("shared.log"),
            "listening on",
            Duration::from_secs(30)
        ),
        "restart after the holder died: {}",
        std::fs::read_to_string(d.join("shared.log")).unwrap_or_default()
    );
}

#[test]
fn revoke_by_name_edits_the_file_and_the_members_drop_the_node() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        run(&["init", "--dir", dir.path().to_str().unwrap()])
            .status
            .success()
    );
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let config: PathBuf = dir.path().join("cluster.toml");
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
    let mut nodes = Nodes(Vec::new());
    for (i, name) in ["r1", "r2"].iter().enumerate() {
        nodes.0.push((
            name.to_string(),
            spawn_node(&config, name, ports[i], dir.path()),
        ));
    }
    wait_until("2 Up members", Duration::from_secs(30), &config, |st| {
        st["members"]
            .as_array()
            .is_some_and(|m| m.len() == 2 && m.iter().all(|m| m["state"] == "Up"))
    });
    let out = run(&["revoke", "--config", config.to_str().unwrap(), "r2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("revoked r2"), "{err}");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("# Node ids every member refuses"),
        "comments kept"
    );
    assert_eq!(
        edgeray_runtime::config::ClusterConfig::load(&config)
            .unwrap()
            .revoked
            .len(),
        1
    );
    // r1 (which `status` asks) re-reads the file and drops r2 within 10 s.
    let (st, took) = wait_until("r2 revoked", Duration::from_secs(10), &config, |st| {
        member(st, "r2").is_some_and(|m| m["revoked"] == true && m["state"] != "Up")
    });
    eprintln!("r2 dropped {took:?} after the revoke");
    assert_eq!(member(&st, "r1").unwrap()["state"], "Up");
    // Revoking it again changes nothing.
    let again = run(&["revoke", "--config", config.to_str().unwrap(), "r2"]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already revoked"));
    // An unknown name is a clear error and leaves the file alone.
    let before = std::fs::read_to_string(&config).unwrap();
    let bad = run(&["revoke", "--config", config.to_str().unwrap(), "nobody"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no member"));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);
}
