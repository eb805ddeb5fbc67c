//! Network-namespace lab: a LAN of N emulated hosts on one Linux machine, for multi-host tests.
//!
//! Layout of one lab (`<id>` = `<pid of the creating process>-<sequence number>`):
//!
//! ```text
//!  namespace edgeray-lab-<id>-sw      the "switch": Linux bridge br0 (no IP address, no STP,
//!                                     no multicast snooping), one port p<i> per host
//!  namespace edgeray-lab-<id>-h<i>    host i (1-based): lo up, eth0 = 10.77.<k>.<i>/24,
//!                                     route 224.0.0.0/4 dev eth0, NO default route,
//!                                     rp_filter 0, IPv6 disabled (or accept_dad=0 when enabled)
//!  cable i                            veth pair p<i> (switch ns) <-> eth0 (host ns)
//! ```
//!
//! Nothing of a lab lives in the machine's own network namespace: the bridge sits in a private
//! namespace that has no link to the outside, so no lab packet can be routed out, and the host's
//! firewall (a Docker-style `FORWARD` drop policy seen through `br_netfilter`) never sees lab
//! frames. Labs are therefore fully isolated from each other, even with identical subnets; the
//! `<k>` octet is still varied per lab so addresses in logs tell labs apart.
//!
//! Hosts are addressed by their 1-based index (`1..=n`), matching the last address octet.
//! Dropping a [`Lab`] kills every process inside its namespaces (TERM, then KILL), then deletes
//! the namespaces (which deletes veths, bridge and IFB devices). [`cleanup_stale`] removes labs
//! left behind by crashed test processes; [`LabBuilder::build`] calls it.
//!
//! CPUs: by default every host shares all of the machine's CPUs. [`LabBuilder::cpus_per_host`]
//! (or [`LabBuilder::host_cpus`]) gives each host its own CPU(s), like separate boards: every
//! process started in a pinned host runs under `taskset -c <its cpus>`, so its affinity mask
//! (and `available_parallelism`, which edgeray caps its kernel threads to) shows only them.
//! Memory bandwidth and caches stay shared.
//!
//! Tools used: `ip`, `tc`, `bridge` (iproute2), `kill` (procps), `sh`, `taskset` (util-linux,
//! pinned hosts only). Needs root (or
//! CAP_NET_ADMIN + CAP_SYS_ADMIN); without it [`start_or_skip`] reports `SKIP: <reason>`, unless
//! `EDGERAY_REQUIRE_NETLAB=1` is set, which turns the skip into an error.

pub mod bench;
pub mod probe;

use std::fmt;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Prefix of every namespace a lab creates; [`cleanup_stale`] only ever touches these.
pub const NS_PREFIX: &str = "edgeray-lab-";

/// Environment variable that turns "netlab unavailable" into a failure (CI sets it to `1`).
pub const REQUIRE_ENV: &str = "EDGERAY_REQUIRE_NETLAB";

/// Name of the bridge inside the switch namespace.
const BRIDGE: &str = "br0";

/// How often log files are re-read while waiting for a line.
const POLL: Duration = Duration::from_millis(20);

/// Grace period between SIGTERM and SIGKILL when tearing processes down.
const KILL_GRACE: Duration = Duration::from_secs(3);

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);
static PROC_SEQ: AtomicU32 = AtomicU32::new(0);

