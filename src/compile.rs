//! Accounts + profiles + settings + resolved names → the ruleset IR.
//!
//! [`compile`] is pure: no DNS, no files, no clock. Everything it needs is passed in, so it
//! is tested without root and its output can be rendered, applied or compared.
//!
//! The input chain it builds, in order (the order matters):
//!
//! ```text
//! iif "lo" accept                                   # the host talks to itself
//! ct state established,related accept               # replies and ICMP errors of known flows
//! ct state invalid drop
//! icmp type ... accept / icmpv6 type ... accept      # errors, PMTU and neighbour discovery
//! ip saddr @trusted_v4 accept                        # LAN, full access
//! ip saddr @all_v4 accept                            # accounts with service 0 (all)
//! udp dport 5060-5061 ip saddr @sip_udp_v4 accept    # one rule per service, port range, family
//! udp dport 10000-20000 accept                       # RTP ([rtp] from = "any")
//! limit rate 10/minute log prefix "pbxwall drop: "   # [log_drops]
//! counter                                            # what the drop policy is about to drop
//! ```
//!
//! Every service an account uses gets two named interval sets (`_v4`, `_v6`), even when one
//! is empty, so a name gaining or losing an address only changes set elements.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::addrset::{AddrRange, Family, merge};
use crate::model::{Account, Fqdn, PortSpec, Profile, Profiles, RtpFrom, Settings};
use crate::ruleset::{
    BaseChain, Chain, INPUT_CHAIN, INPUT_PRIORITY, IcmpType, L4Proto, Log, Match, Rule, Ruleset,
    Set, Verdict,
};

/// Set of the trusted networks (full access).
pub const TRUSTED_SET: &str = "trusted";
/// Set of RTP sources when `[rtp] from = "whitelist"`.
pub const RTP_SET: &str = "rtp";
/// Prefix of logged drops.
pub const LOG_PREFIX: &str = "pbxwall drop: ";
/// Logged drops per minute at most.
pub const LOG_PER_MINUTE: u32 = 10;

const FAMILIES: [Family; 2] = [Family::V4, Family::V6];

/// ICMP types accepted from anyone: errors the stack needs (most arrive as `related` anyway).
pub const ICMP_V4: [IcmpType; 3] = [
    IcmpType {
        code: 3,
        name: "destination-unreachable",
    },
    IcmpType {
        code: 11,
        name: "time-exceeded",
    },
    IcmpType {
        code: 12,
        name: "parameter-problem",
    },
];

/// ICMPv6 types accepted from anyone: errors, packet-too-big (path MTU) and neighbour
/// discovery, without which IPv6 does not work at all.
pub const ICMP_V6: [IcmpType; 8] = [
    IcmpType {
        code: 1,
        name: "destination-unreachable",
    },
    IcmpType {
        code: 2,
        name: "packet-too-big",
    },
    IcmpType {
        code: 3,
        name: "time-exceeded",
    },
    IcmpType {
        code: 4,
        name: "parameter-problem",
    },
    IcmpType {
        code: 130,
        name: "mld-listener-query",
    },
    IcmpType {
        code: 134,
        name: "nd-router-advert",
    },
    IcmpType {
        code: 135,
        name: "nd-neighbor-solicit",
    },
    IcmpType {
        code: 136,
        name: "nd-neighbor-advert",
    },
];

/// The addresses each name resolved to (only names with usable addresses).
pub type Resolved = BTreeMap<Fqdn, Vec<IpAddr>>;

/// The set name of a service and family: the profile name with `-` → `_`, e.g. `sip_udp_v4`.
pub fn set_name(service: &str, family: Family) -> String {
    format!("{}_{}", service.replace('-', "_"), family.suffix())
}

/// Every source range an account contributes: its addresses and the resolved addresses of
/// its names.
pub fn account_sources(account: &Account, resolved: &Resolved) -> Vec<AddrRange> {
    let mut v: Vec<AddrRange> = account
        .addresses
        .iter()
        .map(|n| AddrRange::from_net(*n))
        .collect();
    for name in &account.fqdns {
        if let Some(addrs) = resolved.get(name) {
            v.extend(addrs.iter().map(|a| AddrRange::from_addr(*a)));
        }
    }
    v
}

fn rule(matches: Vec<Match>, verdict: Verdict) -> Rule {
    Rule {
        matches,
        verdict: Some(verdict),
        ..Rule::default()
    }
}

