//! Self-tests of the network-namespace lab harness (`edgeray_tests::netlab`): reachability,
//! cable cut and heal, multicast across the bridge and its blocking, shaping, cleanup.
//! They need root; otherwise they print `SKIP: <reason>` (a failure with
//! `EDGERAY_REQUIRE_NETLAB=1`).

use edgeray_tests::netlab::{self, Lab, LabBuilder, LabError};
use std::process::Command;
use std::time::{Duration, Instant};

const PROBE: &str = env!("CARGO_BIN_EXE_netlab");

fn probe(args: &[&str]) -> Command {
    let mut cmd = Command::new(PROBE);
    cmd.args(args);
    cmd
}

/// Start a UDP echo server on host `i`, port 7000, and wait until it listens.
fn echo_server(lab: &Lab, i: usize) -> Result<netlab::Proc, LabError> {
    let addr = format!("{}:7000", lab.ip(i)?);
    let mut p = lab.spawn(i, "echo", probe(&["udp-echo", &addr]))?;
    p.wait_for_line("listening", Duration::from_secs(5))?;
    Ok(p)
}

/// UDP ping from host `from` to host `to`'s echo server; `true` when a reply came.
fn reachable(lab: &Lab, from: usize, to: usize, timeout: Duration) -> Result<bool, LabError> {
    let target = format!("{}:7000", lab.ip(to)?);
    let ms = timeout.as_millis().to_string();
    let out = lab.run(
        from,
        "ping",
        probe(&["udp-ping", &target, &ms]),
        timeout + Duration::from_secs(5),
    )?;
    Ok(out.status.success())
}

#[test]
fn hosts_reach_each_other_and_cut_heal_works() -> anyhow::Result<()> {
    let Some(lab) = netlab::start_or_skip(LabBuilder::new(3))? else {
        return Ok(());
    };
    let _e2 = echo_server(&lab, 2)?;
    let _e3 = echo_server(&lab, 3)?;
    assert!(reachable(&lab, 1, 2, Duration::from_secs(3))?, "h1 -> h2");
    assert!(reachable(&lab, 1, 3, Duration::from_secs(3))?, "h1 -> h3");

    lab.cut(2)?;
    assert!(
        !reachable(&lab, 1, 2, Duration::from_millis(800))?,
        "h2 is cut but answered"
    );
    assert!(
        !reachable(&lab, 2, 3, Duration::from_millis(800))?,
        "h2 is cut but reached h3"
    );
    assert!(
        reachable(&lab, 1, 3, Duration::from_secs(3))?,
        "h1 -> h3 while h2 is cut"
    );
    lab.heal(2)?;
    let t = Instant::now();
    assert!(
        reachable(&lab, 1, 2, Duration::from_secs(5))?,
        "h1 -> h2 after heal"
    );
    println!("h2 reachable again {:?} after heal", t.elapsed());

    lab.cut_silent(3)?;
    assert!(
        !reachable(&lab, 1, 3, Duration::from_millis(800))?,
        "h3 is silently cut but answered"
    );
    lab.heal(3)?;
    assert!(
        reachable(&lab, 1, 3, Duration::from_secs(5))?,
        "h1 -> h3 after silent-cut heal"
    );
    Ok(())
}

#[test]
fn hosts_have_no_default_route_and_cannot_reach_outside() -> anyhow::Result<()> {
    let Some(lab) = netlab::start_or_skip(LabBuilder::new(1))? else {
        return Ok(());
    };
    let mut route = Command::new("ip");
    route.args(["route", "show"]);
    let out = lab.run(1, "route", route, Duration::from_secs(5))?;
    let routes = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        !routes.contains("default"),
        "default route in a lab host:\n{routes}"
    );
    assert!(
        routes.contains("224.0.0.0/4 dev eth0"),
        "multicast route missing:\n{routes}"
    );
    // An address outside the lab subnet is unroutable (fails at once, nothing is sent).
    let out = lab.run(
        1,
        "ping-out",
        probe(&["udp-ping", "192.0.2.1:7", "300"]),
        Duration::from_secs(5),
    )?;
    assert!(!out.status.success());
    Ok(())
}

#[test]
fn multicast_crosses_the_bridge_unless_blocked() -> anyhow::Result<()> {
    let Some(lab) = netlab::start_or_skip(LabBuilder::new(3))? else {
        return Ok(());
    };
    let group = "224.0.0.251:5353"; // exactly what mDNS uses
    let mut l2 = lab.spawn(
        2,
        "mlisten",
        probe(&["mcast-listen", group, &lab.ip(2)?.to_string()]),
    )?;
    let mut l3 = lab.spawn(
        3,
        "mlisten",
        probe(&["mcast-listen", group, &lab.ip(3)?.to_string()]),
    )?;
    l2.wait_for_line("joined", Duration::from_secs(5))?;
    l3.wait_for_line("joined", Duration::from_secs(5))?;
    let send = |tag: &str| {
        lab.run(
            1,
            tag,
            probe(&["mcast-send", group, "5", "50"]),
            Duration::from_secs(10),
        )
    };
    assert!(send("msend")?.status.success());
    l2.wait_for_line("from h1", Duration::from_secs(3))?;
    l3.wait_for_line("from h1", Duration::from_secs(3))?;

    // Blocked: a fresh listener sees nothing, but unicast still works.
    lab.block_multicast()?;
    l2.kill();
    let mut l4 = lab.spawn(
        2,
        "mlisten-blocked",
        probe(&["mcast-listen", group, &lab.ip(2)?.to_string()]),
    )?;
    l4.wait_for_line("joined", Duration::from_secs(5))?;
    assert!(send("msend-blocked")?.status.success());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !l4.output().contains("from h1"),
        "multicast crossed a blocked bridge:\n{}",
        l4.output()
    );
    let _e = echo_server(&lab, 3)?;
    assert!(
        reachable(&lab, 2, 3, Duration::from_secs(3))?,
        "unicast must pass while multicast is blocked"
    );

    lab.unblock_multicast()?;
    assert!(send("msend-unblocked")?.status.success());
    l4.wait_for_line("from h1", Duration::from_secs(3))?;
    Ok(())
}

