//! Self-test of the integration-test harness in `tests/common/`: namespaces, servers, probes,
//! nft, DNS fixtures, binaries, and that everything is cleaned up (also after a panic).
//! The root tests run in parallel threads of this binary, each with its own namespaces.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::dns::{build_query, parse_reply, servfail_reply};
use common::{
    CLIENT_ADDRS, DnsReply, Names, Outcome, PROBE_TIMEOUT, Probe, Proto::*, QType, RCODE_NOERROR,
    RCODE_NXDOMAIN, RCODE_SERVFAIL, Servers, ServfailDns, SilentDns, TempConfig, Topology,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[track_caller]
fn assert_gone(names: &Names) {
    let list = common::netns_list();
    for ns in [&names.pbx_ns, &names.client_ns] {
        assert!(!list.contains(ns), "namespace {ns} still listed: {list:?}");
    }
}

fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: if_nametoindex reads a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

// ---------------------------------------------------------------------------------------------
// Without root

#[test]
fn skip_message_when_not_root() {
    let mut out = Vec::new();
    assert!(!common::require_root_with("some_test", 1000, &[], &mut out));
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("SKIPPED some_test: needs root and ip/nft (run as root)"),
        "{text}"
    );
    assert!(text.contains("euid is 1000"), "{text}");

    let mut out = Vec::new();
    assert!(!common::require_root_with("t2", 0, &["nft"], &mut out));
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("SKIPPED t2: needs root and ip/nft"),
        "{text}"
    );
    assert!(text.contains("not found: nft"), "{text}");

    let mut out = Vec::new();
    assert!(common::require_root_with("t3", 0, &[], &mut out));
    assert!(out.is_empty());
}

#[test]
fn names_are_unique_and_fit() {
    let a = Names::next();
    let b = Names::next();
    assert_ne!(a, b);
    for n in [&a, &b] {
        assert!(n.pbx_ns.starts_with("pbxw-") && n.client_ns.starts_with("pbxw-"));
        assert!(n.pbx_ns.contains(&std::process::id().to_string()));
        for veth in [&n.pbx_veth, &n.client_veth] {
            assert!(veth.len() <= 15, "{veth} longer than 15");
        }
    }
    let all = [&a.pbx_ns, &a.client_ns, &b.pbx_ns, &b.client_ns];
    for (i, x) in all.iter().enumerate() {
        assert!(all[i + 1..].iter().all(|y| y != x));
    }
}

#[test]
fn dns_wire_format() {
    let q = build_query(0x1234, "sip1.example.test", QType::Aaaa);
    assert_eq!(&q[..2], &[0x12, 0x34]);
    let r = servfail_reply(&q).unwrap();
    assert_eq!(
        parse_reply(&r, 0x1234).unwrap(),
        DnsReply {
            rcode: RCODE_SERVFAIL,
            addrs: vec![],
            min_ttl: None
        }
    );
    assert!(parse_reply(&r, 0x1235).is_err());
    assert!(servfail_reply(&r).is_none(), "a reply is not a query");
    // A hand-made answer with a compressed name: sip1.example.test A 192.0.2.10 TTL 1.
    let mut a = build_query(7, "sip1.example.test", QType::A);
    a[2] |= 0x80;
    a[7] = 1; // AN = 1
    a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 192, 0, 2, 10]);
    let reply = parse_reply(&a, 7).unwrap();
    assert_eq!(reply.rcode, RCODE_NOERROR);
    assert_eq!(reply.addrs, vec![ip("192.0.2.10")]);
    assert_eq!(reply.min_ttl, Some(1));
    assert!(parse_reply(&a[..a.len() - 1], 7).is_err(), "truncated");
}

