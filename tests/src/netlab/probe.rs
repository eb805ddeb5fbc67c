//! Tiny network probes run inside lab hosts by the `netlab` binary (`tests/src/bin/netlab.rs`):
//! a UDP echo server, a UDP "ping", a multicast listener and a multicast sender. They print one
//! line per event so tests can wait on it with [`super::Proc::wait_for_line`].

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

/// Errors of the probes.
#[derive(Debug)]
pub enum ProbeError {
    /// Bad command-line usage.
    Usage(String),
    /// A socket operation failed.
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// No reply arrived in time.
    NoReply {
        /// Target that did not answer.
        target: SocketAddr,
        /// How long it waited.
        after: Duration,
    },
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Usage(u) => write!(f, "usage: {u}"),
            ProbeError::Io { what, source } => write!(f, "{what}: {source}"),
            ProbeError::NoReply { target, after } => {
                write!(f, "no reply from {target} within {after:?}")
            }
        }
    }
}

impl std::error::Error for ProbeError {}

fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> ProbeError {
    let what = what.into();
    move |source| ProbeError::Io { what, source }
}

/// The usage text of the `netlab` binary.
pub const USAGE: &str = "netlab udp-echo BIND_ADDR:PORT
       netlab udp-ping TARGET:PORT TIMEOUT_MS
       netlab udp-blast TARGET:PORT TOTAL_BYTES DATAGRAM_SIZE
       netlab mcast-listen GROUP:PORT IFACE_ADDR
       netlab mcast-send GROUP:PORT COUNT INTERVAL_MS
       netlab cleanup-stale | cleanup-all";

fn parse<T: std::str::FromStr>(s: Option<&String>, what: &str) -> Result<T, ProbeError> {
    s.and_then(|s| s.parse().ok())
        .ok_or_else(|| ProbeError::Usage(format!("missing or invalid {what}\n{USAGE}")))
}

/// Echo every datagram back to its sender, forever. Prints `listening <addr>` once bound and
/// `echo <n> bytes from <peer>` per datagram.
pub fn udp_echo(bind: SocketAddr) -> Result<(), ProbeError> {
    let sock = UdpSocket::bind(bind).map_err(io(format!("binding {bind}")))?;
    println!("listening {}", sock.local_addr().map_err(io("local_addr"))?);
    let mut buf = [0u8; 2048];
    loop {
        let (n, peer) = sock.recv_from(&mut buf).map_err(io("recv_from"))?;
        sock.send_to(&buf[..n], peer)
            .map_err(io(format!("send_to {peer}")))?;
        println!("echo {n} bytes from {peer}");
    }
}

/// Send one datagram to `target` and wait up to `timeout` for the echo; returns the RTT.
/// Resends every 100 ms (the first datagram may be lost while ARP resolves).
pub fn udp_ping(target: SocketAddr, timeout: Duration) -> Result<Duration, ProbeError> {
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(io("binding 0.0.0.0:0"))?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(io("set_read_timeout"))?;
    let start = Instant::now();
    let mut buf = [0u8; 64];
    while start.elapsed() < timeout {
        let sent = Instant::now();
        let payload = format!("ping {}", start.elapsed().as_nanos());
        match sock.send_to(payload.as_bytes(), target) {
            Ok(_) => {}
            // No carrier / no route while a cable is cut: keep trying until the timeout.
            Err(e) if e.raw_os_error().is_some() => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(e) => {
                return Err(ProbeError::Io {
                    what: format!("send_to {target}"),
                    source: e,
                });
            }
        }
        match sock.recv_from(&mut buf) {
            Ok((n, peer)) if peer == target && &buf[..n] == payload.as_bytes() => {
                return Ok(sent.elapsed());
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.raw_os_error().is_some() => {}
            Err(e) => {
                return Err(ProbeError::Io {
                    what: "recv_from".into(),
                    source: e,
                });
            }
        }
    }
    Err(ProbeError::NoReply {
        target,
        after: timeout,
    })
}

/// Send `total` bytes to `target` as fast as possible in datagrams of `size` bytes; returns
/// the number of datagrams sent. Send errors (e.g. ICMP feedback) are counted, not fatal.
pub fn udp_blast(target: SocketAddr, total: usize, size: usize) -> Result<usize, ProbeError> {
    if size == 0 || size > 65_000 {
        return Err(ProbeError::Usage(format!(
            "datagram size {size} not in 1..=65000"
        )));
    }
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(io("binding 0.0.0.0:0"))?;
    let buf = vec![0x5a_u8; size];
    let mut sent = 0;
    for _ in 0..total.div_ceil(size) {
        if sock.send_to(&buf, target).is_ok() {
            sent += 1;
        }
    }
    Ok(sent)
}

/// Join `group` on the interface with address `iface` and print `got <payload> from <peer>` for
/// every datagram, forever. Prints `joined <group> on <iface>` once ready.
pub fn mcast_listen(group: SocketAddrV4, iface: Ipv4Addr) -> Result<(), ProbeError> {
    let bind = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, group.port());
    let sock = UdpSocket::bind(bind).map_err(io(format!("binding {bind}")))?;
    sock.join_multicast_v4(group.ip(), &iface)
        .map_err(io(format!("joining {group} on {iface}")))?;
    println!("joined {group} on {iface}");
    let mut buf = [0u8; 2048];
    loop {
        let (n, peer) = sock.recv_from(&mut buf).map_err(io("recv_from"))?;
        println!("got {} from {peer}", String::from_utf8_lossy(&buf[..n]));
    }
}

