//! Every kind of difference [`diff`] finds, on a small hand-built table and its live copy.

use std::net::IpAddr;
use std::sync::Arc;

use super::*;
use crate::addrset::AddrRange;
use crate::ruleset::{Match, Rule};

fn host(addr: &str, jump: &str) -> Element {
    Element {
        range: AddrRange::from_addr(addr.parse::<IpAddr>().unwrap()),
        jump: Some(Arc::from(jump)),
    }
}

/// A small table in pbxwall's shape: a trusted set, a host map jumping to `allow_ssh`,
/// the input base chain and one regular chain.
fn want() -> Ruleset {
    Ruleset {
        sets: vec![
            Set::addresses(
                "trusted_v4",
                Family::V4,
                vec![AddrRange::from_net("192.0.2.0/28".parse().unwrap())],
            ),
            Set {
                name: "hosts_v4".into(),
                family: Family::V4,
                kind: SetKind::HostMap,
                elements: vec![
                    host("203.0.113.7", "allow_ssh"),
                    host("203.0.113.9", "allow_ssh"),
                ],
                dynamic: None,
            },
        ],
        chains: vec![
            Chain::input_dropping(vec![
                Rule {
                    matches: vec![Match::Loopback],
                    verdict: Some(Verdict::Accept),
                    ..Rule::default()
                },
                Rule {
                    saddr_vmap: Some((Family::V4, "hosts_v4".into())),
                    ..Rule::default()
                },
            ]),
            Chain::accepting_tcp_port("allow_ssh", 22),
        ],
    }
}

/// Stand-ins for libnftnl's fingerprints of [`want`]'s rules.
fn fingerprints() -> Vec<(String, Vec<String>)> {
    vec![
        (
            "input".into(),
            vec!["[ lo accept ]".into(), "[ vmap ]".into()],
        ),
        ("allow_ssh".into(), vec!["[ tcp 22 accept ]".into()]),
    ]
}

/// What the kernel holds after applying [`want`].
fn live() -> LiveTable {
    let want = want();
    let fingerprints = fingerprints();
    LiveTable {
        flags: 0,
        sets: want
            .sets
            .iter()
            .enumerate()
            .map(|(i, s)| LiveSet {
                name: s.name.clone(),
                family: Some(s.family),
                kind: Some(s.kind),
                elements: s.elements.clone(),
                handle: i as u64 + 1,
                timeout_ms: s
                    .dynamic
                    .as_ref()
                    .and_then(|d| d.timeout.map(|t| t.as_millis() as u64)),
                size: s.dynamic.as_ref().and_then(|d| d.size),
            })
            .collect(),
        chains: want
            .chains
            .iter()
            .zip(fingerprints)
            .enumerate()
            .map(|(i, (c, (_, rules)))| LiveChain {
                name: c.name.clone(),
                handle: i as u64 + 10,
                base: c.base.map(|b| LiveHook {
                    hook: BASE_CHAIN_HOOK,
                    priority: b.priority,
                    chain_type: BASE_CHAIN_TYPE.into(),
                    policy: Some(b.policy),
                }),
                rule_handles: (0..rules.len() as u64).collect(),
                rule_count: rules.len(),
                counters: Vec::new(),
                rules,
            })
            .collect(),
    }
}

fn diff_of(live: &LiveTable) -> TableDiff {
    diff(&want(), Ok(&fingerprints()), Some(live))
}

fn chain<'a>(live: &'a mut LiveTable, name: &str) -> &'a mut LiveChain {
    live.chains.iter_mut().find(|c| c.name == name).unwrap()
}

fn input_hook(live: &mut LiveTable) -> &mut LiveHook {
    chain(live, "input").base.as_mut().unwrap()
}

fn set<'a>(live: &'a mut LiveTable, name: &str) -> &'a mut LiveSet {
    live.sets.iter_mut().find(|s| s.name == name).unwrap()
}

/// The one structural difference of `live`, no element changes; and its text.
fn only_difference(live: &LiveTable) -> (Difference, String) {
    let d = diff_of(live);
    assert!(!d.missing && !d.is_in_sync() && !d.elements_only(), "{d:?}");
    assert_eq!(d.elements, [], "{d:?}");
    assert_eq!(d.structure.len(), 1, "{d:?}");
    let text = d.structure[0].to_string();
    assert_eq!(d.lines(), std::slice::from_ref(&text));
    (d.structure[0].clone(), text)
}

