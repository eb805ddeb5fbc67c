//! Multi-host tests of the real `edgeray` binary in a network-namespace lab
//! (`edgeray_tests::netlab`): mDNS discovery, failure detection on a cable cut, refusal of a
//! node with another secret, seeds-only formation with multicast blocked, and `edgeray status`
//! from a host that is not a member (found by mDNS, every announced address tried).
//!
//! Every node runs `edgeray node` inside its own lab host; membership is read with
//! `edgeray status --json` run inside a host. Needs root (else `SKIP: <reason>`, a failure with
//! `EDGERAY_REQUIRE_NETLAB=1`) and a built binary (`cargo build -p edgeray`).
//! Run: `cargo test -p edgeray-tests --test netlab_cluster -- --test-threads=1 --nocapture`.

use anyhow::{Context, Result, bail};
use edgeray_tests::netlab::{self, Lab, LabBuilder, Proc};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// QUIC port of every node.
const PORT: u16 = 7070;
/// Upper bound for one `edgeray status` run.
const STATUS_TIMEOUT: Duration = Duration::from_secs(8);

/// A member as reported by `edgeray status --json`.
#[derive(Debug, Clone, PartialEq)]
struct Member {
    name: String,
    state: String,
}

/// 32 random bytes as 64 hex characters (a cluster secret).
fn random_secret() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A running cluster test: the lab, a folder for configs and state, and the node processes.
struct Cluster {
    lab: Lab,
    dir: tempfile::TempDir,
    bin: PathBuf,
    nodes: BTreeMap<usize, Proc>,
}

impl Cluster {
    /// Start a lab of `hosts` hosts, or `None` after printing `SKIP: ...`.
    fn new(hosts: usize) -> Result<Option<Cluster>> {
        let Some(lab) = netlab::start_or_skip(LabBuilder::new(hosts))? else {
            return Ok(None);
        };
        let bin = edgeray_tests::edgeray_bin();
        let dir = tempfile::Builder::new()
            .prefix("edgeray-netlab-cluster-")
            .tempdir()?;
        Ok(Some(Cluster {
            lab,
            dir,
            bin,
            nodes: BTreeMap::new(),
        }))
    }

