//! Reachability probes from the client namespace, singly or as a whole table at once.
//!
//! A probe binds its source address, then for TCP connects and reads `hello\n`, for UDP sends
//! a unique payload on a connected socket and waits for the echo. A firewall drop shows as
//! [`Outcome::Timeout`]; a missing server as [`Outcome::Refused`]. Probes that fail are
//! retried (a real drop never turns into a pass, while a slow first ARP/ND exchange on a busy
//! machine should not fail a test).

use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::netns::{Topology, enter_ns, in_ns, pbx_addr_for};
use super::servers::{HELLO, is_timeout};

/// Timeout of one probe attempt.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(400);
/// Attempts per probe in [`probe_matrix`] (the next one only after a failure).
pub const PROBE_ATTEMPTS: u32 = 2;
/// At most this many probe threads at once.
pub const MAX_PARALLEL: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// What one probe saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Connected and read `hello\n` / got the echo back.
    Open,
    /// No answer within the timeout (what a firewall drop looks like).
    Timeout,
    /// Connection refused / ICMP port unreachable (nothing listening, or a reject rule).
    Refused,
    /// Anything else (unreachable network, wrong reply, ...).
    Other(String),
}

impl Outcome {
    pub fn is_open(&self) -> bool {
        *self == Outcome::Open
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Open => f.write_str("open"),
            Outcome::Timeout => f.write_str("blocked (timeout)"),
            Outcome::Refused => f.write_str("blocked (refused)"),
            Outcome::Other(e) => write!(f, "blocked ({e})"),
        }
    }
}

fn classify(e: &io::Error) -> Outcome {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Outcome::Refused,
        _ if is_timeout(e) => Outcome::Timeout,
        _ => Outcome::Other(e.to_string()),
    }
}

/// Probe from the *current thread's* namespace (see [`probe_in`]). Panics if `src` cannot be
/// bound: that is a broken test, not a blocked port.
pub fn probe_here(proto: Proto, src: IpAddr, dst: SocketAddr, timeout: Duration) -> Outcome {
    assert_eq!(
        src.is_ipv4(),
        dst.is_ipv4(),
        "probe {src} -> {dst}: source and destination families differ"
    );
    let ty = match proto {
        Proto::Tcp => Type::STREAM,
        Proto::Udp => Type::DGRAM,
    };
    let ip_proto = match proto {
        Proto::Tcp => Protocol::TCP,
        Proto::Udp => Protocol::UDP,
    };
    let sock = Socket::new(Domain::for_address(dst), ty, Some(ip_proto)).expect("socket");
    sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))
        .unwrap_or_else(|e| panic!("probe: cannot bind source {src}: {e}"));
    match proto {
        Proto::Tcp => tcp_here(sock, dst, timeout),
        Proto::Udp => udp_here(sock, dst, timeout),
    }
}

fn tcp_here(sock: Socket, dst: SocketAddr, timeout: Duration) -> Outcome {
    if let Err(e) = sock.connect_timeout(&dst.into(), timeout) {
        return classify(&e);
    }
    let mut stream: TcpStream = sock.into();
    let _ = stream.set_read_timeout(Some(timeout));
    let mut buf = [0u8; 6];
    match stream.read_exact(&mut buf) {
        Ok(()) if buf == HELLO => Outcome::Open,
        Ok(()) => Outcome::Other(format!("unexpected greeting {buf:?}")),
        Err(e) => classify(&e),
    }
}

fn udp_here(sock: Socket, dst: SocketAddr, timeout: Duration) -> Outcome {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let sock: UdpSocket = sock.into();
    if let Err(e) = sock.connect(dst) {
        return classify(&e);
    }
    let payload = format!(
        "pbxw-probe {} {}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    if let Err(e) = sock.send(payload.as_bytes()) {
        return classify(&e);
    }
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    // Bounded: each pass waits until the deadline at most; stale datagrams are skipped.
    for _ in 0..64 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let _ = sock.set_read_timeout(Some(left));
        match sock.recv(&mut buf) {
            Ok(n) if &buf[..n] == payload.as_bytes() => return Outcome::Open,
            Ok(_) => continue,
            Err(e) => return classify(&e),
        }
    }
    Outcome::Timeout
}

/// One probe in the namespace `ns` (on a scoped thread).
pub fn probe_in(
    ns: &str,
    proto: Proto,
    src: IpAddr,
    dst: SocketAddr,
    timeout: Duration,
) -> Outcome {
    in_ns(ns, || probe_here(proto, src, dst, timeout))
}

/// TCP from `src` in the client namespace to `dst`: true if it connected and read `hello\n`.
pub fn tcp_probe(topo: &Topology, src: IpAddr, dst: SocketAddr, timeout: Duration) -> bool {
    probe_in(topo.client_ns(), Proto::Tcp, src, dst, timeout).is_open()
}

/// UDP from `src` in the client namespace to `dst`: true if the echo came back.
pub fn udp_probe(topo: &Topology, src: IpAddr, dst: SocketAddr, timeout: Duration) -> bool {
    probe_in(topo.client_ns(), Proto::Udp, src, dst, timeout).is_open()
}

// ---------------------------------------------------------------------------------------------
// Tables of probes

/// One row of a reachability table: from `src`, `proto` to `dst`, expected open or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub src: IpAddr,
    pub proto: Proto,
    pub dst: SocketAddr,
    pub expect_open: bool,
}

impl Probe {
    /// From `src` (an address of the client namespace) to the pbx address of the same family.
    pub fn new(src: &str, proto: Proto, port: u16, expect_open: bool) -> Probe {
        let src: IpAddr = src
            .parse()
            .unwrap_or_else(|e| panic!("bad probe source {src:?}: {e}"));
        Probe {
            src,
            proto,
            dst: SocketAddr::new(pbx_addr_for(src), port),
            expect_open,
        }
    }