/// Everything that can go wrong while building or driving a lab.
#[derive(Debug)]
pub enum LabError {
    /// The machine cannot host a lab (not root, namespaces forbidden, `ip` missing): a SKIP.
    Unavailable(String),
    /// The lab is unavailable but [`REQUIRE_ENV`] demands it: a failure.
    Required(String),
    /// A host index outside `1..=hosts`.
    NoSuchHost {
        /// The index asked for.
        index: usize,
        /// Number of hosts in the lab.
        hosts: usize,
    },
    /// A lab configuration value that cannot work.
    InvalidConfig(String),
    /// A helper command (`ip`, `tc`, ...) exited unsuccessfully.
    Command {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: String,
        /// Its standard error output.
        stderr: String,
    },
    /// An I/O error (spawning a process, reading a log file, ...).
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A bounded wait ran out.
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it waited.
        after: Duration,
        /// The last lines of the process output, for the test log.
        log_tail: String,
    },
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabError::Unavailable(r) => write!(f, "network-namespace lab unavailable: {r}"),
            LabError::Required(r) => write!(
                f,
                "network-namespace lab required ({REQUIRE_ENV}=1) but unavailable: {r}"
            ),
            LabError::NoSuchHost { index, hosts } => {
                write!(
                    f,
                    "no host {index} in a lab of {hosts} hosts (hosts are 1..={hosts})"
                )
            }
            LabError::InvalidConfig(r) => write!(f, "invalid lab configuration: {r}"),
            LabError::Command {
                cmd,
                status,
                stderr,
            } => {
                write!(f, "`{cmd}` failed ({status}): {}", stderr.trim())
            }
            LabError::Io { what, source } => write!(f, "I/O error while {what}: {source}"),
            LabError::Timeout {
                what,
                after,
                log_tail,
            } => {
                write!(f, "timed out after {after:?} waiting for {what}")?;
                if !log_tail.is_empty() {
                    write!(f, "\n--- last output ---\n{log_tail}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LabError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LabError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

/// Whether [`REQUIRE_ENV`] is set to `1`.
pub fn netlab_required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// Build a lab, or print `SKIP: <reason>` and return `Ok(None)` when this machine cannot host
/// one. With `EDGERAY_REQUIRE_NETLAB=1` an unavailable lab is `Err(LabError::Required)`.
pub fn start_or_skip(builder: LabBuilder) -> Result<Option<Lab>, LabError> {
    match builder.build() {
        Ok(lab) => Ok(Some(lab)),
        Err(LabError::Unavailable(reason)) if netlab_required() => Err(LabError::Required(reason)),
        Err(LabError::Unavailable(reason)) => {
            eprintln!("SKIP: {reason}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Why this machine cannot host a lab, or `None` when it can (root and `ip` present; the
/// namespace creation itself is probed by [`LabBuilder::build`]).
pub fn unavailable_reason() -> Option<String> {
    match effective_uid() {
        Some(0) => {}
        Some(uid) => {
            return Some(format!(
                "netlab needs root (network namespaces, veths and bridges need CAP_NET_ADMIN and \
                 CAP_SYS_ADMIN); running as uid {uid}"
            ));
        }
        None => return Some("cannot read the effective uid from /proc/self/status".into()),
    }
    if !tool_exists("ip") {
        return Some("`ip` (iproute2) is not installed".into());
    }
    None
}

fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn tool_exists(name: &str) -> bool {
    Command::new(name)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Run a helper command to completion; non-zero exit is an error carrying its stderr.
fn sh(cmd: &mut Command) -> Result<String, LabError> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("running `{line}`")))?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String, LabError> {
    sh(Command::new("ip").args(args))
}

/// `ip -n NS ARGS...`
fn ip_n(ns: &str, args: &[&str]) -> Result<String, LabError> {
    sh(Command::new("ip").arg("-n").arg(ns).args(args))
}

/// `tc -n NS ARGS...`
fn tc_n(ns: &str, args: &[&str]) -> Result<String, LabError> {
    sh(Command::new("tc").arg("-n").arg(ns).args(args))
}

/// `bridge -n NS ARGS...`
fn bridge_n(ns: &str, args: &[&str]) -> Result<String, LabError> {
    sh(Command::new("bridge").arg("-n").arg(ns).args(args))
}

/// Configuration of a lab; [`LabBuilder::build`] creates it.
#[derive(Debug, Clone)]
pub struct LabBuilder {
    hosts: usize,
    subnet: Option<[u8; 3]>,
    rate: Option<String>,
    ipv6: bool,
    cpus: CpuPlan,
}

/// Which CPUs the processes of each host may run on (see [`LabBuilder::cpus_per_host`]).
#[derive(Debug, Clone, Default)]
enum CpuPlan {
    /// Unpinned: every host shares all of the machine's CPUs.
    #[default]
    Shared,
    /// `n` CPUs per host, assigned in turn (host 1: `0..n`, host 2: `n..2n`, ... modulo the
    /// machine's CPU count).
    PerHost(usize),
    /// Explicit CPU lists per host index (1-based); hosts not listed are unpinned.
    Lists(Vec<(usize, Vec<usize>)>),
}

impl LabBuilder {
    /// A lab of `hosts` hosts (1..=250) with default settings: subnet `10.77.<k>.0/24` with a
    /// per-lab `k`, no shaping, IPv6 disabled.
    pub fn new(hosts: usize) -> Self {
        LabBuilder {
            hosts,
            subnet: None,
            rate: None,
            ipv6: false,
            cpus: CpuPlan::Shared,
        }
    }

    /// Give every host its own `n` CPU(s), like separate boards: every process started in host
    /// `i` ([`Lab::spawn`], [`Lab::run`], [`Lab::command_in`]) runs under `taskset -c` on CPUs
    /// `(i-1)*n .. i*n` (modulo the CPUs this process may use, so more hosts than cores share
    /// them in turn). Kernel threads follow: a node never starts more than
    /// `available_parallelism()` (its affinity mask). Memory bandwidth stays shared.
    pub fn cpus_per_host(mut self, n: usize) -> Self {
        self.cpus = CpuPlan::PerHost(n.max(1));
        self
    }

    /// Pin host `index` (1-based) to exactly `cpus` (e.g. the baseline host of a benchmark to
    /// both cores while others get one); overrides [`LabBuilder::cpus_per_host`] for all hosts.
    pub fn host_cpus(mut self, index: usize, cpus: &[usize]) -> Self {
        let mut lists = match self.cpus {
            CpuPlan::Lists(l) => l,
            _ => Vec::new(),
        };
        lists.retain(|(i, _)| *i != index);
        lists.push((index, cpus.to_vec()));
        self.cpus = CpuPlan::Lists(lists);
        self
    }

    /// Use the subnet `a.b.c.0/24` instead of the default `10.77.<k>.0/24`.
    pub fn subnet(mut self, a: u8, b: u8, c: u8) -> Self {
        self.subnet = Some([a, b, c]);
        self
    }

    /// Shape every host's cable with tbf to `rate` (tc syntax, e.g. `100mbit`), both directions.
    pub fn rate(mut self, rate: &str) -> Self {
        self.rate = Some(rate.to_string());
        self
    }

    /// Keep IPv6 enabled in the hosts (link-local only, `accept_dad=0`). Default: disabled.
    pub fn ipv6(mut self, enabled: bool) -> Self {
        self.ipv6 = enabled;
        self
    }

    /// Create the lab: removes stale labs of dead processes first, then builds the switch
    /// namespace, the host namespaces and the cables. On any error everything already created
    /// is removed again.
    pub fn build(self) -> Result<Lab, LabError> {
        if !(1..=250).contains(&self.hosts) {
            return Err(LabError::InvalidConfig(format!(
                "{} hosts requested; a lab has 1..=250",
                self.hosts
            )));
        }
        if let Some(reason) = unavailable_reason() {
            return Err(LabError::Unavailable(reason));
        }
        cleanup_stale();
        let pid = std::process::id();
        let seq = LAB_SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("{pid}-{seq}");
        let k = (((pid as u64) * 7 + seq as u64) % 250 + 1) as u8;
        let subnet = self.subnet.unwrap_or([10, 77, k]);
        let log_dir = tempfile::Builder::new()
            .prefix(&format!("edgeray-lab-{id}-"))
            .tempdir()
            .map_err(io_err("creating the lab log folder"))?;
        let switch_ns = format!("{NS_PREFIX}{id}-sw");
        let machine: Vec<usize> = allowed_cpus();
        let cpus_of = |i: usize| -> Option<Vec<usize>> {
            match &self.cpus {
                CpuPlan::Shared => None,
                CpuPlan::PerHost(n) => Some(
                    (0..*n)
                        .map(|k| machine[((i - 1) * n + k) % machine.len()])
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                ),
                CpuPlan::Lists(l) => l.iter().find(|(h, _)| *h == i).map(|(_, c)| c.clone()),
            }
        };
        let hosts = (1..=self.hosts)
            .map(|i| Host {
                index: i,
                name: format!("h{i}"),
                ns: format!("{NS_PREFIX}{id}-h{i}"),
                ip: Ipv4Addr::new(subnet[0], subnet[1], subnet[2], i as u8),
                cpus: cpus_of(i),
            })
            .collect();
        let lab = Lab {
            id,
            subnet,
            switch_ns,
            hosts,
            log_dir: Some(log_dir),
            keep_logs: std::env::var_os("EDGERAY_NETLAB_KEEP_LOGS").is_some(),
        };
        // On error `lab` is dropped here, which removes whatever was created.
        lab.create_switch()?;
        for i in 1..=self.hosts {
            lab.create_host(i, self.ipv6)?;
            if let Some(rate) = &self.rate {
                lab.shape(i, Some(rate))?;
            }
        }
        Ok(lab)
    }
}

/// One emulated host of a [`Lab`].
#[derive(Debug, Clone)]
pub struct Host {
    index: usize,
    name: String,
    ns: String,
    ip: Ipv4Addr,
    cpus: Option<Vec<usize>>,
}

/// The CPUs this process may run on (its affinity mask, from `/proc/self/status`), or
/// `0..available_parallelism` if that cannot be read.
fn allowed_cpus() -> Vec<usize> {
    let parsed = fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("Cpus_allowed_list:"))?;
        let list = line.split(':').nth(1)?.trim();
        let mut out = Vec::new();
        for part in list.split(',') {
            match part.split_once('-') {
                Some((a, b)) => {
                    out.extend(a.trim().parse::<usize>().ok()?..=b.trim().parse().ok()?)
                }
                None => out.push(part.trim().parse().ok()?),
            }
        }
        (!out.is_empty()).then_some(out)
    });
    parsed.unwrap_or_else(|| {
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
    })
}

impl Host {
    /// The CPUs its processes are pinned to (`None`: unpinned).
    pub fn cpus(&self) -> Option<&[usize]> {
        self.cpus.as_deref()
    }

    /// 1-based index (= last octet of its address).
    pub fn index(&self) -> usize {
        self.index
    }
    /// Short name, `h<index>`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Name of its network namespace (for `ip netns exec`).
    pub fn netns(&self) -> &str {
        &self.ns
    }
    /// Its IPv4 address on `eth0`.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
}

/// A running lab; dropping it kills its processes and deletes all its namespaces and links.
#[derive(Debug)]
pub struct Lab {
    id: String,
    subnet: [u8; 3],
    switch_ns: String,
    hosts: Vec<Host>,
    log_dir: Option<tempfile::TempDir>,
    keep_logs: bool,
}

impl Lab {
    /// A lab of `hosts` hosts with default settings (see [`LabBuilder`]).
    pub fn new(hosts: usize) -> Result<Lab, LabError> {
        LabBuilder::new(hosts).build()
    }

    /// Start configuring a lab of `hosts` hosts.
    pub fn builder(hosts: usize) -> LabBuilder {
        LabBuilder::new(hosts)
    }

    /// Unique id of this lab (`<pid>-<seq>`), part of every namespace name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The first three octets of the lab subnet (`a.b.c.0/24`).
    pub fn subnet(&self) -> [u8; 3] {
        self.subnet
    }

    /// All hosts, index 1 first.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host `index` (1-based).
    pub fn host(&self, index: usize) -> Result<&Host, LabError> {
        index
            .checked_sub(1)
            .and_then(|i| self.hosts.get(i))
            .ok_or(LabError::NoSuchHost {
                index,
                hosts: self.hosts.len(),
            })
    }

    /// IPv4 address of host `index`.
    pub fn ip(&self, index: usize) -> Result<Ipv4Addr, LabError> {
        Ok(self.host(index)?.ip)
    }

    /// Folder holding the stdout/stderr files of spawned processes (deleted on drop unless
    /// `EDGERAY_NETLAB_KEEP_LOGS` is set).
    pub fn log_dir(&self) -> &Path {
        self.log_dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/nonexistent"))
    }

    fn port(index: usize) -> String {
        format!("p{index}")
    }

    fn ifb(index: usize) -> String {
        format!("ifb{index}")
    }

    fn create_switch(&self) -> Result<(), LabError> {
        let ns = &self.switch_ns;
        if let Err(e) = ip(&["netns", "add", ns]) {
            return Err(match e {
                LabError::Command { stderr, .. } => LabError::Unavailable(format!(
                    "`ip netns add` is not permitted here: {}",
                    stderr.trim()
                )),
                other => other,
            });
        }
        // Bridged frames in this namespace must never meet iptables (there are no rules in a
        // fresh namespace anyway; this keeps it so even if a tool adds some).
        let _ = sh(Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c"])
            .arg(
                "echo 0 > /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null; \
             echo 0 > /proc/sys/net/bridge/bridge-nf-call-ip6tables 2>/dev/null; \
             echo 0 > /proc/sys/net/bridge/bridge-nf-call-arptables 2>/dev/null; true",
            ));
        ip_n(ns, &["link", "add", BRIDGE, "type", "bridge"])?;
        // No STP and no forward delay: ports forward at once. No snooping: all multicast floods.
        ip_n(
            ns,
            &[
                "link",
                "set",
                BRIDGE,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
                "mcast_snooping",
                "0",
            ],
        )?;
        ip_n(ns, &["link", "set", BRIDGE, "up"])?;
        Ok(())
    }

    fn create_host(&self, index: usize, ipv6: bool) -> Result<(), LabError> {
        let host = self.host(index)?;
        let ns = &host.ns;
        ip(&["netns", "add", ns])?;
        // Per-namespace sysctls; the `default` values must be set before eth0 exists.
        let v6 = if ipv6 { "0" } else { "1" };
        let script = format!(
            "for c in all default; do \
               echo 0 > /proc/sys/net/ipv4/conf/$c/rp_filter || exit 1; \
               if [ -d /proc/sys/net/ipv6 ]; then \
                 echo 0 > /proc/sys/net/ipv6/conf/$c/accept_dad; \
                 echo {v6} > /proc/sys/net/ipv6/conf/$c/disable_ipv6; \
               fi; \
             done"
        );
        sh(Command::new("ip").args(["netns", "exec", ns, "sh", "-c", &script]))?;
        ip_n(ns, &["link", "set", "lo", "up"])?;
        let port = Self::port(index);
        ip_n(
            &self.switch_ns,
            &[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
        )?;
        ip_n(&self.switch_ns, &["link", "set", &port, "master", BRIDGE])?;
        ip_n(&self.switch_ns, &["link", "set", &port, "up"])?;
        let mac = format!(
            "02:ee:{:02x}:{:02x}:{:02x}:{:02x}",
            host.ip.octets()[0],
            host.ip.octets()[1],
            host.ip.octets()[2],
            index
        );
        ip_n(ns, &["link", "set", "eth0", "address", &mac])?;
        ip_n(
            ns,
            &["addr", "add", &format!("{}/24", host.ip), "dev", "eth0"],
        )?;
        ip_n(ns, &["link", "set", "eth0", "multicast", "on", "up"])?;
        // Sockets that do not choose an interface need a route for multicast; no default route.
        ip_n(ns, &["route", "replace", "224.0.0.0/4", "dev", "eth0"])?;
        Ok(())
    }

    /// Cut host `index`'s cable: its switch port goes down, so its `eth0` loses carrier
    /// (NO-CARRIER) and no frame passes in either direction.
    pub fn cut(&self, index: usize) -> Result<(), LabError> {
        self.host(index)?;
        ip_n(
            &self.switch_ns,
            &["link", "set", &Self::port(index), "down"],
        )?;
        Ok(())
    }

    /// Silently cut host `index`: the bridge port stops forwarding but both ends keep carrier,
    /// so the host cannot notice locally (like a failed switch further away).
    pub fn cut_silent(&self, index: usize) -> Result<(), LabError> {
        self.host(index)?;
        bridge_n(
            &self.switch_ns,
            &["link", "set", "dev", &Self::port(index), "state", "0"],
        )?;
        Ok(())
    }

    /// Undo [`Lab::cut`] / [`Lab::cut_silent`] for host `index`.
    pub fn heal(&self, index: usize) -> Result<(), LabError> {
        self.host(index)?;
        let port = Self::port(index);
        ip_n(&self.switch_ns, &["link", "set", &port, "up"])?;
        bridge_n(
            &self.switch_ns,
            &["link", "set", "dev", &port, "state", "3"],
        )?;
        Ok(())
    }

    /// Stop the switch from forwarding any multicast (mDNS included) between hosts; unicast and
    /// broadcast (ARP) still pass. Implemented with the bridge port flag `mcast_flood off`.
    pub fn block_multicast(&self) -> Result<(), LabError> {
        self.set_mcast_flood(false)
    }

    /// Undo [`Lab::block_multicast`].
    pub fn unblock_multicast(&self) -> Result<(), LabError> {
        self.set_mcast_flood(true)
    }

    fn set_mcast_flood(&self, on: bool) -> Result<(), LabError> {
        let flag = if on { "on" } else { "off" };
        for h in &self.hosts {
            bridge_n(
                &self.switch_ns,
                &[
                    "link",
                    "set",
                    "dev",
                    &Self::port(h.index),
                    "mcast_flood",
                    flag,
                ],
            )?;
        }
        Ok(())
    }

    /// Limit host `index`'s cable to `rate` (tc syntax, e.g. `10mbit`) in both directions with
    /// tbf (`None` removes the limit). Switch-to-host on the port's egress; host-to-switch via an
    /// IFB device fed by an ingress redirect. All of it lives in the switch namespace, so the
    /// host sees no qdisc.
    pub fn shape(&self, index: usize, rate: Option<&str>) -> Result<(), LabError> {
        self.host(index)?;
        if !tool_exists("tc") {
            return Err(LabError::Unavailable(
                "`tc` (iproute2) is not installed".into(),
            ));
        }
        let sw = &self.switch_ns;
        let port = Self::port(index);
        let ifb = Self::ifb(index);
        // Remove previous shaping; "no such qdisc/device" is fine.
        let _ = tc_n(sw, &["qdisc", "del", "dev", &port, "root"]);
        let _ = tc_n(sw, &["qdisc", "del", "dev", &port, "ingress"]);
        let _ = ip_n(sw, &["link", "del", &ifb]);
        let Some(rate) = rate else { return Ok(()) };
        let tbf = [
            "root", "tbf", "rate", rate, "burst", "64kb", "latency", "20ms",
        ];
        let mut args = vec!["qdisc", "add", "dev", &port];
        args.extend(tbf);
        tc_n(sw, &args)?;
        ip_n(sw, &["link", "add", &ifb, "type", "ifb"])?;
        ip_n(sw, &["link", "set", &ifb, "up"])?;
        tc_n(
            sw,
            &["qdisc", "add", "dev", &port, "handle", "ffff:", "ingress"],
        )?;
        tc_n(
            sw,
            &[
                "filter", "add", "dev", &port, "parent", "ffff:", "protocol", "all", "u32",
                "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", &ifb,
            ],
        )?;
        let mut args = vec!["qdisc", "add", "dev", &ifb];
        args.extend(tbf);
        tc_n(sw, &args)?;
        Ok(())
    }

    /// Build the command that runs `cmd` inside host `index` (`ip netns exec`, under
    /// `taskset -c` when the host is pinned to CPUs), keeping its arguments, environment and
    /// working directory.
    pub fn command_in(&self, index: usize, cmd: &Command) -> Result<Command, LabError> {
        let host = self.host(index)?;
        let mut out = Command::new("ip");
        out.args(["netns", "exec", &host.ns]);
        if let Some(cpus) = &host.cpus {
            let list: Vec<String> = cpus.iter().map(|c| c.to_string()).collect();
            out.args(["taskset", "-c", &list.join(",")]);
        }
        out.arg(cmd.get_program()).args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => out.env(k, v),
                None => out.env_remove(k),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            out.current_dir(dir);
        }
        out.env("EDGERAY_LAB_HOST", &host.name)
            .env("EDGERAY_LAB_ADDR", host.ip.to_string());
        Ok(out)
    }

    /// Start `cmd` inside host `index`; stdin is closed, stdout/stderr go to files in
    /// [`Lab::log_dir`] named after `label`. The process runs in its own process group.
    pub fn spawn(&self, index: usize, label: &str, cmd: Command) -> Result<Proc, LabError> {
        let host = self.host(index)?;
        let mut wrapped = self.command_in(index, &cmd)?;
        let seq = PROC_SEQ.fetch_add(1, Ordering::Relaxed);
        let safe: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base = self.log_dir().join(format!("{}-{safe}-{seq}", host.name));
        let stdout_path = base.with_extension("out");
        let stderr_path = base.with_extension("err");
        let stdout = fs::File::create(&stdout_path)
            .map_err(io_err(format!("creating {}", stdout_path.display())))?;
        let stderr = fs::File::create(&stderr_path)
            .map_err(io_err(format!("creating {}", stderr_path.display())))?;
        let child = wrapped
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(io_err(format!(
                "spawning {:?} in {}",
                cmd.get_program(),
                host.name
            )))?;
        Ok(Proc {
            label: format!("{}:{safe}", host.name),
            child,
            stdout_path,
            stderr_path,
            exit: None,
        })
    }

    /// Run `cmd` inside host `index` to completion, killing it after `timeout`.
    pub fn run(
        &self,
        index: usize,
        label: &str,
        cmd: Command,
        timeout: Duration,
    ) -> Result<Output, LabError> {
        let mut proc = self.spawn(index, label, cmd)?;
        let status = proc.wait_timeout(timeout)?;
        let stdout = fs::read(&proc.stdout_path).map_err(io_err("reading stdout"))?;
        let stderr = fs::read(&proc.stderr_path).map_err(io_err("reading stderr"))?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Processes currently living in host `index`'s namespace.
    pub fn pids(&self, index: usize) -> Result<Vec<u32>, LabError> {
        let host = self.host(index)?;
        Ok(netns_pids(&host.ns))
    }

    fn teardown(&mut self) {
        let mut namespaces: Vec<String> = self.hosts.iter().map(|h| h.ns.clone()).collect();
        namespaces.push(self.switch_ns.clone());
        remove_namespaces(&namespaces);
        if let Some(dir) = self.log_dir.take()
            && self.keep_logs
        {
            let kept = dir.keep();
            eprintln!("netlab: logs kept in {}", kept.display());
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Kill every process in the given namespaces (TERM, then KILL after a grace period), then
/// delete the namespaces. Errors are reported on stderr, never raised: this runs in `Drop`.
fn remove_namespaces(namespaces: &[String]) {
    let existing: Vec<&String> = namespaces.iter().filter(|ns| netns_exists(ns)).collect();
    let all_pids = |_: ()| -> Vec<u32> { existing.iter().flat_map(|ns| netns_pids(ns)).collect() };
    let pids = all_pids(());
    if !pids.is_empty() {
        signal(&pids, "TERM");
        let deadline = Instant::now() + KILL_GRACE;
        while Instant::now() < deadline && !all_pids(()).is_empty() {
            std::thread::sleep(POLL);
        }
        let left = all_pids(());
        if !left.is_empty() {
            eprintln!("netlab: killing processes that ignored SIGTERM: {left:?}");
            signal(&left, "KILL");
            let deadline = Instant::now() + KILL_GRACE;
            while Instant::now() < deadline && !all_pids(()).is_empty() {
                std::thread::sleep(POLL);
            }
        }
    }
    for ns in existing {
        if let Err(e) = ip(&["netns", "del", ns]) {
            eprintln!("netlab: cannot delete namespace {ns}: {e}");
        }
    }
}

fn netns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// `ip netns pids NS` (empty when the namespace is gone).
fn netns_pids(ns: &str) -> Vec<u32> {
    ip(&["netns", "pids", ns])
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Send `SIG<sig>` to `pids` (negative values address process groups); failures are ignored
/// (the process may already be gone).
fn signal(pids: &[u32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The lab ids (`<pid>-<seq>`) of all lab namespaces on this machine, with their namespaces.
fn lab_namespaces() -> Vec<(u32, String)> {
    let Ok(dir) = fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|name| {
            let rest = name.strip_prefix(NS_PREFIX)?;
            let pid: u32 = rest.split('-').next()?.parse().ok()?;
            Some((pid, name))
        })
        .collect()
}

/// Remove labs whose creating process is gone (a crashed or killed test run): their processes
/// are killed and their namespaces deleted. Returns the namespaces removed.
pub fn cleanup_stale() -> Vec<String> {
    let stale: Vec<String> = lab_namespaces()
        .into_iter()
        .filter(|(pid, _)| !process_alive(*pid))
        .map(|(_, ns)| ns)
        .collect();
    if !stale.is_empty() {
        eprintln!("netlab: removing {} stale lab namespace(s)", stale.len());
        remove_namespaces(&stale);
    }
    stale
}

/// Whether `pid` is a live process (a zombie counts as dead: it holds no namespace).
fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Format: `pid (comm) state ...`; comm may contain spaces and parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Remove every lab namespace on this machine, including those of running processes (for a
/// human cleaning up by hand). Returns the namespaces removed.
pub fn cleanup_all() -> Vec<String> {
    let all: Vec<String> = lab_namespaces().into_iter().map(|(_, ns)| ns).collect();
    remove_namespaces(&all);
    all
}

/// A process started inside a lab host by [`Lab::spawn`]; killed (with its process group) on
/// drop if still running.
#[derive(Debug)]
pub struct Proc {
    label: String,
    child: Child,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    exit: Option<ExitStatus>,
}

impl Proc {
    /// `<host>:<label>` as given to [`Lab::spawn`].
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Process id (also its process-group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// File receiving its stdout.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout_path
    }

    /// File receiving its stderr.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// Everything it wrote so far: stdout, then stderr, with ANSI colour sequences removed
    /// (log lines stay greppable even when a logger colours its output).
    pub fn output(&self) -> String {
        let out = fs::read(&self.stdout_path).unwrap_or_default();
        let err = fs::read(&self.stderr_path).unwrap_or_default();
        strip_ansi(&format!(
            "{}{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        ))
    }

    /// The last `n` lines of [`Proc::output`].
    pub fn tail(&self, n: usize) -> String {
        let all = self.output();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Wait until a line of stdout or stderr contains `needle`; returns that line.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String, LabError> {
        self.wait_for(
            &format!("a line containing {needle:?}"),
            |l| l.contains(needle),
            timeout,
        )
    }

    /// Wait until a line of stdout or stderr satisfies `pred`; returns that line. Fails early
    /// if the process exits without printing one.
    pub fn wait_for(
        &mut self,
        what: &str,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self.try_status().is_some();
            if let Some(line) = self.output().lines().find(|l| pred(l)) {
                return Ok(line.to_string());
            }
            if exited || Instant::now() >= deadline {
                let what = match self.exit {
                    Some(st) => format!("{what} from {} (it exited: {st})", self.label),
                    None => format!("{what} from {}", self.label),
                };
                return Err(LabError::Timeout {
                    what,
                    after: timeout,
                    log_tail: self.tail(40),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Its exit status if it has exited (non-blocking).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Wait for it to exit by itself; after `timeout` it is killed and this is an error.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus, LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status() {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(LabError::Timeout {
                    what: format!("{} to exit (killed)", self.label),
                    after: timeout,
                    log_tail: self.tail(40),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Graceful stop: SIGTERM to its process group, SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: Duration) -> ExitStatus {
        if let Some(st) = self.try_status() {
            return st;
        }
        let pid = self.pid();
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(st) = self.try_status() {
                return st;
            }
            std::thread::sleep(POLL);
        }
        self.kill()
    }

    /// SIGKILL to its process group; waits for it and returns its exit status.
    pub fn kill(&mut self) -> ExitStatus {
        let pid = self.pid();
        if self.exit.is_none() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = self.child.kill();
        }
        match self.exit {
            Some(st) => st,
            None => {
                let st = self
                    .child
                    .wait()
                    .unwrap_or_else(|_| ExitStatus::from_raw_signal(9));
                self.exit = Some(st);
                st
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            self.kill();
        }
    }
}

/// Remove ANSI CSI escape sequences (`ESC [ ... final byte`) from `text`.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            // Parameter and intermediate bytes, then one final byte in 0x40..=0x7e.
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

trait FromRawSignal {
    fn from_raw_signal(sig: i32) -> Self;
}

impl FromRawSignal for ExitStatus {
    fn from_raw_signal(sig: i32) -> Self {
        use std::os::unix::process::ExitStatusExt;
        ExitStatus::from_raw(sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_ansi_removes_colour_codes_only() {
        let coloured = "\u{1b}[2m2026\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m x \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m1";
        assert_eq!(strip_ansi(coloured), "2026  WARN x addr=1");
        assert_eq!(strip_ansi("plain [text]"), "plain [text]");
    }

    #[test]
    fn host_indexes_are_checked_without_a_lab() {
        let err = LabError::NoSuchHost { index: 0, hosts: 3 };
        assert!(err.to_string().contains("1..=3"));
    }
}
