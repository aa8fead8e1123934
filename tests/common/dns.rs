//! DNS fixtures: a real dnsmasq serving a rewritable zone, a server that never answers, a
//! server that answers SERVFAIL, and a tiny UDP DNS client to check them.
//!
//! dnsmasq runs in the foreground (`-k`) inside a namespace, bound to one documentation
//! address (`--bind-interfaces`), with no upstream (`--no-resolv`), no /etc/hosts and no
//! /etc/dnsmasq.conf; names come from an `--addn-hosts` file in a temp dir, and
//! `--local=/example.test/` makes every other name under `example.test` NXDOMAIN.
//! [`Dnsmasq::set_records`] rewrites the file, sends SIGHUP and waits until the answers change.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::netns::{Topology, in_ns, spawn_in_ns};
use super::servers::{MAX_LIFETIME, POLL, is_timeout};
use super::{stop_child, tool, tool_path};

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;

/// Where [`Topology::start_dnsmasq`] puts dnsmasq (added to the client namespace).
pub const DNS_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
/// The zone served locally: names under it that are not in the records are NXDOMAIN.
pub const ZONE: &str = "example.test";
/// Bound on waiting for dnsmasq to start or to answer new records.
pub const DNS_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QType {
    A = 1,
    Aaaa = 28,
}

/// The parts of a DNS reply the tests look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsReply {
    pub rcode: u8,
    /// A / AAAA records of the answer section, in order.
    pub addrs: Vec<IpAddr>,
    /// Smallest TTL of those records.
    pub min_ttl: Option<u32>,
}

impl DnsReply {
    pub fn is_nxdomain(&self) -> bool {
        self.rcode == RCODE_NXDOMAIN
    }
}

// ---------------------------------------------------------------------------------------------
// Wire format (just enough)

/// A standard query with RD set for `name` (dots, no trailing dot needed).
pub fn build_query(id: u16, name: &str, qtype: QType) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; QD=1 AN=NS=AR=0
    for label in name.trim_end_matches('.').split('.') {
        assert!(
            !label.is_empty() && label.len() < 64,
            "bad DNS name {name:?}"
        );
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&(qtype as u16).to_be_bytes());
    q.extend_from_slice(&[0, 1]); // class IN
    q
}

/// Offset just past the (possibly compressed) name at `pos`.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    // A name has at most 127 labels; bound the loop anyway.
    for _ in 0..128 {
        let len = *msg.get(pos)? as usize;
        if len == 0 {
            return Some(pos + 1);
        }
        if len & 0xc0 == 0xc0 {
            return (pos + 2 <= msg.len()).then_some(pos + 2);
        }
        pos += 1 + len;
    }
    None
}

fn be16(msg: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]))
}

/// Offset just past the question section.
fn questions_end(msg: &[u8]) -> Option<usize> {
    let mut pos = 12;
    for _ in 0..be16(msg, 4)? {
        pos = skip_name(msg, pos)? + 4;
    }
    (pos <= msg.len()).then_some(pos)
}

/// Parses a reply to query `id`.
pub fn parse_reply(msg: &[u8], id: u16) -> Result<DnsReply, String> {
    if msg.len() < 12 {
        return Err(format!("short reply ({} bytes)", msg.len()));
    }
    if be16(msg, 0) != Some(id) {
        return Err("reply id does not match".into());
    }
    if msg[2] & 0x80 == 0 {
        return Err("not a reply (QR=0)".into());
    }
    let bad = || format!("malformed reply {msg:02x?}");
    let rcode = msg[3] & 0x0f;
    let answers = be16(msg, 6).ok_or_else(bad)?;
    let mut pos = questions_end(msg).ok_or_else(bad)?;
    let mut addrs = Vec::new();
    let mut min_ttl: Option<u32> = None;
    for _ in 0..answers {
        pos = skip_name(msg, pos).ok_or_else(bad)?;
        let header = msg.get(pos..pos + 10).ok_or_else(bad)?;
        let ty = u16::from_be_bytes([header[0], header[1]]);
        let ttl = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let len = u16::from_be_bytes([header[8], header[9]]) as usize;
        let data = msg.get(pos + 10..pos + 10 + len).ok_or_else(bad)?;
        let addr = match (ty, len) {
            (1, 4) => Some(IpAddr::from(<[u8; 4]>::try_from(data).unwrap())),
            (28, 16) => Some(IpAddr::from(<[u8; 16]>::try_from(data).unwrap())),
            _ => None,
        };
        if let Some(a) = addr {
            addrs.push(a);
            min_ttl = Some(min_ttl.map_or(ttl, |t| t.min(ttl)));
        }
        pos += 10 + len;
    }
    Ok(DnsReply {
        rcode,
        addrs,
        min_ttl,
    })
}

/// The SERVFAIL reply to `query`: its header id, opcode and RD, QR and RA set, RCODE 2, the
/// question section only. None if `query` is not a parsable query.
pub fn servfail_reply(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let end = questions_end(query)?;
    let mut r = query[..end].to_vec();
    r[2] = 0x80 | (query[2] & 0x79); // QR, keep opcode and RD
    r[3] = 0x80 | RCODE_SERVFAIL; // RA, RCODE
    r[6..12].fill(0); // AN = NS = AR = 0
    Some(r)
}