#[test]
fn run_with_timeout_kills_and_tempconfig_env() {
    let mut sleep = Command::new("sleep");
    sleep.arg("10");
    let t = Instant::now();
    let err = common::run_with_timeout(sleep, None, Duration::from_millis(200)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert!(t.elapsed() < Duration::from_secs(5));

    let cfg = TempConfig::new();
    let acct = cfg.write("accounts/joe.toml", "services = [\"sip-udp\"]\n");
    assert!(acct.starts_with(cfg.config_dir()));
    assert_eq!(
        cfg.read("accounts/joe.toml").as_deref(),
        Some("services = [\"sip-udp\"]\n")
    );
    let out = cfg.run_program(
        None,
        Path::new("/bin/sh"),
        [
            "-c",
            "echo \"$PBXWALL_CONFIG_DIR\"; echo \"$PBXWALL_STATE_DIR\"; \
             echo \"ssh=${SSH_CONNECTION:-none} x=$X\"; echo oops >&2; exit 3",
        ],
        &[("X", "1")],
    );
    common::assert_exit(&out, 3, "sh");
    let so = common::stdout(&out);
    let lines: Vec<&str> = so.lines().collect();
    assert_eq!(lines[0], cfg.config_dir().to_str().unwrap());
    assert_eq!(lines[1], cfg.state_dir().to_str().unwrap());
    assert_eq!(lines[2], "ssh=none x=1");
    let shown = common::show(&out);
    assert!(
        shown.contains("exit code 3") && shown.contains("oops"),
        "{shown}"
    );
    let root = cfg.root().to_path_buf();
    drop(cfg);
    assert!(!root.exists());

    // cargo builds the package's binaries before running integration tests.
    for name in ["pbxwall", "add-ip", "restart", "status"] {
        assert!(common::bin(name).is_file());
    }
}

// ---------------------------------------------------------------------------------------------
// As root

#[test]
fn topology_servers_probes_and_nft() {
    if !common::require_root("topology_servers_probes_and_nft") {
        return;
    }
    let topo = Topology::new();
    let names = topo.names().clone();
    let listed = common::netns_list();
    assert!(listed.contains(&names.pbx_ns) && listed.contains(&names.client_ns));

    // Namespaces are per thread: the veth exists only inside, the test thread stays outside.
    assert_ne!(topo.in_pbx(|| ifindex(topo.pbx_veth())), 0);
    assert_ne!(topo.in_client(|| ifindex(topo.client_veth())), 0);
    assert_eq!(ifindex(topo.pbx_veth()), 0);

    let srv = Servers::start(&topo, &[5061, 8080], &[5060, 4569]);
    let services = [(Tcp, 5061), (Tcp, 8080), (Udp, 5060), (Udp, 4569)];

    // No firewall: everything from every source, v4 and v6, TCP and UDP.
    common::assert_probes(
        &topo,
        &common::cross(&CLIENT_ADDRS, &services, |_, _, _| true),
    );
    assert!(srv.hits() >= CLIENT_ADDRS.len() * services.len());

    // The single-probe API and the outcomes it distinguishes.
    let (v4, v6) = (ip("192.0.2.10"), ip("2001:db8::10"));
    let t = PROBE_TIMEOUT;
    assert!(common::tcp_probe(
        &topo,
        v4,
        SocketAddr::new(topo.pbx_v4(), 5061),
        t
    ));
    assert!(common::udp_probe(
        &topo,
        v6,
        SocketAddr::new(topo.pbx_v6(), 5060),
        t
    ));
    assert_eq!(
        common::probe_in(
            topo.client_ns(),
            Tcp,
            v6,
            SocketAddr::new(topo.pbx_v6(), 9),
            t
        ),
        Outcome::Refused
    );

    // Extra client addresses.
    topo.add_client_addr("203.0.113.99");
    topo.add_client_addr("2001:db8:1::99");
    common::assert_probes(
        &topo,
        &[
            Probe::tcp("203.0.113.99", 5061, true),
            Probe::udp("2001:db8:1::99", 5060, true),
        ],
    );

    // A tiny ruleset that drops udp/4569: only those probes fail, and they run in parallel.
    common::nft_ok(
        topo.pbx_ns(),
        "table inet harness {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    udp dport 4569 counter drop\n  }\n}\n",
    );
    let t0 = Instant::now();
    let table = common::cross(&CLIENT_ADDRS, &services, |_, p, port| {
        !(p == Udp && port == 4569)
    });
    common::assert_probes(&topo, &table);
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "9 blocked probes took {:?}: not run in parallel?",
        t0.elapsed()
    );
    assert_eq!(
        common::probe_in(
            topo.client_ns(),
            Udp,
            v4,
            SocketAddr::new(topo.pbx_v4(), 4569),
            t
        ),
        Outcome::Timeout
    );
    let listed = common::ns_cmd(topo.pbx_ns(), "nft", &["list", "table", "inet", "harness"]);
    assert!(
        common::stdout(&listed).contains("udp dport 4569"),
        "{}",
        common::show(&listed)
    );
    // The nft in the root namespace does not see it.
    let root = common::run_cmd(
        {
            let mut c = Command::new(common::tool_path("nft"));
            c.args(["list", "table", "inet", "harness"]);
            c
        },
        None,
    );
    assert!(
        !root.status.success(),
        "table leaked into the root namespace"
    );

    // The failure message lists every mismatch.
    let err = common::check_probes(
        &topo,
        &[
            Probe::udp("192.0.2.10", 4569, true),
            Probe::tcp("192.0.2.10", 5061, true),
            Probe::tcp("2001:db8::11", 8080, false),
        ],
    )
    .unwrap_err();
    assert!(err.starts_with("2 of 3 probes did not match:"), "{err}");
    assert!(err.contains("192.0.2.10 -> 192.0.2.1:4569/udp"), "{err}");
    assert!(
        err.contains("2001:db8::11 -> [2001:db8::1]:8080/tcp"),
        "{err}"
    );
    assert!(
        err.contains("expected open   got blocked (timeout)"),
        "{err}"
    );
    assert!(err.contains("expected closed got open"), "{err}");

    // Servers stop on drop: nothing listens any more.
    drop(srv);
    assert_eq!(
        common::probe_in(
            topo.client_ns(),
            Tcp,
            v4,
            SocketAddr::new(topo.pbx_v4(), 5061),
            t
        ),
        Outcome::Refused
    );

    drop(topo);
    assert_gone(&names);
}

