//! Root tests of the dynamic sets (`flags dynamic, timeout`): element timeouts expire in
//! the kernel, rules add to sets by themselves (dynset, meters, raw payload matches), a
//! full `restart` keeps the elements, and a table created from nothing (deleted table,
//! simulated reboot: the boot unit's `nft -f last-applied.nft`, then `restart`) gets them
//! back from the state folder with the time they had left.
//!
//! Every test makes its own namespaces and removes them at the end, failures included.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use pbxwall::addrset::Family;
use pbxwall::nft::netlink;
use pbxwall::ruleset::{
    BaseChain, Chain, Dynamic, INPUT_CHAIN, L4Proto, Match, PortRange, RateLimit, Rule, Ruleset,
    Set, SetOp, SetUpdate, TimedElement, Verdict,
};

use common::{Needs, Netns, TempConfig, Topology, show};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn nft_list(ns: &str, args: &[&str]) -> String {
    let out = common::ns_cmd(ns, "nft", args);
    assert!(out.status.success(), "nft {args:?}: {}", show(&out));
    common::stdout(&out)
}

/// A table with a dynamic set `seen_v4` (default timeout 1 m, size 1000), a meter set and
/// a rule that adds every UDP packet's source to `seen_v4`, one that meters and one that
/// matches a payload prefix.
fn dynamic_ruleset() -> Ruleset {
    let dynset = |name: &str, timeout: Option<u64>, size: Option<u32>| {
        Set::dynamic(
            name,
            Family::V4,
            Dynamic {
                timeout: timeout.map(Duration::from_secs),
                size,
                persist: false,
                configured: false,
                restore: Vec::new(),
            },
        )
    };
    let udp = Match::Dport(
        L4Proto::Udp,
        PortRange {
            first: 5060,
            last: 5060,
        },
    );
    let mut register = vec![udp.clone()];
    register.extend(Match::payload_prefix(b"REGISTER sip:xq356jq.dyndns.org "));
    Ruleset {
        sets: vec![
            dynset("seen_v4", Some(60), Some(1000)),
            dynset("meter_v4", None, Some(65535)),
            dynset("ban_v4", None, Some(65536)),
        ],
        chains: vec![Chain {
            name: INPUT_CHAIN.into(),
            base: Some(BaseChain {
                priority: 0,
                policy: Verdict::Accept,
            }),
            rules: vec![
                Rule {
                    matches: vec![Match::SaddrInSet(Family::V4, "ban_v4".into())],
                    verdict: Some(Verdict::Drop),
                    ..Rule::default()
                },
                Rule {
                    matches: register,
                    set_updates: vec![SetUpdate {
                        op: SetOp::Update,
                        family: Family::V4,
                        set: "seen_v4".into(),
                        timeout: Some(Duration::from_secs(3600)),
                        limit: None,
                    }],
                    verdict: Some(Verdict::Accept),
                    ..Rule::default()
                },
                Rule {
                    matches: vec![udp],
                    set_updates: vec![
                        SetUpdate {
                            op: SetOp::Update,
                            family: Family::V4,
                            set: "meter_v4".into(),
                            timeout: Some(Duration::from_secs(60)),
                            limit: Some(RateLimit {
                                rate: 2,
                                unit_secs: 60,
                                burst: 3,
                            }),
                        },
                        SetUpdate {
                            op: SetOp::Add,
                            family: Family::V4,
                            set: "ban_v4".into(),
                            timeout: Some(Duration::from_secs(2)),
                            limit: None,
                        },
                    ],
                    verdict: Some(Verdict::Drop),
                    ..Rule::default()
                },
            ],
        }],
    }
}

