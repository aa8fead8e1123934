//! Network namespaces: unique names, the pbx/client topology, running code and commands
//! inside a namespace.
//!
//! The topology of [`Topology`] (a [`Netns`] on its own is one namespace with only `lo`):
//!
//! ```text
//!  namespace pbxw-<pid>-<n>-pbx                namespace pbxw-<pid>-<n>-cli
//!  lo up                                       lo up
//!  pw<pid>-<n>p  192.0.2.1/24  <--- veth --->  pw<pid>-<n>c  192.0.2.10, .11 /24
//!                2001:db8::1/64                             198.51.100.10, .11 /24
//!  on-link: 198.51.100.0/24, 203.0.113.0/24,                203.0.113.10, .11 /24
//!           2001:db8:1::/64                                 2001:db8::10, ::11 /64
//!                                                           2001:db8:1::10/64
//! ```
//! (pid and n in hex in the veth names, which must fit in 15 characters.)

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::{CMD_TIMEOUT, run_cmd, run_ok, run_with_timeout, show, tool_path};

/// Where `ip netns` keeps its namespace handles.
pub const NETNS_DIR: &str = "/var/run/netns";
/// Prefix of every namespace this harness creates.
pub const NS_PREFIX: &str = "pbxw-";

/// The pbx side of the veth.
pub const PBX_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const PBX_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// Prefixes the pbx reaches on-link besides its own /24 and /64.
pub const PBX_ONLINK_ROUTES: [&str; 3] = ["198.51.100.0/24", "203.0.113.0/24", "2001:db8:1::/64"];
/// Source addresses in the client namespace (v4 /24, v6 /64 nodad).
pub const CLIENT_ADDRS: [&str; 9] = [
    "192.0.2.10",
    "192.0.2.11",
    "198.51.100.10",
    "198.51.100.11",
    "203.0.113.10",
    "203.0.113.11",
    "2001:db8::10",
    "2001:db8::11",
    "2001:db8:1::10",
];

/// Linux's limit for interface names (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Unique names for one topology: namespaces `pbxw-<pid>-<n>-pbx` / `-cli`, veth
/// `pw<pid hex>-<n hex>p` / `c` (at most 15 characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub pbx_ns: String,
    pub client_ns: String,
    pub pbx_veth: String,
    pub client_veth: String,
}

impl Names {
    /// The next unused set of names of this process.
    pub fn next() -> Names {
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let veth = format!("pw{pid:x}-{n:x}");
        let names = Names {
            pbx_ns: format!("{NS_PREFIX}{pid}-{n}-pbx"),
            client_ns: format!("{NS_PREFIX}{pid}-{n}-cli"),
            pbx_veth: format!("{veth}p"),
            client_veth: format!("{veth}c"),
        };
        assert!(
            names.pbx_veth.len() <= IFNAME_MAX,
            "veth name {} too long",
            names.pbx_veth
        );
        names
    }
}

/// A namespace name of this process not used before: `pbxw-<pid>-<n>-<tag>`.
pub fn unique_ns_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{NS_PREFIX}{}-{n}-{tag}", std::process::id())
}

// ---------------------------------------------------------------------------------------------
// One namespace