    pub fn tcp(src: &str, port: u16, expect_open: bool) -> Probe {
        Probe::new(src, Proto::Tcp, port, expect_open)
    }

    pub fn udp(src: &str, port: u16, expect_open: bool) -> Probe {
        Probe::new(src, Proto::Udp, port, expect_open)
    }

    /// The same probe to another destination address (same port).
    pub fn to(mut self, dst: IpAddr) -> Probe {
        self.dst.set_ip(dst);
        self
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = format!("{} -> {}/{}", self.src, self.dst, self.proto);
        f.pad(&row)
    }
}

/// Every combination of `sources` × `services`, with the expectation from `expect`.
pub fn cross(
    sources: &[&str],
    services: &[(Proto, u16)],
    expect: impl Fn(IpAddr, Proto, u16) -> bool,
) -> Vec<Probe> {
    let mut v = Vec::new();
    for src in sources {
        for &(proto, port) in services {
            let mut p = Probe::new(src, proto, port, false);
            p.expect_open = expect(p.src, proto, port);
            v.push(p);
        }
    }
    v
}

/// A probe and what it saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    pub probe: Probe,
    pub outcome: Outcome,
}

impl ProbeResult {
    /// Whether the outcome is what the probe expected.
    pub fn ok(&self) -> bool {
        self.outcome.is_open() == self.probe.expect_open
    }
}

/// Runs all `probes` from the client namespace concurrently ([`PROBE_TIMEOUT`],
/// [`PROBE_ATTEMPTS`]); results in the order of `probes`.
pub fn probe_matrix(topo: &Topology, probes: &[Probe]) -> Vec<ProbeResult> {
    probe_matrix_with(topo.client_ns(), probes, PROBE_TIMEOUT, PROBE_ATTEMPTS)
}

/// [`probe_matrix`] from namespace `ns` with explicit timeout and attempts (≥ 1). Takes about
/// `timeout × attempts` per batch of [`MAX_PARALLEL`] probes when some are blocked.
pub fn probe_matrix_with(
    ns: &str,
    probes: &[Probe],
    timeout: Duration,
    attempts: u32,
) -> Vec<ProbeResult> {
    let mut results = Vec::with_capacity(probes.len());
    for chunk in probes.chunks(MAX_PARALLEL) {
        thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|p| {
                    s.spawn(move || {
                        enter_ns(ns).unwrap_or_else(|e| panic!("{e}"));
                        let mut outcome = Outcome::Timeout;
                        for _ in 0..attempts.max(1) {
                            outcome = probe_here(p.proto, p.src, p.dst, timeout);
                            if outcome.is_open() {
                                break;
                            }
                        }
                        outcome
                    })
                })
                .collect();
            for (p, h) in chunk.iter().zip(handles) {
                let outcome = match h.join() {
                    Ok(o) => o,
                    Err(panic) => std::panic::resume_unwind(panic),
                };
                results.push(ProbeResult {
                    probe: p.clone(),
                    outcome,
                });
            }
        });
    }
    results
}

/// A table of results, mismatches first, for failure messages.
pub fn format_results(results: &[ProbeResult]) -> String {
    let bad: Vec<_> = results.iter().filter(|r| !r.ok()).collect();
    let mut s = String::new();
    if !bad.is_empty() {
        s += &format!("{} of {} probes did not match:\n", bad.len(), results.len());
        for r in &bad {
            s += &format!(
                "  MISMATCH {:<42} expected {:<6} got {}\n",
                r.probe,
                expect_word(&r.probe),
                r.outcome
            );
        }
        s += "full table:\n";
    }
    for r in results {
        s += &format!(
            "  {:<8} {:<42} expected {:<6} got {}\n",
            if r.ok() { "ok" } else { "MISMATCH" },
            r.probe,
            expect_word(&r.probe),
            r.outcome
        );
    }
    s
}

fn expect_word(p: &Probe) -> &'static str {
    if p.expect_open { "open" } else { "closed" }
}

/// Runs the table and returns the results, or the formatted table if any row mismatched.
pub fn check_probes(topo: &Topology, probes: &[Probe]) -> Result<Vec<ProbeResult>, String> {
    let results = probe_matrix(topo, probes);
    if results.iter().all(ProbeResult::ok) {
        Ok(results)
    } else {
        Err(format_results(&results))
    }
}

/// Runs the table and panics listing every mismatch (and the full table) if any row is not
/// as expected.
#[track_caller]
pub fn assert_probes(topo: &Topology, probes: &[Probe]) {
    if let Err(table) = check_probes(topo, probes) {
        panic!(
            "reachability from {} to {} not as expected (timeout {:?} x {} attempts)\n{table}",
            topo.client_ns(),
            topo.pbx_ns(),
            PROBE_TIMEOUT,
            PROBE_ATTEMPTS
        );
    }
}

/// A UDP "flow" from `from` (an address of the client namespace) to `to` (`ADDR:PORT` of a
/// UDP echo server in the pbx namespace, see [`super::Servers`]): one socket kept open, so
/// every datagram after the first belongs to the same conntrack entry. Check it with
/// [`udp_flow_echoes`].
pub fn udp_flow(topo: &Topology, from: &str, to: &str) -> UdpSocket {
    topo.in_client(|| {
        let s = UdpSocket::bind((from, 0)).expect("bind the flow's socket");
        s.connect(to).expect("connect the flow's socket");
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("read timeout");
        s
    })
}

/// Whether the flow still gets an answer (three tries of 500 ms).
pub fn udp_flow_echoes(s: &UdpSocket) -> bool {
    let mut buf = [0u8; 16];
    (0..3).any(|_| s.send(b"ping").is_ok() && s.recv(&mut buf).is_ok())
}
