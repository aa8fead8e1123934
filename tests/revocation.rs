//! Revocation ends flows: whatever takes access away (del-acct, add-ip --replace with fewer
//! services, ipchecker moving a name, restart after an account file changed) ends the
//! running flows of the sources that lost it, and only those. Proven with real flows from
//! the client namespace: an SSH-like TCP connection whose server also writes by itself, and
//! SIP-like UDP keepalives every 100 ms, each of which must stop within a second of the
//! command while the flows of others go on. Needs root.
//!
//! "Stops" means: from one second after the command returned, for a whole second, a UDP
//! keepalive gets no answer, and a TCP connection gets no echo and no byte from the server
//! (it was reset, or its packets are dropped).

mod common;

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{Needs, Servers, TempConfig, Topology, in_ns, show, spawn_in_ns, stdout};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// How often the keepalives are sent and the TCP server writes by itself.
const PERIOD: Duration = Duration::from_millis(100);
/// A flow must have stopped this long after the command returned.
const STOP_WITHIN: Duration = Duration::from_secs(1);
/// How long a stopped flow is watched for any sign of life.
const WATCH: Duration = Duration::from_secs(1);
/// How long a flow may take to show it works (first answer, an echo).
const ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// Every helper thread ends by itself after this long.
const LIFETIME: Duration = Duration::from_secs(120);
/// Socket timeouts: how often helper threads look at their stop flag.
const POLL: Duration = Duration::from_millis(20);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pbx(src: &str, port: u16) -> SocketAddr {
    SocketAddr::new(common::pbx_addr_for(ip(src)), port)
}

#[track_caller]
fn ok(out: std::process::Output, what: &str) -> std::process::Output {
    common::assert_exit(&out, 0, what);
    out
}

