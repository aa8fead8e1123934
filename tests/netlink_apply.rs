//! Root tests of `nft::netlink`: apply, read back, update elements, delete.
//!
//! Every test makes its own network namespace (`common::Netns`: `pbxw-<pid>-<n>-ns`, only
//! `lo`, up), runs the netlink code on a thread that joined it with `setns`, checks with
//! `ip netns exec NAME nft ...`, and deletes the namespace when it ends, panics included.
//! Nothing is ever applied in the host's namespace. Needs root (except the one test that
//! never touches the kernel); without it the tests are reported as ignored (see
//! `common::harness`).

mod common;

use std::net::{IpAddr, Ipv6Addr, UdpSocket};

use pbxwall::addrset::{AddrRange, Family, merge_nets};
use pbxwall::nft::netlink::{self, LiveTable, NetlinkError};
use pbxwall::nft::render;
use pbxwall::ruleset::{
    BaseChain, Chain, Element, IcmpType, L4Proto, Log, Match, PortRange, Rule, Ruleset, Set,
    SetKind, Verdict,
};

use common::{Needs, Netns};

// ---------------------------------------------------------------------------------------
// nft in the namespace
// ---------------------------------------------------------------------------------------

/// `nft` in a test's namespace, as these tests look at the table.
trait NftInNamespace {
    /// `nft ARGS...` in the namespace: whether it succeeded, and stdout followed by stderr.
    fn nft(&self, args: &[&str]) -> (bool, String);
    /// `nft list table inet pbxwall`, or `None` when it fails (no table).
    fn list(&self) -> Option<String>;
    /// The netlink view of the table as nft prints it (`--debug=netlink`), handles removed.
    fn list_netlink(&self) -> String;
    /// Loads nft text with `nft -f -`.
    fn load(&self, text: &str);
}

impl NftInNamespace for Netns {
    fn nft(&self, args: &[&str]) -> (bool, String) {
        let out = common::ns_cmd(self.name(), "nft", args);
        let mut text = common::stdout(&out);
        text.push_str(&common::stderr(&out));
        (out.status.success(), text)
    }

    fn list(&self) -> Option<String> {
        let (ok, out) = self.nft(&["list", "table", "inet", "pbxwall"]);
        ok.then_some(out)
    }

    fn list_netlink(&self) -> String {
        let (ok, out) = self.nft(&["--debug=netlink", "list", "table", "inet", "pbxwall"]);
        assert!(ok, "{out}");
        let mut lines: Vec<String> = out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                if l.starts_with("inet pbxwall ") && !l.contains('@') {
                    // "inet pbxwall input 5 4": chain name, then handle and position.
                    l.split(' ').take(3).collect::<Vec<_>>().join(" ")
                } else {
                    l.to_owned()
                }
            })
            .collect();
        // A hash set dumps its elements in hash order: sort each run of element lines.
        let mut start = 0;
        while start < lines.len() {
            let len = lines[start..]
                .iter()
                .take_while(|l| l.trim_start().starts_with("element "))
                .count();
            lines[start..start + len].sort();
            start += len.max(1);
        }
        lines.join("\n")
    }

    fn load(&self, text: &str) {
        common::nft_ok(self.name(), text);
    }
}

fn assert_same_text(got: &str, want: &str, what: &str) {
    if got != want {
        panic!("{what} differs\n--- got:\n{got}\n--- want:\n{want}");
    }
}

// ---------------------------------------------------------------------------------------
// IR builders
// ---------------------------------------------------------------------------------------

fn ranges(family: Family, nets: &[&str]) -> Vec<Element> {
    let nets: Vec<ipnet::IpNet> = nets.iter().map(|n| n.parse().unwrap()).collect();
    merge_nets(family, &nets)
        .into_iter()
        .map(Element::address)
        .collect()
}

fn range(first: &str, last: &str) -> Element {
    let a: IpAddr = first.parse().unwrap();
    let b: IpAddr = last.parse().unwrap();
    Element::address(AddrRange {
        family: Family::of(a),
        start: AddrRange::from_addr(a).start,
        end: AddrRange::from_addr(b).start,
    })
}

fn set(name: &str, family: Family, elements: Vec<Element>) -> Set {
    Set {
        name: name.into(),
        family,
        kind: SetKind::Addresses,
        elements,
        dynamic: None,
    }
}

/// An interval verdict map: `(net, chain)` pairs, each element jumping to its chain.
fn vmap(name: &str, family: Family, elements: &[(&str, &str)]) -> Set {
    map_of(SetKind::VerdictMap, name, family, elements)
}

