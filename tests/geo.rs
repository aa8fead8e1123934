//! IP Country with real packets: a test country database (DB-IP lite layout) assigns the
//! documentation ranges to countries; with `[geo] allow = ["DE"]` the RTP ports (open to
//! strangers with `[rtp] from = "any"`) answer only sources of DE, while whitelisted
//! accounts and trusted networks keep their access whatever their country. A corrupt
//! database changes nothing; `geo update` writes only the changed elements of the small
//! sets beside the base (`geo_added_*`, `geo_removed_*`), and nothing when nothing changed.

mod common;

use std::process::Output;

use common::{
    Needs, Probe, Servers, TempConfig, Topology, assert_exit, assert_probes, show, stdout,
};
use pbxwall::nft::render::normalize;

const RTP: u16 = 12000;
const SIP: u16 = 5060;

/// 192.0.2.0/24 and 2001:db8::/48 are DE; 198.51.100.0/24 and 2001:db8:1::/48 US;
/// 203.0.113.0/24 FR.
const DB: &str = "\
0.0.0.0,192.0.1.255,ZZ
192.0.2.0,192.0.2.255,DE
198.51.100.0,198.51.100.255,US
203.0.113.0,203.0.113.255,FR
2001:db8::,2001:db8:0:ffff:ffff:ffff:ffff:ffff,DE
2001:db8:1::,2001:db8:1:ffff:ffff:ffff:ffff:ffff,US
";

fn settings() -> String {
    "trusted = [\"203.0.113.11/32\"]\n[geo]\ndatabase = \"dbip-country-lite.csv\"\nallow = [\"DE\"]\n"
        .to_string()
}

#[track_caller]
fn ok(out: Output, what: &str) -> Output {
    assert_eq!(out.status.code(), Some(0), "{what}:\n{}", show(&out));
    out
}

fn nft_list(topo: &Topology) -> String {
    let out = common::ns_cmd(topo.pbx_ns(), "nft", &["list", "table", "inet", "pbxwall"]);
    assert!(out.status.success(), "nft list: {}", show(&out));
    normalize(&stdout(&out))
}

fn setup(topo: &Topology) -> TempConfig {
    let cfg = TempConfig::new();
    cfg.write("dbip-country-lite.csv", DB);
    cfg.write("pbxwall.toml", &settings());
    // A US source whitelisted for SIP: the gate must not touch it (nor its media).
    ok(
        cfg.run(
            Some(topo.pbx_ns()),
            "add-ip",
            ["joe", "198.51.100.10", "--allow", "sip-udp"],
        ),
        "add-ip joe",
    );
    cfg
}

/// Who reaches RTP and SIP with `allow = ["DE"]` after [`setup`].
fn gated_probes() -> Vec<Probe> {
    vec![
        Probe::udp("192.0.2.10", RTP, true),      // DE
        Probe::udp("2001:db8::10", RTP, true),    // DE
        Probe::udp("198.51.100.11", RTP, false),  // US
        Probe::udp("2001:db8:1::10", RTP, false), // US
        Probe::udp("203.0.113.10", RTP, false),   // FR
        Probe::udp("192.0.2.10", SIP, false),     // DE, but SIP is not an open path
        Probe::udp("198.51.100.10", SIP, true),   // US, whitelisted
        Probe::udp("198.51.100.10", RTP, true),   // ... with its media
        Probe::udp("203.0.113.11", RTP, true),    // FR, trusted
        Probe::udp("203.0.113.11", SIP, true),
    ]
}