/// Send `count` datagrams `mcast <i> from <host>` to `group`, `interval` apart.
pub fn mcast_send(group: SocketAddrV4, count: u32, interval: Duration) -> Result<(), ProbeError> {
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(io("binding 0.0.0.0:0"))?;
    sock.set_multicast_ttl_v4(1)
        .map_err(io("set_multicast_ttl_v4"))?;
    let host = std::env::var("EDGERAY_LAB_HOST").unwrap_or_else(|_| "?".into());
    for i in 0..count {
        let msg = format!("mcast {i} from {host}");
        sock.send_to(msg.as_bytes(), group)
            .map_err(io(format!("send_to {group}")))?;
        println!("sent {msg}");
        std::thread::sleep(interval);
    }
    Ok(())
}

/// Entry point of the `netlab` binary: dispatch on `args` (without the program name).
pub fn main_with_args(args: &[String]) -> Result<(), ProbeError> {
    let cmd = args.first().map(String::as_str).unwrap_or("");
    match cmd {
        "udp-echo" => udp_echo(parse(args.get(1), "BIND_ADDR:PORT")?),
        "udp-ping" => {
            let target: SocketAddr = parse(args.get(1), "TARGET:PORT")?;
            let ms: u64 = parse(args.get(2), "TIMEOUT_MS")?;
            let rtt = udp_ping(target, Duration::from_millis(ms))?;
            println!("reply from {target} in {} us", rtt.as_micros());
            Ok(())
        }
        "udp-blast" => {
            let target: SocketAddr = parse(args.get(1), "TARGET:PORT")?;
            let total: usize = parse(args.get(2), "TOTAL_BYTES")?;
            let size: usize = parse(args.get(3), "DATAGRAM_SIZE")?;
            let sent = udp_blast(target, total, size)?;
            println!("sent {sent} datagrams of {size} bytes to {target}");
            Ok(())
        }
        "mcast-listen" => mcast_listen(
            parse(args.get(1), "GROUP:PORT")?,
            parse(args.get(2), "IFACE_ADDR")?,
        ),
        "mcast-send" => mcast_send(
            parse(args.get(1), "GROUP:PORT")?,
            parse(args.get(2), "COUNT")?,
            Duration::from_millis(parse(args.get(3), "INTERVAL_MS")?),
        ),
        "cleanup-stale" => {
            for ns in super::cleanup_stale() {
                println!("removed {ns}");
            }
            Ok(())
        }
        "cleanup-all" => {
            for ns in super::cleanup_all() {
                println!("removed {ns}");
            }
            Ok(())
        }
        other => Err(ProbeError::Usage(format!(
            "unknown command {other:?}\n{USAGE}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_are_reported() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches!(
            main_with_args(&args(&[])),
            Err(ProbeError::Usage(_))
        ));
        assert!(matches!(
            main_with_args(&args(&["udp-ping", "nope", "10"])),
            Err(ProbeError::Usage(_))
        ));
        assert!(matches!(
            main_with_args(&args(&["udp-ping", "127.0.0.1:9"])),
            Err(ProbeError::Usage(_))
        ));
    }

    #[test]
    fn echo_and_ping_on_loopback() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        drop(sock);
        std::thread::spawn(move || udp_echo(addr));
        let rtt = udp_ping(addr, Duration::from_secs(2)).unwrap();
        assert!(rtt < Duration::from_secs(1));
    }

    #[test]
    fn ping_without_server_times_out() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        drop(sock);
        let err = udp_ping(addr, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, ProbeError::NoReply { .. }), "{err}");
    }
}
