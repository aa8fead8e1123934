//! Torture tests: what must hold however hard the commands are pushed.
//!
//! * **No leak, no gap**: `restart` and `ipchecker` run back to back many times while bounded
//!   UDP and TCP probers run from the client namespace. From stranger addresses not one probe
//!   may be answered; from allowed addresses (an `add-ip` account and an `add-fqdn` one, v4
//!   and v6) every probe must be, and established TCP connections must carry data across
//!   every apply. A DNS name that moves every round gives `ipchecker` work.
//! * **No lost writes**: many `add-ip`/`del-acct` processes at once, with `ipchecker` and
//!   `restart` runs and a reader doing `restart --dry-run` beside them; afterwards every
//!   expected account exists with its own addresses, nothing else does, no temp file is
//!   left, every file parses, and the kernel matches the files.
//! * **Crash safety**: `kill -9` at seeded random moments of `add-ip`, `del-acct` and
//!   `restart`; after each kill every file parses, nothing half-written is visible, the table
//!   is still loaded and is the old or the new ruleset, and an account present in both still
//!   gets through.
//! * **Hostile input**: a few thousand seeded hostile inputs (random bytes, truncations,
//!   mutations, huge numbers, unicode, NULs) for every parser; none may panic or hang, and
//!   what they accept must round-trip. The coverage-guided version is `make fuzz` (fuzz/).
//!
//! `make test` runs short versions; `PBXWALL_LONG_TESTS=1` (`make test-long`) long ones.
//! Each test prints its numbers on stderr (shown also when it passes). The seed of the random
//! choices is printed and can be set with `PBXWALL_TORTURE_SEED`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use common::{Needs, Probe, Servers, TempConfig, Topology, enter_ns, ns_cmd, show, stderr, stdout};
use pbxwall::model::{Fqdn, Profiles, parse_source};
use pbxwall::nft::netlink;
use pbxwall::nft::render::normalize;
use pbxwall::store::{self, Paths};

// ---------------------------------------------------------------------------------------------
// Knobs

/// Env var: long versions of the tests (`make test-long`).
const LONG_ENV: &str = "PBXWALL_LONG_TESTS";
/// Env var: the seed of every random choice (default: a fixed one, so runs repeat).
const SEED_ENV: &str = "PBXWALL_TORTURE_SEED";
const DEFAULT_SEED: u64 = 0x5eed_0bad_cafe_f00d;

fn long_tests() -> bool {
    std::env::var(LONG_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `short` in `make test`, `long` with `PBXWALL_LONG_TESTS=1`.
fn scaled(short: usize, long: usize) -> usize {
    if long_tests() { long } else { short }
}

fn seed() -> u64 {
    std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| {
            let s = s.trim();
            match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => s.parse().ok(),
            }
        })
        .unwrap_or(DEFAULT_SEED)
}

/// One line on the process's stderr (the test runner captures no output), so the numbers show
/// for passing tests too.
fn report(line: impl Display) {
    let _ = writeln!(io::stderr(), "torture: {line}");
}

/// SplitMix64: small, seeded, good enough to pick moments and mutations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when n is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn code(out: &Output) -> String {
    match (out.status.code(), out.status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "no status".into(),
    }
}

#[track_caller]
fn ok(out: Output, what: &str) -> Output {
    assert_eq!(out.status.code(), Some(0), "{what}:\n{}", show(&out));
    out
}

/// Sets the flag when dropped: stops prober and helper threads also when the test panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Names under `dir` (recursively) that are pbxwall temp files: `.NAME.tmp.PID.N`.
fn temp_files(dir: &Path) -> Vec<String> {
    common::snapshot(dir)
        .into_keys()
        .filter(|k| {
            let name = Path::new(k).file_name().unwrap().to_string_lossy();
            name.starts_with('.') && name.contains(".tmp.")
        })
        .collect()
}

fn paths_of(cfg: &TempConfig) -> Paths {
    Paths {
        config_dir: cfg.config_dir().to_path_buf(),
        state_dir: cfg.state_dir().to_path_buf(),
        // Never present: the built-in profiles, as the binaries use here.
        share_dir: cfg.root().join("no-share"),
    }
}

/// Every account file that is not hidden, parsed: name → result.
fn parse_all_accounts(
    cfg: &TempConfig,
) -> BTreeMap<String, Result<pbxwall::model::Account, String>> {
    let paths = paths_of(cfg);
    let profiles = store::load_profiles(&paths).expect("built-in profiles");
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(paths.accounts_dir()) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let parsed = match std::fs::read_to_string(e.path()) {
            Ok(text) => {
                store::parse_account(&e.path(), &text, &profiles).map_err(|e| e.to_string())
            }
            Err(err) => Err(format!("{name}: {err}")),
        };
        out.insert(name, parsed);
    }
    out
}

/// `nft list table inet pbxwall` in the pbx namespace, normalised (counter values and
/// element order do not matter); None if the listing fails (no table).
fn live_table(topo: &Topology) -> Option<String> {
    let out = ns_cmd(topo.pbx_ns(), "nft", &["list", "table", "inet", "pbxwall"]);
    out.status.success().then(|| normalize(&stdout(&out)))
}