fn rtp_opens_only_for_allowed_countries_and_whitelisted_sources() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[], &[SIP, RTP]);
    let cfg = setup(&topo);
    assert_probes(&topo, &gated_probes());
    let listed = nft_list(&topo);
    assert!(
        listed
            .contains("udp dport 10000-20000 ip saddr @geo_v4 ip saddr != @geo_removed_v4 accept")
            && listed.contains("udp dport 10000-20000 ip saddr @geo_added_v4 accept"),
        "{listed}"
    );

    // The boot file holds the gate empty (it admits less, never more, until the restart
    // unit loads the gate), and loads with nft -f.
    let boot = std::fs::read_to_string(cfg.state_dir().join("last-applied.nft")).unwrap();
    assert!(
        boot.contains("set geo_v4") && !boot.contains("192.0.2.0/24"),
        "{boot}"
    );
    let scratch = common::Netns::create(&format!("{}-b", topo.names().pbx_ns));
    let out = common::run_cmd(
        common::ns_command(scratch.name(), "nft", &["-f", "-"]),
        Some(boot.as_bytes()),
    );
    assert!(
        out.status.success(),
        "nft -f of the boot file: {}",
        show(&out)
    );
    drop(scratch);

    // lookup: country, gate and open paths.
    let out = ok(
        cfg.run(
            Some(topo.pbx_ns()),
            "pbxwall",
            ["geo", "lookup", "198.51.100.11"],
        ),
        "geo lookup",
    );
    let text = stdout(&out);
    assert!(text.contains("country US"), "{text}");
    assert!(text.contains("keeps it out (DE)"), "{text}");
    assert!(
        text.contains("open path rtp (udp 10000-20000): refused"),
        "{text}"
    );
    let out = ok(
        cfg.run(
            Some(topo.pbx_ns()),
            "pbxwall",
            ["geo", "lookup", "2001:db8::7", "--json"],
        ),
        "geo lookup --json",
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["country"], "DE");
    assert_eq!(v["gate"], "allowed");
    assert_eq!(v["open_paths"][0]["open"], true);

    // status: the gate and its database.
    let out = cfg.run(Some(topo.pbx_ns()), "status", ["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(v["in_sync"], true, "{}", show(&out));
    assert_eq!(v["geo"]["countries"], "DE");
    assert_eq!(v["geo"]["ranges_v4"], 1);
    assert_eq!(v["geo"]["live"], true);
    assert_eq!(v["geo"]["recorded_ranges"], 2);
    assert_eq!(v["geo"]["format"], "DB-IP lite CSV");
}

fn a_corrupt_database_changes_nothing() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[], &[SIP, RTP]);

    // Never applied before, corrupt: refused, no table.
    let cfg = TempConfig::new();
    cfg.write(
        "dbip-country-lite.csv",
        &format!("{DB}198.51.101.0,198.51.101.300,US\n"),
    );
    cfg.write("pbxwall.toml", &settings());
    let out = cfg.run(Some(topo.pbx_ns()), "restart", [] as [&str; 0]);
    assert_exit(&out, 1, "restart with a corrupt database and no live gate");
    assert!(
        common::stderr(&out)
            .contains("dbip-country-lite.csv:7: invalid address \"198.51.101.300\""),
        "{}",
        show(&out)
    );
    let listed = common::ns_cmd(topo.pbx_ns(), "nft", &["list", "table", "inet", "pbxwall"]);
    assert!(!listed.status.success(), "no table was made");

    // Applied once, then the file breaks: restart keeps the live gate (exit 3), so do
    // geo update and ipchecker.
    let cfg = setup(&topo);
    let before = nft_list(&topo);
    cfg.write(
        "dbip-country-lite.csv",
        &DB.replace("198.51.100.255,US", "198.51.100.255,USA"),
    );
    for (bin, args) in [
        ("restart", vec![]),
        ("pbxwall", vec!["geo", "update"]),
        ("ipchecker", vec![]),
    ] {
        let out = cfg.run(Some(topo.pbx_ns()), bin, &args);
        assert_exit(&out, 3, &format!("{bin} {args:?} with a corrupt database"));
        let err = common::stderr(&out);
        assert!(
            err.contains("dbip-country-lite.csv:3: invalid country code \"USA\"")
                && err.contains("keeps the 2 ranges live now"),
            "{}",
            show(&out)
        );
        assert_eq!(nft_list(&topo), before, "{bin}: the ruleset changed");
    }
    assert_probes(&topo, &gated_probes());

    // A database without any range of the allowed countries: the same.
    cfg.write("dbip-country-lite.csv", &DB.replace(",DE", ",AT"));
    let out = cfg.run(Some(topo.pbx_ns()), "pbxwall", ["geo", "update"]);
    assert_exit(&out, 3, "geo update with no range for DE");
    assert!(
        common::stderr(&out).contains("no address range for DE"),
        "{}",
        show(&out)
    );
    assert_eq!(nft_list(&topo), before);
}