/// The IR's dynamic sets, dynset statements and payload matches load, `nft` lists them as
/// the renderer prints them, the live rules fingerprint like the IR's, element timeouts
/// and comments read back, and elements expire by themselves.
fn elements_with_timeouts_expire_in_the_kernel() {
    let ns = Netns::new();
    let rs = dynamic_ruleset();
    ns.run(|| netlink::apply(&rs)).expect("apply");
    let listed = nft_list(ns.name(), &["list", "table", "inet", "pbxwall"]);
    let want = pbxwall::nft::render::render(&rs);
    assert_eq!(
        pbxwall::nft::render::normalize(&listed),
        pbxwall::nft::render::normalize(&want),
        "nft lists:\n{listed}\nrendered:\n{want}"
    );
    // Drift: the live rules are the IR's, and elements of dynamic sets do not count.
    let live = ns.run(netlink::read_table).unwrap().unwrap();
    let fps = netlink::rule_fingerprints(&rs).unwrap();
    let d = pbxwall::diff::diff(&rs, Ok(&fps), Some(&live));
    assert!(d.is_in_sync(), "{:?}", d.lines());

    let add = [
        TimedElement::new(ip("192.0.2.7"), Some(Duration::from_secs(2)), None),
        TimedElement::new(
            ip("198.51.100.9"),
            Some(Duration::from_secs(3600)),
            Some("manual: test".into()),
        ),
    ];
    let stats = ns
        .run(|| netlink::update_timed_elements("ban_v4", Family::V4, &[], &add))
        .expect("add elements");
    assert!(stats.messages <= 4, "{stats:?}");
    let got = ns
        .run(|| netlink::list_timed_elements("ban_v4"))
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    let short = &got[0];
    assert_eq!(short.addr, ip("192.0.2.7"));
    assert_eq!(short.timeout, Some(Duration::from_secs(2)));
    assert!(short.expires.unwrap() <= Duration::from_secs(2));
    assert_eq!(got[1].comment.as_deref(), Some("manual: test"));
    let set = nft_list(ns.name(), &["list", "set", "inet", "pbxwall", "ban_v4"]);
    assert!(set.contains("comment \"manual: test\""), "{set}");
    let d = pbxwall::diff::diff(
        &rs,
        Ok(&fps),
        Some(&ns.run(netlink::read_table).unwrap().unwrap()),
    );
    assert!(
        d.is_in_sync(),
        "elements of dynamic sets are no drift: {:?}",
        d.lines()
    );

    // The 2 s element goes by itself; the other stays.
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let now = ns
            .run(|| netlink::list_timed_elements("ban_v4"))
            .unwrap()
            .unwrap();
        if now.len() == 1 {
            assert_eq!(now[0].addr, ip("198.51.100.9"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "192.0.2.7 did not expire: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Remove, as unban does.
    ns.run(|| netlink::update_timed_elements("ban_v4", Family::V4, &[ip("198.51.100.9")], &[]))
        .expect("remove");
    let empty = ns
        .run(|| netlink::list_timed_elements("ban_v4"))
        .unwrap()
        .unwrap();
    assert!(empty.is_empty(), "{empty:?}");
    // A missing set reads as None.
    assert!(
        ns.run(|| netlink::list_timed_elements("nope_v4"))
            .unwrap()
            .is_none()
    );
}

/// Rules add to dynamic sets by themselves: a REGISTER with the secret name (payload
/// match over two expressions) lands its source in `seen_v4`; a flood over the meter's
/// rate bans the source for 2 s, after which it is let in again.
fn rules_fill_dynamic_sets_from_packets() {
    let topo = Topology::new();
    let rs = dynamic_ruleset();
    topo.in_pbx(|| netlink::apply(&rs)).expect("apply");
    let pbx = topo.pbx_v4();
    let send = |src: &str, payload: &'static [u8], n: usize| {
        let src = ip(src);
        topo.in_client(move || {
            let s = std::net::UdpSocket::bind((src, 0)).unwrap();
            for _ in 0..n {
                s.send_to(payload, (pbx, 5060)).unwrap();
            }
        })
    };
    topo.add_client_addr("192.0.2.20/24");
    topo.add_client_addr("192.0.2.21/24");
    send(
        "192.0.2.20",
        b"REGISTER sip:xq356jq.dyndns.org SIP/2.0\r\n\r\n",
        1,
    );
    send(
        "192.0.2.21",
        b"REGISTER sip:xq356jq.dyndns.orgx SIP/2.0\r\n\r\n",
        1,
    );
    std::thread::sleep(Duration::from_millis(200));
    let seen = topo
        .in_pbx(|| netlink::list_timed_elements("seen_v4"))
        .unwrap()
        .unwrap();
    let addrs: Vec<IpAddr> = seen.iter().map(|e| e.addr).collect();
    assert_eq!(addrs, [ip("192.0.2.20")], "{seen:?}");
    assert_eq!(seen[0].timeout, Some(Duration::from_secs(3600)));

    // 192.0.2.21 sends 10 more non-matching packets: 3 (burst) pass the meter, the rest
    // are over the rate and ban it.
    send("192.0.2.21", b"OPTIONS sip:x SIP/2.0\r\n\r\n", 10);
    std::thread::sleep(Duration::from_millis(200));
    let banned = topo
        .in_pbx(|| netlink::list_timed_elements("ban_v4"))
        .unwrap()
        .unwrap();
    let addrs: Vec<IpAddr> = banned.iter().map(|e| e.addr).collect();
    assert_eq!(addrs, [ip("192.0.2.21")], "{banned:?}");
    let meter = topo
        .in_pbx(|| netlink::list_timed_elements("meter_v4"))
        .unwrap()
        .unwrap();
    assert!(
        meter.iter().any(|e| e.addr == ip("192.0.2.21")),
        "{meter:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(6);
    while !topo
        .in_pbx(|| netlink::list_timed_elements("ban_v4"))
        .unwrap()
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the 2 s ban did not expire");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ban_elements(topo: &Topology) -> Vec<TimedElement> {
    topo.in_pbx(|| netlink::list_timed_elements("ban_v4"))
        .expect("list")
        .expect("ban_v4 exists")
}

/// `restart` keeps the elements of the ban sets; a deleted table comes back with them
/// (from the state folder, with the time they had left), and so does a simulated reboot:
/// table deleted, the boot unit's `nft -f last-applied.nft`, then `restart`. ipchecker
/// keeps them too, and a banned source is dropped although it is whitelisted.
fn restart_keeps_bans_and_a_new_table_gets_them_back() {
    let topo = Topology::new();
    let pbx_ns = topo.pbx_ns().to_owned();
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", "trusted = []\n");
    cfg.write(
        "accounts/joe.toml",
        "addresses = [\"192.0.2.10\"]\nservices = [\"all\"]\n",
    );
    let run = |args: &[&str]| {
        let out = cfg.run(Some(&pbx_ns), "pbxwall", args);
        common::assert_exit(&out, 0, &format!("pbxwall {args:?}"));
        out
    };
    run(&["restart"]);
    let pbx = std::net::SocketAddr::new(topo.pbx_v4(), 22);
    let _servers = common::Servers::start(&topo, &[22], &[]);
    assert!(common::tcp_probe(
        &topo,
        ip("192.0.2.10"),
        pbx,
        Duration::from_secs(2)
    ));

    // Banned: 192.0.2.10 for an hour with a comment, 192.0.2.11 for 3 s.
    let add = [
        TimedElement::new(
            ip("192.0.2.10"),
            Some(Duration::from_secs(3600)),
            Some("manual: test".into()),
        ),
        TimedElement::new(ip("192.0.2.11"), Some(Duration::from_secs(3)), None),
    ];
    topo.in_pbx(|| netlink::update_timed_elements("ban_v4", Family::V4, &[], &add))
        .expect("ban");
    assert!(
        !common::tcp_probe(&topo, ip("192.0.2.10"), pbx, Duration::from_secs(1)),
        "a ban beats the account"
    );

    run(&["restart"]);
    let after = ban_elements(&topo);
    assert_eq!(after.len(), 2, "restart kept the bans: {after:?}");
    run(&["ipchecker"]);
    assert_eq!(ban_elements(&topo).len(), 2, "ipchecker kept the bans");
    let state = std::fs::read_to_string(cfg.state_dir().join("dynamic-sets.json")).unwrap();
    assert!(
        state.contains("192.0.2.10") && state.contains("manual: test"),
        "{state}"
    );

    // The table deleted: restart brings the bans back with the time they had left; the
    // 3 s one has expired meanwhile and stays out.
    std::thread::sleep(Duration::from_secs(3));
    common::nft_ok(&pbx_ns, "delete table inet pbxwall");
    run(&["restart"]);
    let restored = ban_elements(&topo);
    let addrs: Vec<IpAddr> = restored.iter().map(|e| e.addr).collect();
    assert_eq!(addrs, [ip("192.0.2.10")], "{restored:?}");
    let left = restored[0].expires.unwrap();
    assert!(
        left <= Duration::from_secs(3600 - 3) && left > Duration::from_secs(3500),
        "{left:?}"
    );
    assert_eq!(restored[0].comment.as_deref(), Some("manual: test"));
    assert!(!common::tcp_probe(
        &topo,
        ip("192.0.2.10"),
        pbx,
        Duration::from_secs(1)
    ));

    // Simulated reboot: no table, the boot unit loads last-applied.nft, then restart.
    common::nft_ok(&pbx_ns, "delete table inet pbxwall");
    let boot = cfg.state_dir().join("last-applied.nft");
    let out = common::ns_cmd(&pbx_ns, "nft", &["-f", boot.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        ban_elements(&topo).is_empty(),
        "the boot file holds no bans"
    );
    // ipchecker (its timer may run before restart) adds them back, one small batch.
    let out = run(&["ipchecker", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    assert_eq!(ban_elements(&topo).len(), 1, "ipchecker restored: {v}");
    assert!(
        v.to_string()
            .contains("restored 1 recorded element of set ban_v4"),
        "{v}"
    );
    common::nft_ok(&pbx_ns, "delete table inet pbxwall");
    let out = common::ns_cmd(&pbx_ns, "nft", &["-f", boot.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    run(&["restart"]);
    let rebooted = ban_elements(&topo);
    assert_eq!(rebooted.len(), 1, "{rebooted:?}");
    assert!(rebooted[0].expires.unwrap() <= left);
    assert!(!common::tcp_probe(
        &topo,
        ip("192.0.2.10"),
        pbx,
        Duration::from_secs(1)
    ));
    // status sees no drift: ban elements are kernel state.
    let out = cfg.run(Some(&pbx_ns), "pbxwall", ["status"]);
    common::assert_exit(&out, 0, "status");
}

common::test_main! {
    Needs::ROOT => [
        elements_with_timeouts_expire_in_the_kernel,
        rules_fill_dynamic_sets_from_packets,
        restart_keeps_bans_and_a_new_table_gets_them_back,
    ],
}