#[test]
fn dnsmasq_serves_and_rewrites_records() {
    if !common::require_root("dnsmasq_serves_and_rewrites_records")
        || !common::require_tools("dnsmasq_serves_and_rewrites_records", &["dnsmasq"])
    {
        return;
    }
    let topo = Topology::new();
    let names = topo.names().clone();
    let dns = topo.start_dnsmasq();
    let pid = dns.pid();
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim(),
        "dnsmasq",
        "the child PID must be dnsmasq itself"
    );

    dns.set_records(&[
        ("sip1.example.test", ip("192.0.2.10")),
        ("sip1.example.test", ip("2001:db8::10")),
        ("sip2.example.test", ip("198.51.100.10")),
    ]);
    // Asked from the pbx namespace, across the veth.
    let q = |name: &str, t: QType| {
        common::dns_query(topo.pbx_ns(), dns.addr(), name, t, Duration::from_secs(2)).unwrap()
    };
    let r = q("sip1.example.test", QType::A);
    assert_eq!(
        (r.rcode, r.addrs.clone()),
        (RCODE_NOERROR, vec![ip("192.0.2.10")])
    );
    assert!(r.min_ttl.unwrap() <= 1, "{r:?}");
    assert_eq!(
        q("sip1.example.test", QType::Aaaa).addrs,
        vec![ip("2001:db8::10")]
    );
    assert_eq!(
        q("sip2.example.test", QType::A).addrs,
        vec![ip("198.51.100.10")]
    );
    let sip2_aaaa = q("sip2.example.test", QType::Aaaa);
    assert_eq!((sip2_aaaa.rcode, sip2_aaaa.addrs.len()), (RCODE_NOERROR, 0));
    assert_eq!(q("nosuch.example.test", QType::A).rcode, RCODE_NXDOMAIN);

    dns.set_records(&[("sip1.example.test", ip("203.0.113.10"))]);
    assert_eq!(
        q("sip1.example.test", QType::A).addrs,
        vec![ip("203.0.113.10")]
    );
    assert!(q("sip1.example.test", QType::Aaaa).addrs.is_empty());
    assert_eq!(q("sip2.example.test", QType::A).rcode, RCODE_NXDOMAIN);
    assert!(dns.log().contains("sip1.example.test"), "{}", dns.log());

    drop(dns);
    assert!(!pid_alive(pid), "dnsmasq {pid} still running");
    drop(topo);
    assert_gone(&names);
}