    /// Write a cluster config named `name` with `secret` and `seeds`; returns its path.
    fn write_config(&self, name: &str, secret: &str, seeds: &[String]) -> Result<PathBuf> {
        let seeds = seeds
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            r#"secret = "{secret}"
cluster_name = "netlab"
seeds = [{seeds}]
mdns = true
interfaces = ["eth0"]

# The hosts share the machine's /proc/meminfo: report fixed resources instead.
[resources]
memory_total = "2GiB"
memory_free = "1GiB"
compute_score = 100.0
"#
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// `n<i>`: the node name of host `i`.
    fn node_name(i: usize) -> String {
        format!("n{i}")
    }

    /// Start `edgeray node` on host `i` with `config`.
    fn start_node(&mut self, i: usize, config: &Path) -> Result<()> {
        let ip = self.lab.ip(i)?;
        let state = self.dir.path().join(format!("state-{i}"));
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--log", "info,edgeray_runtime=debug", "node", "--config"])
            .arg(config)
            .args(["--name", &Self::node_name(i)])
            .args(["--listen", &format!("{ip}:{PORT}")])
            .args(["--interface", "eth0", "--state-dir"])
            .arg(&state)
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1");
        let proc = self.lab.spawn(i, "node", cmd)?;
        self.nodes.insert(i, proc);
        Ok(())
    }

    /// Fail early (with its log) if a node has exited.
    fn check_nodes_running(&mut self) -> Result<()> {
        for (i, p) in self.nodes.iter_mut() {
            if let Some(st) = p.try_status() {
                bail!("node on host {i} exited ({st}):\n{}", p.tail(60));
            }
        }
        Ok(())
    }

    /// Run `edgeray status --json` on host `i`; the members it lists.
    fn status(&mut self, i: usize, config: &Path) -> Result<Vec<Member>> {
        let mut cmd = Command::new(&self.bin);
        // Ask this host's own node (it listens on its eth0 address, not on 127.0.0.1).
        let node = format!("{}:{PORT}", self.lab.ip(i)?);
        cmd.args(["status", "--config"])
            .arg(config)
            .args(["--json", "--node", &node])
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1");
        let out = self.lab.run(i, "status", cmd, STATUS_TIMEOUT)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "edgeray status on host {i} failed ({}): {}{}",
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        parse_members(&stdout)
            .with_context(|| format!("parsing `edgeray status --json`:\n{stdout}"))
    }

    /// Poll `status` on host `i` until `done(members)` holds; returns the time it took.
    fn wait_status(
        &mut self,
        i: usize,
        config: &Path,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Member]) -> bool,
    ) -> Result<Duration> {
        let start = Instant::now();
        let mut history = Vec::new();
        while start.elapsed() < timeout {
            self.check_nodes_running()?;
            let at = start.elapsed();
            let result = self.status(i, config);
            let took = start.elapsed() - at;
            let summary = match &result {
                Ok(m) => summarize(m),
                Err(e) => format!("error: {}", format!("{e:#}").replace('\n', " | ")),
            };
            history.push(format!(
                "  +{:.2}s ({:.2}s) {summary}",
                at.as_secs_f64(),
                took.as_secs_f64()
            ));
            if result.as_ref().is_ok_and(|m| done(m)) {
                if verbose() {
                    println!("host {i} polls until {what}:\n{}", history.join("\n"));
                }
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let logs = self.logs_tail(30);
        bail!(
            "host {i}: not {what} within {timeout:?}; status polls:\n{}\n{logs}",
            history.join("\n")
        )
    }

    /// The last lines of every node's log, for failure messages.
    fn logs_tail(&self, n: usize) -> String {
        self.nodes
            .iter()
            .map(|(i, p)| format!("--- node on host {i} ---\n{}\n", p.tail(n)))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Graceful stop first (so nodes say goodbye), the lab kills whatever is left.
        for p in self.nodes.values_mut() {
            p.terminate(Duration::from_secs(3));
        }
    }
}

/// Extract the members from `edgeray status --json` output: either a top-level array of member
/// objects or an object with a `members` array; each member has a `name` and a `state`.
fn parse_members(json: &str) -> Result<Vec<Member>> {
    let v: serde_json::Value = serde_json::from_str(json.trim())?;
    let list = match &v {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(o) => o
            .get("members")
            .and_then(|m| m.as_array())
            .context("no `members` array")?,
        _ => bail!("neither an array nor an object"),
    };
    list.iter()
        .map(|m| {
            let name = m
                .get("name")
                .and_then(|n| n.as_str())
                .context("member without `name`")?;
            let state = m
                .get("state")
                .or_else(|| m.get("status"))
                .and_then(|s| s.as_str())
                .context("member without `state`")?;
            Ok(Member {
                name: name.to_string(),
                state: state.to_string(),
            })
        })
        .collect()
}

/// The reason in a refusal log line: `rejected peer ADDR: REASON` (node) or
/// `peer connection rejected addr=ADDR reason=REASON` (transport); `None` for other lines.
fn refusal_reason(line: &str) -> Option<&str> {
    let lower = line.to_ascii_lowercase();
    let at = lower.find("rejected")?;
    let rest = &line[at..];
    let reason = match rest.split_once("reason=") {
        Some((_, r)) => r,
        None => rest.split_once(": ")?.1,
    };
    let reason = reason.trim();
    (!reason.is_empty()).then_some(reason)
}

/// `EDGERAY_NETLAB_VERBOSE` set: print every status poll.
fn verbose() -> bool {
    std::env::var_os("EDGERAY_NETLAB_VERBOSE").is_some()
}

/// `n1:Up n2:Down ...`
fn summarize(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}:{}", m.name, m.state))
        .collect::<Vec<_>>()
        .join(" ")
}

fn state_of<'a>(members: &'a [Member], name: &str) -> Option<&'a str> {
    members
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.state.as_str())
}

fn is_up(members: &[Member], name: &str) -> bool {
    state_of(members, name).is_some_and(|s| s.eq_ignore_ascii_case("up"))
}

