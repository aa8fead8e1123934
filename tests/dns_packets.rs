//! Host-name accounts, proven with real packets and a real DNS server: dnsmasq in the client
//! namespace serves a test zone whose records the tests rewrite; pbxwall runs in the pbx
//! namespace and resolves through it over the veth. Needs root.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{
    Needs, Probe, Servers, ServfailDns, SilentDns, TempConfig, Topology, assert_probes, in_ns,
    show, stderr, stdout,
};
use pbxwall::nft::netlink::{self, LiveTable};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn settings(nameservers: &[&str], grace_s: u64) -> String {
    let ns: Vec<String> = nameservers.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        "trusted = []\n[resolver]\nnameservers = [{}]\ntimeout_ms = 500\nattempts = 1\nstale_grace_s = {grace_s}\n",
        ns.join(", ")
    )
}

fn live(topo: &Topology) -> LiveTable {
    in_ns(topo.pbx_ns(), netlink::read_table)
        .expect("read table")
        .expect("table exists")
}

fn elements(t: &LiveTable, set: &str) -> Vec<String> {
    t.sets
        .iter()
        .find(|s| s.name == set)
        .unwrap_or_else(|| panic!("no set {set}"))
        .elements
        .iter()
        .map(|r| r.to_string())
        .collect()
}

fn rule_handles(t: &LiveTable) -> Vec<u64> {
    t.chains
        .iter()
        .flat_map(|c| c.rule_handles.iter().copied())
        .collect()
}

fn set_handles(t: &LiveTable) -> Vec<(String, u64)> {
    t.sets.iter().map(|s| (s.name.clone(), s.handle)).collect()
}

