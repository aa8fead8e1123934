//! Port knocking (`[knock]`, `pbxwall knock`): the settings and the command line refuse bad
//! sequences with one line and change nothing; `--setup` writes a sequence keeping the
//! settings file's comments.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Output;
use std::time::Duration;

use common::{
    Case, Needs, Probe, Proto, Servers, TempConfig, Topology, assert_probes, case, ns_cmd,
    pbx_addr_for, probe_here, show, stderr, stdout,
};

#[rustfmt::skip]
const CLI_CASES: &[Case] = &[
    case(&["knock", "--setup", "--sequence", "23456,34567,23456"], 2, "invalid knock sequence [23456,34567,23456]: port 23456 appears twice; the ports must be distinct"),
    case(&["knock", "--setup", "--sequence", "23456,5060"], 2, "invalid knock port 5060: it is in udp 5060-5061 of service sip-udp; knock ports are never services"),
    case(&["knock", "--setup", "--sequence", "23456,10000"], 2, "invalid knock port 10000: it is tcp port 10000 of service webmin"),
    case(&["knock", "--setup", "--sequence", "23456,15000"], 2, "invalid knock port 15000: it is inside the RTP range 10000-20000"),
    case(&["knock", "--setup", "--sequence", "23456"], 2, "invalid knock sequence [23456]: use 2 to 8 distinct ports"),
    case(&["knock", "--setup", "--sequence", "2001,2002,2003,2004,2005,2006,2007,2008,2009"], 2, "invalid knock sequence [2001,2002,2003,2004,2005,2006,2007,2008,2009]: use 2 to 8"),
    case(&["knock", "--setup", "--sequence", "22,23456"], 2, "invalid knock port \"22\": use a port from 1024 to 65535"),
    case(&["knock", "--setup", "--sequence", "23456,x"], 2, "invalid knock port \"x\""),
    case(&["knock", "--setup", "--length", "1"], 2, "invalid knock length 1: use 2 to 8 ports"),
    case(&["knock", "--setup", "--length", "9"], 2, "invalid knock length 9: use 2 to 8 ports"),
    case(&["knock", "--setup", "--protocol", "icmp"], 2, "invalid knock protocol \"icmp\": use tcp or udp"),
    case(&["knock", "--setup", "--length", "3", "--sequence", "23456,34567"], 2, "cannot be used with"),
    case(&["knock", "192.0.2.1", "--setup"], 2, "cannot be used with"),
    case(&["knock"], 2, "required"),
    case(&["knock", "192.0.2.1"], 2, "no knock sequence: give --sequence P,P,P"),
    case(&["knock", "192.0.2.1", "--sequence", "23456,23456"], 2, "port 23456 appears twice"),
    case(&["knock", "192.0.2.1", "--sequence", "23456"], 2, "use 2 to 8 distinct ports"),
    case(&["knock", "192.0.2.1", "--sequence", "23456,34567", "--protocol", "sctp"], 2, "invalid knock protocol \"sctp\""),
    // Temporary accounts: bad durations and times, expiries in the past.
    case(&["add-ip", "visitor", "203.0.113.7", "--allow", "1", "--expires", "10x", "--no-restart"], 2, "invalid expiry \"10x\": expected a duration (90s, 10m, 2h, 7d, 1h30m) or a time in RFC 3339 form"),
    case(&["add-ip", "visitor", "203.0.113.7", "--allow", "1", "--expires", "0s", "--no-restart"], 2, "invalid expiry \"0s\""),
    case(&["add-ip", "visitor", "203.0.113.7", "--allow", "1", "--expires", "400d", "--no-restart"], 2, "invalid expiry \"400d\""),
    case(&["add-ip", "visitor", "203.0.113.7", "--allow", "1", "--expires", "2020-01-01T00:00:00Z", "--no-restart"], 2, "invalid expiry \"2020-01-01T00:00:00Z\": it is in the past"),
    case(&["add-fqdn", "visitor", "visitor.example.com", "--allow", "1", "--expires", "yesterday", "--no-restart"], 2, "invalid expiry \"yesterday\""),
    case(&["add-ip", "visitor", "198.51.100.0/23", "--allow", "1", "--expires", "1h", "--no-restart"], 2, "refusing 198.51.100.0/23 for a temporary account"),
];