fn geo_update_writes_only_the_delta() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[], &[SIP, RTP]);
    let cfg = setup(&topo);
    // Unchanged: nothing written.
    let out = ok(
        cfg.run(Some(topo.pbx_ns()), "pbxwall", ["geo", "update", "--json"]),
        "geo update (unchanged)",
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["apply"], "none", "{}", show(&out));
    assert_eq!(v["netlink_writes"], 0);

    // FR becomes DE: 203.0.113.0/24 joins geo_v4 (merged into no neighbour: one element).
    cfg.write("dbip-country-lite.csv", &DB.replace(",FR", ",DE"));
    let out = cfg.run(Some(topo.pbx_ns()), "status", ["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(v["geo"]["update_pending"], true, "{}", show(&out));
    let before_handle = handle_of_rtp_rule(&topo);
    let out = ok(
        cfg.run(Some(topo.pbx_ns()), "pbxwall", ["geo", "update", "--json"]),
        "geo update",
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["apply"], "elements", "{}", show(&out));
    assert_eq!(
        (v["added"].as_u64(), v["removed"].as_u64()),
        (Some(1), Some(0))
    );
    // The rules were not touched (same handle), only a small set: the base set geo_v4
    // keeps what restart loaded, the new range is in geo_added_v4.
    assert_eq!(handle_of_rtp_rule(&topo), before_handle);
    assert!(set_list(&topo, "geo_added_v4").contains("203.0.113.0/24"));
    assert!(!set_list(&topo, "geo_v4").contains("203.0.113.0/24"));
    assert_probes(
        &topo,
        &[
            Probe::udp("203.0.113.10", RTP, true),
            Probe::udp("198.51.100.11", RTP, false),
            Probe::udp("192.0.2.10", RTP, true),
        ],
    );
    // The kernel lists what restart --dry-run prints.
    let dry = ok(cfg.run(None, "restart", ["--dry-run"]), "dry-run");
    assert_eq!(normalize(&stdout(&dry)), nft_list(&topo));
    let out = ok(
        cfg.run(Some(topo.pbx_ns()), "pbxwall", ["geo", "update"]),
        "geo update again",
    );
    assert!(stdout(&out).contains("nothing written"), "{}", show(&out));
    let out = cfg.run(Some(topo.pbx_ns()), "status", ["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(v["geo"]["update_pending"], false, "{}", show(&out));
    assert_eq!(v["geo"]["recorded_ranges"], 3);
    assert_eq!(v["geo"]["delta_ranges"], 1);
    assert_eq!(v["in_sync"], true, "{}", show(&out));

    // 192.0.2.0/24 leaves DE: it goes into geo_removed_v4 and its sources are refused,
    // though the base set still holds it.
    let moved = DB
        .replace(",FR", ",DE")
        .replace("192.0.2.255,DE", "192.0.2.255,US");
    cfg.write("dbip-country-lite.csv", &moved);
    let out = ok(
        cfg.run(Some(topo.pbx_ns()), "pbxwall", ["geo", "update", "--json"]),
        "geo update (a range leaves)",
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["apply"], "elements", "{}", show(&out));
    assert_eq!(
        (v["added"].as_u64(), v["removed"].as_u64()),
        (Some(0), Some(1))
    );
    assert!(set_list(&topo, "geo_removed_v4").contains("192.0.2.0/24"));
    assert!(set_list(&topo, "geo_v4").contains("192.0.2.0/24"));
    let after_removal = [
        Probe::udp("192.0.2.10", RTP, false),
        Probe::udp("203.0.113.10", RTP, true),
        Probe::udp("2001:db8::10", RTP, true),
        Probe::udp("198.51.100.11", RTP, false),
    ];
    assert_probes(&topo, &after_removal);
    // A restart loads the sets as the record has them: the same gate, the same packets.
    ok(cfg.run(Some(topo.pbx_ns()), "restart", [""; 0]), "restart");
    assert_probes(&topo, &after_removal);
    let dry = ok(cfg.run(None, "restart", ["--dry-run"]), "dry-run");
    assert_eq!(normalize(&stdout(&dry)), nft_list(&topo));
    let out = ok(
        cfg.run(Some(topo.pbx_ns()), "pbxwall", ["geo", "update", "--json"]),
        "geo update after restart",
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["apply"], "none", "{}", show(&out));
    let out = ok(
        cfg.run(
            Some(topo.pbx_ns()),
            "pbxwall",
            ["geo", "lookup", "192.0.2.10", "--json"],
        ),
        "geo lookup of a removed range",
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["country"].as_str(), v["gate"].as_str()),
        (Some("US"), Some("refused"))
    );

    // Back to FR: a second delta, journaled after the first (no full record written).
    let state = cfg.state_dir().to_owned();
    let record_len = || std::fs::metadata(state.join("geo-applied.bin")).map(|m| m.len());
    let before = record_len().expect("geo-applied.bin");
    cfg.write("dbip-country-lite.csv", DB);
    let out = ok(
        cfg.run(Some(topo.pbx_ns()), "pbxwall", ["geo", "update", "--json"]),
        "geo update back",
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["apply"], "elements", "{}", show(&out));
    assert_eq!(record_len().ok(), Some(before));
    assert!(state.join("geo-applied.journal").exists());
    let dry = ok(cfg.run(None, "restart", ["--dry-run"]), "dry-run");
    assert_eq!(normalize(&stdout(&dry)), nft_list(&topo));
    // Back at the base: the small sets are empty again.
    assert!(!set_list(&topo, "geo_added_v4").contains("/24"));
    assert!(!set_list(&topo, "geo_removed_v4").contains("/24"));
    assert_probes(&topo, &gated_probes());

    // Stopped between the kernel's commit and the journal's delta (its pending entry is
    // last): the record is stale, and the next update applies in full, never a delta
    // computed against ranges the kernel may not hold.
    let mut pending = 1u32.to_le_bytes().to_vec();
    pending.push(1);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    h ^= 1;
    h = h.wrapping_mul(0x0000_0100_0000_01b3);
    pending.extend_from_slice(&h.to_le_bytes());
    let mut j = std::fs::read(state.join("geo-applied.journal")).unwrap();
    j.extend_from_slice(&pending);
    std::fs::write(state.join("geo-applied.journal"), &j).unwrap();
    let out = cfg.run(Some(topo.pbx_ns()), "status", ["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(
        v["geo"]["recorded_ranges"],
        serde_json::Value::Null,
        "{}",
        show(&out)
    );
    cfg.write("dbip-country-lite.csv", &DB.replace(",FR", ",DE"));
    let out = ok(
        cfg.run(Some(topo.pbx_ns()), "pbxwall", ["geo", "update", "--json"]),
        "geo update after a stop",
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["apply"], "full", "{}", show(&out));
    assert!(!state.join("geo-applied.journal").exists());
    let dry = ok(cfg.run(None, "restart", ["--dry-run"]), "dry-run");
    assert_eq!(normalize(&stdout(&dry)), nft_list(&topo));
    let out = ok(
        cfg.run(Some(topo.pbx_ns()), "pbxwall", ["geo", "update", "--json"]),
        "geo update once more",
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["apply"], "none", "{}", show(&out));
}

fn an_mmdb_database_gates_the_same_way() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[], &[SIP, RTP]);
    let cfg = TempConfig::new();
    let mmdb = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/test-country.mmdb"
    ))
    .expect("tests/data/test-country.mmdb");
    std::fs::write(cfg.config_dir().join("GeoLite2-Country.mmdb"), mmdb).unwrap();
    cfg.write(
        "pbxwall.toml",
        "[geo]\ndatabase = \"GeoLite2-Country.mmdb\"\nallow = [\"DE\"]\n",
    );
    ok(
        cfg.run(Some(topo.pbx_ns()), "restart", [] as [&str; 0]),
        "restart",
    );
    assert_probes(
        &topo,
        &[
            Probe::udp("192.0.2.10", RTP, true),      // DE
            Probe::udp("2001:db8::10", RTP, true),    // DE
            Probe::udp("198.51.100.11", RTP, false),  // US
            Probe::udp("203.0.113.10", RTP, false),   // FR (registered in DE)
            Probe::udp("2001:db8:1::10", RTP, false), // US
        ],
    );
    let out = ok(
        cfg.run(
            Some(topo.pbx_ns()),
            "pbxwall",
            ["geo", "lookup", "203.0.113.10"],
        ),
        "geo lookup",
    );
    assert!(
        stdout(&out).contains("country FR (database range 203.0.113.0/24)"),
        "{}",
        show(&out)
    );
}

