//! Self-test of the integration-test harness in `tests/common/`: namespaces, servers, probes,
//! nft, DNS fixtures, binaries, and that everything is cleaned up (also after a panic); and
//! the skip rule of the test runner (`common::harness`): a test that cannot run is reported
//! as ignored, never passed, and fails under `PBXWALL_TESTS_REQUIRE_ROOT`.
//! The root tests run in parallel threads of this binary, each with its own namespaces.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use libtest_mimic::Arguments;

use common::dns::{build_query, parse_reply, servfail_reply};
use common::harness::{self, Decision, Facts};
use common::{
    CLIENT_ADDRS, DnsReply, Names, Needs, Outcome, PROBE_TIMEOUT, Probe, Proto::*, QType,
    RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_SERVFAIL, Servers, ServfailDns, SilentDns, TempConfig,
    Topology,
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

fn facts(euid: u32, missing: &[&str]) -> Facts {
    Facts {
        euid,
        missing_tools: missing.iter().map(|t| t.to_string()).collect(),
        opted_in: true,
        check: Ok(()),
        require_all: false,
    }
}

#[track_caller]
fn ignored_reason(decision: Decision) -> String {
    match decision {
        Decision::Ignore(reason) => reason,
        other => panic!("expected Ignore, got {other:?}"),
    }
}

#[track_caller]
fn failed_reason(decision: Decision) -> String {
    match decision {
        Decision::Fail(reason) => reason,
        other => panic!("expected Fail, got {other:?}"),
    }
}

/// The thread the last [`records_its_thread`] ran on.
static TEST_THREAD: Mutex<Option<String>> = Mutex::new(None);

fn records_its_thread() {
    *TEST_THREAD.lock().unwrap() = thread::current().name().map(str::to_owned);
}

fn must_not_run() {
    panic!("a test that cannot run here was run");
}

fn panics_on_purpose() {
    panic!("deliberate panic inside a trial (harness self-test)");
}

/// The skip rule, decided ([`harness::decide`]) and reported (libtest-mimic's counts, the
/// same a test binary prints): a test that cannot run is ignored, never passed, and fails under
/// `PBXWALL_TESTS_REQUIRE_ROOT`.
fn skip_rule_runs_ignores_or_fails() {
    let root = Needs::ROOT;
    // Root, ip and nft: the test runs.
    assert_eq!(harness::decide(&root, &facts(0, &[])), Decision::Run);
    // Not root: ignored, and the SKIPPED line says why.
    let reason = ignored_reason(harness::decide(&root, &facts(1000, &[])));
    let text = harness::skip_line("some_test", &reason);
    assert!(
        text.starts_with("SKIPPED some_test: needs root and ip/nft (run as root)"),
        "{text}"
    );
    assert!(text.contains("euid is 1000"), "{text}");
    // Root, but nft missing: ignored.
    let reason = ignored_reason(harness::decide(&root, &facts(0, &["nft"])));
    let text = harness::skip_line("t2", &reason);
    assert!(
        text.starts_with("SKIPPED t2: needs root and ip/nft"),
        "{text}"
    );
    assert!(text.contains("not found: nft"), "{text}");
    // Under PBXWALL_TESTS_REQUIRE_ROOT the same tests fail, with the same reasons.
    let ci = |euid, missing| Facts {
        require_all: true,
        ..facts(euid, missing)
    };
    let reason = failed_reason(harness::decide(&root, &ci(1000, &[])));
    assert!(
        reason.contains("euid is 1000") && reason.contains(common::REQUIRE_ROOT_ENV),
        "{reason}"
    );
    let reason = failed_reason(harness::decide(&root, &ci(0, &["nft"])));
    assert!(reason.contains("not found: nft"), "{reason}");
    assert_eq!(harness::decide(&root, &ci(0, &[])), Decision::Run);
    // A test that needs nothing runs anywhere.
    assert_eq!(
        harness::decide(&Needs::NOTHING, &ci(1000, &[])),
        Decision::Run
    );

    // Extra programs follow the same rule, with or without root.
    let dns = Needs::root_and(&["dnsmasq"]);
    assert_eq!(dns.programs(), ["ip", "nft", "dnsmasq"]);
    assert_eq!(harness::decide(&dns, &facts(0, &[])), Decision::Run);
    let reason = ignored_reason(harness::decide(&dns, &facts(0, &["dnsmasq"])));
    assert_eq!(
        reason,
        "needs root and ip/nft (run as root) and dnsmasq [not found: dnsmasq]"
    );
    failed_reason(harness::decide(&dns, &ci(0, &["dnsmasq"])));
    let groff = Needs::tools(&["groff"]);
    assert_eq!(groff.programs(), ["groff"]);
    assert_eq!(harness::decide(&groff, &facts(1000, &[])), Decision::Run);
    let reason = ignored_reason(harness::decide(&groff, &facts(1000, &["groff"])));
    assert_eq!(reason, "needs groff [not found: groff]");
    failed_reason(harness::decide(&groff, &ci(1000, &["groff"])));
    // A test's own check: its message is the reason.
    let checked = Needs::NOTHING.with_check(|| Err("no widget".into()));
    let failing_check = Facts {
        check: Err("no widget".into()),
        ..facts(0, &[])
    };
    assert_eq!(
        harness::decide(&checked, &failing_check),
        Decision::Ignore("no widget".into())
    );

    // An opt-in switch that is off: ignored, as root and under PBXWALL_TESTS_REQUIRE_ROOT too.
    let slow = Needs::ROOT.with_opt_in("PBXWALL_SELFTEST_SWITCH", "slow: set the switch");
    let off = |f: Facts| Facts {
        opted_in: false,
        ..f
    };
    for f in [facts(0, &[]), ci(0, &[]), ci(1000, &[])] {
        assert_eq!(
            harness::decide(&slow, &off(f)),
            Decision::Ignore("slow: set the switch".into())
        );
    }
    // On: the root rule as for any root test.
    assert_eq!(harness::decide(&slow, &facts(0, &[])), Decision::Run);
    ignored_reason(harness::decide(&slow, &facts(1000, &[])));
    failed_reason(harness::decide(&slow, &ci(1000, &[])));

    // The facts of this machine.
    let f = Facts::of(&Needs::tools(&["pbxwall-no-such-program", "sh"]));
    assert_eq!(f.missing_tools, ["pbxwall-no-such-program"]);
    assert_eq!(f.euid, harness::euid());
    assert!(f.opted_in && f.check.is_ok());
    assert!(!Facts::of(&slow).opted_in, "the switch is not set here");

    // Reported through libtest-mimic: a test that ran and passed is "passed", one that cannot
    // run is "ignored" (its body is never called), one that cannot run under
    // PBXWALL_TESTS_REQUIRE_ROOT and one that panics are "failed".
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let args = Arguments {
        // To a file: a second summary line on stdout would be added to CI's totals.
        logfile: Some(log.to_str().unwrap().to_owned()),
        test_threads: Some(1),
        ..Arguments::default()
    };
    let trials = || {
        vec![
            harness::trial(
                "runs",
                harness::decide(&root, &facts(0, &[])),
                records_its_thread,
            ),
            harness::trial(
                "cannot_run",
                harness::decide(&root, &facts(1000, &[])),
                must_not_run,
            ),
            harness::trial(
                "cannot_run_in_ci",
                harness::decide(&root, &ci(1000, &[])),
                must_not_run,
            ),
            harness::trial("panics", Decision::Run, panics_on_purpose),
        ]
    };
    let done = libtest_mimic::run(&args, trials());
    assert_eq!(
        (done.num_passed, done.num_failed, done.num_ignored),
        (1, 2, 1),
        "{done:?}"
    );
    assert_eq!(TEST_THREAD.lock().unwrap().as_deref(), Some("runs"));
    let text = std::fs::read_to_string(&log).unwrap();
    let outcome = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .and_then(|l| l.rsplit(" ... ").next())
            .unwrap_or_else(|| panic!("no line for {name}:\n{text}"))
    };
    assert_eq!(outcome("runs"), "ok");
    assert_eq!(outcome("cannot_run"), "ignored");
    assert_eq!(outcome("cannot_run_in_ci"), "FAILED");
    assert_eq!(outcome("panics"), "FAILED");
    assert!(
        text.contains("test result: FAILED. 1 passed; 2 failed; 1 ignored;"),
        "{text}"
    );
    assert!(
        text.contains("test panicked: deliberate panic inside a trial"),
        "{text}"
    );
    assert!(text.contains(common::REQUIRE_ROOT_ENV), "{text}");

    // Run anyway (`--include-ignored`): a test that cannot run fails, it never passes.
    let anyway = Arguments {
        include_ignored: true,
        ..args.clone()
    };
    let done = libtest_mimic::run(&anyway, trials());
    assert_eq!(
        (done.num_passed, done.num_failed, done.num_ignored),
        (1, 3, 0),
        "{done:?}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("cannot run here: needs root and ip/nft (run as root) [euid is 1000]"),
        "{text}"
    );

    // The name filter and --skip decide which tests print a SKIPPED line.
    let filtered = |filter: Option<&str>, skip: &[&str], exact| Arguments {
        filter: filter.map(str::to_owned),
        skip: skip.iter().map(|s| s.to_string()).collect(),
        exact,
        ..Arguments::default()
    };
    assert!(harness::selected(&filtered(None, &[], false), "abc"));
    assert!(harness::selected(&filtered(Some("b"), &[], false), "abc"));
    assert!(!harness::selected(&filtered(Some("b"), &[], true), "abc"));
    assert!(harness::selected(&filtered(Some("abc"), &[], true), "abc"));
    assert!(!harness::selected(&filtered(None, &["bc"], false), "abc"));
}

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

fn topology_servers_probes_and_nft() {
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

fn dnsmasq_serves_and_rewrites_records() {
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

fn silent_and_servfail_dns() {
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

fn binaries_run_inside_the_pbx_namespace() {
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

fn cleanup_after_panic() {
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

fn in_ns_propagates_panics_and_results() {
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

common::test_main! {
    Needs::NOTHING => [
        skip_rule_runs_ignores_or_fails,
        names_are_unique_and_fit,
        dns_wire_format,
        run_with_timeout_kills_and_tempconfig_env,
    ],
    Needs::ROOT => [
        topology_servers_probes_and_nft,
        silent_and_servfail_dns,
        binaries_run_inside_the_pbx_namespace,
        in_ns_propagates_panics_and_results,
    ],
    Needs::root_and(&["dnsmasq"]) => [dnsmasq_serves_and_rewrites_records, cleanup_after_panic],
}