fn alive(stop: &AtomicBool, started: Instant) -> bool {
    !stop.load(Ordering::Relaxed) && started.elapsed() < LIFETIME
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Waits (bounded by `limit`) until `cond` holds.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------------------------
// A TCP server that echoes and also writes by itself, like an SSH server with output

/// A dual-stack TCP listener in a namespace: every connection gets its data echoed back,
/// and `tick\n` every [`PERIOD`] (the server writing by itself is what would bring a
/// connection back to life if only its conntrack entry were deleted). Stopped and joined on
/// drop.
struct TalkingServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TalkingServer {
    fn start(ns: &str, port: u16) -> TalkingServer {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = Arc::clone(&stop);
        let thread = spawn_in_ns(ns, move || {
            let listener = match listener(port) {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let started = Instant::now();
            let mut conns = Vec::new();
            while alive(&flag, started) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let flag = Arc::clone(&flag);
                        conns.push(thread::spawn(move || talk(conn, &flag)));
                    }
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => thread::sleep(POLL),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("tcp server on port {port} in {ns}: {e}"),
            Err(_) => panic!("tcp server on port {port} in {ns} did not start"),
        }
        TalkingServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TalkingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn listener(port: u16) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    s.set_only_v6(false)?;
    s.set_reuse_address(true)?;
    s.set_read_timeout(Some(POLL))?;
    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    s.listen(16)?;
    Ok(s.into())
}

/// One connection of [`TalkingServer`]: echo what comes, tick every period, until an error.
fn talk(mut conn: TcpStream, stop: &AtomicBool) {
    let started = Instant::now();
    let _ = conn.set_read_timeout(Some(POLL));
    let _ = conn.set_write_timeout(Some(PERIOD));
    let mut next_tick = Instant::now() + PERIOD;
    let mut buf = [0u8; 1024];
    while alive(stop, started) {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
        if Instant::now() >= next_tick {
            next_tick += PERIOD;
            if conn.write_all(b"tick\n").is_err() {
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A TCP connection, watched from its client end

/// A TCP connection opened from `src` in a namespace, with a thread recording when bytes
/// arrived and whether the connection was reset. Closed and joined on drop.
struct TcpSession {
    what: String,
    stream: TcpStream,
    got: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Received {
    /// Everything received, in order.
    bytes: Vec<u8>,
    /// When the last bytes arrived.
    last: Option<Instant>,
    /// How the connection ended, when it did.
    end: Option<String>,
}

static PING: AtomicU64 = AtomicU64::new(0);

impl TcpSession {
    fn open(ns: &str, src: &str, dst: SocketAddr) -> TcpSession {
        let what = format!("tcp {src} -> {dst}");
        let stream = in_ns(ns, || {
            let s = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))
                .expect("socket");
            s.bind(&SockAddr::from(SocketAddr::new(ip(src), 0)))
                .unwrap_or_else(|e| panic!("{what}: bind: {e}"));
            s.connect_timeout(&dst.into(), ANSWER_WITHIN)
                .unwrap_or_else(|e| panic!("{what}: connect: {e}"));
            TcpStream::from(s)
        });
        stream.set_read_timeout(Some(POLL)).unwrap();
        stream.set_write_timeout(Some(POLL)).unwrap();
        let got = Arc::new(Mutex::new(Received::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let mut stream = stream.try_clone().unwrap();
            let got = Arc::clone(&got);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let started = Instant::now();
                let mut buf = [0u8; 4096];
                while alive(&stop, started) {
                    let end = match stream.read(&mut buf) {
                        Ok(0) => "closed by the server".to_owned(),
                        Ok(n) => {
                            let mut g = got.lock().unwrap();
                            g.bytes.extend_from_slice(&buf[..n]);
                            g.last = Some(Instant::now());
                            continue;
                        }
                        Err(e) if is_timeout(&e) => continue,
                        Err(e) => e.to_string(),
                    };
                    got.lock().unwrap().end = Some(end);
                    return;
                }
            })
        };
        TcpSession {
            what,
            stream,
            got,
            stop,
            reader: Some(reader),
        }
    }

    /// Sends a unique line and waits up to `limit` for its echo.
    fn echoes(&self, limit: Duration) -> bool {
        let line = format!("ping {}\n", PING.fetch_add(1, Ordering::Relaxed));
        if (&self.stream).write_all(line.as_bytes()).is_err() {
            return false;
        }
        wait_for(limit, || {
            let g = self.got.lock().unwrap();
            g.bytes.windows(line.len()).any(|w| w == line.as_bytes())
        })
    }

    /// The client end's port.
    fn local_port(&self) -> u16 {
        self.stream.local_addr().unwrap().port()
    }

    /// When bytes last arrived from the server.
    fn last_data(&self) -> Option<Instant> {
        self.got.lock().unwrap().last
    }

    /// How the connection ended, if it did.
    fn end(&self) -> Option<String> {
        self.got.lock().unwrap().end.clone()
    }

    /// Panics unless the connection works: an echo within [`ANSWER_WITHIN`].
    #[track_caller]
    fn assert_works(&self, when: &str) {
        assert!(
            self.echoes(ANSWER_WITHIN),
            "{}: no echo {when} (connection end: {:?})",
            self.what,
            self.end()
        );
    }

    /// Panics unless the connection is dead from `since` + [`STOP_WITHIN`] on: nothing
    /// from the server for [`WATCH`], and a line sent then is not echoed.
    #[track_caller]
    fn assert_stopped(&self, since: Instant, when: &str) {
        let from = since + STOP_WITHIN;
        thread::sleep(from.saturating_duration_since(Instant::now()));
        let echoed = self.echoes(WATCH);
        thread::sleep((from + WATCH).saturating_duration_since(Instant::now()));
        let last = self.last_data();
        assert!(
            !echoed && last.is_none_or(|t| t < from),
            "{}: still alive {when}: echoed {echoed}, data from the server {:?} after the \
             deadline (connection end: {:?})",
            self.what,
            last.map(|t| t.saturating_duration_since(from)),
            self.end()
        );
    }
}

impl Drop for TcpSession {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// UDP keepalives from a fixed port

/// A UDP socket bound to a fixed source address and port in a namespace that sends a
/// datagram every [`PERIOD`] to `dst` (a UDP echo server) and records when answers came
/// back, like a SIP phone's keepalive. Stopped and joined on drop.
struct Keepalive {
    what: String,
    answers: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Keepalive {
    fn start(ns: &str, src: SocketAddr, dst: SocketAddr) -> Keepalive {
        let what = format!("udp {src} -> {dst}");
        let sock = in_ns(ns, || {
            let s = UdpSocket::bind(src).unwrap_or_else(|e| panic!("{what}: bind: {e}"));
            s.connect(dst).unwrap();
            s
        });
        sock.set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let answers = Arc::clone(&answers);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let started = Instant::now();
                let mut next = Instant::now();
                let mut buf = [0u8; 512];
                let mut seq = 0u64;
                while alive(&stop, started) {
                    if Instant::now() >= next {
                        next += PERIOD;
                        seq += 1;
                        // ICMP errors show up as send or receive errors: keep going.
                        let _ = sock.send(format!("keepalive {seq}").as_bytes());
                    }
                    if let Ok(n) = sock.recv(&mut buf)
                        && buf[..n].starts_with(b"keepalive ")
                    {
                        answers.lock().unwrap().push(Instant::now());
                    }
                }
            })
        };
        Keepalive {
            what,
            answers,
            stop,
            thread: Some(thread),
        }
    }

    fn answers_after(&self, t: Instant) -> usize {
        self.answers
            .lock()
            .unwrap()
            .iter()
            .filter(|a| **a > t)
            .count()
    }

    /// Panics unless an answer arrives within [`ANSWER_WITHIN`] from now.
    #[track_caller]
    fn assert_answered(&self, when: &str) {
        let now = Instant::now();
        assert!(
            wait_for(ANSWER_WITHIN, || self.answers_after(now) > 0),
            "{}: no answer {when}",
            self.what
        );
    }

    /// Panics unless no answer arrives for [`WATCH`] from `since` + [`STOP_WITHIN`] on.
    #[track_caller]
    fn assert_stopped(&self, since: Instant, when: &str) {
        let from = since + STOP_WITHIN;
        thread::sleep((from + WATCH).saturating_duration_since(Instant::now()));
        let late = self.answers_after(from);
        assert_eq!(
            late, 0,
            "{}: {late} answers {when}, after the deadline",
            self.what
        );
    }
}

impl Drop for Keepalive {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tests

/// A configuration with no trusted networks but `trusted`.
fn config(trusted: &[&str]) -> TempConfig {
    let cfg = TempConfig::new();
    let t: Vec<String> = trusted.iter().map(|n| format!("\"{n}\"")).collect();
    cfg.write("pbxwall.toml", &format!("trusted = [{}]\n", t.join(", ")));
    cfg
}

#[track_caller]
fn assert_says(out: &std::process::Output, line: &str) {
    assert!(
        stdout(out).lines().any(|l| l == line),
        "expected {line:?}:\n{}",
        show(out)
    );
}

/// (a) An established TCP connection of a deleted account is cut within a second, even
/// though its server keeps writing; another account's connection goes on.
fn del_acct_cuts_the_tcp_connection_of_the_account() {
    let topo = Topology::new();
    let _server = TalkingServer::start(topo.pbx_ns(), 22);
    let cfg = config(&[]);
    let ns = Some(topo.pbx_ns());
    ok(
        cfg.run(ns, "add-ip", ["joe", "192.0.2.10", "--allow", "ssh"]),
        "add-ip joe",
    );
    ok(
        cfg.run(ns, "add-ip", ["admin", "203.0.113.10", "--allow", "ssh"]),
        "add-ip admin",
    );
    let joe = TcpSession::open(topo.client_ns(), "192.0.2.10", pbx("192.0.2.10", 22));
    let admin = TcpSession::open(topo.client_ns(), "203.0.113.10", pbx("203.0.113.10", 22));
    joe.assert_works("before del-acct");
    admin.assert_works("before del-acct");

    let out = ok(cfg.run(ns, "del-acct", ["joe"]), "del-acct joe");
    let done = Instant::now();
    assert_says(
        &out,
        "ended 1 flow of a source that lost access: 192.0.2.10 tcp/22",
    );
    joe.assert_stopped(done, "after del-acct joe");
    admin.assert_works("after del-acct joe");
}

/// (b) A UDP keepalive flow of a deleted account stops being answered within a second;
/// another account's goes on.
fn del_acct_stops_the_udp_keepalives_of_the_account() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[], &[5060]);
    let cfg = config(&[]);
    let ns = Some(topo.pbx_ns());
    ok(
        cfg.run(
            ns,
            "add-ip",
            ["joe", "192.0.2.10", "2001:db8::10", "--allow", "sip-udp"],
        ),
        "add-ip joe",
    );
    ok(
        cfg.run(ns, "add-ip", ["ann", "198.51.100.10", "--allow", "sip-udp"]),
        "add-ip ann",
    );
    let cli = topo.client_ns();
    let joe = Keepalive::start(
        cli,
        "192.0.2.10:40000".parse().unwrap(),
        pbx("192.0.2.10", 5060),
    );
    let joe6 = Keepalive::start(
        cli,
        "[2001:db8::10]:40000".parse().unwrap(),
        pbx("2001:db8::10", 5060),
    );
    let ann = Keepalive::start(
        cli,
        "198.51.100.10:40001".parse().unwrap(),
        pbx("198.51.100.10", 5060),
    );
    for k in [&joe, &joe6, &ann] {
        k.assert_answered("before del-acct");
    }

    let out = ok(cfg.run(ns, "del-acct", ["joe"]), "del-acct joe");
    let done = Instant::now();
    assert_says(
        &out,
        "ended 2 flows of sources that lost access: 192.0.2.10 udp/5060, 2001:db8::10 udp/5060",
    );
    joe.assert_stopped(done, "after del-acct joe");
    joe6.assert_stopped(done, "after del-acct joe");
    ann.assert_answered("after del-acct joe");
}

fn dns_settings() -> String {
    "trusted = []\n[resolver]\nnameservers = [\"192.0.2.53\"]\ntimeout_ms = 500\nattempts = 1\n"
        .to_owned()
}

/// (c) When ipchecker moves a dynamic-DNS name, the old address's flow stops (and the JSON
/// change lines say so); the new address works.
fn ipchecker_ends_the_flow_of_the_old_address_of_a_name() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[], &[5060]);
    let dns = topo.start_dnsmasq();
    dns.set_records(&[("joe.dyn.example.test", ip("192.0.2.10"))]);
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", &dns_settings());
    let ns = Some(topo.pbx_ns());
    ok(
        cfg.run(
            ns,
            "add-fqdn",
            ["joe-mobile", "joe.dyn.example.test", "--allow", "sip-udp"],
        ),
        "add-fqdn joe-mobile",
    );
    let cli = topo.client_ns();
    let old = Keepalive::start(
        cli,
        "192.0.2.10:40000".parse().unwrap(),
        pbx("192.0.2.10", 5060),
    );
    old.assert_answered("before the move");

    dns.set_records(&[("joe.dyn.example.test", ip("192.0.2.11"))]);
    let out = ok(
        cfg.run(ns, "ipchecker", ["--json"]),
        "ipchecker after the move",
    );
    let done = Instant::now();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["apply"], "elements", "{}", show(&out));
    let changes = report["changes"].as_array().expect("changes");
    assert!(
        changes
            .iter()
            .any(|c| c == "ended 1 flow of a source that lost access: 192.0.2.10 udp/5060"),
        "{}",
        show(&out)
    );
    old.assert_stopped(done, "after ipchecker moved the name away");
    let new = Keepalive::start(
        cli,
        "192.0.2.11:40000".parse().unwrap(),
        pbx("192.0.2.11", 5060),
    );
    new.assert_answered("after ipchecker moved the name here");
}

