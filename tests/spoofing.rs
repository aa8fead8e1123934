//! Packets that claim to come from the server itself: `pbxwall init` whitelists the server's
//! own addresses with every service (account `pbx-self`), and the kernel drops spoofed IPv4
//! local sources as martians (unless `accept_local` is set) but not IPv6 ones. The input
//! chain drops a source address of the host's own arriving on any interface but lo
//! (`fib saddr type local drop`), while the host's own traffic, which arrives on lo, still
//! gets through. Needs root.

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::thread;
use std::time::Duration;

use common::{Needs, Probe, Servers, TempConfig, Topology, assert_probes, ns_cmd, show, stdout};

/// The pbx's own addresses the stranger spoofs (the topology's, in `pbx-self`), each with
/// a second address of the pbx of the same family, the spoofed packets' destination: the
/// client cannot send to an address once it has that address itself.
const SPOOFED: [(&str, &str); 2] = [("2001:db8::1", "2001:db8::2"), ("192.0.2.1", "192.0.2.2")];
/// The UDP echo server on the pbx.
const PORT: u16 = 5060;
/// How long the pbx gets to echo what reached its server.
const SETTLE: Duration = Duration::from_millis(500);

/// `pbxwall init --cloud` in the pbx namespace: trusts nothing, whitelists the admin and
/// the server's own addresses (`pbx-self`, service all), and applies.
fn init(topo: &Topology, cfg: &TempConfig) {
    let ssh = cfg.root().join("sshd_config");
    std::fs::write(&ssh, "Port 22\n").unwrap();
    let ast = cfg.root().join("asterisk");
    std::fs::create_dir_all(&ast).unwrap();
    let out = cfg.run(
        Some(topo.pbx_ns()),
        "pbxwall",
        [
            "init",
            "--cloud",
            "--admin",
            "203.0.113.10",
            "--sshd-config",
            ssh.to_str().unwrap(),
            "--asterisk-dir",
            ast.to_str().unwrap(),
        ],
    );
    common::assert_exit(&out, 0, "pbxwall init --cloud");
    let own = cfg.read("accounts/pbx-self.toml").unwrap();
    for (spoofed, target) in SPOOFED {
        assert!(
            own.contains(&format!("\"{spoofed}\"")) && own.contains(&format!("\"{target}\"")),
            "{own}"
        );
    }
    assert!(own.contains("services = [\"all\"]"), "{own}");
}

#[track_caller]
fn run_ok(ns: &str, program: &str, args: &[&str]) {
    let out = ns_cmd(ns, program, args);
    assert!(out.status.success(), "{program} {args:?}: {}", show(&out));
}

/// Gives the pbx its second addresses, and makes it take IPv4 packets from its own
/// addresses on the veth (`accept_local`; `rp_filter` off) so that only the ruleset stands
/// between them and the servers, as it always does for IPv6.
fn second_addresses(topo: &Topology) {
    for (_, target) in SPOOFED {
        topo.add_pbx_addr(target);
    }
    for dev in ["all", topo.pbx_veth()] {
        for (key, value) in [("accept_local", "1"), ("rp_filter", "0")] {
            run_ok(
                topo.pbx_ns(),
                "sysctl",
                &["-qw", &format!("net.ipv4.conf.{dev}.{key}={value}")],
            );
        }
    }
}

/// Gives the client the pbx's addresses (IPv6 `nodad`) and permanent neighbour entries for
/// the targets: neighbour discovery from a spoofed source cannot complete, since the pbx
/// answers its own address on lo.
fn arm_the_stranger(topo: &Topology) {
    let mac = ns_cmd(
        topo.pbx_ns(),
        "cat",
        &[&format!("/sys/class/net/{}/address", topo.pbx_veth())],
    );
    assert!(mac.status.success(), "pbx veth address: {}", show(&mac));
    let mac = stdout(&mac).trim().to_owned();
    for (spoofed, target) in SPOOFED {
        let host = if spoofed.contains(':') { 128 } else { 32 };
        topo.add_client_addr(&format!("{spoofed}/{host}"));
        run_ok(
            topo.client_ns(),
            "ip",
            &[
                "neigh",
                "replace",
                target,
                "lladdr",
                &mac,
                "dev",
                topo.client_veth(),
                "nud",
                "permanent",
            ],
        );
    }
}