#[test]
fn silent_and_servfail_dns() {
    if !common::require_root("silent_and_servfail_dns") {
        return;
    }
    let topo = Topology::new();
    let names = topo.names().clone();
    topo.add_client_addr("192.0.2.54");
    topo.add_client_addr("2001:db8::55");
    let silent = SilentDns::start(topo.client_ns(), "192.0.2.54:53".parse().unwrap());
    let servfail = ServfailDns::start(topo.client_ns(), "[2001:db8::55]:53".parse().unwrap());

    let t0 = Instant::now();
    let err = common::dns_query(
        topo.pbx_ns(),
        silent.addr(),
        "x.example.test",
        QType::A,
        Duration::from_millis(300),
    )
    .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(silent.queries(), 1);

    let r = common::dns_query(
        topo.pbx_ns(),
        servfail.addr(),
        "x.example.test",
        QType::Aaaa,
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(r.rcode, RCODE_SERVFAIL);
    assert_eq!(servfail.queries(), 1);

    drop((silent, servfail));
    drop(topo);
    assert_gone(&names);
}

#[test]
fn binaries_run_inside_the_pbx_namespace() {
    if !common::require_root("binaries_run_inside_the_pbx_namespace") {
        return;
    }
    let topo = Topology::new();
    let cfg = TempConfig::new();
    let out = cfg.run_program(
        Some(topo.pbx_ns()),
        Path::new("/bin/sh"),
        ["-c", "cat /proc/net/dev; echo \"$PBXWALL_STATE_DIR\""],
        &[],
    );
    common::assert_exit(&out, 0, "sh in pbx ns");
    let so = common::stdout(&out);
    assert!(so.contains(topo.pbx_veth()), "{so}");
    assert!(so.contains(cfg.state_dir().to_str().unwrap()), "{so}");
    // A real binary of the package, through `ip netns exec`: it runs and terminates.
    let out = cfg.run(Some(topo.pbx_ns()), "pbxwall", ["--version"]);
    assert!(out.status.code().is_some(), "{}", common::show(&out));
}

#[test]
fn cleanup_after_panic() {
    if !common::require_root("cleanup_after_panic")
        || !common::require_tools("cleanup_after_panic", &["dnsmasq"])
    {
        return;
    }
    let mut seen = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let topo = Topology::new();
        let _srv = Servers::start(&topo, &[5061], &[5060]);
        let dns = topo.start_dnsmasq();
        // A process the test started without a guard, left inside the namespace.
        let stray = common::ns_command(topo.pbx_ns(), "sleep", &["10"])
            .spawn()
            .expect("spawn sleep");
        seen = Some((topo.names().clone(), dns.pid(), stray));
        panic!("deliberate panic inside a test");
    }));
    assert!(result.is_err());
    let (names, dns_pid, mut stray) = seen.unwrap();
    assert_gone(&names);
    assert!(!pid_alive(dns_pid), "dnsmasq {dns_pid} survived the panic");
    // The namespace guard killed the stray by PID; reap it (bounded).
    let status = common::wait_bounded(&mut stray, Duration::from_secs(2));
    assert!(status.is_some(), "stray sleep was not killed");
}

#[test]
fn in_ns_propagates_panics_and_results() {
    if !common::require_root("in_ns_propagates_panics_and_results") {
        return;
    }
    let topo = Topology::new();
    let v = topo.in_client(|| {
        std::net::UdpSocket::bind((Ipv4Addr::new(192, 0, 2, 10), 0))
            .map(|s| s.local_addr().unwrap().ip())
    });
    assert_eq!(v.unwrap(), ip("192.0.2.10"));
    // The test thread itself never has that address.
    assert!(std::net::UdpSocket::bind((Ipv4Addr::new(192, 0, 2, 10), 0)).is_err());
    let r = catch_unwind(AssertUnwindSafe(|| topo.in_pbx(|| panic!("inner"))));
    assert!(r.is_err());
    assert!(common::enter_ns("pbxw-no-such-namespace").is_err());
}