/// A named network namespace (`ip netns add`), deleted on drop: processes still inside are
/// killed by PID first (they can only be this test's), then `ip netns del`.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Netns {
    /// Creates a namespace of its own ([`unique_ns_name`]) with `lo` up and nothing else;
    /// panics if that fails.
    pub fn new() -> Netns {
        Netns::create(&unique_ns_name("ns"))
    }

    /// Creates namespace `name` with `lo` up; panics if that fails.
    pub fn create(name: &str) -> Netns {
        remove_stale_once();
        let mut cmd = Command::new(tool_path("ip"));
        cmd.args(["netns", "add", name]);
        run_ok(cmd, None);
        let ns = Netns {
            name: name.to_string(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on a new thread inside this namespace and returns its result (see [`in_ns`]);
    /// sockets `f` opens, netlink ones included, belong to this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_ns(&self.name, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete_netns(&self.name);
    }
}

/// Kills every process in `name` (by PID, never our own) and deletes the namespace. Never
/// panics (it runs in Drop); problems are reported on stderr.
fn delete_netns(name: &str) {
    let ip = match super::tool("ip") {
        Some(ip) => ip,
        None => return,
    };
    let mut pids = Command::new(&ip);
    pids.args(["netns", "pids", name]);
    if let Ok(out) = run_with_timeout(pids, None, CMD_TIMEOUT) {
        let me = std::process::id();
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .filter(|&p| p != me)
        {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            eprintln!(
                "harness: killing pid {pid} ({}) left in {name}",
                comm.trim()
            );
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: kill(2) on a PID listed as living in this test's own namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let mut del = Command::new(&ip);
    del.args(["netns", "del", name]);
    match run_with_timeout(del, None, CMD_TIMEOUT) {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!("harness: ip netns del {name} failed:\n{}", show(&out)),
        Err(e) => eprintln!("harness: ip netns del {name}: {e}"),
    }
}

/// Once per process: deletes `pbxw-<pid>-...` namespaces whose process no longer exists
/// (left by a test binary that was SIGKILLed). Namespaces of live processes are untouched.
fn remove_stale_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for name in netns_list() {
            let pid = name
                .strip_prefix(NS_PREFIX)
                .and_then(|rest| rest.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid
                && pid != std::process::id()
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                eprintln!("harness: removing stale namespace {name} (process {pid} is gone)");
                delete_netns(&name);
            }
        }
    });
}

/// Names from `ip netns list`.
pub fn netns_list() -> Vec<String> {
    let mut cmd = Command::new(tool_path("ip"));
    cmd.args(["netns", "list"]);
    let out = run_cmd(cmd, None);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Whether `ip netns list` shows `name`.
pub fn netns_exists(name: &str) -> bool {
    netns_list().iter().any(|n| n == name)
}

// ---------------------------------------------------------------------------------------------
// The topology

/// Two namespaces joined by a veth pair, addressed as in the module doc. Dropping it deletes
/// both namespaces (drop servers and DNS fixtures first: declare them after the topology).
#[derive(Debug)]
pub struct Topology {
    names: Names,
    // Field order is drop order: the client goes first, then the pbx.
    client: Netns,
    pbx: Netns,
}

impl Topology {
    /// Builds the topology; panics (after removing what was created) if a step fails.
    pub fn new() -> Topology {
        let names = Names::next();
        let pbx = Netns::create(&names.pbx_ns);
        let client = Netns::create(&names.client_ns);
        let topo = Topology { names, client, pbx };
        let n = &topo.names;
        // Created inside pbx, the peer moved straight into client: never in the root namespace.
        // Distinct ifindexes on the two ends: with equal ones (both would be 2 in fresh
        // namespaces) the kernel's linkwatch treats the carrier change as non-urgent and may
        // delay "operationally up" by up to a second, during which the client answers no
        // neighbour solicitations (flaky IPv6 probes under parallel tests).
        ip(&[
            "-n",
            &n.pbx_ns,
            "link",
            "add",
            &n.pbx_veth,
            "index",
            PBX_VETH_INDEX,
            "type",
            "veth",
            "peer",
            "name",
            &n.client_veth,
            "index",
            CLIENT_VETH_INDEX,
            "netns",
            &n.client_ns,
        ]);

        let mut pbx = vec![
            format!("addr add {PBX_V4}/24 dev {}", n.pbx_veth),
            format!("addr add {PBX_V6}/64 dev {} nodad", n.pbx_veth),
            format!("link set {} up", n.pbx_veth),
        ];
        for route in PBX_ONLINK_ROUTES {
            pbx.push(format!("route add {route} dev {}", n.pbx_veth));
        }
        ip_batch(&n.pbx_ns, &pbx);

        let mut client: Vec<String> = CLIENT_ADDRS
            .iter()
            .map(|a| addr_add_line(a, &n.client_veth))
            .collect();
        client.push(format!("link set {} up", n.client_veth));
        ip_batch(&n.client_ns, &client);
        wait_running(&n.pbx_ns, &n.pbx_veth);
        wait_running(&n.client_ns, &n.client_veth);
        topo
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Name of the pbx namespace (where pbxwall applies and the servers listen).
    pub fn pbx_ns(&self) -> &str {
        self.pbx.name()
    }

    /// Name of the client namespace (probe sources, DNS servers).
    pub fn client_ns(&self) -> &str {
        self.client.name()
    }

    pub fn pbx_veth(&self) -> &str {
        &self.names.pbx_veth
    }

    pub fn client_veth(&self) -> &str {
        &self.names.client_veth
    }

    /// 192.0.2.1
    pub fn pbx_v4(&self) -> IpAddr {
        IpAddr::V4(PBX_V4)
    }

    /// 2001:db8::1
    pub fn pbx_v6(&self) -> IpAddr {
        IpAddr::V6(PBX_V6)
    }

    /// The pbx address of the same family as `src`.
    pub fn pbx_addr_for(&self, src: IpAddr) -> IpAddr {
        pbx_addr_for(src)
    }

    /// Adds an address to the client's veth: `"192.0.2.53"` (/24 by default),
    /// `"2001:db8::53"` (/64, nodad) or with an explicit prefix length. The pbx reaches it if
    /// it is in one of the prefixes of the module doc (see [`Topology::add_pbx_route`]).
    pub fn add_client_addr(&self, addr: &str) {
        ip_batch(
            self.client_ns(),
            &[addr_add_line(addr, &self.names.client_veth)],
        );
    }

    /// Adds an address to the pbx's veth (same defaults as [`Topology::add_client_addr`]).
    pub fn add_pbx_addr(&self, addr: &str) {
        ip_batch(self.pbx_ns(), &[addr_add_line(addr, &self.names.pbx_veth)]);
    }

    /// Adds an on-link route for `cidr` to the pbx's veth.
    pub fn add_pbx_route(&self, cidr: &str) {
        ip_batch(
            self.pbx_ns(),
            &[format!("route add {cidr} dev {}", self.names.pbx_veth)],
        );
    }

    /// Runs `f` on a thread in the pbx namespace.
    pub fn in_pbx<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_ns(self.pbx_ns(), f)
    }

    /// Runs `f` on a thread in the client namespace.
    pub fn in_client<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_ns(self.client_ns(), f)
    }
}