/// A hash verdict map of single addresses: `(address, chain)` pairs.
fn host_map(name: &str, family: Family, elements: &[(&str, &str)]) -> Set {
    map_of(SetKind::HostMap, name, family, elements)
}

fn map_of(kind: SetKind, name: &str, family: Family, elements: &[(&str, &str)]) -> Set {
    Set {
        name: name.into(),
        family,
        kind,
        elements: elements
            .iter()
            .map(|(net, chain)| Element {
                range: AddrRange::from_net(net.parse().unwrap()),
                jump: Some((*chain).into()),
            })
            .collect(),
        dynamic: None,
    }
}

fn regular(name: &str, rules: Vec<Rule>) -> Chain {
    Chain {
        name: name.into(),
        base: None,
        rules,
    }
}

fn saddr_vmap(map: &Set) -> Rule {
    Rule {
        saddr_vmap: Some((map.family, map.name.clone())),
        ..Rule::default()
    }
}

fn accept(matches: Vec<Match>) -> Rule {
    Rule {
        matches,
        verdict: Some(Verdict::Accept),
        ..Rule::default()
    }
}

fn saddr(set: &Set) -> Match {
    Match::SaddrInSet(set.family, set.name.clone())
}

fn dport(proto: L4Proto, first: u16, last: u16) -> Match {
    Match::Dport(proto, PortRange { first, last })
}

fn input(policy: Verdict, rules: Vec<Rule>) -> Chain {
    Chain {
        name: "input".into(),
        base: Some(BaseChain {
            priority: 0,
            policy,
        }),
        rules,
    }
}

/// A ruleset of the compiler's shape: every match kind, log and counter, the given sets,
/// a host map and two interval verdict maps (adjacent ranges jumping to different chains)
/// with their chains.
fn full_ruleset(mut sets: Vec<Set>) -> Ruleset {
    let mut rules = vec![
        accept(vec![Match::Loopback]),
        Rule {
            matches: vec![Match::SaddrIsLocal],
            verdict: Some(Verdict::Drop),
            ..Rule::default()
        },
        accept(vec![Match::CtEstablishedRelated]),
        Rule {
            matches: vec![Match::CtInvalid],
            verdict: Some(Verdict::Drop),
            ..Rule::default()
        },
        accept(vec![Match::IcmpType(
            Family::V4,
            IcmpType {
                code: 3,
                name: "destination-unreachable",
            },
        )]),
        accept(vec![Match::IcmpType(
            Family::V6,
            IcmpType {
                code: 135,
                name: "nd-neighbor-solicit",
            },
        )]),
    ];
    for s in &sets {
        rules.push(accept(vec![dport(L4Proto::Udp, 5060, 5061), saddr(s)]));
        rules.push(accept(vec![dport(L4Proto::Tcp, 5061, 5061), saddr(s)]));
    }
    let src4 = vmap(
        "src_v4",
        Family::V4,
        &[
            ("192.0.2.0/25", "allow_sip-udp.iax"),
            ("192.0.2.128/25", "allow_all"),
            ("203.0.113.9/32", "allow_sip-udp.iax"),
        ],
    );
    let src6 = vmap("src_v6", Family::V6, &[("2001:db8:5::/48", "allow_all")]);
    let hosts4 = host_map(
        "hosts_v4",
        Family::V4,
        &[
            ("198.51.100.7/32", "allow_all"),
            ("198.51.100.8/32", "allow_sip-udp.iax"),
            ("203.0.113.200/32", "allow_all"),
        ],
    );
    rules.push(saddr_vmap(&hosts4));
    rules.push(saddr_vmap(&src4));
    rules.push(saddr_vmap(&src6));
    sets.push(hosts4);
    sets.push(src4);
    sets.push(src6);
    rules.push(accept(vec![dport(L4Proto::Udp, 10000, 20000)]));
    rules.push(Rule {
        matches: vec![],
        log: Some(Log {
            per_minute: 10,
            prefix: "pbxwall drop: ".into(),
        }),
        ..Rule::default()
    });
    rules.push(Rule {
        counter: true,
        ..Rule::default()
    });
    Ruleset {
        sets,
        chains: vec![
            input(Verdict::Drop, rules),
            regular("allow_all", vec![accept(vec![])]),
            regular(
                "allow_sip-udp.iax",
                vec![
                    accept(vec![dport(L4Proto::Udp, 5060, 5061)]),
                    accept(vec![dport(L4Proto::Udp, 4569, 4569)]),
                ],
            ),
        ],
    }
}