#[test]
fn in_sync() {
    let d = diff_of(&live());
    assert!(d.is_in_sync(), "{d:?}");
    assert!(!d.elements_only());
    assert_eq!(d.lines(), Vec::<String>::new());
}

#[test]
fn table_missing() {
    let d = diff(&want(), Ok(&fingerprints()), None);
    assert!(d.missing && !d.is_in_sync() && !d.elements_only());
    assert_eq!(d.lines(), ["table inet pbxwall is not loaded"]);
}

#[test]
fn table_dormant() {
    let mut live = live();
    live.flags = 0x1;
    let (d, text) = only_difference(&live);
    assert_eq!(d, Difference::TableFlags { live: 1 });
    assert_eq!(text, "table flags 0x1 (dormant), want 0");
    live.flags = 0xb;
    assert_eq!(
        diff_of(&live).lines(),
        ["table flags 0xb (dormant, owner, unknown 0x8), want 0"]
    );
}

#[test]
fn chain_missing() {
    let mut live = live();
    live.chains.retain(|c| c.name != "allow_ssh");
    let (d, text) = only_difference(&live);
    assert_eq!(
        d,
        Difference::ChainMissing {
            chain: "allow_ssh".into()
        }
    );
    assert_eq!(text, "chain allow_ssh is missing");
}

#[test]
fn extra_chain() {
    let mut live = live();
    let mut extra = chain(&mut live, "allow_ssh").clone();
    extra.name = "backdoor".into();
    live.chains.push(extra);
    let (d, text) = only_difference(&live);
    assert_eq!(
        d,
        Difference::ChainExtra {
            chain: "backdoor".into()
        }
    );
    assert_eq!(text, "chain backdoor is not pbxwall's");
}

#[test]
fn hook_differs() {
    let mut live = live();
    input_hook(&mut live).hook = libc::NF_INET_FORWARD as u32;
    let (d, text) = only_difference(&live);
    assert_eq!(
        d,
        Difference::ChainHook {
            chain: "input".into(),
            live: 2
        }
    );
    assert_eq!(text, "chain input: hook forward, want input");
}

#[test]
fn priority_differs() {
    let mut live = live();
    input_hook(&mut live).priority = 10;
    let (d, text) = only_difference(&live);
    assert_eq!(
        d,
        Difference::ChainPriority {
            chain: "input".into(),
            live: 10,
            want: 0
        }
    );
    assert_eq!(text, "chain input: priority 10, want 0");
}

#[test]
fn type_differs() {
    let mut live = live();
    input_hook(&mut live).chain_type = "route".into();
    let (d, text) = only_difference(&live);
    assert_eq!(
        d,
        Difference::ChainType {
            chain: "input".into(),
            live: "route".into()
        }
    );
    assert_eq!(text, "chain input: type route, want filter");
}

#[test]
fn policy_differs() {
    let mut live = live();
    input_hook(&mut live).policy = Some(Verdict::Accept);
    let (d, text) = only_difference(&live);
    assert_eq!(
        d,
        Difference::ChainPolicy {
            chain: "input".into(),
            live: Some(Verdict::Accept),
            want: Verdict::Drop
        }
    );
    assert_eq!(text, "chain input: policy is accept, expected drop");
    input_hook(&mut live).policy = None;
    assert_eq!(
        diff_of(&live).lines(),
        ["chain input: policy is none, expected drop"]
    );
}

#[test]
fn base_chain_live_as_regular() {
    let mut live = live();
    chain(&mut live, "input").base = None;
    let (d, text) = only_difference(&live);
    assert_eq!(
        d,
        Difference::ChainNotBase {
            chain: "input".into()
        }
    );
    assert_eq!(
        text,
        "chain input: a regular chain, want a base chain (hook input)"
    );
}

#[test]
fn regular_chain_live_as_base() {
    let mut live = live();
    let hook = chain(&mut live, "input").base.clone();
    chain(&mut live, "allow_ssh").base = hook;
    let (d, text) = only_difference(&live);
    assert_eq!(
        d,
        Difference::ChainIsBase {
            chain: "allow_ssh".into(),
            live_hook: 1
        }
    );
    assert_eq!(
        text,
        "chain allow_ssh: a base chain (hook input), want a regular chain"
    );
}