/// ifindex of the pbx end of the veth (see [`Topology::new`]).
const PBX_VETH_INDEX: &str = "10";
/// ifindex of the client end.
const CLIENT_VETH_INDEX: &str = "11";
/// Bound on waiting for a new link to be operationally up.
const LINK_WAIT: Duration = Duration::from_secs(5);

/// Waits (bounded by [`LINK_WAIT`]) until `dev` in `ns` is operationally up (`IFF_RUNNING`:
/// carrier seen and processed, queueing discipline attached). Before that the link drops
/// what it sends. Panics with `ip link` output if it does not come up.
fn wait_running(ns: &str, dev: &str) {
    let up = in_ns(ns, || {
        let deadline = Instant::now() + LINK_WAIT;
        loop {
            match if_running(dev) {
                Ok(true) => return Ok(()),
                Ok(false) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Ok(false) => return Err(format!("not running after {LINK_WAIT:?}")),
                Err(e) => return Err(e.to_string()),
            }
        }
    });
    if let Err(e) = up {
        let mut cmd = Command::new(tool_path("ip"));
        cmd.args(["-n", ns, "link", "show", "dev", dev]);
        panic!("link {dev} in {ns}: {e}\n{}", show(&run_cmd(cmd, None)));
    }
}

/// Whether interface `dev` of the current thread's namespace has `IFF_RUNNING`.
pub fn if_running(dev: &str) -> io::Result<bool> {
    let sock = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if dev.len() > IFNAME_MAX {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "name too long"));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(dev.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name and writes ifru_flags in `req`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after a successful SIOCGIFFLAGS the flags member is the one written.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    Ok(libc::c_int::from(flags) & libc::IFF_RUNNING != 0)
}

/// The pbx address of the same family as `src`.
pub fn pbx_addr_for(src: IpAddr) -> IpAddr {
    match src {
        IpAddr::V4(_) => IpAddr::V4(PBX_V4),
        IpAddr::V6(_) => IpAddr::V6(PBX_V6),
    }
}