fn sample_sets() -> Vec<Set> {
    vec![
        set(
            "sip_udp_v4",
            Family::V4,
            ranges(Family::V4, &["203.0.113.7/32", "198.51.100.0/28"]),
        ),
        set(
            "sip_udp_v6",
            Family::V6,
            ranges(Family::V6, &["2001:db8::/48"]),
        ),
        set("empty_v4", Family::V4, vec![]),
    ]
}

/// A new namespace with `lo` up, `rs` applied in it, then three UDP packets sent on `lo`.
fn apply_then_ping_lo(rs: &Ruleset) -> Netns {
    let ns = Netns::new();
    ns.run(|| netlink::apply(rs)).unwrap();
    ns.run(|| {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = s.local_addr().unwrap();
        for _ in 0..3 {
            s.send_to(b"ping", to).unwrap();
        }
    });
    ns
}

fn live_set<'a>(live: &'a LiveTable, name: &str) -> &'a netlink::LiveSet {
    live.sets
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("set {name} not live: {live:#?}"))
}

fn live_chain<'a>(live: &'a LiveTable, name: &str) -> &'a netlink::LiveChain {
    live.chains
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("chain {name} not live: {live:#?}"))
}

/// The live sets must be exactly the IR's, with the same merged ranges.
fn assert_sets_match(live: &LiveTable, rs: &Ruleset) {
    type View = (String, Option<Family>, Option<SetKind>, Vec<Element>);
    let mut got: Vec<View> = live
        .sets
        .iter()
        .map(|s| (s.name.clone(), s.family, s.kind, s.elements.clone()))
        .collect();
    let mut want: Vec<View> = rs
        .sets
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                Some(s.family),
                Some(s.kind),
                s.elements.clone(),
            )
        })
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

fn apply_to_fresh_namespace_lists_like_nft_and_renderer() {
    let rs = full_ruleset(sample_sets());
    let text = render::render(&rs);

    let ns = Netns::new();
    assert!(ns.run(netlink::read_table).unwrap().is_none());
    let stats = ns.run(|| netlink::apply(&rs)).unwrap();
    assert!(
        stats.messages > rs.chains[0].rules.len() && stats.bytes > 0,
        "{stats:?}"
    );
    let listed = ns.list().expect("table listed");
    assert_same_text(
        &render::normalize(&listed),
        &render::normalize(&text),
        "nft list vs renderer",
    );

    // The same text loaded by nft itself lists identically, down to the expressions and
    // the element userdata.
    let by_nft = Netns::new();
    by_nft.load(&text);
    assert_same_text(
        &listed,
        &by_nft.list().unwrap(),
        "listing of netlink vs nft -f",
    );
    assert_same_text(
        &ns.list_netlink(),
        &by_nft.list_netlink(),
        "netlink view of netlink vs nft -f",
    );

    let live = ns.run(netlink::read_table).unwrap().expect("table");
    assert_sets_match(&live, &rs);
    let input = live_chain(&live, "input");
    let hook = input.base.as_ref().expect("base chain");
    assert_eq!(
        (
            hook.hook,
            hook.priority,
            hook.chain_type.as_str(),
            hook.policy
        ),
        (1, 0, "filter", Some(Verdict::Drop))
    );
    assert_eq!(input.rule_count, rs.chains[0].rules.len());
    assert_eq!(input.rule_handles.len(), input.rule_count);
    assert_eq!(input.counters.len(), 1);
}