/// (d) A source that loses one service loses only its flows to that service.
fn a_source_that_loses_one_service_keeps_the_others() {
    let topo = Topology::new();
    let _tcp = TalkingServer::start(topo.pbx_ns(), 22);
    let _udp = Servers::start(&topo, &[], &[5060]);
    let cfg = config(&[]);
    let ns = Some(topo.pbx_ns());
    ok(
        cfg.run(
            ns,
            "add-ip",
            ["joe", "192.0.2.10", "--allow", "ssh,sip-udp"],
        ),
        "add-ip joe",
    );
    let cli = topo.client_ns();
    let ssh = TcpSession::open(cli, "192.0.2.10", pbx("192.0.2.10", 22));
    let sip = Keepalive::start(
        cli,
        "192.0.2.10:40000".parse().unwrap(),
        pbx("192.0.2.10", 5060),
    );
    ssh.assert_works("with ssh and sip-udp");
    sip.assert_answered("with ssh and sip-udp");

    let out = ok(
        cfg.run(
            ns,
            "add-ip",
            ["joe", "192.0.2.10", "--allow", "sip-udp", "--replace"],
        ),
        "add-ip joe --replace with sip-udp only",
    );
    let done = Instant::now();
    assert_says(
        &out,
        "ended 1 flow of a source that lost access: 192.0.2.10 tcp/22",
    );
    ssh.assert_stopped(done, "after ssh was taken away");
    sip.assert_answered("after ssh was taken away");
    assert!(
        sip.answers_after(done + STOP_WITHIN) > 0,
        "the SIP keepalives went on"
    );
}