/// Builds the ruleset. Accounts naming a service without a profile are ignored for that
/// service (the store refuses such accounts before they get here).
pub fn compile(
    settings: &Settings,
    profiles: &Profiles,
    accounts: &[Account],
    resolved: &Resolved,
) -> Ruleset {
    // Sources per service, in profile order.
    let mut by_service: BTreeMap<&str, Vec<AddrRange>> = BTreeMap::new();
    let mut rtp_sources: Vec<AddrRange> = Vec::new();
    for account in accounts {
        let sources = account_sources(account, resolved);
        for service in &account.services {
            if profiles.get(service).is_some() {
                by_service
                    .entry(service.as_str())
                    .or_default()
                    .extend(sources.iter().copied());
            }
        }
        rtp_sources.extend(sources);
        rtp_sources.extend(account.media.iter().map(|n| AddrRange::from_net(*n)));
    }
    let used: Vec<&Profile> = profiles
        .ordered()
        .into_iter()
        .filter(|p| by_service.contains_key(p.name.as_str()))
        .collect();

    let mut sets = Vec::new();
    let mut add_sets = |base: &str, ranges: &[AddrRange]| {
        for family in FAMILIES {
            sets.push(Set {
                name: set_name(base, family),
                family,
                elements: merge(family, ranges.iter().copied()),
            });
        }
    };
    let trusted: Vec<AddrRange> = settings
        .trusted
        .iter()
        .map(|n| AddrRange::from_net(*n))
        .collect();
    add_sets(TRUSTED_SET, &trusted);
    for p in &used {
        add_sets(&p.name, &by_service[p.name.as_str()]);
    }
    if settings.rtp.from == RtpFrom::Whitelist {
        add_sets(RTP_SET, &rtp_sources);
    }

    let mut rules = vec![
        rule(vec![Match::Loopback], Verdict::Accept),
        rule(vec![Match::CtEstablishedRelated], Verdict::Accept),
        rule(vec![Match::CtInvalid], Verdict::Drop),
    ];
    for t in ICMP_V4 {
        rules.push(rule(vec![Match::IcmpType(Family::V4, t)], Verdict::Accept));
    }
    for t in ICMP_V6 {
        rules.push(rule(vec![Match::IcmpType(Family::V6, t)], Verdict::Accept));
    }
    for family in FAMILIES {
        rules.push(rule(
            vec![Match::SaddrInSet(family, set_name(TRUSTED_SET, family))],
            Verdict::Accept,
        ));
    }
    // Full-access profiles first, then port rules, each in profile order.
    for p in used.iter().filter(|p| p.is_all()) {
        for family in FAMILIES {
            rules.push(rule(
                vec![Match::SaddrInSet(family, set_name(&p.name, family))],
                Verdict::Accept,
            ));
        }
    }
    for p in used.iter().filter(|p| !p.is_all()) {
        for spec in &p.ports {
            if let PortSpec::Port(proto, range) = *spec {
                for family in FAMILIES {
                    rules.push(rule(
                        vec![
                            Match::Dport(proto, range),
                            Match::SaddrInSet(family, set_name(&p.name, family)),
                        ],
                        Verdict::Accept,
                    ));
                }
            }
        }
    }
    let rtp = Match::Dport(L4Proto::Udp, settings.rtp.ports);
    match settings.rtp.from {
        RtpFrom::Any => rules.push(rule(vec![rtp], Verdict::Accept)),
        RtpFrom::Whitelist => {
            for family in FAMILIES {
                rules.push(rule(
                    vec![
                        rtp.clone(),
                        Match::SaddrInSet(family, set_name(RTP_SET, family)),
                    ],
                    Verdict::Accept,
                ));
            }
        }
    }
    if settings.log_drops {
        rules.push(Rule {
            log: Some(Log {
                per_minute: LOG_PER_MINUTE,
                prefix: LOG_PREFIX.to_owned(),
            }),
            ..Rule::default()
        });
    }
    rules.push(Rule {
        counter: true,
        ..Rule::default()
    });

    Ruleset {
        sets,
        chains: vec![Chain {
            name: INPUT_CHAIN.to_owned(),
            base: Some(BaseChain {
                priority: INPUT_PRIORITY,
                policy: Verdict::Drop,
            }),
            rules,
        }],
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn shipped_profiles() -> Profiles {
        crate::store::builtin_profiles()
    }

    pub(crate) fn account(
        name: &str,
        addrs: &[&str],
        fqdns: &[&str],
        services: &[&str],
    ) -> Account {
        Account {
            name: name.parse().unwrap(),
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            fqdns: fqdns.iter().map(|a| a.parse().unwrap()).collect(),
            services: services.iter().map(|s| s.to_string()).collect(),
            media: vec![],
            comment: None,
            created: None,
            provider: None,
        }
    }

    fn elements(rs: &Ruleset, set: &str) -> Vec<String> {
        rs.set(set)
            .unwrap_or_else(|| panic!("no set {set}"))
            .elements
            .iter()
            .map(|r| r.to_string())
            .collect()
    }

    #[test]
    fn accounts_land_in_their_service_sets_merged() {
        let ps = shipped_profiles();
        let accounts = [
            account(
                "joe",
                &["203.0.113.7/32", "2001:db8::/48"],
                &[],
                &["sip-udp", "iax"],
            ),
            account("office", &["203.0.113.0/24"], &[], &["sip-udp"]),
            account(
                "backup",
                &["198.51.100.0/28"],
                &["joe.dyndns.example"],
                &["all"],
            ),
        ];
        let mut resolved = Resolved::new();
        resolved.insert(
            "joe.dyndns.example".parse().unwrap(),
            vec![
                "192.0.2.44".parse().unwrap(),
                "2001:db8:1::44".parse().unwrap(),
            ],
        );
        let rs = compile(&Settings::default(), &ps, &accounts, &resolved);
        let names: Vec<&str> = rs.sets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "trusted_v4",
                "trusted_v6",
                "all_v4",
                "all_v6",
                "sip_udp_v4",
                "sip_udp_v6",
                "iax_v4",
                "iax_v6"
            ]
        );
        assert_eq!(elements(&rs, "sip_udp_v4"), ["203.0.113.0/24"]);
        assert_eq!(elements(&rs, "sip_udp_v6"), ["2001:db8::/48"]);
        assert_eq!(elements(&rs, "iax_v4"), ["203.0.113.7"]);
        assert_eq!(elements(&rs, "all_v4"), ["192.0.2.44", "198.51.100.0/28"]);
        assert_eq!(elements(&rs, "all_v6"), ["2001:db8:1::44"]);
        assert_eq!(
            elements(&rs, "trusted_v4"),
            ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
        );
    }

    #[test]
    fn unresolved_names_contribute_nothing_but_keep_their_sets() {
        let ps = shipped_profiles();
        let accounts = [account("mobile", &[], &["gone.example"], &["ssh"])];
        let rs = compile(&Settings::default(), &ps, &accounts, &Resolved::new());
        assert!(elements(&rs, "ssh_v4").is_empty());
        assert!(elements(&rs, "ssh_v6").is_empty());
    }

    #[test]
    fn rtp_from_whitelist_uses_all_sources_and_media() {
        let ps = shipped_profiles();
        let mut settings = Settings::default();
        settings.rtp.from = RtpFrom::Whitelist;
        let mut provider = account("provider-x", &["198.51.100.8/30"], &[], &["sip-udp"]);
        provider.media = vec!["203.0.113.128/25".parse().unwrap()];
        let rs = compile(
            &settings,
            &ps,
            &[provider, account("joe", &["192.0.2.10/32"], &[], &["ssh"])],
            &Resolved::new(),
        );
        assert_eq!(
            elements(&rs, "rtp_v4"),
            ["192.0.2.10", "198.51.100.8/30", "203.0.113.128/25"]
        );
        assert!(elements(&rs, "sip_udp_v4") == ["198.51.100.8/30"]);
    }

    #[test]
    fn compile_is_deterministic() {
        let ps = shipped_profiles();
        let a = [
            account("b", &["192.0.2.2/32"], &[], &["web", "ssh"]),
            account("a", &["192.0.2.1/32"], &[], &["ssh"]),
        ];
        let b = [a[1].clone(), a[0].clone()];
        let s = Settings::default();
        assert_eq!(
            compile(&s, &ps, &a, &Resolved::new()),
            compile(&s, &ps, &b, &Resolved::new())
        );
    }

    #[test]
    fn accepts_new_follows_the_rules() {
        use crate::ruleset::L4Proto::{Tcp, Udp};
        let ps = shipped_profiles();
        let settings = Settings {
            trusted: vec!["198.51.100.0/28".parse().unwrap()],
            ..Settings::default()
        };
        let accounts = [
            account(
                "joe",
                &["203.0.113.7/32", "2001:db8::/48"],
                &[],
                &["sip-udp"],
            ),
            account("admin", &["192.0.2.10/32"], &[], &["ssh"]),
        ];
        let rs = compile(&settings, &ps, &accounts, &Resolved::new());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(rs.accepts_new(ip("203.0.113.7"), Udp, 5060));
        assert!(rs.accepts_new(ip("203.0.113.7"), Udp, 5161));
        assert!(!rs.accepts_new(ip("203.0.113.7"), Tcp, 5060));
        assert!(!rs.accepts_new(ip("203.0.113.7"), Tcp, 22));
        assert!(rs.accepts_new(ip("2001:db8::99"), Udp, 5060));
        assert!(
            rs.accepts_new(ip("::ffff:192.0.2.10"), Tcp, 22),
            "v4-mapped"
        );
        assert!(rs.accepts_new(ip("198.51.100.3"), Tcp, 12345), "trusted");
        assert!(rs.accepts_new(ip("192.0.2.99"), Udp, 10000), "rtp from any");
        assert!(!rs.accepts_new(ip("192.0.2.99"), Tcp, 22));
    }
}