fn a_moving_name_is_followed_by_element_updates_only() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[22], &[5060, 4569]);
    let dns = topo.start_dnsmasq();
    dns.set_records(&[
        ("joe.dyn.example.test", ip("192.0.2.10")),
        ("joe.dyn.example.test", ip("2001:db8::10")),
    ]);
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", &settings(&["192.0.2.53"], 3600));
    let ns = Some(topo.pbx_ns());
    common::assert_exit(
        &cfg.run(ns, "add-ip", ["office", "203.0.113.10", "--allow", "ssh"]),
        0,
        "add-ip office",
    );
    let out = cfg.run(
        ns,
        "add-fqdn",
        ["joe-mobile", "joe.dyn.example.test", "--allow", "1,3"],
    );
    common::assert_exit(&out, 0, "add-fqdn joe-mobile");
    assert_probes(
        &topo,
        &[
            Probe::udp("192.0.2.10", 5060, true),
            Probe::udp("192.0.2.10", 4569, true),
            Probe::tcp("192.0.2.10", 22, false),
            Probe::udp("2001:db8::10", 5060, true),
            Probe::udp("192.0.2.11", 5060, false),
            Probe::tcp("203.0.113.10", 22, true),
        ],
    );

    // Nothing changed: ipchecker writes nothing to the kernel.
    let before = live(&topo);
    let out = cfg.run(ns, "ipchecker", ["--json"]);
    common::assert_exit(&out, 0, "ipchecker, nothing changed");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["netlink_writes"], 0, "{}", show(&out));
    assert_eq!(report["apply"], "none", "{}", show(&out));
    let same = live(&topo);
    assert_eq!(rule_handles(&same), rule_handles(&before));
    assert_eq!(set_handles(&same), set_handles(&before));
    let out = cfg.run(ns, "ipchecker", [] as [&str; 0]);
    common::assert_exit(&out, 0, "ipchecker, quiet");
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "quiet when nothing changed: {}",
        show(&out)
    );

    // The name moves: only its elements change.
    dns.set_records(&[
        ("joe.dyn.example.test", ip("192.0.2.11")),
        ("joe.dyn.example.test", ip("2001:db8::10")),
    ]);
    let out = cfg.run(ns, "ipchecker", [] as [&str; 0]);
    common::assert_exit(&out, 0, "ipchecker after the move");
    let text = stdout(&out);
    assert!(
        text.contains("joe.dyn.example.test (account joe-mobile): now 192.0.2.11, 2001:db8::10 (was 192.0.2.10, 2001:db8::10)"),
        "{}",
        show(&out)
    );
    assert!(
        text.contains(
            "map hosts_v4: added 192.0.2.11 : jump allow_sip-udp.iax; \
             removed 192.0.2.10 : jump allow_sip-udp.iax"
        ),
        "{}",
        show(&out)
    );
    let after = live(&topo);
    assert_eq!(
        rule_handles(&after),
        rule_handles(&before),
        "rules untouched"
    );
    assert_eq!(
        set_handles(&after),
        set_handles(&before),
        "sets not re-created"
    );
    assert_eq!(
        elements(&before, "hosts_v4"),
        [
            "192.0.2.10 : jump allow_sip-udp.iax",
            "203.0.113.10 : jump allow_ssh"
        ]
    );
    assert_eq!(
        elements(&after, "hosts_v4"),
        [
            "192.0.2.11 : jump allow_sip-udp.iax",
            "203.0.113.10 : jump allow_ssh"
        ]
    );
    assert_eq!(
        elements(&after, "hosts_v6"),
        ["2001:db8::10 : jump allow_sip-udp.iax"]
    );
    assert_probes(
        &topo,
        &[
            Probe::udp("192.0.2.11", 5060, true),
            Probe::udp("192.0.2.11", 4569, true),
            Probe::udp("192.0.2.10", 5060, false),
            Probe::udp("2001:db8::10", 5060, true),
            Probe::tcp("203.0.113.10", 22, true),
        ],
    );

    // A rule changed behind pbxwall's back (same count): ipchecker repairs it in full.
    let handle = common::rule_handle(topo.pbx_ns(), "@hosts_v4");
    let out = common::ns_cmd(
        topo.pbx_ns(),
        "nft",
        &[
            "replace", "rule", "inet", "pbxwall", "input", "handle", &handle, "tcp", "dport", "22",
            "accept",
        ],
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_probes(&topo, &[Probe::tcp("192.0.2.11", 22, true)]);
    let out = cfg.run(ns, "ipchecker", [] as [&str; 0]);
    common::assert_exit(&out, 0, "ipchecker after a rule was replaced");
    assert!(
        stdout(&out).contains(
            "the ruleset changed beyond addresses since the last apply; applied it in full"
        ),
        "{}",
        show(&out)
    );
    assert_probes(&topo, &[Probe::tcp("192.0.2.11", 22, false)]);

    // The table disappears (reboot, someone's flush): ipchecker puts it all back.
    let out = common::ns_cmd(
        topo.pbx_ns(),
        "nft",
        &["delete", "table", "inet", "pbxwall"],
    );
    assert!(out.status.success(), "{}", show(&out));
    let out = cfg.run(ns, "ipchecker", [] as [&str; 0]);
    common::assert_exit(&out, 0, "ipchecker, table missing");
    assert!(
        stdout(&out).contains("table inet pbxwall was missing; applied the full ruleset"),
        "{}",
        show(&out)
    );
    assert_probes(
        &topo,
        &[
            Probe::udp("192.0.2.11", 5060, true),
            Probe::tcp("192.0.2.11", 22, false),
        ],
    );

    // The name moves onto the office's address: the overlap needs a chain with the
    // services of both accounts, which does not exist yet, so ipchecker applies in full.
    dns.set_records(&[
        ("joe.dyn.example.test", ip("203.0.113.10")),
        ("joe.dyn.example.test", ip("2001:db8::10")),
    ]);
    let out = cfg.run(ns, "ipchecker", ["--json"]);
    common::assert_exit(&out, 0, "ipchecker, moved onto the office");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["apply"], "full", "{}", show(&out));
    assert_eq!(
        elements(&live(&topo), "hosts_v4"),
        ["203.0.113.10 : jump allow_sip-udp.iax.ssh"]
    );
    assert_probes(
        &topo,
        &[
            Probe::udp("203.0.113.10", 5060, true),
            Probe::udp("203.0.113.10", 4569, true),
            Probe::tcp("203.0.113.10", 22, true),
            Probe::udp("192.0.2.11", 5060, false),
        ],
    );
    // And back: the office keeps ssh only.
    dns.set_records(&[
        ("joe.dyn.example.test", ip("192.0.2.11")),
        ("joe.dyn.example.test", ip("2001:db8::10")),
    ]);
    common::assert_exit(
        &cfg.run(ns, "ipchecker", [] as [&str; 0]),
        0,
        "ipchecker, back",
    );
    assert_probes(
        &topo,
        &[
            Probe::udp("203.0.113.10", 5060, false),
            Probe::tcp("203.0.113.10", 22, true),
            Probe::udp("192.0.2.11", 5060, true),
        ],
    );
}