fn status_in_sync(cfg: &TempConfig, topo: &Topology) -> Result<(), String> {
    let out = cfg.run(Some(topo.pbx_ns()), "status", ["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("status --json: {e}\n{}", show(&out)))?;
    if v["in_sync"] == true && out.status.code() == Some(0) {
        Ok(())
    } else {
        Err(format!(
            "status: {} in_sync={} differences={} problems={}",
            code(&out),
            v["in_sync"],
            v["differences"],
            v["problems"]
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Probers: bounded, steady-rate UDP and TCP probe streams with per-probe timeouts

/// What one prober saw.
#[derive(Debug, Default, Clone)]
struct ProbeStats {
    /// Probes sent (UDP datagrams, TCP connection attempts).
    sent: u64,
    /// Answered: UDP echo received, TCP handshake completed.
    answered: u64,
    /// No answer within the timeout.
    lost: u64,
    /// Refused (ICMP port unreachable, RST) or another error.
    refused: u64,
    /// TCP: completed, but only after a retransmission (a dropped SYN or SYN-ACK).
    retransmitted: u64,
    /// Slowest answer.
    max_latency: Duration,
}

impl std::fmt::Display for ProbeStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {}, answered {}, lost {}, refused {}, retransmitted {}, slowest {:.1} ms",
            self.sent,
            self.answered,
            self.lost,
            self.refused,
            self.retransmitted,
            self.max_latency.as_secs_f64() * 1000.0
        )
    }
}

#[derive(Clone, Copy, Debug)]
struct ProberSpec {
    name: &'static str,
    tcp: bool,
    src: IpAddr,
    dst: SocketAddr,
    /// One probe per interval (steady; no catch-up burst after a scheduler hiccup).
    interval: Duration,
    /// Per-probe timeout.
    timeout: Duration,
}

/// A prober ends by itself after this long even if never stopped.
const PROBER_MAX_LIFETIME: Duration = Duration::from_secs(1800);

struct Pending {
    sock: Socket,
    sent: Instant,
    payload: Vec<u8>,
}

fn poll_fds(pending: &[Pending], events: libc::c_short, wait: Duration) -> Vec<libc::c_short> {
    let mut fds: Vec<libc::pollfd> = pending
        .iter()
        .map(|p| libc::pollfd {
            fd: p.sock.as_raw_fd(),
            events,
            revents: 0,
        })
        .collect();
    let ms = wait.as_millis().clamp(1, 50) as libc::c_int;
    if fds.is_empty() {
        thread::sleep(Duration::from_millis(ms as u64));
        return Vec::new();
    }
    // SAFETY: `fds` is a valid array of pollfd of the given length, alive for the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n <= 0 {
        return vec![0; fds.len()];
    }
    fds.iter().map(|f| f.revents).collect()
}

/// TCP retransmissions of a socket so far (`tcpi_total_retrans`).
fn total_retrans(sock: &Socket) -> u32 {
    // SAFETY: tcp_info is plain old data; getsockopt writes at most `len` bytes into it.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        );
        if rc == 0 { info.tcpi_total_retrans } else { 0 }
    }
}

/// Runs one prober in the calling thread's namespace until `stop`, then waits for the
/// probes in flight (each at most its timeout).
///
/// Every UDP probe uses a fresh socket from the next source port of its own range, and every
/// TCP probe a fresh connection, so each is a *new* flow for conntrack: it has to pass the
/// whitelist rules, not the `ct state established` one.
fn run_prober(spec: ProberSpec, first_port: u16, stop: &AtomicBool) -> ProbeStats {
    let started = Instant::now();
    let mut stats = ProbeStats::default();
    let mut pending: Vec<Pending> = Vec::new();
    let mut next_send = Instant::now();
    let mut seq: u64 = 0;
    const PORTS: u64 = 20_000;
    loop {
        let now = Instant::now();
        let stopping = stop.load(Ordering::SeqCst) || started.elapsed() > PROBER_MAX_LIFETIME;
        if stopping && pending.is_empty() {
            break;
        }
        if !stopping && now >= next_send {
            next_send = if now > next_send + spec.interval * 10 {
                now + spec.interval
            } else {
                next_send + spec.interval
            };
            seq += 1;
            stats.sent += 1;
            let port = if spec.tcp {
                0
            } else {
                first_port + (seq % PORTS) as u16
            };
            match start_probe(&spec, port, seq) {
                Ok(p) => pending.push(p),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => stats.refused += 1,
                Err(e) => panic!("{}: cannot start probe {seq}: {e}", spec.name),
            }
        }
        let wait = if stopping {
            Duration::from_millis(5)
        } else {
            next_send.saturating_duration_since(Instant::now())
        };
        let events = if spec.tcp {
            libc::POLLOUT
        } else {
            libc::POLLIN
        };
        let revents = poll_fds(&pending, events, wait);
        let mut keep = Vec::with_capacity(pending.len());
        for (p, rev) in pending
            .drain(..)
            .zip(revents.into_iter().chain(std::iter::repeat(0)))
        {
            let age = p.sent.elapsed();
            if rev != 0 {
                match finish_probe(&spec, &p) {
                    Some(Ok(retrans)) => {
                        stats.answered += 1;
                        stats.max_latency = stats.max_latency.max(age);
                        if retrans {
                            stats.retransmitted += 1;
                        }
                        continue;
                    }
                    Some(Err(())) => {
                        stats.refused += 1;
                        continue;
                    }
                    None => {}
                }
            }
            if age > spec.timeout {
                stats.lost += 1;
            } else {
                keep.push(p);
            }
        }
        pending = keep;
    }
    stats
}

fn start_probe(spec: &ProberSpec, port: u16, seq: u64) -> io::Result<Pending> {
    let domain = Domain::for_address(spec.dst);
    let (ty, proto) = if spec.tcp {
        (Type::STREAM, Protocol::TCP)
    } else {
        (Type::DGRAM, Protocol::UDP)
    };
    let sock = Socket::new(domain, ty, Some(proto))?;
    sock.set_nonblocking(true)?;
    // A UDP source port still held by a probe in flight is skipped (bounded).
    let mut bound = Err(io::Error::other("no port tried"));
    for k in 0..8u16 {
        let p = if port == 0 { 0 } else { port.wrapping_add(k) };
        bound = sock.bind(&SockAddr::from(SocketAddr::new(spec.src, p)));
        if bound.is_ok() || port == 0 {
            break;
        }
    }
    bound?;
    let payload = format!("torture {} {} {seq}", std::process::id(), spec.name).into_bytes();
    if spec.tcp {
        match sock.connect(&spec.dst.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
    } else {
        sock.connect(&spec.dst.into())?;
        sock.send(&payload)?;
    }
    Ok(Pending {
        sock,
        sent: Instant::now(),
        payload,
    })
}

/// After poll reported an event: Some(Ok(retransmitted)) answered, Some(Err) refused, None
/// nothing yet (a stale datagram).
fn finish_probe(spec: &ProberSpec, p: &Pending) -> Option<Result<bool, ()>> {
    if spec.tcp {
        return match p.sock.take_error() {
            Ok(None) => match p.sock.peer_addr() {
                Ok(_) => Some(Ok(total_retrans(&p.sock) > 0)),
                Err(_) => None,
            },
            _ => Some(Err(())),
        };
    }
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 512];
    match p.sock.recv(&mut buf) {
        Ok(n) => {
            // SAFETY: recv initialised the first n bytes.
            let got: Vec<u8> = buf[..n]
                .iter()
                .map(|b| unsafe { b.assume_init() })
                .collect();
            (got == p.payload).then_some(Ok(false))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(_) => Some(Err(())),
    }
}

// ---------------------------------------------------------------------------------------------
// A TCP echo server for long-lived connections

/// A TCP echo server in a namespace (one thread, non-blocking, at most 16 connections);
/// stopped and joined on drop.
struct EchoServer {
    stop: std::sync::Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EchoServer {
    fn start(ns: &str, port: u16) -> EchoServer {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let stop2 = std::sync::Arc::clone(&stop);
        let thread = common::spawn_in_ns(ns, move || {
            let listener = (|| {
                let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
                s.set_only_v6(false)?;
                s.set_reuse_address(true)?;
                s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
                s.listen(16)?;
                s.set_nonblocking(true)?;
                io::Result::Ok(TcpListener::from(s))
            })();
            let listener = match listener {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => return drop(tx.send(Err(e))),
            };
            let started = Instant::now();
            let mut conns: Vec<TcpStream> = Vec::new();
            let mut buf = [0u8; 4096];
            while !stop2.load(Ordering::SeqCst) && started.elapsed() < PROBER_MAX_LIFETIME {
                if let Ok((c, _)) = listener.accept()
                    && conns.len() < 16
                    && c.set_nonblocking(true).is_ok()
                {
                    conns.push(c);
                }
                conns.retain_mut(|c| match c.read(&mut buf) {
                    Ok(0) => false,
                    Ok(n) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_write_timeout(Some(Duration::from_secs(1)));
                        let kept = c.write_all(&buf[..n]).is_ok();
                        let _ = c.set_nonblocking(true);
                        kept
                    }
                    Err(e) => e.kind() == io::ErrorKind::WouldBlock,
                });
                thread::sleep(Duration::from_millis(2));
            }
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => EchoServer {
                stop,
                thread: Some(thread),
            },
            Ok(Err(e)) => panic!("echo server on port {port} in {ns}: {e}"),
            Err(_) => panic!("echo server on port {port} in {ns} did not start"),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from `src` in namespace `ns` to `dst` (blocking, bounded).
fn connect_from(ns: &str, src: IpAddr, dst: SocketAddr) -> TcpStream {
    common::in_ns(ns, || {
        let s = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP)).unwrap();
        s.bind(&SocketAddr::new(src, 0).into()).unwrap();
        s.connect_timeout(&dst.into(), Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("connect {src} -> {dst}: {e}"));
        let s: TcpStream = s.into();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
        s
    })
}

/// One line sent and echoed back over an established connection.
fn echo_once(s: &mut TcpStream, what: &str) -> Result<(), String> {
    let line = format!("{what}\n");
    s.write_all(line.as_bytes())
        .map_err(|e| format!("send {what:?}: {e}"))?;
    let mut buf = vec![0u8; line.len()];
    s.read_exact(&mut buf)
        .map_err(|e| format!("echo of {what:?}: {e}"))?;
    if buf == line.as_bytes() {
        Ok(())
    } else {
        Err(format!(
            "echo of {what:?} came back as {:?}",
            String::from_utf8_lossy(&buf)
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// A kernel-side witness of what pbxwall drops

/// Name of the test's own counting table in the pbx namespace (pbxwall never touches it).
const WITNESS_TABLE: &str = "torture_witness";

/// `ip saddr 192.0.2.10 udp dport 5060`, as nft lists it.
fn witness_match(src: IpAddr, tcp: bool, port: u16) -> String {
    let fam = if src.is_ipv4() { "ip" } else { "ip6" };
    let proto = if tcp { "tcp" } else { "udp" };
    format!("{fam} saddr {src} {proto} dport {port}")
}

/// Loads a table with two counting-only base chains around pbxwall's (priority filter):
/// `pre` (priority -150, after conntrack) sees every packet pbxwall's input chain will
/// judge, `post` (priority 100) only those it accepted. Per probe stream, pre − post is
/// what pbxwall dropped, independent of the servers and of the return path.
fn load_witness(ns: &str, rows: &[String]) {
    let rules: String = rows.iter().map(|r| format!("    {r} counter\n")).collect();
    common::nft_ok(
        ns,
        &format!(
            "table inet {WITNESS_TABLE} {{\n  chain pre {{\n    type filter hook input priority -150; policy accept;\n{rules}  }}\n  chain post {{\n    type filter hook input priority 100; policy accept;\n{rules}  }}\n}}\n"
        ),
    );
}

/// (chain, match) → packets counted.
fn witness_counts(ns: &str) -> BTreeMap<(String, String), u64> {
    let out = ns_cmd(ns, "nft", &["list", "table", "inet", WITNESS_TABLE]);
    assert!(out.status.success(), "{}", show(&out));
    let mut chain = String::new();
    let mut counts = BTreeMap::new();
    for line in stdout(&out).lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("chain ") {
            chain = name.trim_end_matches(" {").to_owned();
        } else if let Some((rule, rest)) = line.split_once(" counter packets ") {
            let packets = rest.split_whitespace().next().unwrap().parse().unwrap();
            counts.insert((chain.clone(), rule.to_owned()), packets);
        }
    }
    counts
}

// ---------------------------------------------------------------------------------------------
// 1. No leak, no gap

const PEER_NAME: &str = "peer.torture.example.test";
const FLIP_NAME: &str = "flip.torture.example.test";

fn dns_settings() -> &'static str {
    "trusted = []\n[resolver]\nnameservers = [\"192.0.2.53\"]\ntimeout_ms = 3000\nattempts = 2\n"
}

fn no_leak_no_gap_while_restart_and_ipchecker_run_back_to_back() {
    let rounds = scaled(30, 200);
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[5061], &[5060]);
    let _echo = EchoServer::start(topo.pbx_ns(), 5160);
    let dns = topo.start_dnsmasq();
    let flip = |i: usize| {
        if i.is_multiple_of(2) {
            "203.0.113.10"
        } else {
            "203.0.113.11"
        }
    };
    dns.set_records(&[
        (PEER_NAME, ip("198.51.100.10")),
        (PEER_NAME, ip("2001:db8:1::10")),
        (FLIP_NAME, ip(flip(0))),
    ]);
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", dns_settings());
    let ns = Some(topo.pbx_ns());
    ok(
        cfg.run(
            ns,
            "add-ip",
            [
                "office",
                "192.0.2.10",
                "2001:db8::10",
                "--allow",
                "sip-udp,sip-tcp",
            ],
        ),
        "add-ip office",
    );
    ok(
        cfg.run(ns, "add-fqdn", ["peer", PEER_NAME, "--allow", "1,2"]),
        "add-fqdn peer",
    );
    ok(
        cfg.run(ns, "add-fqdn", ["flip", FLIP_NAME, "--allow", "iax"]),
        "add-fqdn flip",
    );
    common::assert_probes(
        &topo,
        &[
            Probe::udp("192.0.2.10", 5060, true),
            Probe::udp("2001:db8:1::10", 5060, true),
            Probe::tcp("198.51.100.10", 5061, true),
            Probe::tcp("2001:db8::10", 5061, true),
            Probe::udp("192.0.2.11", 5060, false),
            Probe::udp("2001:db8::11", 5060, false),
            Probe::tcp("198.51.100.11", 5061, false),
            Probe::tcp("2001:db8::11", 5061, false),
        ],
    );

    // Long-lived connections from allowed sources (one per family, one of them from the
    // address a name resolves to).
    let pbx4 = SocketAddr::new(topo.pbx_v4(), 5160);
    let pbx6 = SocketAddr::new(topo.pbx_v6(), 5160);
    let mut conns = [
        (
            "192.0.2.10",
            connect_from(topo.client_ns(), ip("192.0.2.10"), pbx4),
        ),
        (
            "2001:db8:1::10",
            connect_from(topo.client_ns(), ip("2001:db8:1::10"), pbx6),
        ),
    ];

    let ms = Duration::from_millis;
    let udp = |name, src: &str, timeout| ProberSpec {
        name,
        tcp: false,
        src: ip(src),
        dst: SocketAddr::new(common::pbx_addr_for(ip(src)), 5060),
        interval: ms(2),
        timeout,
    };
    let tcp = |name, src: &str, timeout| ProberSpec {
        name,
        tcp: true,
        src: ip(src),
        dst: SocketAddr::new(common::pbx_addr_for(ip(src)), 5061),
        interval: ms(5),
        timeout,
    };
    // Allowed probes get a generous timeout (a scheduler hiccup is not a loss; a dropped
    // probe never comes back however long we wait); strangers a short one (a leaked answer
    // comes back within a millisecond or two).
    let probers = [
        (udp("allowed udp v4 (add-ip)", "192.0.2.10", ms(2000)), true),
        (
            udp("allowed udp v6 (add-fqdn)", "2001:db8:1::10", ms(2000)),
            true,
        ),
        (
            tcp("allowed tcp v4 (add-fqdn)", "198.51.100.10", ms(3500)),
            true,
        ),
        (
            tcp("allowed tcp v6 (add-ip)", "2001:db8::10", ms(3500)),
            true,
        ),
        (udp("stranger udp v4", "192.0.2.11", ms(1000)), false),
        (udp("stranger udp v6", "2001:db8::11", ms(1000)), false),
        (tcp("stranger tcp v4", "198.51.100.11", ms(1000)), false),
        (tcp("stranger tcp v6", "2001:db8::11", ms(1000)), false),
    ];

    let rows: Vec<String> = probers
        .iter()
        .map(|(p, _)| witness_match(p.src, p.tcp, p.dst.port()))
        .collect();
    load_witness(topo.pbx_ns(), &rows);

    let stop = AtomicBool::new(false);
    let mut failures: Vec<String> = Vec::new();
    let mut element_updates = 0;
    let mut echoes = 0;
    let mut took = (Duration::ZERO, Duration::ZERO);
    let started = Instant::now();
    let results: Vec<ProbeStats> = thread::scope(|s| {
        let handles: Vec<_> = probers
            .iter()
            .enumerate()
            .map(|(k, (spec, _))| {
                let (stop, client) = (&stop, topo.client_ns());
                s.spawn(move || {
                    enter_ns(client).unwrap();
                    run_prober(*spec, 20_000 + 1000 * k as u16, stop)
                })
            })
            .collect();
        let _stop = StopOnDrop(&stop);
        thread::sleep(ms(300));
        for i in 0..rounds {
            // Every other restart also changes the structure: an account with a combination of
            // services no other has comes and goes, and with it a chain (allow_web).
            let churn = if i.is_multiple_of(2) {
                cfg.run(
                    ns,
                    "add-ip",
                    ["churn", "203.0.113.200", "--allow", "web", "--no-restart"],
                )
            } else {
                cfg.run(ns, "del-acct", ["churn", "--no-restart"])
            };
            if churn.status.code() != Some(0) {
                failures.push(format!("churn {i}: {}", show(&churn)));
            }
            let t = Instant::now();
            let out = cfg.run(ns, "restart", [] as [&str; 0]);
            took.0 += t.elapsed();
            if out.status.code() != Some(0) {
                failures.push(format!("restart {i}: {}", show(&out)));
            }
            for (src, c) in conns.iter_mut() {
                match echo_once(c, &format!("after restart {i}")) {
                    Ok(()) => echoes += 1,
                    Err(e) => failures.push(format!("connection from {src}: {e}")),
                }
            }
            dns.set_records(&[
                (PEER_NAME, ip("198.51.100.10")),
                (PEER_NAME, ip("2001:db8:1::10")),
                (FLIP_NAME, ip(flip(i + 1))),
            ]);
            let t = Instant::now();
            let out = cfg.run(ns, "ipchecker", ["--json"]);
            took.1 += t.elapsed();
            let apply = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .map(|v| v["apply"].as_str().unwrap_or("").to_owned())
                .unwrap_or_default();
            if out.status.code() != Some(0) {
                failures.push(format!("ipchecker {i}: {}", show(&out)));
            } else if apply == "elements" {
                element_updates += 1;
            }
            for (src, c) in conns.iter_mut() {
                match echo_once(c, &format!("after ipchecker {i}")) {
                    Ok(()) => echoes += 1,
                    Err(e) => failures.push(format!("connection from {src}: {e}")),
                }
            }
        }
        thread::sleep(ms(300));
        stop.store(true, Ordering::SeqCst);
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });

    report(format_args!(
        "no-leak-no-gap: {rounds} restarts (avg {:.0} ms, every other one adding or removing a chain) and {rounds} ipchecker runs (avg {:.0} ms, {element_updates} element updates) in {:.1} s; {echoes} echoes over 2 established connections",
        took.0.as_secs_f64() * 1000.0 / rounds as f64,
        took.1.as_secs_f64() * 1000.0 / rounds as f64,
        started.elapsed().as_secs_f64()
    ));
    let counts = witness_counts(topo.pbx_ns());
    for (((spec, allowed), st), row) in probers.iter().zip(&results).zip(&rows) {
        let pre = counts[&("pre".to_owned(), row.clone())];
        let post = counts[&("post".to_owned(), row.clone())];
        report(format_args!(
            "  {:<27} {st}; kernel: {pre} packets in, {post} accepted",
            spec.name
        ));
        assert!(st.sent >= 50, "{}: only {} probes sent", spec.name, st.sent);
        if *allowed {
            let dropped = pre.saturating_sub(post);
            let missed = st.lost + st.refused + st.retransmitted;
            if missed != 0 || dropped != 0 {
                failures.push(format!(
                    "GAP: {}: {st}; pbxwall dropped {dropped} of {pre} packets",
                    spec.name
                ));
            }
        } else if st.answered != 0 || post != 0 {
            failures.push(format!(
                "LEAK: {}: {st}; pbxwall accepted {post} of {pre} packets",
                spec.name
            ));
        }
    }
    if element_updates < rounds {
        failures.push(format!(
            "ipchecker applied element updates in only {element_updates} of {rounds} runs"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    status_in_sync(&cfg, &topo).unwrap();
}

/// Sends UDP datagrams from `src` to `dst` as fast as it can (unconnected socket, errors
/// ignored) until `stop`, at most `max`, from the calling thread's namespace; returns how
/// many it sent.
fn flood(src: IpAddr, dst: SocketAddr, stop: &AtomicBool, max: Duration) -> u64 {
    let sock = Socket::new(Domain::for_address(dst), Type::DGRAM, Some(Protocol::UDP)).unwrap();
    sock.bind(&SocketAddr::new(src, 0).into()).unwrap();
    let to = SockAddr::from(dst);
    let started = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < max {
        for _ in 0..64 {
            if sock.send_to(b"flood", &to).is_ok() {
                sent += 1;
            }
        }
    }
    sent
}

/// Runs `commands` rounds of `step` while one flooder sends from each of `sources` (UDP to
/// `port` of the pbx); returns (sent, witness pre, witness post) per source.
fn flood_while(
    topo: &Topology,
    sources: &[&str],
    port: u16,
    mut step: impl FnMut(usize) -> Result<(), String>,
    rounds: usize,
) -> (Vec<(u64, u64, u64)>, Vec<String>) {
    let rows: Vec<String> = sources
        .iter()
        .map(|s| witness_match(ip(s), false, port))
        .collect();
    load_witness(topo.pbx_ns(), &rows);
    let stop = AtomicBool::new(false);
    let mut failures = Vec::new();
    let sent: Vec<u64> = thread::scope(|s| {
        let handles: Vec<_> = sources
            .iter()
            .map(|src| {
                let (stop, client) = (&stop, topo.client_ns());
                let dst = SocketAddr::new(common::pbx_addr_for(ip(src)), port);
                s.spawn(move || {
                    enter_ns(client).unwrap();
                    flood(ip(src), dst, stop, PROBER_MAX_LIFETIME)
                })
            })
            .collect();
        let _stop = StopOnDrop(&stop);
        thread::sleep(Duration::from_millis(100));
        for i in 0..rounds {
            if let Err(e) = step(i) {
                failures.push(e);
            }
        }
        thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::SeqCst);
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let counts = witness_counts(topo.pbx_ns());
    let out = rows
        .iter()
        .zip(sent)
        .map(|(row, sent)| {
            (
                sent,
                counts[&("pre".to_owned(), row.clone())],
                counts[&("post".to_owned(), row.clone())],
            )
        })
        .collect();
    (out, failures)
}

const MOVE_NAME: &str = "move.torture.example.test";

fn ipchecker_element_updates_never_drop_packets_of_allowed_sources() {
    let rounds = scaled(30, 200);
    let topo = Topology::new();
    let dns = topo.start_dnsmasq();
    // One name, two addresses: one stays, one moves; both in the set ipchecker updates.
    let records = |i: usize| {
        let moving = if i.is_multiple_of(2) {
            "203.0.113.10"
        } else {
            "203.0.113.11"
        };
        [(MOVE_NAME, ip("198.51.100.10")), (MOVE_NAME, ip(moving))]
    };
    dns.set_records(&records(0));
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", dns_settings());
    let ns = Some(topo.pbx_ns());
    ok(
        cfg.run(ns, "add-ip", ["office", "192.0.2.10", "--allow", "sip-udp"]),
        "add-ip office",
    );
    ok(
        cfg.run(ns, "add-fqdn", ["mover", MOVE_NAME, "--allow", "sip-udp"]),
        "add-fqdn mover",
    );
    let mut updates = 0;
    let started = Instant::now();
    let (counts, mut failures) = flood_while(
        &topo,
        &["198.51.100.10", "192.0.2.10"],
        5061,
        |i| {
            dns.set_records(&records(i + 1));
            let out = cfg.run(ns, "ipchecker", ["--json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if out.status.code() == Some(0) && v["apply"] == "elements" {
                updates += 1;
                Ok(())
            } else {
                Err(format!(
                    "ipchecker {i}: not an element update: {}",
                    show(&out)
                ))
            }
        },
        rounds,
    );
    let elapsed = started.elapsed();
    for ((sent, pre, post), src) in counts.iter().zip(["198.51.100.10", "192.0.2.10"]) {
        report(format_args!(
            "ipchecker-gap: {rounds} element updates in {:.1} s; flood from {src}: sent {sent}, {pre} reached pbxwall, {post} accepted",
            elapsed.as_secs_f64()
        ));
        if pre != post || *pre == 0 {
            failures.push(format!(
                "GAP: from {src} pbxwall dropped {} of {pre}",
                pre - post
            ));
        }
    }
    assert_eq!(updates, rounds, "{}", failures.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn restart_never_drops_packets_of_allowed_sources() {
    let rounds = scaled(100, 400);
    let topo = Topology::new();
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", "trusted = []\n");
    let ns = Some(topo.pbx_ns());
    ok(
        cfg.run(
            ns,
            "add-ip",
            [
                "office",
                "192.0.2.10",
                "198.51.100.0/24",
                "--allow",
                "sip-udp",
            ],
        ),
        "add-ip office",
    );
    let started = Instant::now();
    let (counts, mut failures) = flood_while(
        &topo,
        &["192.0.2.10"],
        5061,
        |i| {
            // Every other restart also changes the structure (chain allow_web comes and goes).
            let churn = if i.is_multiple_of(2) {
                cfg.run(
                    ns,
                    "add-ip",
                    ["churn", "203.0.113.200", "--allow", "web", "--no-restart"],
                )
            } else {
                cfg.run(ns, "del-acct", ["churn", "--no-restart"])
            };
            if churn.status.code() != Some(0) {
                return Err(format!("churn {i}: {}", show(&churn)));
            }
            let out = cfg.run(ns, "restart", [] as [&str; 0]);
            match out.status.code() {
                Some(0) => Ok(()),
                _ => Err(format!("restart {i}: {}", show(&out))),
            }
        },
        rounds,
    );
    let (sent, pre, post) = counts[0];
    report(format_args!(
        "restart-gap: {rounds} restarts in {:.1} s; flood from 192.0.2.10: sent {sent}, {pre} reached pbxwall, {post} accepted, {} dropped",
        started.elapsed().as_secs_f64(),
        pre - post
    ));
    if pre != post || pre == 0 {
        failures.push(format!(
            "GAP: pbxwall dropped {} of {pre} packets of an allowed source",
            pre - post
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 2. No lost writes

const LW_NAME: &str = "lw.torture.example.test";

/// The account worker `w` creates in its operation `i`, and its addresses.
fn lw_account(w: usize, i: usize, ops: usize) -> (String, Vec<String>) {
    let idx = w * ops + i;
    let v4 = format!("203.0.113.{}", 1 + idx % 250);
    let v6 = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, w as u16, i as u16).to_string();
    (format!("w{w}-op{i}"), vec![v4, v6])
}

fn no_lost_writes_with_concurrent_writers_and_ipchecker() {
    let workers = 8;
    let ops = scaled(25, 60);
    let topo = Topology::new();
    let dns = topo.start_dnsmasq();
    dns.set_records(&[(LW_NAME, ip("198.51.100.10"))]);
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", dns_settings());
    let ns = Some(topo.pbx_ns());
    ok(
        cfg.run(ns, "add-fqdn", ["lw", LW_NAME, "--allow", "sip-udp"]),
        "add-fqdn lw",
    );
    let services = ["sip-udp", "sip-tcp,iax", "3", "web", "1,2,3"];

    let done = AtomicBool::new(false);
    let failures = Mutex::new(Vec::<String>::new());
    let fail = |f: String| failures.lock().unwrap().push(f);
    let (ipchecker_runs, restart_runs, reader_runs) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let started = Instant::now();
    let expected: BTreeMap<String, Vec<String>> = thread::scope(|s| {
        let _stop = StopOnDrop(&done);
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (cfg, fail, services) = (&cfg, &fail, &services);
                s.spawn(move || {
                    let mut mine: BTreeMap<String, Vec<String>> = BTreeMap::new();
                    for i in 0..ops {
                        if i % 5 == 4 {
                            // Delete an own account made three operations ago.
                            let (victim, _) = lw_account(w, i - 3, ops);
                            let out = cfg.run(ns, "del-acct", [victim.as_str()]);
                            if out.status.code() == Some(0) {
                                mine.remove(&victim);
                            } else {
                                fail(format!("worker {w}: del-acct {victim}: {}", show(&out)));
                            }
                            continue;
                        }
                        let (acct, addrs) = lw_account(w, i, ops);
                        let mut args = vec![acct.clone()];
                        args.extend(addrs.iter().cloned());
                        args.extend(["--allow".into(), services[i % services.len()].into()]);
                        args.extend(["--comment".into(), format!("worker {w} op {i}")]);
                        if i % 3 == 2 {
                            args.push("--no-restart".into());
                        }
                        let out = cfg.run(ns, "add-ip", &args);
                        if out.status.code() == Some(0) {
                            mine.insert(acct, addrs);
                        } else {
                            fail(format!("worker {w}: add-ip {args:?}: {}", show(&out)));
                        }
                    }
                    mine
                })
            })
            .collect();
        // ipchecker (with a name that moves every time) and restart, back to back.
        let checker = s.spawn(|| {
            let mut i = 0usize;
            while !done.load(Ordering::SeqCst) && i < 10_000 {
                i += 1;
                let addr = if i.is_multiple_of(2) {
                    "198.51.100.10"
                } else {
                    "198.51.100.11"
                };
                dns.set_records(&[(LW_NAME, ip(addr))]);
                let (cmd, args): (&str, &[&str]) = if i.is_multiple_of(4) {
                    ("restart", &[])
                } else {
                    ("ipchecker", &["--json"])
                };
                let out = cfg.run(ns, cmd, args);
                if out.status.code() != Some(0) {
                    fail(format!("{cmd} {i}: {}", show(&out)));
                }
                let runs = if cmd == "restart" {
                    &restart_runs
                } else {
                    &ipchecker_runs
                };
                runs.fetch_add(1, Ordering::SeqCst);
            }
        });
        // A reader without the lock: must never see a half-written or broken file.
        let reader = s.spawn(|| {
            let mut i = 0usize;
            while !done.load(Ordering::SeqCst) && i < 10_000 {
                i += 1;
                let out = cfg.run(ns, "restart", ["--dry-run"]);
                let err = stderr(&out);
                if out.status.code() != Some(0) || err.contains("skipped") {
                    fail(format!("reader: restart --dry-run {i}: {}", show(&out)));
                }
                reader_runs.fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(20));
            }
        });
        let mut all = BTreeMap::new();
        for h in handles {
            all.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        done.store(true, Ordering::SeqCst);
        for h in [checker, reader] {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        }
        all
    });
    let elapsed = started.elapsed();
    let mut failures = failures.into_inner().unwrap();

    // Exactly the expected accounts, each with its own addresses.
    let on_disk = parse_all_accounts(&cfg);
    let mut want: BTreeSet<String> = expected.keys().map(|k| format!("{k}.toml")).collect();
    want.insert("lw.toml".into());
    let have: BTreeSet<String> = on_disk.keys().cloned().collect();
    for missing in want.difference(&have) {
        failures.push(format!("LOST WRITE: {missing} is missing"));
    }
    for extra in have.difference(&want) {
        failures.push(format!("unexpected file {extra} (a delete was lost?)"));
    }
    for (file, parsed) in &on_disk {
        match parsed {
            Err(e) => failures.push(format!("{file} does not parse: {e}")),
            Ok(a) => {
                if let Some(addrs) = expected.get(a.name.as_str()) {
                    let got: Vec<String> = a.addresses.iter().map(store::display_net).collect();
                    if &got != addrs {
                        failures.push(format!("{file}: addresses {got:?}, want {addrs:?}"));
                    }
                }
            }
        }
    }
    for dir in [cfg.config_dir(), cfg.state_dir()] {
        let temps = temp_files(dir);
        if !temps.is_empty() {
            failures.push(format!("temp files left in {}: {temps:?}", dir.display()));
        }
    }
    let dry = cfg.run(ns, "restart", ["--dry-run"]);
    if dry.status.code() != Some(0) || stderr(&dry).contains("skipped") {
        failures.push(format!("final restart --dry-run: {}", show(&dry)));
    }
    let out = cfg.run(ns, "restart", [] as [&str; 0]);
    if out.status.code() != Some(0) {
        failures.push(format!("final restart: {}", show(&out)));
    }
    if let Err(e) = status_in_sync(&cfg, &topo) {
        failures.push(e);
    }
    // The kernel holds every expected address (read back through netlink).
    match common::in_ns(topo.pbx_ns(), netlink::read_table) {
        Ok(Some(table)) => {
            for (acct, addrs) in &expected {
                for a in addrs {
                    let addr = ip(a);
                    let found = table
                        .sets
                        .iter()
                        .any(|set| set.elements.iter().any(|e| e.range.contains(addr)));
                    if !found {
                        failures.push(format!("{a} of account {acct} is in no live set"));
                    }
                }
            }
        }
        other => failures.push(format!(
            "reading the table after the final restart: {other:?}"
        )),
    }
    report(format_args!(
        "no-lost-writes: {workers} workers x {ops} operations ({} accounts kept), {} ipchecker + {} restart runs, {} lock-free dry-runs, in {:.1} s; {} problems",
        expected.len(),
        ipchecker_runs.load(Ordering::SeqCst),
        restart_runs.load(Ordering::SeqCst),
        reader_runs.load(Ordering::SeqCst),
        elapsed.as_secs_f64(),
        failures.len()
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 3. Crash safety

/// What to run in a crash round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum CrashOp {
    AddIp,
    DelAcct,
    Restart,
}

fn kill_9_at_random_moments_leaves_the_old_or_the_new_ruleset() {
    let rounds = scaled(40, 300);
    let seed = seed();
    let mut rng = Rng::new(seed);
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[], &[5060]);
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", "trusted = []\n");
    // A bulky account makes every apply and file write take long enough to be hit.
    let bulk: Vec<String> = (0..4000)
        .map(|i| format!("\"2001:db8:2:{:x}::/64\"", i * 2))
        .collect();
    cfg.write(
        "accounts/bulk.toml",
        &format!("addresses = [{}]\nservices = [\"web\"]\n", bulk.join(", ")),
    );
    let ns = Some(topo.pbx_ns());
    ok(
        cfg.run(ns, "add-ip", ["base", "192.0.2.10", "--allow", "sip-udp"]),
        "add-ip base",
    );
    let allowed = [Probe::udp("192.0.2.10", 5060, true)];
    let stranger = [Probe::udp("192.0.2.11", 5060, false)];

    // How long each command takes here, so the kills spread over its whole run.
    let time_it = |bin: &str, args: &[&str]| {
        let t = Instant::now();
        ok(cfg.run(ns, bin, args), bin);
        t.elapsed()
    };
    let t_add = time_it("add-ip", &["timing", "192.0.2.200", "--allow", "iax"]);
    let t_del = time_it("del-acct", &["timing"]);
    let t_restart = time_it("restart", &[]);

    let mut failures: Vec<String> = Vec::new();
    let mut tally: BTreeMap<(CrashOp, &str), usize> = BTreeMap::new();
    let (mut old_seen, mut new_seen) = (0, 0);
    let mut crash_accounts: Vec<String> = Vec::new();
    let started = Instant::now();
    for r in 0..rounds {
        let Some(old) = live_table(&topo) else {
            failures.push(format!("round {r}: no table before the round"));
            break;
        };
        let mut op = *rng.pick(&[
            CrashOp::AddIp,
            CrashOp::AddIp,
            CrashOp::DelAcct,
            CrashOp::Restart,
        ]);
        if op == CrashOp::DelAcct && crash_accounts.is_empty() {
            op = CrashOp::AddIp;
        }
        let (bin, args, typical): (&str, Vec<String>, Duration) = match op {
            CrashOp::AddIp => (
                "add-ip",
                vec![
                    format!("crash{r}"),
                    format!("203.0.113.{}", 1 + r % 250),
                    format!("2001:db8:1::{r:x}"),
                    "--allow".into(),
                    rng.pick(&["sip-udp", "iax", "web,ssh", "0"]).to_string(),
                ],
                t_add,
            ),
            CrashOp::DelAcct => {
                let victim = crash_accounts[rng.below(crash_accounts.len())].clone();
                ("del-acct", vec![victim], t_del)
            }
            CrashOp::Restart => ("restart", vec![], t_restart),
        };
        // Uniform over 0..1.3 × the typical run time, in microseconds.
        let delay = Duration::from_micros(rng.below(typical.as_micros() as usize * 13 / 10) as u64);
        let mut cmd = cfg.command(ns, &common::bin(bin), &args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        thread::sleep(delay);
        // `ip netns exec` execs the program itself: this PID is pbxwall's.
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        // SAFETY: kill(2) on our own child, not reaped yet (we hold the Child).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let status = common::wait_bounded(&mut child, Duration::from_secs(30)).expect("reaped");
        let mut errtext = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut errtext);
        }
        let fate = match (status.signal(), status.code()) {
            (Some(9), _) => "killed",
            (_, Some(0)) => "finished",
            _ => {
                failures.push(format!(
                    "round {r}: {bin} {args:?} exited {status}: {errtext}"
                ));
                "failed"
            }
        };
        *tally.entry((op, fate)).or_default() += 1;

        // Every visible file parses; nothing else than account files is visible.
        for (file, parsed) in parse_all_accounts(&cfg) {
            match parsed {
                Err(e) => failures.push(format!(
                    "round {r} ({bin} {fate} after {delay:?}): {file}: {e}"
                )),
                Ok(_) if !file.ends_with(".toml") => {
                    failures.push(format!("round {r}: stray visible file {file}"))
                }
                Ok(_) => {}
            }
        }
        for f in ["state.json", "dns-cache.json"] {
            if let Ok(text) = std::fs::read_to_string(cfg.state_dir().join(f))
                && let Err(e) = serde_json::from_str::<serde_json::Value>(&text)
            {
                failures.push(format!("round {r}: {f} does not parse: {e}"));
            }
        }
        let dry = cfg.run(None, "restart", ["--dry-run"]);
        if dry.status.code() != Some(0) || stderr(&dry).contains("skipped") {
            failures.push(format!(
                "round {r}: restart --dry-run after the kill: {}",
                show(&dry)
            ));
        }
        let new = normalize(&stdout(&dry));

        // The kernel: still a table, and it is the old or the new ruleset.
        match live_table(&topo) {
            None => failures.push(format!(
                "round {r}: NO TABLE after {bin} was {fate} at {delay:?}"
            )),
            Some(live) if live == old => old_seen += 1,
            Some(live) if live == new => new_seen += 1,
            Some(live) => failures.push(format!(
                "round {r}: after {bin} was {fate} at {delay:?} the live table is neither the old nor the new ruleset:\n--- live ---\n{live}\n--- old ---\n{old}\n--- new ---\n{new}"
            )),
        }
        // An account in both is still allowed; a stranger still is not.
        let a =
            common::probe_matrix_with(topo.client_ns(), &allowed, Duration::from_millis(400), 3);
        let b =
            common::probe_matrix_with(topo.client_ns(), &stranger, Duration::from_millis(200), 1);
        for res in a.iter().chain(&b).filter(|p| !p.ok()) {
            failures.push(format!(
                "round {r} ({bin} {fate} at {delay:?}): {} expected {} got {}",
                res.probe,
                if res.probe.expect_open {
                    "open"
                } else {
                    "closed"
                },
                res.outcome
            ));
        }
        // Track the crash accounts that exist now.
        crash_accounts = parse_all_accounts(&cfg)
            .into_keys()
            .filter_map(|f| f.strip_suffix(".toml").map(str::to_owned))
            .filter(|n| n.starts_with("crash"))
            .collect();
        if failures.len() > 20 {
            break;
        }
    }
    let temps = temp_files(cfg.root());
    // Recovery: the next restart applies the files and the kernel matches them.
    let out = cfg.run(ns, "restart", [] as [&str; 0]);
    if out.status.code() != Some(0) {
        failures.push(format!("final restart: {}", show(&out)));
    }
    if let Err(e) = status_in_sync(&cfg, &topo) {
        failures.push(e);
    }
    let mut summary = String::new();
    for ((op, fate), n) in &tally {
        summary += &format!(" {op:?} {fate} {n};");
    }
    report(format_args!(
        "crash-safety: {rounds} rounds (seed {seed:#x}) in {:.1} s; typical add-ip {:.0} ms, del-acct {:.0} ms, restart {:.0} ms;{summary} live = old {old_seen}, live = new {new_seen}; {} temp files left by kills: {}",
        started.elapsed().as_secs_f64(),
        t_add.as_secs_f64() * 1000.0,
        t_del.as_secs_f64() * 1000.0,
        t_restart.as_secs_f64() * 1000.0,
        temps.len(),
        temps.iter().take(5).cloned().collect::<Vec<_>>().join(" ")
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 4. Hostile input

/// Valid inputs of each parser, to truncate, mutate and splice.
const ACCOUNT_CORPUS: &[&str] = &[
    "addresses = [\"203.0.113.7\", \"2001:db8::/48\"]\nfqdns = [\"joe.dyndns.example\"]\nservices = [\"sip-udp\", \"iax\"]\ncomment = \"Joe's softphone\"\ncreated = 2026-11-22T10:00:00Z\n",
    "addresses = [\"198.51.100.0/28\"]\nservices = [0]\n",
    "fqdns = [\"bücher.example\"]\nservices = [1, 3, \"web\"]\nmedia = [\"192.0.2.0/24\"]\nprovider = \"telnyx\"\n",
    "services = [\"ssh\"]\naddresses = [\n  \"192.0.2.1\",\n  \"::ffff:192.0.2.2\",\n]\n",
];
const SETTINGS_CORPUS: &[&str] = &[
    "trusted = [\"10.0.0.0/8\", \"172.16.0.0/12\", \"192.168.0.0/16\", \"fc00::/7\"]\nlog_drops = true\n[resolver]\nnameservers = [\"192.0.2.53:53\", \"[2001:db8::53]:5353\"]\ntimeout_ms = 2000\nattempts = 2\nstale_grace_s = 3600\n[rtp]\nports = \"10000-20000\"\nfrom = \"any\"\n",
    "",
    "[rtp]\nfrom = \"whitelist\"\nports = \"12000-12100\"\n",
];
const PROFILE_CORPUS: &[&str] = &[
    "code = 1\nname = \"sip-udp\"\ndescription = \"SIP over UDP\"\nports = [\"udp/5060-5061\", \"udp/5160-5161\"]\n",
    "name = \"all\"\ncode = 0\nports = [\"all\"]\n",
    "name = \"my-app\"\nports = [\"tcp/8443\"]\n",
];
const SOURCE_CORPUS: &[&str] = &[
    "203.0.113.7",
    "198.51.100.0/24",
    "2001:db8::/48",
    "::ffff:192.0.2.1",
    "0.0.0.0/0",
    "fe80::1",
    " 192.0.2.1 ",
];
const FQDN_CORPUS: &[&str] = &[
    "joe.dyndns.example",
    "Joe.DynDNS.Example.",
    "bücher.example",
    "xn--bcher-kva.example",
    "a-b.c_d.example",
];
const SERVICES_CORPUS: &[&str] = &["sip-udp,iax", "0", "1,2,3", " 9 ", "all", "SIP-UDP, web"];
const CRON_CORPUS: &[&str] = &[
    "*/5 * * * *",
    "0 0 * * 1-5",
    "15,45 */2 1 1-12/3 sun",
    "0 4 29 2 *",
    "@hourly",
];

/// Pieces that break parsers: huge and odd numbers, unicode lookalikes, control characters,
/// separators, nesting.
const HOSTILE: &[&str] = &[
    "\0",
    "\u{0}\u{0}\u{0}",
    "99999999999999999999999999999999",
    "-9223372036854775809",
    "18446744073709551616",
    "4294967296",
    "65536",
    "-1",
    "1e309",
    "nan",
    "inf",
    "0x7fffffff",
    "0o777",
    "1_000",
    "256.256.256.256",
    "/129",
    "/4294967296",
    "::::",
    "%eth0",
    "\u{202e}",
    "\u{200b}",
    "\u{feff}",
    "ℌ",
    "１２３",
    "𝟘",
    "İ",
    "ß",
    "a\u{301}",
    "🐛",
    "。",
    "．",
    "xn--",
    "xn--zz",
    "../",
    "\\",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    "\r\n",
    "\n",
    "\t",
    "#",
    "=",
    "[",
    "]",
    "[[",
    "{",
    "}",
    ",",
    "*",
    "/",
    "-",
    "?",
    "L",
    "W",
    "#5",
    "@",
    "@reboot",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:60Z",
    "true",
    "services",
    "addresses",
    "all",
];

fn char_boundary_floor(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One hostile input derived from `corpus`.
fn hostile_input(rng: &mut Rng, corpus: &[&str]) -> String {
    let base = *rng.pick(corpus);
    match rng.below(9) {
        // Random bytes, made text (lossy).
        0 => {
            let n = rng.below(160);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        // Random text from a parser-ish alphabet.
        1 => {
            const ALPHA: &[u8] = b"[]{}=\",.:/#-_*\n \t0123456789abcdefxnAZ\\'@%";
            let n = rng.below(120);
            (0..n).map(|_| *rng.pick(ALPHA) as char).collect()
        }
        // Truncation.
        2 => base[..char_boundary_floor(base, rng.below(base.len() + 1))].to_owned(),
        // A range replaced by a hostile piece (repeated).
        3 | 4 => {
            let a = char_boundary_floor(base, rng.below(base.len() + 1));
            let b = char_boundary_floor(base, a + rng.below(8)).max(a);
            let piece = rng.pick(HOSTILE).repeat(1 + rng.below(3));
            format!("{}{piece}{}", &base[..a], &base[b..])
        }
        // Several mutations.
        5 => {
            let mut s = base.to_owned();
            for _ in 0..1 + rng.below(6) {
                let a = char_boundary_floor(&s, rng.below(s.len() + 1));
                let piece = *rng.pick(HOSTILE);
                s.insert_str(a, piece);
            }
            s
        }
        // Splice of two.
        6 => {
            let other = *rng.pick(corpus);
            let a = char_boundary_floor(base, rng.below(base.len() + 1));
            let b = char_boundary_floor(other, rng.below(other.len() + 1));
            format!("{}{}", &base[..a], &other[b..])
        }
        // Something huge: one piece repeated, or a long run.
        7 => {
            let piece = *rng.pick(HOSTILE);
            let max = if rng.chance(10) { 20_000 } else { 300 };
            let n = 1 + rng.below(max);
            if rng.chance(50) {
                piece.repeat(n)
            } else {
                format!("{base}{}", piece.repeat(n))
            }
        }
        // A byte flipped (kept if still text).
        _ => {
            let mut bytes = base.as_bytes().to_vec();
            if !bytes.is_empty() {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }
}

type Check = fn(&Profiles, &str) -> Result<(), String>;

fn check_account(profiles: &Profiles, text: &str) -> Result<(), String> {
    let path = Path::new("/etc/pbxwall/accounts/fuzz.toml");
    if let Ok(a) = store::parse_account(path, text, profiles) {
        let again = store::render_account(&a);
        let b = store::parse_account(path, &again, profiles)
            .map_err(|e| format!("accepted account does not round-trip: {e}\n{again}"))?;
        if a != b {
            return Err(format!("round trip changed the account: {a:?} -> {b:?}"));
        }
    }
    Ok(())
}

fn check_settings(_: &Profiles, text: &str) -> Result<(), String> {
    let _ = store::parse_settings(Path::new("/etc/pbxwall/pbxwall.toml"), text);
    Ok(())
}

fn check_profile(_: &Profiles, text: &str) -> Result<(), String> {
    if let Ok(p) = store::parse_profile(Path::new("/etc/pbxwall/profiles/fuzz.toml"), text)
        && p.ports.is_empty()
    {
        return Err("accepted a profile without ports".into());
    }
    Ok(())
}

fn check_source(_: &Profiles, text: &str) -> Result<(), String> {
    for force in [false, true] {
        if let Ok(net) = parse_source(text, force) {
            let shown = store::display_net(&net);
            let again = parse_source(&shown, true)
                .map_err(|e| format!("accepted {net} does not re-parse as {shown:?}: {e}"))?;
            if again != net {
                return Err(format!("{text:?} -> {net} -> {again}"));
            }
        }
    }
    Ok(())
}

fn check_fqdn(_: &Profiles, text: &str) -> Result<(), String> {
    if let Ok(f) = text.parse::<Fqdn>() {
        if f.as_str().len() > 253 {
            return Err(format!(
                "accepted a name of {} characters",
                f.as_str().len()
            ));
        }
        let again: Fqdn = f
            .as_str()
            .parse()
            .map_err(|e| format!("accepted {f} does not re-parse: {e}"))?;
        if again != f {
            return Err(format!("{f} re-parses as {again}"));
        }
    }
    Ok(())
}

fn check_services(profiles: &Profiles, text: &str) -> Result<(), String> {
    if let Ok(names) = profiles.parse_services(&[text]) {
        if names.is_empty() || names.iter().any(|n| profiles.get(n).is_none()) {
            return Err(format!("{text:?} gave {names:?}"));
        }
        let again = profiles
            .parse_services(&[names.join(",")])
            .map_err(|e| format!("{names:?} does not re-parse: {e}"))?;
        if again != names {
            return Err(format!("{names:?} re-parses as {again:?}"));
        }
    }
    Ok(())
}

fn check_cron(_: &Profiles, text: &str) -> Result<(), String> {
    if let Ok(s) = pbxwall::cron::CronSchedule::parse(text) {
        if s.as_str().contains(['\n', '\r', '%']) {
            return Err(format!(
                "accepted a schedule with a newline or %: {:?}",
                s.as_str()
            ));
        }
        let _ = s.next_runs(chrono::Local::now(), 3);
        pbxwall::cron::CronSchedule::parse(s.as_str())
            .map_err(|e| format!("accepted {:?} does not re-parse: {e}", s.as_str()))?;
    }
    Ok(())
}

/// Escapes an input for a failure message, shortened.
fn shown(input: &str) -> String {
    let s = format!("{input:?}");
    if s.len() > 300 {
        format!(
            "{}... ({} bytes)",
            &s[..char_boundary_floor(&s, 300)],
            input.len()
        )
    } else {
        s
    }
}

fn hostile_input_never_panics_or_hangs_any_parser() {
    let per_parser = scaled(600, 20_000);
    let seed = seed();
    let profiles = store::builtin_profiles();
    let parsers: [(&str, &[&str], Check); 7] = [
        ("store::parse_account", ACCOUNT_CORPUS, check_account),
        ("store::parse_settings", SETTINGS_CORPUS, check_settings),
        ("store::parse_profile", PROFILE_CORPUS, check_profile),
        ("model::parse_source", SOURCE_CORPUS, check_source),
        ("Fqdn::from_str", FQDN_CORPUS, check_fqdn),
        ("Profiles::parse_services", SERVICES_CORPUS, check_services),
        ("cron::CronSchedule::parse", CRON_CORPUS, check_cron),
    ];
    let mut failures = Vec::new();
    let mut total = 0;
    let started = Instant::now();
    // A panic is caught, reported with its input, and fails the test at the end.
    for (name, corpus, check) in parsers {
        // Each parser its own stream, derived from the seed and its name (FNV-1a).
        let salt = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let mut rng = Rng::new(seed ^ salt);
        let mut slowest = (Duration::ZERO, String::new());
        // The corpus itself, every hostile piece alone, then generated inputs.
        let fixed = corpus.iter().chain(HOSTILE).map(|s| s.to_string());
        let generated = (0..per_parser).map(|_| hostile_input(&mut rng, corpus));
        let inputs: Vec<String> = fixed.chain(generated).collect();
        for input in &inputs {
            total += 1;
            let t = Instant::now();
            let result = catch_unwind(AssertUnwindSafe(|| check(&profiles, input)));
            let took = t.elapsed();
            if took > slowest.0 {
                slowest = (took, shown(input));
            }
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("{name}: {e}\n  input: {}", shown(input))),
                Err(panic) => {
                    let msg = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failures.push(format!("{name} PANICKED: {msg}\n  input: {}", shown(input)));
                }
            }
            if took > Duration::from_secs(2) {
                failures.push(format!("{name} took {took:?} on input {}", shown(input)));
            }
        }
        report(format_args!(
            "hostile input: {name}: {} inputs, slowest {:.1} ms",
            inputs.len(),
            slowest.0.as_secs_f64() * 1000.0
        ));
    }
    report(format_args!(
        "hostile input: {total} inputs (seed {seed:#x}) in {:.1} s, {} failures",
        started.elapsed().as_secs_f64(),
        failures.len()
    ));
    failures.truncate(20);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A foreign change to table inet pbxwall, as another tool or an intruder might make it.
struct ForeignChange {
    what: &'static str,
    /// nft commands (`nft -f -` in the pbx namespace); `{TABLE}` is replaced by the live
    /// table's text, for changes that reload it altered.
    script: &'static str,
    /// Text replacements applied to the live table before `script` reloads it.
    alter: &'static [(&'static str, &'static str)],
}

const FOREIGN_CHANGES: &[ForeignChange] = &[
    ForeignChange {
        what: "table made dormant",
        script: "add table inet pbxwall { flags dormant; }\n",
        alter: &[],
    },
    ForeignChange {
        what: "base chain moved to hook forward",
        script: "delete table inet pbxwall\n{TABLE}",
        alter: &[("hook input", "hook forward")],
    },
    ForeignChange {
        what: "base chain at another priority",
        script: "delete table inet pbxwall\n{TABLE}",
        alter: &[("priority filter", "priority 10")],
    },
    ForeignChange {
        what: "policy accept",
        script: "add chain inet pbxwall input { type filter hook input priority filter; policy accept; }\n",
        alter: &[],
    },
    ForeignChange {
        what: "accept rule inserted first",
        script: "insert rule inet pbxwall input accept\n",
        alter: &[],
    },
    ForeignChange {
        what: "input chain flushed",
        script: "flush chain inet pbxwall input\n",
        alter: &[],
    },
    ForeignChange {
        what: "stranger added to the host map",
        script: "add element inet pbxwall hosts_v4 { 192.0.2.11 : jump allow_ssh }\n",
        alter: &[],
    },
    ForeignChange {
        what: "account removed from the host map",
        script: "delete element inet pbxwall hosts_v4 { 192.0.2.10 }\n",
        alter: &[],
    },
    ForeignChange {
        what: "flush ruleset",
        script: "flush ruleset\n",
        alter: &[],
    },
    ForeignChange {
        what: "table deleted",
        script: "delete table inet pbxwall\n",
        alter: &[],
    },
];

/// Random foreign changes between ipchecker runs: after each run the stranger is shut out
/// again, the account gets in, and status is back in sync.
fn ipchecker_repairs_random_foreign_changes() {
    let rounds = scaled(12, 100);
    let mut rng = Rng::new(seed() ^ 0xf0e1);
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[22], &[5060]);
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", "trusted = []\n");
    let ns = Some(topo.pbx_ns());
    ok(
        cfg.run(ns, "add-ip", ["joe", "192.0.2.10", "--allow", "ssh"]),
        "add-ip joe",
    );
    let holds = [
        Probe::tcp("192.0.2.10", 22, true),
        Probe::tcp("192.0.2.11", 22, false),
        Probe::udp("192.0.2.11", 5060, false),
        Probe::tcp("2001:db8::11", 22, false),
    ];
    let mut seen = BTreeMap::new();
    for round in 0..rounds {
        let change = rng.pick(FOREIGN_CHANGES);
        *seen.entry(change.what).or_insert(0) += 1;
        let mut table = live_table(&topo).unwrap_or_default();
        for (from, to) in change.alter {
            table = table.replace(from, to);
        }
        common::nft_ok(topo.pbx_ns(), &change.script.replace("{TABLE}", &table));
        let out = cfg.run(ns, "ipchecker", [] as [&str; 0]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "round {round}, after {}: ipchecker {}",
            change.what,
            show(&out)
        );
        if let Err(e) = common::check_probes(&topo, &holds) {
            panic!("round {round}, after {} and ipchecker: {e}", change.what);
        }
        if let Err(e) = status_in_sync(&cfg, &topo) {
            panic!("round {round}, after {} and ipchecker: {e}", change.what);
        }
    }
    report(format_args!(
        "foreign-changes: {rounds} rounds repaired by ipchecker: {seen:?}"
    ));
}

common::test_main! {
    Needs::NOTHING => [hostile_input_never_panics_or_hangs_any_parser],
    Needs::ROOT => [
        ipchecker_repairs_random_foreign_changes,
        kill_9_at_random_moments_leaves_the_old_or_the_new_ruleset,
        restart_never_drops_packets_of_allowed_sources,
    ],
    Needs::root_and(&["dnsmasq"]) => [
        ipchecker_element_updates_never_drop_packets_of_allowed_sources,
        no_leak_no_gap_while_restart_and_ipchecker_run_back_to_back,
        no_lost_writes_with_concurrent_writers_and_ipchecker,
    ],
}