#[test]
fn rule_replaced_in_place() {
    let mut live = live();
    chain(&mut live, "input").rules[1] = "[ tcp 23 accept ]".into();
    let (d, text) = only_difference(&live);
    assert_eq!(
        d,
        Difference::RuleDiffers {
            chain: "input".into(),
            position: 2,
            want: "ip saddr vmap @hosts_v4".into()
        }
    );
    assert_eq!(
        text,
        "chain input: rule 2 differs from what pbxwall applied (ip saddr vmap @hosts_v4)"
    );
}

#[test]
fn rule_added() {
    let mut live = live();
    chain(&mut live, "input")
        .rules
        .push("[ tcp 23 accept ]".into());
    let (d, text) = only_difference(&live);
    assert_eq!(
        d,
        Difference::RuleCount {
            chain: "input".into(),
            live: 3,
            want: 2
        }
    );
    assert_eq!(
        text,
        "chain input: 3 rules, expected 2 (rules added or removed behind pbxwall's back)"
    );
}

#[test]
fn rule_removed() {
    let mut live = live();
    chain(&mut live, "allow_ssh").rules.clear();
    let (d, _) = only_difference(&live);
    assert_eq!(
        d,
        Difference::RuleCount {
            chain: "allow_ssh".into(),
            live: 0,
            want: 1
        }
    );
}

#[test]
fn rules_not_comparable_still_counts_them() {
    let mut live = live();
    chain(&mut live, "input").rules[0] = "[ tcp 23 accept ]".into();
    let err = NetlinkError::Protocol {
        what: "rule".into(),
        reason: "bad".into(),
    };
    let d = diff(&want(), Err(&err), Some(&live));
    assert_eq!(
        d.lines(),
        ["cannot compare rules: unexpected netlink answer to rule: bad"]
    );
    chain(&mut live, "input").rules.pop();
    let d = diff(&want(), Err(&err), Some(&live));
    assert_eq!(d.structure.len(), 2, "{d:?}");
    assert!(matches!(d.structure[1], Difference::RuleCount { .. }));
}

#[test]
fn set_missing() {
    let mut live = live();
    live.sets.retain(|s| s.name != "hosts_v4");
    let (d, text) = only_difference(&live);
    assert_eq!(
        d,
        Difference::SetMissing {
            set: "hosts_v4".into(),
            kind: SetKind::HostMap
        }
    );
    assert_eq!(text, "map hosts_v4 is missing");
}

#[test]
fn extra_set() {
    let mut live = live();
    let mut extra = set(&mut live, "trusted_v4").clone();
    extra.name = "friends_v4".into();
    live.sets.push(extra);
    let (d, text) = only_difference(&live);
    assert_eq!(
        d,
        Difference::SetExtra {
            set: "friends_v4".into()
        }
    );
    assert_eq!(text, "set friends_v4 is not pbxwall's");
}

#[test]
fn set_kind_differs() {
    let mut live = live();
    set(&mut live, "hosts_v4").kind = Some(SetKind::VerdictMap);
    let (d, text) = only_difference(&live);
    assert_eq!(
        d,
        Difference::SetType {
            set: "hosts_v4".into(),
            family: Family::V4,
            kind: SetKind::HostMap,
            live_family: Some(Family::V4),
            live_kind: Some(SetKind::VerdictMap),
        }
    );
    assert_eq!(
        text,
        "map hosts_v4: interval map of ipv4_addr to verdicts, want map of ipv4_addr to verdicts"
    );
    set(&mut live, "hosts_v4").kind = None;
    assert_eq!(
        diff_of(&live).lines(),
        [
            "map hosts_v4: set of ipv4_addr with other flags or data, want map of ipv4_addr to verdicts"
        ]
    );
}

#[test]
fn set_family_differs() {
    let mut live = live();
    let s = set(&mut live, "trusted_v4");
    s.family = None;
    s.elements.clear();
    let d = diff_of(&live);
    assert_eq!(
        d.structure,
        [Difference::SetType {
            set: "trusted_v4".into(),
            family: Family::V4,
            kind: SetKind::Addresses,
            live_family: None,
            live_kind: Some(SetKind::Addresses),
        }]
    );
    assert!(!d.elements_only());
    assert_eq!(
        d.lines(),
        [
            "set trusted_v4: interval set of another key type, want interval set of ipv4_addr",
            "set trusted_v4: missing 192.0.2.0/28",
        ]
    );
}