fn lookup_refuses_bad_input_without_the_kernel() {
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", "");
    let out = cfg.run(None, "pbxwall", ["geo", "lookup", "192.0.2.300"]);
    assert_exit(&out, 2, "geo lookup of a bad address");
    assert!(
        common::stderr(&out).contains("invalid address \"192.0.2.300\""),
        "{}",
        show(&out)
    );
    let out = cfg.run(None, "pbxwall", ["geo", "lookup", "192.0.2.7"]);
    assert_exit(&out, 1, "geo lookup without a database");
    assert!(
        common::stderr(&out).contains("set [geo] database"),
        "{}",
        show(&out)
    );
    let out = cfg.run(None, "pbxwall", ["geo"]);
    assert_exit(&out, 2, "geo without a subcommand");
    // A bad code in the settings: file and line, exit 1.
    cfg.write("dbip-country-lite.csv", DB);
    cfg.write(
        "pbxwall.toml",
        "[geo]\ndatabase = \"dbip-country-lite.csv\"\nallow = [\"DE\", \"EU\"]\n",
    );
    let out = cfg.run(None, "restart", ["--dry-run"]);
    assert_exit(&out, 1, "an invalid country code");
    assert!(
        common::stderr(&out).contains("pbxwall.toml:3: invalid country code \"EU\""),
        "{}",
        show(&out)
    );
}