fn reapply_replaces_sets_chains_and_rules_but_keeps_base_chain() {
    let ns = Netns::new();
    // A stale table: a base chain with another priority, an output chain, a regular chain
    // jumped to, and a set; apply must clear all of it. Another table must survive.
    ns.load(
        r#"
table inet other {
    chain c { type filter hook input priority 5; policy accept; }
}
table inet pbxwall {
    set junk { type ipv4_addr; elements = { 192.0.2.99 }; }
    chain junk_chain { ip saddr @junk counter; }
    chain input { type filter hook input priority 10; policy accept; jump junk_chain; }
    chain output { type filter hook output priority 0; policy accept; }
}
"#,
    );

    let a = set("a_v4", Family::V4, ranges(Family::V4, &["192.0.2.0/28"]));
    let b = set("b_v6", Family::V6, ranges(Family::V6, &["2001:db8::/48"]));
    // A map whose elements jump to chain extra: both go in the second apply, so the map's
    // references to the chain must be dropped before the chain is deleted.
    let m = vmap("m_v4", Family::V4, &[("198.51.100.0/24", "extra")]);
    let r1 = Ruleset {
        sets: vec![a.clone(), b.clone(), m.clone()],
        chains: vec![
            input(
                Verdict::Drop,
                vec![
                    accept(vec![saddr(&a)]),
                    accept(vec![saddr(&b)]),
                    saddr_vmap(&m),
                ],
            ),
            Chain {
                name: "extra".into(),
                base: None,
                rules: vec![Rule {
                    counter: true,
                    ..Rule::default()
                }],
            },
        ],
    };
    ns.run(|| netlink::apply(&r1)).unwrap();
    let listed = ns.list().unwrap();
    assert_same_text(
        &render::normalize(&listed),
        &render::normalize(&render::render(&r1)),
        "first apply",
    );
    let live1 = ns.run(netlink::read_table).unwrap().unwrap();
    assert_eq!(
        live_chain(&live1, "input").base.as_ref().unwrap().priority,
        0
    );

    // Second apply: a_v4 and chain extra go, b_v6 changes, c_v4 is new, policy changes.
    let b2 = set("b_v6", Family::V6, ranges(Family::V6, &["2001:db8:1::/48"]));
    let c = set("c_v4", Family::V4, ranges(Family::V4, &["203.0.113.0/24"]));
    let r2 = Ruleset {
        sets: vec![b2.clone(), c.clone()],
        chains: vec![input(
            Verdict::Accept,
            vec![
                accept(vec![dport(L4Proto::Tcp, 5061, 5061), saddr(&c)]),
                accept(vec![saddr(&b2)]),
            ],
        )],
    };
    ns.run(|| netlink::apply(&r2)).unwrap();
    let listed = ns.list().unwrap();
    assert_same_text(
        &render::normalize(&listed),
        &render::normalize(&render::render(&r2)),
        "second apply",
    );
    for gone in ["a_v4", "m_v4", "extra", "junk", "output", "2001:db8::/48"] {
        assert!(!listed.contains(gone), "{gone} still listed:\n{listed}");
    }
    let live2 = ns.run(netlink::read_table).unwrap().unwrap();
    assert_sets_match(&live2, &r2);
    assert_eq!(live2.chains.len(), 1);
    let (in1, in2) = (live_chain(&live1, "input"), live_chain(&live2, "input"));
    assert_eq!(in1.handle, in2.handle, "base chain was re-created");
    assert_eq!(in2.base.as_ref().unwrap().policy, Some(Verdict::Accept));
    assert!(
        in2.rule_handles
            .iter()
            .all(|h| !in1.rule_handles.contains(h)),
        "rule handles did not change: {:?} vs {:?}",
        in1.rule_handles,
        in2.rule_handles
    );

    // Same ruleset again: still the same.
    ns.run(|| netlink::apply(&r2)).unwrap();
    assert_same_text(&ns.list().unwrap(), &listed, "idempotent apply");
    let (ok, tables) = ns.nft(&["list", "tables"]);
    assert!(ok && tables.contains("table inet other"), "{tables}");
}

fn apply_100k_addresses_in_one_batch() {
    // 100 000 distinct, non-adjacent /128s in 2001:db8::/32.
    let big = |offset: u128| {
        let base = u128::from("2001:db8::".parse::<Ipv6Addr>().unwrap());
        let elements: Vec<Element> = (0..100_000u128)
            .map(|i| {
                let a = base + offset + 2 * i;
                Element::address(AddrRange {
                    family: Family::V6,
                    start: a,
                    end: a,
                })
            })
            .collect();
        set("big_v6", Family::V6, elements)
    };
    let ns = Netns::new();
    for (round, offset) in [(1, 0u128), (2, 1 << 64)] {
        let rs = full_ruleset(vec![big(offset)]);
        let started = std::time::Instant::now();
        let stats = ns
            .run(|| netlink::apply(&rs))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        eprintln!(
            "100k apply round {round}: {stats:?} in {:?}",
            started.elapsed()
        );
        assert!(stats.bytes > 4_000_000, "round {round}: {stats:?}");
        let live = ns.run(netlink::read_table).unwrap().unwrap();
        let s = live_set(&live, "big_v6");
        assert_eq!(s.elements.len(), 100_000, "round {round}");
        assert_eq!(s.elements, rs.sets[0].elements, "round {round}");
    }
}