#[test]
fn elements_added_and_removed_in_a_map() {
    let mut live = live();
    set(&mut live, "hosts_v4").elements = vec![
        host("198.51.100.1", "allow_ssh"),
        host("203.0.113.7", "allow_ssh"),
    ];
    let d = diff_of(&live);
    assert_eq!(d.structure, []);
    assert_eq!(
        d.elements,
        [SetElements {
            set: "hosts_v4".into(),
            family: Family::V4,
            kind: SetKind::HostMap,
            add: vec![host("203.0.113.9", "allow_ssh")],
            remove: vec![host("198.51.100.1", "allow_ssh")],
        }]
    );
    assert_eq!(
        d.lines(),
        [
            "map hosts_v4: missing 203.0.113.9 : jump allow_ssh",
            "map hosts_v4: extra 198.51.100.1 : jump allow_ssh",
        ]
    );
    assert_eq!(
        d.elements[0].update_line(),
        "map hosts_v4: added 203.0.113.9 : jump allow_ssh; removed 198.51.100.1 : jump allow_ssh"
    );
    let change = d.elements[0].change();
    assert_eq!(
        (change.set, change.add, change.remove),
        (
            "hosts_v4",
            &d.elements[0].add[..],
            &d.elements[0].remove[..]
        )
    );
}

#[test]
fn a_jump_changed_is_an_element_removed_and_added() {
    let mut live = live();
    set(&mut live, "hosts_v4").elements[1].jump = Some(Arc::from("allow_sip"));
    let d = diff_of(&live);
    assert!(d.elements_only(), "{d:?}");
    assert_eq!(
        d.elements[0].update_line(),
        "map hosts_v4: added 203.0.113.9 : jump allow_ssh; removed 203.0.113.9 : jump allow_sip"
    );
}

#[test]
fn elements_only() {
    let mut live = live();
    set(&mut live, "trusted_v4").elements.clear();
    let d = diff_of(&live);
    assert!(d.elements_only() && !d.is_in_sync(), "{d:?}");
    assert_eq!(
        d.elements[0].update_line(),
        "set trusted_v4: added 192.0.2.0/28"
    );
    assert_eq!(d.lines(), ["set trusted_v4: missing 192.0.2.0/28"]);

    // With anything structural besides, a full apply is needed.
    live.flags = 1;
    assert!(!diff_of(&live).elements_only());
}

#[test]
fn lines_put_set_differences_before_chains() {
    let mut live = live();
    chain(&mut live, "input").rules.pop();
    set(&mut live, "hosts_v4").elements.pop();
    live.sets.retain(|s| s.name != "trusted_v4");
    live.flags = 1;
    assert_eq!(
        diff_of(&live).lines(),
        [
            "table flags 0x1 (dormant), want 0",
            "set trusted_v4 is missing",
            "map hosts_v4: missing 203.0.113.9 : jump allow_ssh",
            "chain input: 1 rules, expected 2 (rules added or removed behind pbxwall's back)",
        ]
    );
}

#[test]
fn a_dynamic_sets_elements_are_kernel_state_but_its_timeout_and_size_are_compared() {
    let mut want = want();
    want.sets.push(Set::dynamic(
        "ban_v4",
        Family::V4,
        crate::ruleset::Dynamic {
            size: Some(65536),
            ..Default::default()
        },
    ));
    let fps = fingerprints();
    let mut live = live();
    live.sets.push(LiveSet {
        name: "ban_v4".into(),
        family: Some(Family::V4),
        kind: Some(SetKind::Dynamic),
        elements: vec![Element::address(AddrRange::from_addr(
            "198.51.100.7".parse().unwrap(),
        ))],
        handle: 99,
        timeout_ms: None,
        size: Some(65536),
    });
    let d = diff(&want, Ok(&fps), Some(&live));
    assert!(d.is_in_sync(), "bans are no drift: {:?}", d.lines());
    live.sets.last_mut().unwrap().timeout_ms = Some(60_000);
    let d = diff(&want, Ok(&fps), Some(&live));
    assert_eq!(
        d.lines(),
        ["set ban_v4: timeout 60000 ms, size 65536, want timeout none, size 65536"]
    );
    live.sets.last_mut().unwrap().kind = Some(SetKind::Addresses);
    live.sets.last_mut().unwrap().timeout_ms = None;
    let d = diff(&want, Ok(&fps), Some(&live));
    assert_eq!(
        d.lines(),
        ["set ban_v4: interval set of ipv4_addr, want dynamic set of ipv4_addr with timeouts"]
    );
}