/// (e) Flows the host opened itself (to an address that loses access) and flows of trusted
/// networks are left alone, while the inbound flows of the source that lost access end:
/// here through `restart` after its account file changed.
fn outbound_and_trusted_flows_are_untouched() {
    let topo = Topology::new();
    let _pbx_tcp = TalkingServer::start(topo.pbx_ns(), 22);
    let _pbx_udp = Servers::start(&topo, &[], &[5060]);
    // Servers on the client side, for the flows the pbx opens.
    let _cli_tcp = TalkingServer::start(topo.client_ns(), 2222);
    let _cli_udp = Servers::start_in(topo.client_ns(), &[], &[5060]);
    let cfg = config(&["198.51.100.11/32"]);
    let ns = Some(topo.pbx_ns());
    ok(
        cfg.run(
            ns,
            "add-ip",
            ["joe", "192.0.2.10", "--allow", "ssh,sip-udp"],
        ),
        "add-ip joe",
    );
    let cli = topo.client_ns();
    let pbx_ns = topo.pbx_ns();
    let joe_in = TcpSession::open(cli, "192.0.2.10", pbx("192.0.2.10", 22));
    let joe_sip = Keepalive::start(
        cli,
        "192.0.2.10:40000".parse().unwrap(),
        pbx("192.0.2.10", 5060),
    );
    let trusted_in = TcpSession::open(cli, "198.51.100.11", pbx("198.51.100.11", 22));
    let trusted_sip = Keepalive::start(
        cli,
        "198.51.100.11:40000".parse().unwrap(),
        pbx("198.51.100.11", 5060),
    );
    // The pbx opens flows to joe's address: TCP to its port 2222, UDP from its port 5070
    // to joe's 5060 (a PBX's own SIP traffic to a peer).
    let out_tcp = TcpSession::open(pbx_ns, "192.0.2.1", "192.0.2.10:2222".parse().unwrap());
    let out_sip = Keepalive::start(
        pbx_ns,
        "192.0.2.1:5070".parse().unwrap(),
        "192.0.2.10:5060".parse().unwrap(),
    );
    for s in [&joe_in, &trusted_in, &out_tcp] {
        s.assert_works("before the change");
    }
    for k in [&joe_sip, &trusted_sip, &out_sip] {
        k.assert_answered("before the change");
    }

    // joe keeps sip-udp only, written to the file, applied by restart.
    cfg.write(
        "accounts/joe.toml",
        "addresses = [\"192.0.2.10\"]\nservices = [\"sip-udp\"]\n",
    );
    let out = ok(cfg.run(ns, "restart", [] as [&str; 0]), "restart");
    let done = Instant::now();
    assert_says(
        &out,
        "ended 1 flow of a source that lost access: 192.0.2.10 tcp/22",
    );
    joe_in.assert_stopped(done, "after restart");
    for s in [&trusted_in, &out_tcp] {
        s.assert_works("after restart");
    }
    for k in [&joe_sip, &trusted_sip, &out_sip] {
        k.assert_answered("after restart");
    }
}