fn rejected_batch_names_the_object_and_keeps_old_ruleset() {
    let ns = Netns::new();
    let good = full_ruleset(sample_sets());
    ns.run(|| netlink::apply(&good)).unwrap();
    let before = ns.list().unwrap();
    let live_before = ns.run(netlink::read_table).unwrap().unwrap();

    // A rule that looks up a set that is not in the ruleset.
    let mut bad = full_ruleset(vec![set(
        "new_v4",
        Family::V4,
        ranges(Family::V4, &["192.0.2.1/32"]),
    )]);
    bad.chains[0].rules.insert(
        2,
        accept(vec![Match::SaddrInSet(Family::V4, "nosuch_v4".into())]),
    );
    let err = ns.run(|| netlink::apply(&bad)).unwrap_err();
    eprintln!("expected error: {err}");
    match &err {
        NetlinkError::Rejected { what, source, .. } => {
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT), "{err}");
            assert!(
                what.contains("rule 3 of chain input") && what.contains("@nosuch_v4"),
                "{err}"
            );
        }
        other => panic!("unexpected error: {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.starts_with("kernel rejected rule 3 of chain input"),
        "{msg}"
    );

    // Overlapping elements (the IR promises merged ranges; the kernel refuses overlaps).
    let mut overlap = full_ruleset(sample_sets());
    overlap.sets[0].elements = vec![
        range("198.51.100.0", "198.51.100.15"),
        range("198.51.100.8", "198.51.100.8"),
    ];
    let err = ns.run(|| netlink::apply(&overlap)).unwrap_err();
    eprintln!("expected error: {err}");
    match &err {
        NetlinkError::Rejected { what, .. } => {
            assert!(what.contains("elements of set sip_udp_v4"), "{err}")
        }
        other => panic!("unexpected error: {other}"),
    }

    assert_same_text(
        &ns.list().unwrap(),
        &before,
        "listing after rejected batches",
    );
    let live_after = ns.run(netlink::read_table).unwrap().unwrap();
    assert_eq!(live_after, live_before);
}