/// Sends three datagrams from `spoofed` to `target`:[`PORT`] in namespace `ns` and returns
/// how many more the pbx's servers echoed. The echo goes to the pbx itself, so the sender
/// never sees it: the servers' count is what tells.
fn spoofed_hits(ns: &str, servers: &Servers, spoofed: &str, target: &str) -> usize {
    let before = servers.hits();
    let from = SocketAddr::new(spoofed.parse().unwrap(), 0);
    let to = SocketAddr::new(target.parse().unwrap(), PORT);
    common::in_ns(ns, || {
        let s = UdpSocket::bind(from).unwrap();
        for _ in 0..3 {
            s.send_to(b"spoofed", to).unwrap();
        }
    });
    thread::sleep(SETTLE);
    servers.hits() - before
}

/// [`spoofed_hits`] of every pair of [`SPOOFED`], as `(spoofed, hits)`.
fn all_spoofed_hits(ns: &str, servers: &Servers) -> Vec<(&'static str, usize)> {
    SPOOFED
        .iter()
        .map(|&(spoofed, target)| (spoofed, spoofed_hits(ns, servers, spoofed, target)))
        .collect()
}

fn a_spoofed_own_address_is_dropped_but_the_host_reaches_itself() {
    let topo = Topology::new();
    second_addresses(&topo);
    let servers = Servers::start(&topo, &[22], &[PORT]);
    arm_the_stranger(&topo);

    // Without a firewall the spoofed packets reach the server: the path works.
    assert_eq!(
        all_spoofed_hits(topo.client_ns(), &servers),
        [("2001:db8::1", 3), ("192.0.2.1", 3)],
        "spoofed packets before any ruleset"
    );

    let cfg = TempConfig::new();
    init(&topo, &cfg);
    let dry = cfg.run(None, "restart", ["--dry-run"]);
    common::assert_exit(&dry, 0, "restart --dry-run");
    assert!(
        stdout(&dry).contains("\t\tiif \"lo\" accept\n\t\tfib saddr type local drop\n"),
        "{}",
        show(&dry)
    );

    // From outside, the server's own address is refused whatever pbx-self admits.
    assert_eq!(
        all_spoofed_hits(topo.client_ns(), &servers),
        [("2001:db8::1", 0), ("192.0.2.1", 0)],
        "spoofed packets from outside after init"
    );
    // The host's own traffic to its own addresses arrives on lo and is still accepted.
    assert_eq!(
        all_spoofed_hits(topo.pbx_ns(), &servers),
        [("2001:db8::1", 3), ("192.0.2.1", 3)],
        "the host's own packets to itself"
    );
    // Nothing else changed: the admin gets in, strangers do not (to the second addresses:
    // the client has the first ones now).
    let v4: IpAddr = SPOOFED[1].1.parse().unwrap();
    let v6: IpAddr = SPOOFED[0].1.parse().unwrap();
    assert_probes(
        &topo,
        &[
            Probe::tcp("203.0.113.10", 22, true).to(v4),
            Probe::tcp("192.0.2.11", 22, false).to(v4),
            Probe::udp("2001:db8::11", PORT, false).to(v6),
        ],
    );
    common::assert_exit(
        &cfg.run(Some(topo.pbx_ns()), "status", [] as [&str; 0]),
        0,
        "status",
    );
}

common::test_main! {
    Needs::ROOT => [a_spoofed_own_address_is_dropped_but_the_host_reaches_itself],
}
