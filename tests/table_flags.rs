//! The table's flags: `nft add table inet pbxwall '{ flags dormant; }'` unhooks every chain
//! of the table, so the whole firewall is off while its rules stay listed. `status` reports
//! it, and both `ipchecker` and `restart` wake the table again (every apply sets the table's
//! flags to none). Proven with packets from a stranger. Needs root.

mod common;

use common::{Needs, Probe, Servers, TempConfig, Topology, assert_probes, ns_cmd, show, stdout};

/// A whitelisted SIP phone (192.0.2.10, 2001:db8::10) and strangers (192.0.2.11,
/// 2001:db8::11); the pbx listens on tcp 22 and udp 5060.
fn setup(topo: &Topology) -> TempConfig {
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", "trusted = []\n");
    common::assert_exit(
        &cfg.run(
            Some(topo.pbx_ns()),
            "add-ip",
            ["joe", "192.0.2.10", "2001:db8::10", "--allow", "sip-udp"],
        ),
        0,
        "add-ip joe",
    );
    cfg
}

/// What the ruleset admits: the phone on SIP, nobody on SSH, no stranger at all.
fn protected() -> Vec<Probe> {
    vec![
        Probe::udp("192.0.2.10", 5060, true),
        Probe::udp("2001:db8::10", 5060, true),
        Probe::tcp("192.0.2.10", 22, false),
        Probe::udp("192.0.2.11", 5060, false),
        Probe::tcp("192.0.2.11", 22, false),
        Probe::udp("2001:db8::11", 5060, false),
        Probe::tcp("2001:db8::11", 22, false),
    ]
}

/// Sets the dormant flag behind pbxwall's back and proves the attack: strangers reach
/// every port, over IPv4 and IPv6, and `status` reports the flag (exit 3).
fn make_dormant(topo: &Topology, cfg: &TempConfig) {
    let out = ns_cmd(
        topo.pbx_ns(),
        "nft",
        &["add", "table", "inet", "pbxwall", "{ flags dormant; }"],
    );
    assert!(out.status.success(), "nft add table: {}", show(&out));
    assert_probes(
        topo,
        &[
            Probe::udp("192.0.2.11", 5060, true),
            Probe::tcp("192.0.2.11", 22, true),
            Probe::udp("2001:db8::11", 5060, true),
            Probe::tcp("2001:db8::11", 22, true),
        ],
    );
    let out = cfg.run(Some(topo.pbx_ns()), "status", [] as [&str; 0]);
    common::assert_exit(&out, 3, "status of a dormant table");
    assert!(
        stdout(&out).contains("table flags 0x1 (dormant), want 0"),
        "{}",
        show(&out)
    );
}

/// The table is awake and in sync: `status` exit 0, the listing has no flags line, and the
/// strangers are out again.
fn assert_repaired(topo: &Topology, cfg: &TempConfig, by: &str) {
    common::assert_exit(
        &cfg.run(Some(topo.pbx_ns()), "status", [] as [&str; 0]),
        0,
        &format!("status after {by}"),
    );
    let out = ns_cmd(topo.pbx_ns(), "nft", &["list", "table", "inet", "pbxwall"]);
    assert!(out.status.success(), "nft list: {}", show(&out));
    assert!(
        !stdout(&out).contains("dormant"),
        "still dormant after {by}:\n{}",
        stdout(&out)
    );
    assert_probes(topo, &protected());
}

fn ipchecker_wakes_a_dormant_table() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[22], &[5060]);
    let cfg = setup(&topo);
    assert_probes(&topo, &protected());

    make_dormant(&topo, &cfg);
    let out = cfg.run(Some(topo.pbx_ns()), "ipchecker", ["--json"]);
    common::assert_exit(&out, 0, "ipchecker");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&out)));
    assert_eq!(report["apply"], "full", "{report:#}");
    assert_repaired(&topo, &cfg, "ipchecker");

    // Nothing left to repair: the next run writes nothing.
    let out = cfg.run(Some(topo.pbx_ns()), "ipchecker", ["--json"]);
    common::assert_exit(&out, 0, "second ipchecker");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&out)));
    assert_eq!(report["apply"], "none", "{report:#}");
}

fn restart_wakes_a_dormant_table() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[22], &[5060]);
    let cfg = setup(&topo);
    assert_probes(&topo, &protected());

    make_dormant(&topo, &cfg);
    common::assert_exit(
        &cfg.run(Some(topo.pbx_ns()), "restart", [] as [&str; 0]),
        0,
        "restart",
    );
    assert_repaired(&topo, &cfg, "restart");

    // An account change applies in full too, and so wakes the table as well.
    make_dormant(&topo, &cfg);
    common::assert_exit(
        &cfg.run(
            Some(topo.pbx_ns()),
            "add-ip",
            ["office", "203.0.113.10", "--allow", "ssh"],
        ),
        0,
        "add-ip office",
    );
    assert_repaired(&topo, &cfg, "add-ip");
    assert_probes(&topo, &[Probe::tcp("203.0.113.10", 22, true)]);
}

common::test_main! {
    Needs::ROOT => [ipchecker_wakes_a_dormant_table, restart_wakes_a_dormant_table],
}