fn read_table_returns_the_merged_ranges() {
    let v4 = set(
        "edges_v4",
        Family::V4,
        vec![
            range("0.0.0.0", "0.255.255.255"),
            range("192.0.2.1", "192.0.2.5"),
            range("198.51.100.0", "198.51.100.255"),
            range("240.0.0.0", "255.255.255.255"),
        ],
    );
    let v6 = set(
        "edges_v6",
        Family::V6,
        vec![
            range("::", "ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            range("2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"),
            range("2001:db9::5", "2001:db9::7"),
            range("ff00::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ],
    );
    let all4 = set("all_v4", Family::V4, ranges(Family::V4, &["0.0.0.0/0"]));
    let all6 = set("all_v6", Family::V6, ranges(Family::V6, &["::/0"]));
    let one = set(
        "one_v4",
        Family::V4,
        ranges(Family::V4, &["203.0.113.9/32"]),
    );
    let empty = set("empty_v6", Family::V6, vec![]);
    let rs = full_ruleset(vec![v4, v6, all4, all6, one, empty]);

    let ns = Netns::new();
    ns.run(|| netlink::apply(&rs)).unwrap();
    let live = ns.run(netlink::read_table).unwrap().unwrap();
    assert_sets_match(&live, &rs);
    assert_same_text(
        &render::normalize(&ns.list().unwrap()),
        &render::normalize(&render::render(&rs)),
        "listing vs renderer",
    );
    // nft itself loads the same text into the same netlink view.
    let by_nft = Netns::new();
    by_nft.load(&render::render(&rs));
    assert_same_text(
        &ns.list_netlink(),
        &by_nft.list_netlink(),
        "netlink view of netlink vs nft -f",
    );
}

fn counters_are_read_back() {
    let rs = Ruleset {
        sets: vec![],
        chains: vec![input(
            Verdict::Drop,
            vec![Rule {
                matches: vec![Match::Loopback],
                counter: true,
                verdict: Some(Verdict::Accept),
                ..Rule::default()
            }],
        )],
    };
    let ns = apply_then_ping_lo(&rs);
    let live = ns.run(netlink::read_table).unwrap().unwrap();
    let input = live_chain(&live, "input");
    assert_eq!(input.counters.len(), 1);
    let (handle, packets, bytes) = input.counters[0];
    assert_eq!(handle, input.rule_handles[0]);
    assert!(packets >= 3 && bytes >= 3 * 32, "{:?}", input.counters);
}

fn update_set_elements_removes_and_adds() {
    let v4 = set(
        "s_v4",
        Family::V4,
        ranges(Family::V4, &["192.0.2.10/32", "198.51.100.0/24"]),
    );
    let v6 = set("s_v6", Family::V6, ranges(Family::V6, &["2001:db8::/48"]));
    let rs = full_ruleset(vec![v4.clone(), v6.clone()]);
    let ns = Netns::new();
    ns.run(|| netlink::apply(&rs)).unwrap();

    let remove = ranges(Family::V4, &["192.0.2.10/32"]);
    // 0.0.0.0/8 starts where the leading END element of the set sits.
    let add = ranges(
        Family::V4,
        &["203.0.113.5/32", "192.0.2.64/26", "0.0.0.0/8"],
    );
    let stats = ns
        .run(|| netlink::update_set_elements("s_v4", Family::V4, SetKind::Addresses, &remove, &add))
        .unwrap();
    assert!(stats.messages >= 4, "{stats:?}");
    let v6_remove = v6.elements.clone();
    let v6_add = ranges(Family::V6, &["2001:db8:5::/64", "ff00::/8"]);
    ns.run(|| {
        netlink::update_set_elements("s_v6", Family::V6, SetKind::Addresses, &v6_remove, &v6_add)
    })
    .unwrap();

    let want4 = ranges(
        Family::V4,
        &[
            "0.0.0.0/8",
            "192.0.2.64/26",
            "198.51.100.0/24",
            "203.0.113.5/32",
        ],
    );
    let live = ns.run(netlink::read_table).unwrap().unwrap();
    assert_eq!(live_set(&live, "s_v4").elements, want4);
    assert_eq!(live_set(&live, "s_v6").elements, v6_add);
    let listed = ns.list().unwrap();
    let mut expect = rs.clone();
    expect.sets[0].elements = want4.clone();
    expect.sets[1].elements = v6_add.clone();
    assert_same_text(
        &render::normalize(&listed),
        &render::normalize(&render::render(&expect)),
        "listing after updates",
    );

    // Removing something that is not an element fails as a whole and changes nothing.
    let err = ns
        .run(|| {
            netlink::update_set_elements(
                "s_v4",
                Family::V4,
                SetKind::Addresses,
                &ranges(Family::V4, &["192.0.2.200/32"]),
                &ranges(Family::V4, &["203.0.113.9/32"]),
            )
        })
        .unwrap_err();
    match &err {
        NetlinkError::Rejected { what, source, .. } => {
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT), "{err}");
            assert!(what.contains("removal of elements from set s_v4"), "{err}");
        }
        other => panic!("unexpected error: {other}"),
    }
    // A set that does not exist.
    let err = ns
        .run(|| {
            netlink::update_set_elements(
                "nosuch_v4",
                Family::V4,
                SetKind::Addresses,
                &[],
                &ranges(Family::V4, &["203.0.113.9/32"]),
            )
        })
        .unwrap_err();
    assert!(err.to_string().contains("set nosuch_v4"), "{err}");
    // A range of the wrong family is refused before anything is sent.
    let err = ns
        .run(|| netlink::update_set_elements("s_v4", Family::V4, SetKind::Addresses, &[], &v6_add))
        .unwrap_err();
    assert!(matches!(err, NetlinkError::Invalid { .. }), "{err}");

    assert_same_text(&ns.list().unwrap(), &listed, "listing after failed updates");

    // A host map: one address moves, another changes its chain, in one transaction.
    let old = host_map(
        "hosts_v4",
        Family::V4,
        &[
            ("198.51.100.7/32", "allow_all"),
            ("198.51.100.8/32", "allow_sip-udp.iax"),
        ],
    );
    let new = host_map(
        "hosts_v4",
        Family::V4,
        &[
            ("198.51.100.9/32", "allow_all"),
            ("198.51.100.8/32", "allow_all"),
        ],
    );
    ns.run(|| {
        netlink::update_set_elements(
            "hosts_v4",
            Family::V4,
            SetKind::HostMap,
            &old.elements,
            &new.elements,
        )
    })
    .unwrap();
    let live = ns.run(netlink::read_table).unwrap().unwrap();
    let got: Vec<String> = live_set(&live, "hosts_v4")
        .elements
        .iter()
        .map(|e| format!("{} {}", e.range, e.jump.as_deref().unwrap_or("-")))
        .collect();
    assert_eq!(
        got,
        [
            "198.51.100.8 allow_all",
            "198.51.100.9 allow_all",
            "203.0.113.200 allow_all"
        ]
    );
}

fn delete_table_when_absent_and_present() {
    let ns = Netns::new();
    ns.load("table inet other {\n    set keep { type ipv4_addr; }\n}\n");
    ns.run(netlink::delete_table).unwrap();
    assert!(ns.run(netlink::read_table).unwrap().is_none());

    ns.run(|| netlink::apply(&full_ruleset(sample_sets())))
        .unwrap();
    assert!(ns.list().is_some());
    ns.run(netlink::delete_table).unwrap();
    assert!(ns.list().is_none());
    assert!(ns.run(netlink::read_table).unwrap().is_none());
    ns.run(netlink::delete_table).unwrap();

    let (ok, tables) = ns.nft(&["list", "tables"]);
    assert!(ok, "{tables}");
    assert_eq!(tables.trim(), "table inet other");
}

/// `full_ruleset` plus what it lacks: a counter with matches and a verdict, log with a
/// verdict, and a regular chain (never jumped to) after the base chain.
fn fingerprint_ruleset() -> Ruleset {
    let mut rs = full_ruleset(sample_sets());
    let input = &mut rs.chains[0].rules;
    input.insert(
        0,
        Rule {
            matches: vec![Match::Loopback, dport(L4Proto::Udp, 1, 65535)],
            counter: true,
            verdict: Some(Verdict::Accept),
            ..Rule::default()
        },
    );
    rs.chains.push(Chain {
        name: "extra".into(),
        base: None,
        rules: vec![
            Rule {
                matches: vec![dport(L4Proto::Tcp, 5060, 5062)],
                log: Some(Log {
                    per_minute: 3,
                    prefix: "pbxwall extra: ".into(),
                }),
                counter: true,
                verdict: Some(Verdict::Drop),
                ..Rule::default()
            },
            accept(vec![saddr(&rs.sets[1])]),
        ],
    });
    rs
}

/// Index of chain `extra` in [`fingerprint_ruleset`].
fn extra_at(rs: &Ruleset) -> usize {
    rs.chains.iter().position(|c| c.name == "extra").unwrap()
}

/// Each live chain's `rules` next to the IR's fingerprints, chain by chain.
fn live_fingerprints(live: &LiveTable) -> Vec<(String, Vec<String>)> {
    live.chains
        .iter()
        .map(|c| (c.name.clone(), c.rules.clone()))
        .collect()
}

fn fingerprint_text(fps: &[(String, Vec<String>)]) -> String {
    fps.iter()
        .flat_map(|(chain, rules)| rules.iter().map(move |r| format!("{chain}: {r}")))
        .collect::<Vec<_>>()
        .join("\n")
}

fn rule_fingerprints_are_one_line_per_rule_without_handles_or_counter_values() {
    // No root needed: nothing touches the kernel.
    let rs = fingerprint_ruleset();
    let fps = netlink::rule_fingerprints(&rs).unwrap();
    assert_eq!(
        fps.iter()
            .map(|(c, r)| (c.as_str(), r.len()))
            .collect::<Vec<_>>(),
        rs.chains
            .iter()
            .map(|c| (c.name.as_str(), c.rules.len()))
            .collect::<Vec<_>>()
    );
    for (chain, rules) in &fps {
        for (i, line) in rules.iter().enumerate() {
            let at = format!("rule {} of chain {chain}: {line}", i + 1);
            assert!(line.starts_with("[ ") && line.ends_with(" ]"), "{at}");
            assert!(!line.contains('\n') && !line.contains("handle"), "{at}");
            assert!(
                !line.starts_with("inet") && !line.contains(" input "),
                "{at}"
            );
            let counters = line.matches("[ counter ").count();
            assert_eq!(
                counters,
                line.matches("[ counter pkts 0 bytes 0 ]").count(),
                "{at}"
            );
        }
    }
    let input = &fps[0].1;
    assert!(
        input[0].contains("[ counter pkts 0 bytes 0 ]"),
        "{}",
        input[0]
    );
    // Set references name the set.
    assert!(
        input
            .iter()
            .any(|l| l.contains("[ lookup reg 1 set sip_udp_v6 0x0 ]")),
        "{input:#?}"
    );
    // A verdict map lookup writes the verdict register.
    assert!(
        input
            .iter()
            .any(|l| l.contains("[ lookup reg 1 set src_v4 dreg 0 0x0 ]")),
        "{input:#?}"
    );
    // The same rules over other set contents print the same; another port does not.
    let mut other_sets = rs.clone();
    other_sets.sets.reverse();
    let v4 = other_sets
        .sets
        .iter_mut()
        .find(|s| s.family == Family::V4 && s.kind == SetKind::Addresses)
        .unwrap();
    v4.elements = ranges(Family::V4, &["192.0.2.0/24"]);
    assert_eq!(netlink::rule_fingerprints(&other_sets).unwrap(), fps);
    let extra = extra_at(&rs);
    let mut other_port = rs.clone();
    other_port.chains[extra].rules[0].matches = vec![dport(L4Proto::Tcp, 5060, 5063)];
    let changed = netlink::rule_fingerprints(&other_port).unwrap();
    assert_eq!(changed[0], fps[0]);
    assert_ne!(changed[extra].1[0], fps[extra].1[0]);
    assert_eq!(changed[extra].1[1], fps[extra].1[1]);
}

fn live_rule_fingerprints_match_the_ir_and_see_replacements() {
    let rs = fingerprint_ruleset();
    let want = netlink::rule_fingerprints(&rs).unwrap();
    // Traffic on lo, so the first rule's counter is not 0.
    let ns = apply_then_ping_lo(&rs);

    let live = ns.run(netlink::read_table).unwrap().unwrap();
    let input = live_chain(&live, "input");
    assert!(
        input.counters.iter().any(|&(_, packets, _)| packets >= 3),
        "{:?}",
        input.counters
    );
    let got = live_fingerprints(&live);
    assert_same_text(
        &fingerprint_text(&got),
        &fingerprint_text(&want),
        "live rule fingerprints vs rule_fingerprints",
    );
    assert_eq!(got, want);
    for c in &live.chains {
        assert_eq!(c.rules.len(), c.rule_count, "chain {}", c.name);
    }

    // Replace one rule in place: same handle, same count, other content.
    let at = 4;
    let handle = input.rule_handles[at].to_string();
    let (ok, out) = ns.nft(&[
        "replace", "rule", "inet", "pbxwall", "input", "handle", &handle, "tcp", "dport", "23",
        "accept",
    ]);
    assert!(ok, "nft replace rule: {out}");
    let after = ns.run(netlink::read_table).unwrap().unwrap();
    let input2 = live_chain(&after, "input");
    assert_eq!(input2.rule_count, input.rule_count);
    assert_eq!(input2.rule_handles, input.rule_handles);
    let differ: Vec<usize> = (0..input.rule_count)
        .filter(|&i| input2.rules[i] != want[0].1[i])
        .collect();
    assert_eq!(differ, [at], "{:#?}", input2.rules);
    assert_eq!(
        input2.rules[at],
        "[ meta load l4proto => reg 1 ] [ cmp eq reg 1 0x00000006 ] \
         [ payload load 2b @ transport header + 2 => reg 1 ] [ cmp eq reg 1 0x00001700 ] \
         [ immediate reg 0 accept ]"
    );
    let extra_at = extra_at(&rs);
    assert_eq!(live_chain(&after, "extra").rules, want[extra_at].1);

    // A rule inserted, then one removed: the fingerprints see both.
    let (ok, out) = ns.nft(&["insert", "rule", "inet", "pbxwall", "extra", "counter"]);
    assert!(ok, "nft insert rule: {out}");
    let extra = live_chain(&ns.run(netlink::read_table).unwrap().unwrap(), "extra").clone();
    assert_eq!(extra.rules[0], "[ counter pkts 0 bytes 0 ]");
    assert_eq!(extra.rules[1..], want[extra_at].1[..]);
    let last = extra.rule_handles[2].to_string();
    let (ok, out) = ns.nft(&[
        "delete", "rule", "inet", "pbxwall", "extra", "handle", &last,
    ]);
    assert!(ok, "nft delete rule: {out}");
    let extra = live_chain(&ns.run(netlink::read_table).unwrap().unwrap(), "extra").clone();
    assert_eq!(extra.rules.len(), want[extra_at].1.len());
    assert_ne!(extra.rules, want[extra_at].1);

    // Applying again restores exactly the IR's rules.
    ns.run(|| netlink::apply(&rs)).unwrap();
    let live = ns.run(netlink::read_table).unwrap().unwrap();
    assert_eq!(live_fingerprints(&live), want);
}

common::test_main! {
    // Nothing here touches the kernel.
    Needs::NOTHING => [rule_fingerprints_are_one_line_per_rule_without_handles_or_counter_values],
    Needs::ROOT => [
        apply_100k_addresses_in_one_batch,
        apply_to_fresh_namespace_lists_like_nft_and_renderer,
        counters_are_read_back,
        delete_table_when_absent_and_present,
        live_rule_fingerprints_match_the_ir_and_see_replacements,
        read_table_returns_the_merged_ranges,
        reapply_replaces_sets_chains_and_rules_but_keeps_base_chain,
        rejected_batch_names_the_object_and_keeps_old_ruleset,
        update_set_elements_removes_and_adds,
    ],
}