fn all_up(members: &[Member], hosts: impl IntoIterator<Item = usize>) -> bool {
    hosts
        .into_iter()
        .all(|i| is_up(members, &Cluster::node_name(i)))
}

#[test]
fn parse_members_accepts_both_shapes() -> Result<()> {
    let a = parse_members(r#"[{"name":"n1","state":"Up"},{"name":"n2","state":"Down"}]"#)?;
    assert!(is_up(&a, "n1") && !is_up(&a, "n2"));
    let b = parse_members(r#"{"cluster":"x","members":[{"name":"n1","status":"up","addr":"1"}]}"#)?;
    assert!(is_up(&b, "n1"));
    assert!(parse_members("{}").is_err());
    Ok(())
}

#[test]
fn refusal_reasons_are_recognised() {
    let node = "2026-11-24T16:40:00Z  WARN edgeray_runtime::node: rejected peer 10.77.3.4:7070: TLS handshake failed: invalid peer certificate: UnknownIssuer";
    assert_eq!(
        refusal_reason(node),
        Some("TLS handshake failed: invalid peer certificate: UnknownIssuer")
    );
    let transport = "WARN edgeray_runtime::transport::endpoint: peer connection rejected addr=10.77.3.4:7070 reason=wrong cluster";
    assert_eq!(refusal_reason(transport), Some("wrong cluster"));
    assert_eq!(refusal_reason("INFO member up name=n1"), None);
    assert_eq!(refusal_reason("rejected peer 1.2.3.4:7070:  "), None);
}

/// 1 + 2: four nodes find each other by mDNS alone within 3 s; a cut node is marked Down by
/// the others within 10 s and is Up again after the cable is healed.
#[test]
fn mdns_discovery_and_cable_cut() -> Result<()> {
    let Some(mut c) = Cluster::new(4)? else {
        return Ok(());
    };
    let cfg = c.write_config("cluster", &random_secret()?, &[])?;
    for i in 1..=4 {
        c.start_node(i, &cfg)?;
    }
    let started = Instant::now();
    c.wait_status(1, &cfg, "4 members Up", Duration::from_secs(15), |m| {
        all_up(m, 1..=4)
    })?;
    let formed = started.elapsed();
    println!(
        "mDNS: 4 members Up on host 1 {:.2} s after the last node started",
        formed.as_secs_f64()
    );
    assert!(
        formed <= Duration::from_secs(3),
        "cluster took {formed:?} to form (limit 3 s)"
    );
    for i in 2..=4 {
        c.wait_status(i, &cfg, "4 members Up", Duration::from_secs(5), |m| {
            all_up(m, 1..=4)
        })?;
    }

    c.lab.cut(4)?;
    let cut = Instant::now();
    for i in 1..=3 {
        c.wait_status(i, &cfg, "n4 Down", Duration::from_secs(20), |m| {
            state_of(m, "n4").is_some_and(|s| s.eq_ignore_ascii_case("down"))
        })?;
        println!(
            "cut: host {i} marks n4 Down {:.2} s after the cut",
            cut.elapsed().as_secs_f64()
        );
    }
    let down = cut.elapsed();
    assert!(
        down <= Duration::from_secs(10),
        "n4 Down after {down:?} (limit 10 s)"
    );
    for i in 1..=3 {
        let m = c.status(i, &cfg)?;
        assert!(
            all_up(&m, 1..=3),
            "host {i}: live members must stay Up while n4 is cut: {m:?}"
        );
    }

    c.lab.heal(4)?;
    let healed = Instant::now();
    for i in 1..=4 {
        c.wait_status(
            i,
            &cfg,
            "4 members Up after heal",
            Duration::from_secs(30),
            |m| all_up(m, 1..=4),
        )?;
        println!(
            "heal: host {i} sees 4 members Up {:.2} s after the heal",
            healed.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// 3: a node started with another secret is never admitted, and the refusal is logged with
/// its reason.
#[test]
fn node_with_wrong_secret_is_refused() -> Result<()> {
    let Some(mut c) = Cluster::new(4)? else {
        return Ok(());
    };
    let good = c.write_config("good", &random_secret()?, &[])?;
    // The intruder also dials host 1 directly, so the refusal happens even if mDNS filtering
    // by cluster id keeps the members from dialing it.
    let seed = format!("{}:{PORT}", c.lab.ip(1)?);
    let bad = c.write_config("bad", &random_secret()?, &[seed])?;
    for i in 1..=3 {
        c.start_node(i, &good)?;
    }
    c.start_node(4, &bad)?;
    c.wait_status(1, &good, "3 members Up", Duration::from_secs(15), |m| {
        all_up(m, 1..=3)
    })?;
    // Give the intruder ample time: mDNS announcements, several seed dials.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(6) {
        for i in 1..=3 {
            let m = c.status(i, &good)?;
            assert!(
                state_of(&m, "n4").is_none_or(|s| !s.eq_ignore_ascii_case("up")),
                "host {i} admitted n4: {m:?}"
            );
        }
        let m = c.status(4, &bad)?;
        assert!(
            !(1..=3).any(|i| is_up(&m, &Cluster::node_name(i))),
            "n4 sees good members Up: {m:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    c.check_nodes_running()?;
    // The refusal must be logged with a reason on at least one side.
    let logs: Vec<(usize, String)> = c.nodes.iter().map(|(i, p)| (*i, p.output())).collect();
    let refusal = logs
        .iter()
        .flat_map(|(i, log)| log.lines().map(move |l| (*i, l)))
        .find(|(_, l)| refusal_reason(l).is_some());
    match refusal {
        Some((i, line)) => println!("refusal logged on host {i}: {line}"),
        None => bail!(
            "no refusal with a reason in any node log\n{}",
            c.logs_tail(40)
        ),
    }
    Ok(())
}

/// `edgeray status --config` on a laptop that is not a member: no local node, no seed, only
/// mDNS, whose announcements carry IPv6 link-local addresses beside the IPv4 ones. Five runs in
/// a row must each list both members (before, 3 of 5 failed on "invalid remote address
/// [fe80::…%2]").
#[test]
fn status_from_a_non_member_host() -> Result<()> {
    let Some(mut c) = Cluster::new(3)? else {
        return Ok(());
    };
    let cfg = c.write_config("good", &random_secret()?, &[])?;
    for i in 1..=2 {
        c.start_node(i, &cfg)?;
    }
    c.wait_status(1, &cfg, "2 members Up", Duration::from_secs(15), |m| {
        all_up(m, 1..=2)
    })?;
    for run in 1..=5 {
        let mut cmd = Command::new(&c.bin);
        cmd.args(["status", "--config"])
            .arg(&cfg)
            .args([
                "--json",
                "--interface",
                "eth0",
                "--timeout",
                "2s",
                "--discover",
                "10s",
            ])
            .current_dir(c.dir.path())
            .env("NO_COLOR", "1");
        let out = c.lab.run(3, "status", cmd, Duration::from_secs(30))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("run {run}: status from the non-member host failed: {stderr}");
        }
        let members = parse_members(&stdout)?;
        if !all_up(&members, 1..=2) || members.len() != 2 {
            bail!("run {run}: the non-member host saw {}", summarize(&members));
        }
    }
    Ok(())
}

/// 4: with multicast blocked on the switch, nodes that know a seed still form the cluster.
#[test]
fn seeds_only_without_multicast() -> Result<()> {
    let Some(mut c) = Cluster::new(4)? else {
        return Ok(());
    };
    c.lab.block_multicast()?;
    let seed = format!("{}:{PORT}", c.lab.ip(1)?);
    let cfg = c.write_config("cluster", &random_secret()?, &[seed])?;
    for i in 1..=4 {
        c.start_node(i, &cfg)?;
    }
    let started = Instant::now();
    for i in [4, 1, 2, 3] {
        c.wait_status(
            i,
            &cfg,
            "4 members Up (seeds only)",
            Duration::from_secs(20),
            |m| all_up(m, 1..=4),
        )?;
        println!(
            "seeds: host {i} sees 4 members Up {:.2} s after the last start",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