fn an_nxdomain_name_is_saved_left_out_and_retried() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[22], &[5060]);
    let dns = topo.start_dnsmasq();
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", &settings(&["192.0.2.53"], 3600));
    let ns = Some(topo.pbx_ns());
    common::assert_exit(
        &cfg.run(ns, "add-ip", ["office", "203.0.113.10", "--allow", "ssh"]),
        0,
        "add-ip office",
    );
    // Most often a typo: refused unless --force, and nothing is saved.
    let out = cfg.run(
        ns,
        "add-fqdn",
        ["ghost", "nosuch.example.test", "--allow", "sip-udp"],
    );
    common::assert_exit(&out, 1, "add-fqdn of a name that does not exist");
    assert!(
        stderr(&out).contains(
            "refusing to add nosuch.example.test: it does not exist (NXDOMAIN); check the spelling, or pass --force"
        ),
        "{}",
        show(&out)
    );
    assert!(cfg.read("accounts/ghost.toml").is_none(), "not saved");
    let out = cfg.run(
        ns,
        "add-fqdn",
        [
            "ghost",
            "nosuch.example.test",
            "--allow",
            "sip-udp",
            "--force",
        ],
    );
    common::assert_exit(&out, 3, "add-fqdn --force of a name that does not exist");
    assert!(
        stderr(&out)
            .contains("left out nosuch.example.test (account ghost): does not resolve (NXDOMAIN)"),
        "{}",
        show(&out)
    );
    assert!(cfg.read("accounts/ghost.toml").is_some(), "saved");
    assert_probes(
        &topo,
        &[
            Probe::tcp("203.0.113.10", 22, true),
            Probe::udp("192.0.2.10", 5060, false),
        ],
    );
    common::assert_exit(
        &cfg.run(ns, "restart", [] as [&str; 0]),
        3,
        "restart with a left-out name",
    );

    // The name appears: ipchecker adds it.
    dns.set_records(&[("nosuch.example.test", ip("192.0.2.10"))]);
    let out = cfg.run(ns, "ipchecker", [] as [&str; 0]);
    common::assert_exit(&out, 0, "ipchecker once it resolves");
    assert!(
        stdout(&out).contains("now 192.0.2.10 (was nothing)"),
        "{}",
        show(&out)
    );
    assert_probes(&topo, &[Probe::udp("192.0.2.10", 5060, true)]);
}

/// Cron mails whatever ipchecker prints: a name that stays unresolvable is reported by the
/// run that finds it so, then not again while it stays so (exit 3 says it still is, and
/// --json lists it as ongoing); its recovery is reported once, and so is a new failure.
fn an_unresolvable_name_is_reported_when_its_state_changes_only() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[22], &[5060]);
    let dns = topo.start_dnsmasq();
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", &settings(&["192.0.2.53"], 3600));
    let ns = Some(topo.pbx_ns());
    let ipchecker = |code: i32, what: &str| {
        let out = cfg.run(ns, "ipchecker", [] as [&str; 0]);
        common::assert_exit(&out, code, what);
        out
    };
    common::assert_exit(
        &cfg.run(ns, "add-ip", ["office", "203.0.113.10", "--allow", "ssh"]),
        0,
        "add-ip office",
    );
    common::assert_exit(
        &cfg.run(
            ns,
            "add-fqdn",
            [
                "ghost",
                "nosuch.example.test",
                "--allow",
                "sip-udp",
                "--force",
            ],
        ),
        3,
        "add-fqdn --force of a name that does not exist",
    );
    let left_out = "left out nosuch.example.test (account ghost): does not resolve (NXDOMAIN)";

    // The first run reports it.
    let out = ipchecker(3, "ipchecker, first run with the name left out");
    assert!(stderr(&out).contains(left_out), "{}", show(&out));
    // The next runs print nothing: nothing for cron to mail.
    for run in 2..=3 {
        let out = ipchecker(3, "ipchecker, the name still left out");
        assert!(
            stdout(&out).is_empty() && stderr(&out).is_empty(),
            "run {run} printed:\n{}",
            show(&out)
        );
    }
    let out = cfg.run(ns, "ipchecker", ["--json"]);
    common::assert_exit(&out, 3, "ipchecker --json, still left out");
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["problems"], serde_json::json!([]), "{v}");
    assert_eq!(v["ongoing"], serde_json::json!([left_out]), "{v}");
    let cache = std::fs::read_to_string(cfg.state_dir().join("dns-cache.json")).unwrap();
    assert!(
        cache.contains("\"reported\": \"left out: does not resolve (NXDOMAIN)\""),
        "{cache}"
    );

    // It appears: reported once, then quiet.
    dns.set_records(&[("nosuch.example.test", ip("192.0.2.10"))]);
    let out = ipchecker(0, "ipchecker once it resolves");
    let said = stdout(&out);
    assert!(
        said.contains(
            "nosuch.example.test (account ghost) resolves again (was left out: does not \
             resolve (NXDOMAIN))"
        ) && said.contains("now 192.0.2.10 (was nothing)"),
        "{}",
        show(&out)
    );
    assert_probes(&topo, &[Probe::udp("192.0.2.10", 5060, true)]);
    let out = ipchecker(0, "ipchecker, resolving as before");
    assert!(
        stdout(&out).is_empty() && stderr(&out).is_empty(),
        "{}",
        show(&out)
    );

    // It goes away again: a new failure, reported again, once.
    dns.set_records(&[]);
    let out = ipchecker(3, "ipchecker, gone again");
    assert!(stderr(&out).contains(left_out), "{}", show(&out));
    assert!(
        stdout(&out).contains("now nothing (was 192.0.2.10)"),
        "{}",
        show(&out)
    );
    let out = ipchecker(3, "ipchecker, still gone");
    assert!(
        stdout(&out).is_empty() && stderr(&out).is_empty(),
        "{}",
        show(&out)
    );
    assert_probes(&topo, &[Probe::udp("192.0.2.10", 5060, false)]);
}

