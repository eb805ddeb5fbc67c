//! Helpers for tests that run `edgeray` processes on loopback: children killed on drop, free
//! ports, cluster configurations, stderr forwarding, and the resident memory of a process.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child process, killed and reaped when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A UDP port free on 127.0.0.1 right now (QUIC listens on UDP).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind an ephemeral UDP port")
        .port()
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind an ephemeral TCP port")
        .port()
}

/// Writes `dir/<name>.toml`: a loopback cluster member `name` listening on UDP `port` (0 for
/// any), seeded with the other members' ports, without mDNS, with its state under `dir/<name>`.
pub fn write_cluster_config(
    dir: &Path,
    secret: &str,
    name: &str,
    port: u16,
    seeds: &[u16],
) -> PathBuf {
    let seeds: Vec<String> = seeds.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let text = format!(
        "secret = \"{secret}\"\ncluster_name = \"proc-test\"\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\nseeds = [{}]\nmdns = false\nstate_dir = \"{}\"\n",
        seeds.join(", "),
        dir.join(name).display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write the cluster config");
    path
}

/// Lines of a child's (piped) stderr, forwarded to the test's output with a `[tag]` prefix when
/// `echo` is set, and always to the returned channel.
pub fn stderr_lines(child: &mut Child, tag: &'static str, echo: bool) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if echo {
                eprintln!("[{tag}] {line}");
            }
            let _ = tx.send(line);
        }
    });
    rx
}

/// Waits for a line containing `needle`; panics after `timeout`.
pub fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return l,
            Ok(_) => {}
            Err(e) => panic!("no line containing {needle:?} within {timeout:?}: {e}"),
        }
    }
}

/// Resident set size of process `pid` in KiB (`VmRSS` of `/proc/<pid>/status`); `None` when
/// the process is gone or the field is missing.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// The `VmRSS:` value (KiB) of a `/proc/<pid>/status` text.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    status_field(status, "VmRSS")
}

/// Anonymous and file-backed resident memory of process `pid` in KiB (`RssAnon`, `RssFile`):
/// heap growth shows in the first, pages of memory-mapped weights in the second.
pub fn rss_anon_file_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some((
        status_field(&status, "RssAnon")?,
        status_field(&status, "RssFile")?,
    ))
}

/// A `Name:   123 kB` field of a `/proc/<pid>/status` text, as a number.
fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_from_status_text() {
        let text = "Name:\tedgeray\nVmPeak:\t  900 kB\nVmRSS:\t  123456 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(text), Some(123456));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(
            status_field("RssAnonX:\t5 kB\nRssAnon:\t7 kB\n", "RssAnon"),
            Some(7)
        );
        assert!(rss_kib(std::process::id()).is_some_and(|k| k > 0));
    }
}