/// One UDP query from the *current thread's* namespace. Err on timeout or a bad reply.
pub fn dns_query_here(
    server: SocketAddr,
    name: &str,
    qtype: QType,
    timeout: Duration,
) -> io::Result<DnsReply> {
    static ID: AtomicU16 = AtomicU16::new(0x5a00);
    let id = ID.fetch_add(1, Ordering::Relaxed);
    let any: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(any)?;
    sock.connect(server)?;
    sock.send(&build_query(id, name, qtype))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left))?;
        let n = sock.recv(&mut buf)?;
        if be16(&buf[..n], 0) == Some(id) {
            return parse_reply(&buf[..n], id)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no DNS reply from {server} within {timeout:?}"),
    ))
}

/// One UDP query from namespace `ns`.
pub fn dns_query(
    ns: &str,
    server: SocketAddr,
    name: &str,
    qtype: QType,
    timeout: Duration,
) -> io::Result<DnsReply> {
    in_ns(ns, || dns_query_here(server, name, qtype, timeout))
}

// ---------------------------------------------------------------------------------------------
// dnsmasq

/// A dnsmasq child process in a namespace; killed by PID and reaped on drop, its temp dir
/// (hosts file, log) removed.
pub struct Dnsmasq {
    child: Child,
    ns: String,
    listen: SocketAddr,
    dir: tempfile::TempDir,
    hosts: PathBuf,
    log: PathBuf,
    records: Mutex<Vec<(String, IpAddr)>>,
}

impl Dnsmasq {
    /// Starts dnsmasq in namespace `ns` on `listen` (the address must exist there: loopback,
    /// or see [`Topology::add_client_addr`]) with no records, and waits (bounded) until it
    /// answers. Panics with its log if it does not.
    pub fn start(ns: &str, listen: SocketAddr) -> Dnsmasq {
        let exe = tool("dnsmasq").expect("dnsmasq is not installed (apt-get install dnsmasq-base)");
        let dir = tempfile::Builder::new()
            .prefix("pbxw-dnsmasq-")
            .tempdir()
            .expect("temp dir");
        let hosts = dir.path().join("hosts");
        let log = dir.path().join("dnsmasq.log");
        std::fs::write(&hosts, "").expect("write hosts file");
        let stderr = File::create(dir.path().join("stderr")).expect("stderr file");
        let mut cmd = Command::new(tool_path("ip"));
        cmd.args(["netns", "exec", ns])
            .arg(exe)
            .arg("-k")
            .arg("--conf-file=/dev/null")
            .arg("--user=root")
            .arg("--group=root")
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!("--listen-address={}", listen.ip()))
            .arg(format!("--port={}", listen.port()))
            .arg("--bind-interfaces")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg("--no-negcache")
            .arg(format!("--addn-hosts={}", hosts.display()))
            .arg(format!("--local=/{ZONE}/"))
            .arg("--local-ttl=1")
            .arg("--log-queries")
            .arg(format!("--log-facility={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // `ip netns exec` execs the program (no fork), so this PID is dnsmasq's own.
        let child = cmd.spawn().expect("start dnsmasq");
        let mut d = Dnsmasq {
            child,
            ns: ns.to_string(),
            listen,
            dir,
            hosts,
            log,
            records: Mutex::new(Vec::new()),
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + DNS_WAIT;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "dnsmasq in {} exited at start ({status})\n{}",
                    self.ns,
                    self.diagnostics()
                );
            }
            match self.query(&format!("harness-ready.{ZONE}"), QType::A) {
                Ok(_) => return,
                Err(e) => last = e.to_string(),
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "dnsmasq in {} on {} not answering after {DNS_WAIT:?} ({last})\n{}",
            self.ns,
            self.listen,
            self.diagnostics()
        );
    }

    /// Its PID (dnsmasq itself, not a wrapper).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }

    pub fn hosts_file(&self) -> &Path {
        &self.hosts
    }