fn a_silent_nameserver_costs_one_timeout_and_blocks_nothing_else() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[22], &[5060]);
    topo.add_client_addr("192.0.2.54");
    let silent = SilentDns::start(topo.client_ns(), SocketAddr::new(ip("192.0.2.54"), 53));
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", &settings(&["192.0.2.54"], 3600));
    let ns = Some(topo.pbx_ns());
    common::assert_exit(
        &cfg.run(
            ns,
            "add-ip",
            ["office", "203.0.113.10", "--allow", "ssh", "--no-restart"],
        ),
        0,
        "add-ip",
    );
    for i in 0..20 {
        let out = cfg.run(
            ns,
            "add-fqdn",
            [
                format!("dyn{i}"),
                format!("host{i}.slow.example"),
                "--allow".into(),
                "sip-udp".into(),
                "--no-restart".into(),
            ],
        );
        common::assert_exit(&out, 0, "add-fqdn --no-restart");
    }
    let started = Instant::now();
    let out = cfg.run(ns, "restart", [] as [&str; 0]);
    let took = started.elapsed();
    common::assert_exit(&out, 3, "restart with a silent nameserver");
    // 20 names × A and AAAA, 500 ms × 1 attempt: concurrent, so about one timeout.
    assert!(
        took < Duration::from_millis(2500),
        "restart took {took:?}: names were not resolved concurrently"
    );
    assert!(stderr(&out).contains("left out host0.slow.example (account dyn0): DNS failing (A and AAAA: timed out); it has never resolved"), "{}", show(&out));
    assert!(
        silent.queries() >= 40,
        "every name was asked: {} queries",
        silent.queries()
    );
    assert_probes(
        &topo,
        &[
            Probe::tcp("203.0.113.10", 22, true),
            Probe::tcp("192.0.2.10", 22, false),
        ],
    );
}

