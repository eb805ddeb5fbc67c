//! Helpers shared by the tests that start the `edgeray` binary: model paths (SKIP outside CI
//! when missing), free ports, a child process killed on drop, and stderr line waiting.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `edgeray` binary under test.
pub fn edgeray() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edgeray"));
    c.stdin(Stdio::null());
    c
}

/// A real model under `models/`; `None` (SKIP printed) when missing outside CI.
#[allow(unused_imports)] // not every test that shares these helpers runs a real model
pub use edgeray_model::test_models::real_model as model;

/// A TCP port free right now on 127.0.0.1.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A UDP port free right now on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process with its stderr lines on a channel (and echoed, tagged, for test logs);
/// killed when dropped.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Its stderr, line by line.
    pub lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Spawns `cmd` with stderr piped (stdout as `cmd` sets it: inherited by default).
    pub fn spawn(mut cmd: Command, tag: &'static str) -> Proc {
        let mut child = cmd.stderr(Stdio::piped()).spawn().expect("edgeray starts");
        let err = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines: rx }
    }

    /// The first stderr line containing `needle` within `timeout`; panics otherwise (with the
    /// lines seen).
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(l) => seen.push(l),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!(
            "no stderr line with {needle:?} within {timeout:?}; saw:\n{}",
            seen.join("\n")
        );
    }
}

impl Proc {
    /// Waits up to `timeout` for the process to exit; its status, or `None` if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every stderr line received so far (not yet taken by `wait_for`).
    pub fn drain(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

/// Writes a loopback cluster config `dir/NAME.toml` (mDNS off, state under `dir/NAME`) for a
/// member listening on `127.0.0.1:port`, seeded to `seeds`.
pub fn write_config(dir: &std::path::Path, name: &str, port: u16, seeds: &[u16]) -> PathBuf {
    let seeds: Vec<String> = seeds.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let text = format!(
        "secret = \"{}\"\ncluster_name = \"ops-test\"\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\nseeds = [{}]\nmdns = false\nstate_dir = \"{}\"\n",
        "6d".repeat(32),
        seeds.join(", "),
        dir.join(name).display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write the cluster config");
    path
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