    /// dnsmasq's log (queries and reloads).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn diagnostics(&self) -> String {
        let stderr = std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default();
        format!(
            "--- dnsmasq stderr ---\n{stderr}--- dnsmasq log ---\n{}",
            self.log()
        )
    }

    /// Queries it from its own namespace (timeout 500 ms).
    pub fn query(&self, name: &str, qtype: QType) -> io::Result<DnsReply> {
        dns_query(
            &self.ns,
            self.listen,
            name,
            qtype,
            Duration::from_millis(500),
        )
    }

    /// Replaces all records with `records` (a name may appear several times, with v4 and/or v6
    /// addresses), reloads dnsmasq (SIGHUP) and waits (bounded) until every name answers
    /// exactly its new addresses and every name that was dropped answers none.
    pub fn set_records(&self, records: &[(&str, IpAddr)]) {
        let mut text = String::new();
        for (name, ip) in records {
            text += &format!("{ip} {name}\n");
        }
        let tmp = self.dir.path().join("hosts.new");
        std::fs::write(&tmp, text).expect("write hosts file");
        std::fs::rename(&tmp, &self.hosts).expect("replace hosts file");
        let pid = libc::pid_t::try_from(self.pid()).expect("pid");
        // SAFETY: kill(2) on our own child, not yet reaped (we hold the Child).
        assert_eq!(
            unsafe { libc::kill(pid, libc::SIGHUP) },
            0,
            "SIGHUP dnsmasq"
        );

        let mut want: BTreeMap<String, (Vec<IpAddr>, Vec<IpAddr>)> = BTreeMap::new();
        for (name, ip) in records {
            let e = want.entry(name.to_string()).or_default();
            let family = if ip.is_ipv4() { &mut e.0 } else { &mut e.1 };
            family.push(*ip);
        }
        let mut old = self.records.lock().unwrap_or_else(|p| p.into_inner());
        for (name, _) in old.iter() {
            want.entry(name.clone()).or_default();
        }
        for (v4, v6) in want.values_mut() {
            v4.sort();
            v4.dedup();
            v6.sort();
            v6.dedup();
        }

        let deadline = Instant::now() + DNS_WAIT;
        let mut wrong = String::new();
        while Instant::now() < deadline {
            wrong = self.mismatches(&want);
            if wrong.is_empty() {
                *old = records.iter().map(|(n, ip)| (n.to_string(), *ip)).collect();
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "dnsmasq did not pick up new records within {DNS_WAIT:?}:\n{wrong}{}",
            self.diagnostics()
        );
    }

    fn mismatches(&self, want: &BTreeMap<String, (Vec<IpAddr>, Vec<IpAddr>)>) -> String {
        let mut wrong = String::new();
        for (name, (v4, v6)) in want {
            for (qtype, expect) in [(QType::A, v4), (QType::Aaaa, v6)] {
                match self.query(name, qtype) {
                    Ok(r) => {
                        let mut got = r.addrs.clone();
                        got.sort();
                        if &got != expect {
                            wrong += &format!("  {name} {qtype:?}: want {expect:?}, got {r:?}\n");
                        }
                    }
                    Err(e) => wrong += &format!("  {name} {qtype:?}: {e}\n"),
                }
            }
        }
        wrong
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(2));
    }
}

impl Topology {
    /// Adds [`DNS_V4`] (192.0.2.53) to the client namespace and starts dnsmasq there on port
    /// 53; the pbx namespace reaches it over the veth.
    pub fn start_dnsmasq(&self) -> Dnsmasq {
        self.add_client_addr(&DNS_V4.to_string());
        Dnsmasq::start(self.client_ns(), SocketAddr::new(IpAddr::V4(DNS_V4), 53))
    }
}

// ---------------------------------------------------------------------------------------------
// Servers that misbehave

/// A UDP DNS stub thread in a namespace; stopped and joined on drop.
pub struct StubDns {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    queries: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl StubDns {
    fn start(ns: &str, addr: SocketAddr, servfail: bool) -> StubDns {
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop2, queries2) = (Arc::clone(&stop), Arc::clone(&queries));
        let thread = spawn_in_ns(ns, move || {
            let sock = match UdpSocket::bind(addr).and_then(|s| {
                s.set_read_timeout(Some(POLL))?;
                Ok(s)
            }) {
                Ok(s) => s,
                Err(e) => return drop(tx.send(Err(e))),
            };
            let _ = tx.send(Ok(()));
            let started = Instant::now();
            let mut buf = [0u8; 4096];
            while !stop2.load(Ordering::Relaxed) && started.elapsed() < MAX_LIFETIME {
                match sock.recv_from(&mut buf) {
                    Ok((n, peer)) => {
                        queries2.fetch_add(1, Ordering::Relaxed);
                        if servfail && let Some(reply) = servfail_reply(&buf[..n]) {
                            let _ = sock.send_to(&reply, peer);
                        }
                    }
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        let stub = StubDns {
            addr,
            stop,
            queries,
            thread: Some(thread),
        };
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => stub,
            Ok(Err(e)) => panic!("DNS stub on {addr} in {ns}: {e}"),
            Err(_) => panic!("DNS stub on {addr} in {ns} did not start"),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams received so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for StubDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A DNS server that receives every query and never answers (resolver timeouts).
pub struct SilentDns(StubDns);

impl SilentDns {
    /// Binds UDP `addr` in namespace `ns` (the address must exist there).
    pub fn start(ns: &str, addr: SocketAddr) -> SilentDns {
        SilentDns(StubDns::start(ns, addr, false))
    }
}

impl std::ops::Deref for SilentDns {
    type Target = StubDns;
    fn deref(&self) -> &StubDns {
        &self.0
    }
}

/// A DNS server that answers every query with SERVFAIL.
pub struct ServfailDns(StubDns);

impl ServfailDns {
    /// Binds UDP `addr` in namespace `ns` (the address must exist there).
    pub fn start(ns: &str, addr: SocketAddr) -> ServfailDns {
        ServfailDns(StubDns::start(ns, addr, true))
    }
}

impl std::ops::Deref for ServfailDns {
    type Target = StubDns;
    fn deref(&self) -> &StubDns {
        &self.0
    }
}