fn a_failing_nameserver_keeps_addresses_within_the_grace_only() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[], &[5060]);
    let dns = topo.start_dnsmasq();
    dns.set_records(&[("joe.dyn.example.test", ip("192.0.2.10"))]);
    topo.add_client_addr("192.0.2.54");
    let _servfail = ServfailDns::start(topo.client_ns(), SocketAddr::new(ip("192.0.2.54"), 53));
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", &settings(&["192.0.2.53"], 3));
    let ns = Some(topo.pbx_ns());
    common::assert_exit(
        &cfg.run(
            ns,
            "add-fqdn",
            ["joe", "joe.dyn.example.test", "--allow", "sip-udp"],
        ),
        0,
        "add-fqdn",
    );
    assert_probes(&topo, &[Probe::udp("192.0.2.10", 5060, true)]);

    // DNS starts failing (SERVFAIL): the last addresses stay, reported as stale.
    cfg.write("pbxwall.toml", &settings(&["192.0.2.54"], 3));
    let out = cfg.run(ns, "ipchecker", [] as [&str; 0]);
    common::assert_exit(&out, 3, "ipchecker within the grace");
    assert!(
        stderr(&out).contains("joe.dyn.example.test (account joe) is stale since"),
        "{}",
        show(&out)
    );
    assert!(
        stderr(&out).contains("keeping 192.0.2.10"),
        "{}",
        show(&out)
    );
    assert_probes(&topo, &[Probe::udp("192.0.2.10", 5060, true)]);

    // After the grace they are dropped.
    std::thread::sleep(Duration::from_millis(3200));
    let out = cfg.run(ns, "ipchecker", [] as [&str; 0]);
    common::assert_exit(&out, 3, "ipchecker after the grace");
    assert!(
        stderr(&out).contains(
            "left out joe.dyn.example.test (account joe): DNS failing (A and AAAA: SERVFAIL)"
        ),
        "{}",
        show(&out)
    );
    assert!(
        stdout(&out).contains("map hosts_v4: removed 192.0.2.10 : jump allow_"),
        "{}",
        show(&out)
    );
    assert_probes(&topo, &[Probe::udp("192.0.2.10", 5060, false)]);
}

fn cron_install_validate_and_remove() {
    let cfg = TempConfig::new();
    let cron = cfg.root().join("cron.d-pbxwall");
    let cron_s = cron.to_str().unwrap();
    let out = cfg.run(
        None,
        "ipchecker",
        ["--install-cron", "*/5 * * * *", "--cron-file", cron_s],
    );
    common::assert_exit(&out, 0, "install-cron");
    let text = std::fs::read_to_string(&cron).unwrap();
    let line = text.lines().last().unwrap();
    assert!(line.starts_with("*/5 * * * * root test -x /"), "{text}");
    assert!(line.contains(" && /"), "{text}");
    assert!(line.contains("ipchecker --config-dir "), "{text}");
    assert!(stdout(&out).contains("next runs: "), "{}", show(&out));
    assert_eq!(
        stdout(&out).lines().last().unwrap().matches(", ").count(),
        2,
        "three next runs: {}",
        show(&out)
    );

    for bad in [
        "*/5 * * *",
        "61 * * * *",
        "* * * * * *",
        "every 5 minutes",
        "* * * * *\n* * * * * root sh",
    ] {
        let out = cfg.run(
            None,
            "ipchecker",
            ["--install-cron", bad, "--cron-file", cron_s],
        );
        common::assert_exit(&out, 2, bad);
        assert!(
            stderr(&out).contains("invalid cron schedule"),
            "{}",
            show(&out)
        );
        assert_eq!(
            std::fs::read_to_string(&cron).unwrap(),
            text,
            "unchanged after {bad:?}"
        );
    }
    let missing = cfg.root().join("no-such-dir/pbxwall");
    let out = cfg.run(
        None,
        "ipchecker",
        [
            "--install-cron",
            "*/5 * * * *",
            "--cron-file",
            missing.to_str().unwrap(),
        ],
    );
    common::assert_exit(&out, 1, "install-cron into a missing folder");
    assert!(
        stderr(&out).contains("no-such-dir does not exist"),
        "{}",
        show(&out)
    );
    assert!(!missing.parent().unwrap().exists(), "no folder created");
    let out = cfg.run(None, "ipchecker", ["--remove-cron", "--cron-file", cron_s]);
    common::assert_exit(&out, 0, "remove-cron");
    assert!(!cron.exists());
    let out = cfg.run(
        None,
        "ipchecker",
        ["--remove-cron", "--install-cron", "* * * * *"],
    );
    common::assert_exit(&out, 2, "conflicting flags");
}

common::test_main! {
    Needs::NOTHING => [cron_install_validate_and_remove],
    Needs::ROOT => [a_silent_nameserver_costs_one_timeout_and_blocks_nothing_else],
    Needs::root_and(&["dnsmasq"]) => [
        a_failing_nameserver_keeps_addresses_within_the_grace_only,
        a_moving_name_is_followed_by_element_updates_only,
        an_nxdomain_name_is_saved_left_out_and_retried,
        an_unresolvable_name_is_reported_when_its_state_changes_only,
    ],
}