/// The SSH connection a command runs in is kept even when `--force` takes its source's
/// access away (ending it would cut the command off half way), and the output says so; the
/// source's other connections end.
fn the_commands_own_ssh_connection_is_kept() {
    let topo = Topology::new();
    let _server = TalkingServer::start(topo.pbx_ns(), 22);
    let cfg = config(&[]);
    let ns = Some(topo.pbx_ns());
    ok(
        cfg.run(ns, "add-ip", ["admin", "203.0.113.10", "--allow", "ssh"]),
        "add-ip admin",
    );
    let cli = topo.client_ns();
    let own = TcpSession::open(cli, "203.0.113.10", pbx("203.0.113.10", 22));
    let other = TcpSession::open(cli, "203.0.113.10", pbx("203.0.113.10", 22));
    own.assert_works("before del-acct");
    other.assert_works("before del-acct");

    let session = format!("203.0.113.10 {} 192.0.2.1 22", own.local_port());
    let env = [("SSH_CONNECTION", session.as_str())];
    let out = cfg.run_env(ns, "del-acct", ["admin"], &env);
    common::assert_exit(
        &out,
        1,
        "del-acct admin from its own session, without --force",
    );
    let out = ok(
        cfg.run_env(ns, "del-acct", ["admin", "--force"], &env),
        "del-acct admin --force",
    );
    let done = Instant::now();
    assert_says(
        &out,
        "ended 1 flow of a source that lost access: 203.0.113.10 tcp/22",
    );
    assert_says(
        &out,
        "kept this SSH session's connection (203.0.113.10 tcp/22) although its source lost \
         access; it ends with the session",
    );
    other.assert_stopped(done, "after del-acct admin --force");
    own.assert_works("after del-acct admin --force");
}