fn bad_command_lines_are_refused_with_one_line_and_change_nothing() {
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", "# mine\ntrusted = []\n");
    let before = common::snapshot(cfg.config_dir());
    let mut failures = Vec::new();
    for c in CLI_CASES {
        let out = cfg.run(None, "pbxwall", c.args);
        let err = stderr(&out);
        let first_error_line = err.lines().find(|l| l.contains("error")).unwrap_or("");
        let clap = err.starts_with("error: ");
        let one_line = clap || err.trim_end().lines().count() == 1;
        if out.status.code() != Some(c.code) || !first_error_line.contains(c.error) || !one_line {
            failures.push(format!(
                "{:?}: want exit {} and {:?}\n{}",
                c.args,
                c.code,
                c.error,
                show(&out)
            ));
        }
        if common::snapshot(cfg.config_dir()) != before {
            failures.push(format!("{:?} changed the config dir", c.args));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[rustfmt::skip]
const FILE_CASES: &[(&str, &str)] = &[
    ("[knock]\nsequence = [23456, 34567, 23456]\n", "pbxwall.toml:2: invalid knock sequence [23456,34567,23456]: port 23456 appears twice"),
    ("[knock]\nsequence = [23456, 5060]\n", "pbxwall.toml:2: invalid knock port 5060: it is in udp 5060-5061 of service sip-udp"),
    ("[knock]\nsequence = [23456]\n", "pbxwall.toml:2: invalid knock sequence [23456]: use 2 to 8 distinct ports"),
    ("[knock]\nsequence = [2001, 2002, 2003, 2004, 2005, 2006, 2007, 2008, 2009]\n", "pbxwall.toml:2: invalid knock sequence"),
    ("\n[knock]\nsequence = [23456, 34567]\nstep_timeout = \"10 seconds\"\n", "pbxwall.toml:4: step_timeout: invalid duration \"10 seconds\": expected a number and a unit"),
    ("[knock]\nsequence = [23456, 34567]\ngrant_for = \"400d\"\n", "pbxwall.toml:3: grant_for: invalid duration \"400d\""),
    ("[knock]\nsequence = [23456, 34567]\nservices = [\"telnet\"]\n", "pbxwall.toml:3: [knock] services: unknown service \"telnet\""),
    ("[knock]\nsequence = [23456, 34567]\nprotocol = \"icmp\"\n", "pbxwall.toml:3: invalid knock protocol \"icmp\""),
];

fn bad_knock_settings_stop_every_apply_with_file_and_line() {
    let cfg = TempConfig::new();
    let mut failures = Vec::new();
    for (text, want) in FILE_CASES {
        cfg.write("pbxwall.toml", text);
        let before = common::snapshot(cfg.config_dir());
        // `knock --setup` replaces a sequence that collides with a service (the fix), so it
        // is refused only for what it does not replace.
        let setup_fixes = want.contains("of service sip-udp");
        let runs: &[&[&str]] = if setup_fixes {
            &[&["restart", "--dry-run"]]
        } else {
            &[
                &["restart", "--dry-run"],
                &["knock", "--setup", "--no-restart"],
            ]
        };
        for args in runs {
            let out = cfg.run(None, "pbxwall", *args);
            let err = stderr(&out);
            if out.status.code() != Some(1)
                || !err.contains(want)
                || err.trim_end().lines().count() != 1
                || !stdout(&out).is_empty()
            {
                failures.push(format!(
                    "{text:?} {args:?}: want exit 1 and {want:?}\n{}",
                    show(&out)
                ));
            }
            if common::snapshot(cfg.config_dir()) != before {
                failures.push(format!("{text:?} {args:?} changed the config dir"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn setup_writes_a_checked_sequence_and_keeps_the_file() {
    let cfg = TempConfig::new();
    let mine = "# my settings\ntrusted = []   # cloud\n\n[rtp]\nports = \"12000-13000\"\n";
    cfg.write("pbxwall.toml", mine);
    let out = cfg.run(
        None,
        "pbxwall",
        ["knock", "--setup", "--length", "4", "--no-restart"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = cfg.read("pbxwall.toml").unwrap();
    assert!(text.starts_with(mine), "{text}");
    // The sequence is a secret: others cannot read the file any more.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(cfg.config_dir().join("pbxwall.toml"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o007, 0, "mode {mode:o}");
    let settings =
        pbxwall::store::parse_settings(std::path::Path::new("pbxwall.toml"), &text).unwrap();
    let seq = settings.knock.sequence.clone();
    assert_eq!(seq.len(), 4, "{text}");
    let profiles = pbxwall::store::builtin_profiles();
    pbxwall::knock::check_sequence(&seq, &profiles, &settings.rtp).unwrap();
    let printed = stdout(&out);
    let list = pbxwall::knock::sequence_text(&seq);
    assert!(
        printed.contains(&format!(
            "pbxwall knock HOST --sequence {list} --protocol tcp"
        )),
        "{printed}"
    );
    let knockd: Vec<String> = seq.iter().map(|p| format!("{p}:tcp")).collect();
    assert!(
        printed.contains(&format!("knock HOST {}", knockd.join(" "))),
        "{printed}"
    );
    // A chosen sequence and protocol replace it; the rest stays.
    let out = cfg.run(
        None,
        "pbxwall",
        [
            "knock",
            "--setup",
            "--sequence",
            "40001,30002,50003",
            "--protocol",
            "udp",
            "--no-restart",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = cfg.read("pbxwall.toml").unwrap();
    assert!(text.starts_with(mine), "{text}");
    assert!(
        text.contains("sequence = [40001, 30002, 50003]\nprotocol = \"udp\""),
        "{text}"
    );
    let audit = std::fs::read_to_string(cfg.state_dir().join("audit.log")).unwrap_or_default();
    assert!(
        audit.contains("knock sequence udp 40001,30002,50003 written"),
        "{audit}"
    );
    // The ruleset still compiles with it.
    let out = cfg.run(None, "pbxwall", ["restart", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

// ---------------------------------------------------------------------------------------
// Knocks with real packets

const SEQ: [u16; 3] = [23456, 34567, 45678];
const SEQ_TEXT: &str = "23456,34567,45678";

#[track_caller]
fn ok(out: Output, what: &str) -> Output {
    assert_eq!(out.status.code(), Some(0), "{what}:\n{}", show(&out));
    out
}

/// A configuration with no trusted network and `[knock]` granting ssh and sip-udp, applied
/// in the pbx namespace; servers listen on tcp 22, 5060 and udp 5060.
fn knocking(topo: &Topology) -> (TempConfig, Servers) {
    let servers = Servers::start(topo, &[22, 5060], &[5060]);
    let cfg = TempConfig::new();
    cfg.write(
        "pbxwall.toml",
        "trusted = []\n[knock]\nsequence = [23456, 34567, 45678]\nstep_timeout = \"2s\"\ngrant_for = \"1h\"\nservices = [\"ssh\", \"sip-udp\"]\n",
    );
    ok(
        cfg.run(Some(topo.pbx_ns()), "pbxwall", ["restart"]),
        "restart",
    );
    (cfg, servers)
}

/// TCP SYNs from `src` (an address of the client namespace) to `ports` of the pbx, in
/// order: connection attempts given up after 100 ms, so no SYN is sent twice.
fn knock_from(topo: &Topology, src: &str, ports: &[u16]) {
    let src: IpAddr = src.parse().unwrap();
    topo.in_client(|| {
        for &p in ports {
            let _ = probe_here(
                Proto::Tcp,
                src,
                SocketAddr::new(pbx_addr_for(src), p),
                Duration::from_millis(100),
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    });
}

/// Probes: what a grant opens (tcp 22, udp 5060) open or not, tcp 5060 never.
fn granted(src: &str, open: bool) -> Vec<Probe> {
    vec![
        Probe::tcp(src, 22, open),
        Probe::udp(src, 5060, open),
        Probe::tcp(src, 5060, false),
    ]
}

fn wrong_slow_or_interrupted_knocks_open_nothing() {
    let topo = Topology::new();
    let (_cfg, _servers) = knocking(&topo);
    // In the wrong order.
    knock_from(&topo, "192.0.2.11", &[34567, 23456, 45678]);
    // Too slowly: more than step_timeout (2 s) between two knocks.
    knock_from(&topo, "198.51.100.11", &[23456, 34567]);
    std::thread::sleep(Duration::from_millis(2600));
    knock_from(&topo, "198.51.100.11", &[45678]);
    // Another port in between: one that is not in the sequence, or one out of its place.
    knock_from(&topo, "203.0.113.10", &[23456, 40000, 34567, 45678]);
    knock_from(&topo, "2001:db8::11", &[23456, 45678, 34567, 45678]);
    // Right, with the first two knocks sent twice (a retransmitted SYN changes nothing).
    knock_from(&topo, "192.0.2.10", &[23456, 23456, 34567, 34567, 45678]);
    let mut probes = Vec::new();
    for src in [
        "203.0.113.11",
        "192.0.2.11",
        "198.51.100.11",
        "203.0.113.10",
        "2001:db8::11",
    ] {
        probes.extend(granted(src, false));
    }
    probes.extend(granted("192.0.2.10", true));
    // The knock ports themselves are never open, even to the granted source.
    probes.extend(SEQ.iter().map(|p| Probe::tcp("192.0.2.10", *p, false)));
    assert_probes(&topo, &probes);
}

/// `pbxwall grants --json`, as addresses.
fn grants(cfg: &TempConfig, topo: &Topology) -> Vec<String> {
    let out = ok(
        cfg.run(Some(topo.pbx_ns()), "pbxwall", ["grants", "--json"]),
        "grants",
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|g| g["address"].as_str().unwrap().to_owned())
        .collect()
}

fn clients_knock_and_grants_survive_restart_ipchecker_and_reboot() {
    let topo = Topology::new();
    topo.add_pbx_addr("198.51.100.1");
    topo.add_pbx_addr("2001:db8:1::1");
    let (cfg, _servers) = knocking(&topo);
    let pbxwall = common::bin("pbxwall");
    let client = |dst: &str| {
        let cmd = cfg.command(
            Some(topo.client_ns()),
            &pbxwall,
            ["knock", dst, "--sequence", SEQ_TEXT],
        );
        ok(
            common::run_with_timeout(cmd, None, common::RUN_TIMEOUT).unwrap(),
            "pbxwall knock",
        )
    };
    // pbxwall's client, over IPv4 and IPv6 (the source is the client's address on the
    // pbx address's subnet).
    let out = client("192.0.2.1");
    assert!(
        stdout(&out).contains("knocked on 192.0.2.1: tcp 23456,34567,45678"),
        "{}",
        show(&out)
    );
    client("2001:db8:1::1");
    // knockd's client, as its manual shows it.
    ok(
        ns_cmd(
            topo.client_ns(),
            "knock",
            &["198.51.100.1", "23456:tcp", "34567:tcp", "45678:tcp"],
        ),
        "knockd's knock",
    );
    let knocked = ["192.0.2.10", "198.51.100.10", "2001:db8:1::10"];
    let expect = |open: bool| {
        let to = |p: Probe, dst: &str| p.to(dst.parse().unwrap());
        let mut probes = granted("192.0.2.10", open);
        // (UDP to the added address is left out: the echo server's reply leaves from the
        // interface's first address, which the client's connected socket ignores.)
        probes.push(to(Probe::tcp("198.51.100.10", 22, open), "198.51.100.1"));
        probes.push(to(Probe::tcp("198.51.100.10", 5060, false), "198.51.100.1"));
        probes.extend(
            granted("2001:db8:1::10", open)
                .into_iter()
                .map(|p| to(p, "2001:db8:1::1")),
        );
        probes.extend(granted("203.0.113.10", false));
        probes
    };
    assert_probes(&topo, &expect(true));
    assert_eq!(grants(&cfg, &topo), knocked);

    let ns = Some(topo.pbx_ns());
    // The kernel made these grants; no pbxwall command has recorded them yet. What
    // pbxwall.service runs at shutdown records them, and only that.
    let recorded = cfg.state_dir().join("dynamic-sets.json");
    let before = std::fs::read_to_string(&recorded).unwrap_or_default();
    assert!(!before.contains("192.0.2.10"), "{before}");
    let out = ok(
        cfg.run(ns, "pbxwall", ["ipchecker", "--record-only", "--json"]),
        "ipchecker --record-only",
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["recorded_elements"], knocked.len(), "{}", show(&out));
    let after = std::fs::read_to_string(&recorded).unwrap();
    for addr in knocked {
        assert!(after.contains(&format!("\"{addr}\"")), "{addr} in {after}");
    }
    ok(cfg.run(ns, "pbxwall", ["restart"]), "restart");
    assert_probes(&topo, &expect(true));
    ok(cfg.run(ns, "pbxwall", ["ipchecker"]), "ipchecker");
    assert_probes(&topo, &expect(true));
    // A reboot: the table is gone; the boot unit loads last-applied.nft, then
    // pbxwall-restart.service runs restart, which restores the grants with the time left.
    ok(
        ns_cmd(
            topo.pbx_ns(),
            "nft",
            &["delete", "table", "inet", "pbxwall"],
        ),
        "delete table",
    );
    let boot = cfg.state_dir().join("last-applied.nft");
    ok(
        ns_cmd(topo.pbx_ns(), "nft", &["-f", boot.to_str().unwrap()]),
        "nft -f last-applied.nft",
    );
    ok(
        cfg.run(ns, "restart", std::iter::empty::<&str>()),
        "restart at boot",
    );
    assert_probes(&topo, &expect(true));
    assert_eq!(grants(&cfg, &topo), knocked);
    // nftables.service restarting (`flush ruleset`), then pbxwall.service loading
    // last-applied.nft again: the next ipchecker run puts the recorded grants back.
    ok(
        ns_cmd(topo.pbx_ns(), "nft", &["flush", "ruleset"]),
        "flush ruleset",
    );
    ok(
        ns_cmd(topo.pbx_ns(), "nft", &["-f", boot.to_str().unwrap()]),
        "nft -f last-applied.nft",
    );
    assert!(grants(&cfg, &topo).is_empty());
    ok(
        cfg.run(ns, "ipchecker", std::iter::empty::<&str>()),
        "ipchecker",
    );
    assert_probes(&topo, &expect(true));
    assert_eq!(grants(&cfg, &topo), knocked);
    // Grants gone from a table that is otherwise as applied: ipchecker adds them back.
    ok(
        ns_cmd(
            topo.pbx_ns(),
            "nft",
            &["flush", "set", "inet", "pbxwall", "knock_grant_v4"],
        ),
        "flush set",
    );
    let out = ok(
        cfg.run(ns, "ipchecker", std::iter::empty::<&str>()),
        "ipchecker",
    );
    assert!(
        stdout(&out).contains("restored 2 recorded elements of set knock_grant_v4"),
        "{}",
        show(&out)
    );
    assert_probes(&topo, &expect(true));
    assert_eq!(grants(&cfg, &topo), knocked);

    // Revoke: closed, and the running flow (a UDP exchange on 5060) ends.
    let flow = common::udp_flow(&topo, "192.0.2.10", "192.0.2.1:5060");
    let echoes = common::udp_flow_echoes;
    assert!(echoes(&flow), "the granted source's UDP flow works");
    let out = ok(cfg.run(ns, "pbxwall", ["revoke", "192.0.2.10"]), "revoke");
    assert!(
        stdout(&out).contains("revoked the knock grant of 192.0.2.10"),
        "{}",
        show(&out)
    );
    assert!(
        stdout(&out).contains("192.0.2.10 udp/5060"),
        "the flow is ended: {}",
        show(&out)
    );
    assert!(
        !echoes(&flow),
        "the revoked source's UDP flow still answers"
    );
    assert_probes(&topo, &granted("192.0.2.10", false));
    assert_eq!(grants(&cfg, &topo), ["198.51.100.10", "2001:db8:1::10"]);
    let out = cfg.run(ns, "pbxwall", ["revoke", "192.0.2.10"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("192.0.2.10 has no knock grant"),
        "{}",
        show(&out)
    );
    let out = cfg.run(ns, "pbxwall", ["revoke", "192.0.2.300"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

fn an_expired_grant_closes_and_its_flows_end_at_the_next_ipchecker() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[22], &[5060]);
    let cfg = TempConfig::new();
    cfg.write(
        "pbxwall.toml",
        "trusted = []\n[knock]\nsequence = [23456, 34567, 45678]\ngrant_for = \"4s\"\nservices = [\"sip-udp\"]\n",
    );
    let ns = Some(topo.pbx_ns());
    ok(cfg.run(ns, "pbxwall", ["restart"]), "restart");
    // The ruleset with its knock sets and rules is what status expects.
    let out = ok(cfg.run(ns, "pbxwall", ["status", "--json"]), "status");
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["in_sync"], true, "{}", show(&out));
    knock_from(&topo, "192.0.2.10", &SEQ);
    let granted_at = std::time::Instant::now();
    let flow = common::udp_flow(&topo, "192.0.2.10", "192.0.2.1:5060");
    let echoes = common::udp_flow_echoes;
    assert!(echoes(&flow), "the granted source's flow works");
    std::thread::sleep(
        (granted_at + Duration::from_secs(5)).saturating_duration_since(std::time::Instant::now()),
    );
    assert_probes(&topo, &[Probe::udp("192.0.2.10", 5060, false)]);
    assert!(grants(&cfg, &topo).is_empty());
    let out = ok(cfg.run(ns, "pbxwall", ["ipchecker"]), "ipchecker");
    assert!(
        stdout(&out).contains("192.0.2.10 udp/5060"),
        "{}",
        show(&out)
    );
    assert!(!echoes(&flow), "the expired grant's flow still answers");
}

fn grants_and_temporary_accounts_pass_the_sip_guard() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[22], &[5060]);
    let cfg = TempConfig::new();
    // With register_domains, strangers' SIP is dropped unless a REGISTER admitted them.
    cfg.write(
        "pbxwall.toml",
        "trusted = []\n[sip]\nregister_domains = [\"secret.example\"]\n[knock]\nsequence = [23456, 34567, 45678]\nservices = [\"sip-udp\"]\n",
    );
    let ns = Some(topo.pbx_ns());
    ok(cfg.run(ns, "pbxwall", ["restart"]), "restart");
    ok(
        cfg.run(
            ns,
            "add-ip",
            [
                "visitor",
                "203.0.113.10",
                "--allow",
                "sip-udp",
                "--expires",
                "1h",
            ],
        ),
        "add-ip --expires",
    );
    knock_from(&topo, "192.0.2.10", &SEQ);
    assert_probes(
        &topo,
        &[
            Probe::udp("192.0.2.10", 5060, true),
            Probe::udp("203.0.113.10", 5060, true),
            Probe::udp("192.0.2.11", 5060, false),
            Probe::udp("203.0.113.11", 5060, false),
        ],
    );
}

fn udp_knocks_from_both_clients() {
    let topo = Topology::new();
    topo.add_pbx_addr("198.51.100.1");
    let _servers = Servers::start(&topo, &[22], &[5060]);
    let cfg = TempConfig::new();
    cfg.write(
        "pbxwall.toml",
        "trusted = []\n[knock]\nsequence = [23456, 34567, 45678]\nprotocol = \"udp\"\nservices = [\"ssh\"]\n",
    );
    let ns = Some(topo.pbx_ns());
    ok(cfg.run(ns, "pbxwall", ["restart"]), "restart");
    let cmd = cfg.command(
        Some(topo.client_ns()),
        &common::bin("pbxwall"),
        [
            "knock",
            "192.0.2.1",
            "--sequence",
            SEQ_TEXT,
            "--protocol",
            "udp",
        ],
    );
    ok(
        common::run_with_timeout(cmd, None, common::RUN_TIMEOUT).unwrap(),
        "pbxwall knock --protocol udp",
    );
    ok(
        ns_cmd(
            topo.client_ns(),
            "knock",
            &["-u", "198.51.100.1", "23456", "34567", "45678"],
        ),
        "knockd's knock -u",
    );
    // TCP SYNs do not knock a UDP sequence.
    knock_from(&topo, "203.0.113.10", &SEQ);
    assert_probes(
        &topo,
        &[
            Probe::tcp("192.0.2.10", 22, true),
            Probe::tcp("198.51.100.10", 22, true).to("198.51.100.1".parse().unwrap()),
            Probe::tcp("203.0.113.10", 22, false),
        ],
    );
    assert_eq!(grants(&cfg, &topo), ["192.0.2.10", "198.51.100.10"]);
    // status says knocking is on and how many are granted, not the ports.
    let out = ok(cfg.run(ns, "pbxwall", ["status", "--json"]), "status");
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["knock"]["enabled"], true, "{}", show(&out));
    assert_eq!(v["knock"]["grants"], 2, "{}", show(&out));
    assert_eq!(v["knock"]["protocol"], "udp");
    let out = ok(cfg.run(ns, "pbxwall", ["status"]), "status");
    assert!(
        stdout(&out).contains(
            "port knocking: udp 3 steps, each within 10s; a grant opens ssh for 1h; 2 granted now"
        ),
        "{}",
        show(&out)
    );
    assert!(!stdout(&out).contains("23456"), "{}", show(&out));
}

fn an_ssh_session_through_a_grant_is_not_a_lockout() {
    let topo = Topology::new();
    let (cfg, _servers) = knocking(&topo);
    knock_from(&topo, "192.0.2.10", &SEQ);
    let ns = Some(topo.pbx_ns());
    // restart run from an SSH session of the granted source: the grant keeps it reachable,
    // so the lockout guard lets the apply through.
    let ssh = [("SSH_CONNECTION", "192.0.2.10 50022 192.0.2.1 22")];
    ok(
        cfg.run_env(ns, "restart", std::iter::empty::<&str>(), &ssh),
        "restart over the granted SSH session",
    );
    // From a source without a grant it is refused.
    let stranger = [("SSH_CONNECTION", "192.0.2.11 50022 192.0.2.1 22")];
    let out = cfg.run_env(ns, "restart", std::iter::empty::<&str>(), &stranger);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains("refusing to apply"), "{}", show(&out));
}

fn banned_sources_cannot_knock() {
    let topo = Topology::new();
    let (cfg, _servers) = knocking(&topo);
    // A ban as `pbxwall ban` adds it: an element of ban_v4 with a timeout.
    ok(
        ns_cmd(
            topo.pbx_ns(),
            "nft",
            &[
                "add",
                "element",
                "inet",
                "pbxwall",
                "ban_v4",
                "{ 192.0.2.10 timeout 1h }",
            ],
        ),
        "ban",
    );
    knock_from(&topo, "192.0.2.10", &SEQ);
    knock_from(&topo, "192.0.2.11", &SEQ);
    let mut probes = granted("192.0.2.10", false);
    probes.extend(granted("192.0.2.11", true));
    assert_probes(&topo, &probes);
    assert_eq!(grants(&cfg, &topo), ["192.0.2.11"]);
}

common::test_main! {
    Needs::NOTHING => [
        bad_command_lines_are_refused_with_one_line_and_change_nothing,
        bad_knock_settings_stop_every_apply_with_file_and_line,
        setup_writes_a_checked_sequence_and_keeps_the_file,
    ],
    Needs::ROOT => [
        wrong_slow_or_interrupted_knocks_open_nothing,
        banned_sources_cannot_knock,
        an_expired_grant_closes_and_its_flows_end_at_the_next_ipchecker,
        grants_and_temporary_accounts_pass_the_sip_guard,
        an_ssh_session_through_a_grant_is_not_a_lockout,
    ],
    Needs::root_and(&["knock"]) => [
        clients_knock_and_grants_survive_restart_ipchecker_and_reboot,
        udp_knocks_from_both_clients,
    ],
}