#[test]
fn processes_and_namespaces_are_gone_after_drop() -> anyhow::Result<()> {
    let Some(lab) = netlab::start_or_skip(LabBuilder::new(2))? else {
        return Ok(());
    };
    let namespaces: Vec<String> = lab.hosts().iter().map(|h| h.netns().to_string()).collect();
    // A process that ignores SIGTERM must still be killed, and a grandchild too.
    let mut stubborn = Command::new("sh");
    stubborn.args(["-c", "trap '' TERM; sleep 600 & echo started; wait"]);
    let mut p = lab.spawn(1, "stubborn", stubborn)?;
    p.wait_for_line("started", Duration::from_secs(5))?;
    assert!(lab.pids(1)?.len() >= 2, "expected sh and sleep in h1");
    let t = Instant::now();
    drop(lab);
    println!("lab teardown took {:?}", t.elapsed());
    assert!(!p.is_running(), "process survived the lab");
    let listed = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    for ns in namespaces {
        assert!(!listed.contains(&ns), "namespace {ns} left behind");
    }
    Ok(())
}

#[test]
fn bad_host_index_is_an_error() -> anyhow::Result<()> {
    let Some(lab) = netlab::start_or_skip(LabBuilder::new(1))? else {
        return Ok(());
    };
    assert!(matches!(
        lab.cut(0),
        Err(LabError::NoSuchHost { index: 0, hosts: 1 })
    ));
    assert!(matches!(
        lab.ip(2),
        Err(LabError::NoSuchHost { index: 2, hosts: 1 })
    ));
    assert!(matches!(
        LabBuilder::new(0).build(),
        Err(LabError::InvalidConfig(_))
    ));
    Ok(())
}

#[test]
fn shaping_limits_the_rate() -> anyhow::Result<()> {
    let Some(lab) = netlab::start_or_skip(LabBuilder::new(2))? else {
        return Ok(());
    };
    // 1 mbit/s: 64 kB burst + 1 mbit/s; a 5 MB blast over 1 s must lose most datagrams, while
    // unshaped it mostly gets through. Measured with the kernel's own counters on h2's eth0.
    let rx_bytes = |lab: &Lab| -> Result<u64, LabError> {
        let mut c = Command::new("cat");
        c.arg("/sys/class/net/eth0/statistics/rx_bytes");
        let out = lab.run(2, "rx", c, Duration::from_secs(5))?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0))
    };
    let blast = |lab: &Lab| -> Result<(), LabError> {
        let target = format!("{}:9", lab.ip(2)?);
        let c = probe(&["udp-blast", &target, "5000000", "1000"]);
        let out = lab.run(1, "blast", c, Duration::from_secs(20))?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    let before = rx_bytes(&lab)?;
    blast(&lab)?;
    let unshaped = rx_bytes(&lab)? - before;
    lab.shape(2, Some("1mbit"))?;
    let before = rx_bytes(&lab)?;
    blast(&lab)?;
    let shaped = rx_bytes(&lab)? - before;
    println!("received unshaped {unshaped} B, shaped at 1mbit {shaped} B");
    assert!(shaped < 600_000, "shaping did not limit: {shaped} B");
    assert!(
        unshaped > 2 * shaped,
        "unshaped {unshaped} B vs shaped {shaped} B"
    );
    lab.shape(2, None)?;
    Ok(())
}

/// `cpus_per_host(1)`: every process started in a host runs pinned to that host's own core
/// (its `Cpus_allowed_list`), hosts in turn over the machine's cores.
#[test]
fn hosts_pinned_to_their_own_cpus() -> anyhow::Result<()> {
    let Some(lab) = netlab::start_or_skip(LabBuilder::new(2).cpus_per_host(1))? else {
        return Ok(());
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for i in 1..=2 {
        let want = lab.host(i)?.cpus().expect("pinned").to_vec();
        assert_eq!(want, vec![(i - 1) % cores], "host {i}'s core");
        let mut c = Command::new("grep");
        c.args(["Cpus_allowed_list", "/proc/self/status"]);
        let out = lab.run(i, "cpus", c, Duration::from_secs(10))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let list = text.split(':').nth(1).unwrap_or("").trim().to_string();
        assert_eq!(list, want[0].to_string(), "host {i}: {text}");
    }
    Ok(())
}