/// (g) Accounts edited in place: an address appended with `add-ip --append` is admitted
/// (the account keeps its services and comment); `del-acct NAME --address` removes one
/// address: a new packet from it is dropped and its running UDP flow stops, while the
/// account's other address goes on.
fn append_admits_and_address_removal_ends_its_flow() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[], &[5060]);
    let cfg = config(&[]);
    let ns = Some(topo.pbx_ns());
    let probe =
        |src: &str| common::udp_probe(&topo, ip(src), pbx(src, 5060), Duration::from_millis(500));
    ok(
        cfg.run(
            ns,
            "add-ip",
            [
                "joe",
                "192.0.2.10",
                "--allow",
                "sip-udp",
                "--comment",
                "Joe",
            ],
        ),
        "add-ip joe",
    );
    assert!(probe("192.0.2.10"), "joe's first address is admitted");
    assert!(
        !probe("198.51.100.10"),
        "a stranger is dropped before --append"
    );

    let out = ok(
        cfg.run(ns, "add-ip", ["joe", "198.51.100.10", "--append"]),
        "add-ip joe --append",
    );
    assert_says(&out, "account joe: appended 198.51.100.10");
    assert!(probe("198.51.100.10"), "the appended address is admitted");
    assert!(probe("192.0.2.10"), "the first address still is");
    let text = cfg.read("accounts/joe.toml").unwrap();
    assert!(
        text.contains("addresses = [\"192.0.2.10\", \"198.51.100.10\"]")
            && text.contains("services = [\"sip-udp\"]")
            && text.contains("comment = \"Joe\""),
        "{text}"
    );

    let cli = topo.client_ns();
    let first = Keepalive::start(
        cli,
        "192.0.2.10:40000".parse().unwrap(),
        pbx("192.0.2.10", 5060),
    );
    let second = Keepalive::start(
        cli,
        "198.51.100.10:40001".parse().unwrap(),
        pbx("198.51.100.10", 5060),
    );
    first.assert_answered("before del-acct --address");
    second.assert_answered("before del-acct --address");

    let out = ok(
        cfg.run(ns, "del-acct", ["joe", "--address", "198.51.100.10"]),
        "del-acct joe --address",
    );
    let done = Instant::now();
    assert_says(&out, "account joe: removed 198.51.100.10");
    // The keepalive's flow, and the earlier probe's if it is still in conntrack.
    let ended = stdout(&out)
        .lines()
        .find(|l| l.starts_with("ended "))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        ended.contains(": 198.51.100.10 udp/5060") && !ended.contains("192.0.2.10"),
        "only the removed address's flows end:\n{}",
        show(&out)
    );
    second.assert_stopped(done, "after del-acct joe --address 198.51.100.10");
    first.assert_answered("after del-acct joe --address 198.51.100.10");
    assert!(!probe("198.51.100.10"), "the removed address is dropped");
    let text = cfg.read("accounts/joe.toml").unwrap();
    assert!(
        text.contains("addresses = [\"192.0.2.10\"]") && text.contains("comment = \"Joe\""),
        "{text}"
    );
}

common::test_main! {
    Needs::ROOT => [
        del_acct_cuts_the_tcp_connection_of_the_account,
        the_commands_own_ssh_connection_is_kept,
        del_acct_stops_the_udp_keepalives_of_the_account,
        a_source_that_loses_one_service_keeps_the_others,
        outbound_and_trusted_flows_are_untouched,
        append_admits_and_address_removal_ends_its_flow,
    ],
    Needs::root_and(&["dnsmasq"]) => [ipchecker_ends_the_flow_of_the_old_address_of_a_name],
}