/// Updates whose journal outgrows its threshold: the journal is written again as one delta
/// from the base (no full load), and the kernel holds exactly what the record says, through
/// a restart too.
fn a_large_journal_is_compacted_and_the_gate_stays_exact() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[], &[SIP, RTP]);
    let cfg = TempConfig::new();
    // The 256 addresses of 192.0.2.0/24 and 3,000 /64s of 2001:db8:1::/48, every other
    // one DE: 1,628 ranges that never merge.
    let db = |flip: bool| -> String {
        let country = |i: u32| {
            if i.is_multiple_of(2) != flip {
                "DE"
            } else {
                "FR"
            }
        };
        let mut text = String::from("ip_start,ip_end,country\n");
        for i in 0..256u32 {
            text.push_str(&format!("192.0.2.{i},192.0.2.{i},{}\n", country(i)));
        }
        for i in 0..3000u32 {
            text.push_str(&format!(
                "2001:db8:1:{i:x}::,2001:db8:1:{i:x}:ffff:ffff:ffff:ffff,{}\n",
                country(i)
            ));
        }
        text
    };
    cfg.write("dbip-country-lite.csv", &db(false));
    cfg.write("pbxwall.toml", &settings());
    ok(cfg.run(Some(topo.pbx_ns()), "restart", [""; 0]), "restart");
    let state = cfg.state_dir().to_owned();
    let journal_len = || std::fs::metadata(state.join("geo-applied.journal")).map(|m| m.len());
    // Every range changes: 1,628 removed and 1,628 added (98 KB of journal: over the
    // threshold), then back, then again.
    for (round, flip) in [true, false, true].into_iter().enumerate() {
        cfg.write("dbip-country-lite.csv", &db(flip));
        let out = ok(
            cfg.run(Some(topo.pbx_ns()), "pbxwall", ["geo", "update", "--json"]),
            "geo update",
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["apply"], "elements", "round {round}: {}", show(&out));
        let dry = ok(cfg.run(None, "restart", ["--dry-run"]), "dry-run");
        assert_eq!(normalize(&stdout(&dry)), nft_list(&topo), "round {round}");
        assert_probes(
            &topo,
            &[
                Probe::udp("192.0.2.10", RTP, !flip),
                Probe::udp("192.0.2.11", RTP, flip),
                Probe::udp("2001:db8:1::10", RTP, !flip),
                Probe::udp("2001:db8::10", RTP, false),
            ],
        );
    }
    // Compacted: one delta from the base (the record's base was never written again), no
    // longer than the sum of the changes from it.
    let after = journal_len().expect("geo-applied.journal");
    assert!(after < 2 * 98_000, "journal of {after} bytes");
    let out = cfg.run(Some(topo.pbx_ns()), "status", ["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(v["in_sync"], true, "{}", show(&out));
    assert_eq!(v["geo"]["delta_ranges"], 3256, "{}", show(&out));
    ok(cfg.run(Some(topo.pbx_ns()), "restart", [""; 0]), "restart");
    let dry = ok(cfg.run(None, "restart", ["--dry-run"]), "dry-run");
    assert_eq!(normalize(&stdout(&dry)), nft_list(&topo));
    assert_probes(
        &topo,
        &[
            Probe::udp("192.0.2.10", RTP, false),
            Probe::udp("192.0.2.11", RTP, true),
            Probe::udp("2001:db8:1::10", RTP, false),
        ],
    );
}

/// `nft list set inet pbxwall NAME` in the PBX's namespace.
fn set_list(topo: &Topology, name: &str) -> String {
    let out = common::ns_cmd(
        topo.pbx_ns(),
        "nft",
        &["list", "set", "inet", "pbxwall", name],
    );
    assert!(out.status.success(), "nft list set {name}: {}", show(&out));
    stdout(&out)
}

fn handle_of_rtp_rule(topo: &Topology) -> String {
    common::rule_handle(topo.pbx_ns(), "ip saddr != @geo_removed_v4 accept")
}

common::test_main! {
    Needs::NOTHING => [lookup_refuses_bad_input_without_the_kernel],
    Needs::ROOT => [
        rtp_opens_only_for_allowed_countries_and_whitelisted_sources,
        a_corrupt_database_changes_nothing,
        geo_update_writes_only_the_delta,
        a_large_journal_is_compacted_and_the_gate_stays_exact,
        an_mmdb_database_gates_the_same_way,
    ],
}