/// `addr add A/LEN dev DEV [nodad]` with default lengths /24 and /64.
fn addr_add_line(addr: &str, dev: &str) -> String {
    let (ip, len) = match addr.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (addr, None),
    };
    let ip: IpAddr = ip
        .parse()
        .unwrap_or_else(|e| panic!("bad address {addr:?}: {e}"));
    match ip {
        IpAddr::V4(_) => format!("addr add {ip}/{} dev {dev}", len.unwrap_or("24")),
        IpAddr::V6(_) => format!("addr add {ip}/{} dev {dev} nodad", len.unwrap_or("64")),
    }
}

/// Runs `ip ARGS...`, panicking with the output on failure.
fn ip(args: &[&str]) {
    let mut cmd = Command::new(tool_path("ip"));
    cmd.args(args);
    run_ok(cmd, None);
}

/// Runs `ip -n NS -batch -` with `lines` (one process per namespace instead of one per line).
fn ip_batch(ns: &str, lines: &[String]) {
    let mut cmd = Command::new(tool_path("ip"));
    cmd.args(["-n", ns, "-batch", "-"]);
    let script = lines.join("\n") + "\n";
    let out = run_cmd(cmd, Some(script.as_bytes()));
    assert!(
        out.status.success(),
        "ip -n {ns} -batch failed for:\n{script}{}",
        show(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// Running code and commands in a namespace

/// Moves the *calling thread* into network namespace `ns` (`setns(CLONE_NEWNET)`). Only call
/// it on threads you spawned; [`in_ns`] and [`spawn_in_ns`] do that for you.
pub fn enter_ns(ns: &str) -> io::Result<()> {
    let path = Path::new(NETNS_DIR).join(ns);
    let file = File::open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
    // SAFETY: setns on a valid, open namespace fd; it only changes this thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("setns {ns}: {e}")));
    }
    Ok(())
}

/// Runs `f` on a new scoped thread that first entered namespace `ns`, and returns its result
/// (a panic in `f` is re-raised here). Sockets `f` creates belong to `ns` for their lifetime.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|s| {
        let handle = thread::Builder::new()
            .name(format!("ns:{ns}"))
            .spawn_scoped(s, || {
                enter_ns(ns).unwrap_or_else(|e| panic!("{e}"));
                f()
            })
            .expect("spawn thread");
        match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Spawns a detached thread in namespace `ns` running `f` (for long-lived servers). The thread
/// panics if it cannot enter the namespace.
pub fn spawn_in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let ns = ns.to_string();
    thread::Builder::new()
        .name(format!("ns:{ns}"))
        .spawn(move || {
            enter_ns(&ns).unwrap_or_else(|e| panic!("{e}"));
            f()
        })
        .expect("spawn thread")
}

/// Runs `ip netns exec NS PROGRAM ARGS...` (bounded by [`CMD_TIMEOUT`]) and returns its
/// output whatever the exit code. A bare program name is looked up in PATH and the sbin dirs.
pub fn ns_cmd(ns: &str, program: &str, args: &[&str]) -> Output {
    run_cmd(ns_command(ns, program, args), None)
}

/// The `ip netns exec NS PROGRAM ARGS...` command, for callers that need to adjust it.
pub fn ns_command(ns: &str, program: &str, args: &[&str]) -> Command {
    let program = if program.contains('/') {
        program.into()
    } else {
        super::tool(program).unwrap_or_else(|| program.into())
    };
    let mut cmd = Command::new(tool_path("ip"));
    cmd.args(["netns", "exec", ns]).arg(program).args(args);
    cmd
}

/// `nft -f -` in namespace `ns` with `script` on stdin; output whatever the exit code.
pub fn nft(ns: &str, script: &str) -> Output {
    run_cmd(ns_command(ns, "nft", &["-f", "-"]), Some(script.as_bytes()))
}

/// [`nft`], panicking with the script and the output unless it succeeds.
#[track_caller]
pub fn nft_ok(ns: &str, script: &str) -> Output {
    let out = nft(ns, script);
    assert!(
        out.status.success(),
        "nft -f - in {ns} failed for:\n{script}\n{}",
        show(&out)
    );
    out
}
