//! Accounts + profiles + settings + resolved names → the ruleset IR.
//!
//! [`compile`] is pure: no DNS, no files, no clock. Everything it needs is passed in, so it
//! is tested without root and its output can be rendered, applied or compared.
//!
//! The input chain it builds, in order (the order matters):
//!
//! ```text
//! iif "lo" accept                                   # the host talks to itself
//! fib saddr type local drop                         # nobody else may claim its addresses
//! ip saddr @ban_v4 drop / ip6 saddr @ban_v6 drop     # bans (dynamic sets, kernel state)
//! ct state established,related accept               # replies and ICMP errors of known flows
//! ct state invalid drop
//! icmp type ... accept / icmpv6 type ... accept      # errors, PMTU and neighbour discovery
//! ip saddr @trusted_v4 accept                        # LAN, full access
//! ip saddr vmap @hosts_v4                            # whitelisted addresses: jump to their chain
//! ip saddr vmap @ranges_v4                           # whitelisted ranges: the same
//! udp dport 10000-20000 accept                       # RTP ([rtp] from = "any"); with
//!                                                   #   [geo]: per family ... ip saddr
//!                                                   #   @geo_v4 ip saddr != @geo_removed_v4
//!                                                   #   accept, ... ip saddr @geo_added_v4
//!                                                   #   accept (crate::geo::Gate::gated)
//! limit rate 10/minute log prefix "pbxwall drop: "   # [log_drops]
//! counter                                            # what the drop policy is about to drop
//! ```
//!
//! Every whitelisted source is ONE element of a verdict map of its family, whatever the
//! number of its services: single addresses in the hash map `hosts_v4`, networks and ranges
//! in the interval map `ranges_v4` (the two are disjoint). A packet costs a hash lookup and
//! a binary search however long the whitelist (BENCHMARKS.md), and a hash element is cheaper
//! for the kernel to load than an interval (one element instead of a start and an end). The
//! element jumps to the chain of its *combination* of services,
//! `allow_sip-udp.iax { udp dport 5060-5061 accept; ...; udp dport 4569 accept }`, shared by
//! every source with the same combination (`allow_all` just accepts). Where sources with
//! different services overlap, the overlap becomes its own element jumping to the chain of
//! the union. A packet the chain does not accept returns to the input chain and goes on to
//! the drop policy. All four maps always exist, even when empty, and every account's own
//! combination has its chain, so a name gaining or losing an address only changes map
//! elements.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::addrset::{AddrRange, Family, merge, partition};
use crate::geo::Gate;
use crate::model::{Account, Fqdn, PortSpec, Profile, Profiles, RtpFrom, Settings};
use crate::ruleset::{
    BaseChain, Chain, Dynamic, Element, INPUT_CHAIN, INPUT_PRIORITY, IcmpType, L4Proto, Log, Match,
    PortRange, RateLimit, Rule, Ruleset, Set, SetKind, SetOp, SetUpdate, Verdict,
};

/// Set of the trusted networks (full access).
pub const TRUSTED_SET: &str = "trusted";
/// Hash verdict map of the whitelisted single addresses (`hosts_v4`, `hosts_v6`).
pub const HOSTS_MAP: &str = "hosts";
/// Dynamic set of banned sources (`ban_v4`, `ban_v6`): elements with timeouts, added by
/// `pbxwall ban`, fail2ban and the guard; dropped before anything else looks at them.
pub const BAN_SET: &str = "ban";
/// Most elements of a ban set (per family): bounds the kernel memory a flood of sources
/// the guard bans can take, while a bulk block list of 100,000 addresses of one family
/// (`ban --stdin`) still fits with room for the guard's and fail2ban's bans.
///
/// The cost, measured on Linux 6.18 (`/proc/meminfo` before and after `nft -f` filled a
/// set `flags dynamic,timeout` with IPv6 elements, each with a timeout and the comment
/// `manual`, in a namespace): about 128 bytes of kernel memory an element (slab) plus the
/// hash table's buckets (vmalloc); 100,000 elements took 13.6 MiB, a full set 26.7 MiB of
/// slab and 6.0 MiB of vmalloc, so both sets full cost at most about 66 MiB. `size` is the
/// most elements a set holds (<https://www.netfilter.org/projects/nftables/manpage.html>);
/// the kernel refuses an element beyond it with `ENFILE`
/// (<https://github.com/torvalds/linux/blob/master/net/netfilter/nf_tables_api.c>).
///
/// Why 2^18 - 1 and not 2^18: the kernel also passes `size` to the set's hash table as the
/// hint of its first size (`nft_rhash_init` in
/// <https://github.com/torvalds/linux/blob/master/net/netfilter/nft_set_hash.c>), into a
/// 16-bit field (`nelem_hint` in
/// <https://github.com/torvalds/linux/blob/master/include/linux/rhashtable-types.h>), which
/// keeps the size's low 16 bits. 262,144 left 0 there: the table started at 64 buckets
/// and doubled about eleven times while a block list went in, every insert taking the slow
/// path during each resize. 262,143 leaves 65,535: the table starts at 131,072 buckets
/// (about 2 MiB of kernel memory a set, measured), and `ban --stdin` of 100,000 addresses
/// into the fresh set spends about a third less time in the kernel (BENCHMARKS.md §8). The
/// table still shrinks once elements expire (`automatic_shrinking`), and grows again as
/// needed: this is a better start, not a reservation.
pub const BAN_SET_SIZE: u32 = 262_143;
/// Interval verdict map of the whitelisted address ranges (`ranges_v4`, `ranges_v6`).
pub const RANGES_MAP: &str = "ranges";
/// Prefix of the chains the source maps jump to, one per combination of services.
pub const ALLOW_PREFIX: &str = "allow_";
/// Chain of ranges that may only send media: provider media ranges with
/// `[rtp] from = "whitelist"` (`_` cannot occur in a profile name, so no combination of
/// services is called this).
pub const MEDIA_ONLY_CHAIN: &str = "allow_rtp_media";
/// Longest chain name made by joining service names; longer combinations get a hashed name.
const MAX_JOINED_NAME: usize = 128;
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

/// The set name of a base name and family, e.g. `trusted_v4`, `hosts_v6`.
pub fn set_name(base: &str, family: Family) -> String {
    format!("{}_{}", base.replace('-', "_"), family.suffix())
}

/// Name of the chain for a combination of services (profile names, in profile order):
/// `allow_` and the names joined by `.`, e.g. `allow_sip-udp.iax`; [`MEDIA_ONLY_CHAIN`]
/// for none.
pub fn allow_chain_name(services: &[&str]) -> String {
    if services.is_empty() {
        return MEDIA_ONLY_CHAIN.to_owned();
    }
    let joined = services.join(".");
    if joined.len() <= MAX_JOINED_NAME {
        return format!("{ALLOW_PREFIX}{joined}");
    }
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = joined.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{ALLOW_PREFIX}h_{hash:016x}")
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

/// Builds the ruleset without a geo gate ([`compile_gated`] with [`Gate::Off`]).
pub fn compile(
    settings: &Settings,
    profiles: &Profiles,
    accounts: &[Account],
    resolved: &Resolved,
) -> Ruleset {
    compile_gated(settings, profiles, accounts, resolved, Gate::Off)
}

/// Builds the ruleset. Accounts naming a service without a profile are ignored for that
/// service (the store refuses such accounts before they get here).
///
/// `gate` is the geo gate ([`crate::geo`]): when on, its sets (`geo_v4`, `geo_added_v4`,
/// `geo_removed_v4` and the `_v6` ones) are added (last) and every open path of the input chain (a rule accepting sources that are
/// not whitelisted; today the RTP ports with `[rtp] from = "any"`) goes through
/// [`Gate::gated`]. Loopback, established flows, ICMP, trusted networks and the
/// whitelist come before and never depend on it.
pub fn compile_gated(
    settings: &Settings,
    profiles: &Profiles,
    accounts: &[Account],
    resolved: &Resolved,
    gate: Gate,
) -> Ruleset {
    let services = Services::new(settings, profiles, &gate);
    // Temporary accounts (`--expires`) go into dynamic sets with element timeouts, not
    // into the maps: the plain whitelist stays as fast as it is.
    let temporary: Vec<&Account> = accounts.iter().filter(|a| a.expires.is_some()).collect();
    // The permanent accounts, copied only when some are temporary.
    let permanent: std::borrow::Cow<'_, [Account]> = if temporary.is_empty() {
        std::borrow::Cow::Borrowed(accounts)
    } else {
        accounts
            .iter()
            .filter(|a| a.expires.is_none())
            .cloned()
            .collect()
    };
    let accounts = &permanent[..];
    // Each account's services as partition labels, once: its chain and its sources use them.
    let account_labels: Vec<Vec<u32>> = accounts.iter().map(|a| services.labels(a)).collect();
    // Every account's own combination of services has its chain even while none of its
    // names resolve, so a name coming back only adds map elements.
    let mut allow_chains = AllowChains::new(&services);
    allow_chains.add_accounts_own(accounts, &account_labels);
    // Every source range with its account's labels: they overlap freely here.
    let sources = labelled_sources(&services, accounts, &account_labels, resolved);
    // The sets in the order the input chain looks them up: trusted, then per family the
    // disjoint pieces of the sources, where an overlap may add the chain of a union.
    let mut sets = trusted_sets(settings);
    for family in FAMILIES {
        sets.extend(source_maps(family, &sources, &mut allow_chains));
    }
    // The ban sets always exist (empty until `pbxwall ban` or the guard adds to them).
    sets.extend(ban_sets());
    let (temp_sets, mut extra_rules) =
        temporary_sets(&temporary, &services, resolved, &mut allow_chains);
    sets.extend(temp_sets);
    let (knock_sets, knock_rules) = knock(&settings.knock, &services, &mut allow_chains, &gate);
    sets.extend(knock_sets);
    extra_rules.extend(knock_rules);
    // The SIP layer, when configured: who is known, who was admitted, the meters.
    let sip = SipLayer::new(settings, profiles);
    if let Some(sip) = &sip {
        sets.extend(sip.sets(settings, &sources));
    }
    // The base chain first, then the chains its maps jump to, in name order.
    let mut chains = vec![input_chain(settings, &gate, sip.as_ref(), extra_rules)];
    chains.extend(allow_chains.into_chains());
    if let Some(sip) = &sip {
        let mut guard = sip.guard_chain(settings, &gate);
        // Temporary accounts and knock grants are known sources too: like the accounts,
        // they return from the guard (after `ct reply` and the known sets).
        let known_too: Vec<Rule> = sets
            .iter()
            .filter(|s| s.name.starts_with(TEMP_PREFIX) || s.name.starts_with(KNOCK_GRANT_SET))
            .map(|s| {
                rule(
                    vec![Match::SaddrInSet(s.family, s.name.clone())],
                    Verdict::Return,
                )
            })
            .collect();
        let at = (1 + FAMILIES.len()).min(guard.rules.len());
        guard.rules.splice(at..at, known_too);
        chains.push(guard);
    }
    // The geo gate's sets last (moved: they may hold hundreds of thousands of ranges).
    sets.extend(gate.into_sets());
    Ruleset { sets, chains }
}

// ---------------------------------------------------------------------------------------
// Temporary accounts

/// Prefix of the dynamic sets of temporary accounts' sources, one per combination of
/// services and family (`temp_sip_udp.iax_v4`).
pub const TEMP_PREFIX: &str = "temp_";
/// Most addresses a network of a temporary account may hold: its addresses become single
/// elements with the account's timeout.
pub const TEMP_MAX_NETWORK: u128 = 256;

/// The name of the temporary set of the combination whose chain is `chain`.
fn temp_set_name(chain: &str, family: Family) -> String {
    let combo = chain.strip_prefix(ALLOW_PREFIX).unwrap_or(chain);
    set_name(&format!("{TEMP_PREFIX}{combo}"), family)
}

/// The dynamic sets of the temporary accounts, one per combination of services and family,
/// their elements (each address with its account's name as the comment, the timeout filled
/// in by [`set_temporary_timeouts`]), and the rules `ip saddr @temp_X_v4 jump allow_X`.
fn temporary_sets(
    temporary: &[&Account],
    services: &Services,
    resolved: &Resolved,
    allow_chains: &mut AllowChains,
) -> (Vec<Set>, Vec<Rule>) {
    let mut by_chain: BTreeMap<(Arc<str>, Family), Vec<crate::ruleset::TimedElement>> =
        BTreeMap::new();
    for account in temporary {
        let labels = services.labels(account);
        if labels.is_empty() {
            continue;
        }
        let chain = allow_chains.chain_for(&labels);
        for family in FAMILIES {
            by_chain.entry((chain.clone(), family)).or_default();
        }
        for range in account_sources(account, resolved) {
            // Larger networks are refused where accounts are made and read.
            if range.end - range.start >= TEMP_MAX_NETWORK {
                continue;
            }
            for n in range.start..=range.end {
                let addr = AddrRange {
                    start: n,
                    end: n,
                    ..range
                }
                .first();
                by_chain
                    .get_mut(&(chain.clone(), Family::of(addr)))
                    .expect("both families")
                    .push(crate::ruleset::TimedElement::new(
                        addr,
                        None,
                        Some(account.name.to_string()),
                    ));
            }
        }
    }
    let mut sets = Vec::new();
    let mut rules = Vec::new();
    for ((chain, family), mut restore) in by_chain {
        restore.sort();
        let name = temp_set_name(&chain, family);
        rules.push(Rule {
            matches: vec![Match::SaddrInSet(family, name.clone())],
            jump: Some(chain.to_string()),
            ..Rule::default()
        });
        sets.push(Set::dynamic(
            &name,
            family,
            Dynamic {
                configured: true,
                restore,
                ..Dynamic::default()
            },
        ));
    }
    (sets, rules)
}

/// Gives every element of the temporary sets the time its account has left at `now`
/// (accounts by name); an address of several accounts keeps the latest. Elements whose
/// account has no time left are dropped.
pub fn set_temporary_timeouts(
    ruleset: &mut Ruleset,
    accounts: &[Account],
    now: chrono::DateTime<chrono::Utc>,
) {
    let left: BTreeMap<&str, std::time::Duration> = accounts
        .iter()
        .filter_map(|a| Some((a.name.as_str(), (a.expires? - now).to_std().ok()?)))
        .filter(|(_, d)| !d.is_zero())
        .collect();
    for set in &mut ruleset.sets {
        let Some(d) = set.dynamic.as_mut().filter(|d| d.configured) else {
            continue;
        };
        let mut by_addr: BTreeMap<IpAddr, crate::ruleset::TimedElement> = BTreeMap::new();
        for mut e in d.restore.drain(..) {
            let Some(t) = e.comment.as_deref().and_then(|c| left.get(c)) else {
                continue;
            };
            e.timeout = Some(*t);
            match by_addr.get(&e.addr) {
                Some(old) if old.timeout >= e.timeout => {}
                _ => {
                    by_addr.insert(e.addr, e);
                }
            }
        }
        d.restore = by_addr.into_values().collect();
    }
}

// ---------------------------------------------------------------------------------------
// Port knocking

/// Prefix of the knock stage sets: `knock_1_v4` holds the sources that knocked the first
/// port, up to `knock_{n-1}`.
pub const KNOCK_STAGE_PREFIX: &str = "knock_";
/// The grant sets (`knock_grant_v4`, `knock_grant_v6`).
pub const KNOCK_GRANT_SET: &str = "knock_grant";
/// Most sources a knock set holds per family: bounds the kernel memory a flood of knocks
/// from many addresses can take.
pub const KNOCK_SET_SIZE: u32 = 65536;

/// The name of knock stage `k` (1-based) of `family`.
pub fn knock_stage_set(k: usize, family: Family) -> String {
    set_name(&format!("{KNOCK_STAGE_PREFIX}{k}"), family)
}

/// The knock sets and rules, nothing when `[knock] sequence` is empty.
///
/// Per family, with ports p1..pn of `[knock] protocol` (TCP: only SYNs count), stage sets
/// `knock_1` .. `knock_{n-1}` (timeout `step_timeout`) and `knock_grant` (timeout
/// `grant_for`, recorded in the state folder and restored):
///
/// ```text
/// ip saddr @knock_grant_v4 jump allow_all                # a grant opens [knock] services
/// tcp flags syn / fin,syn,rst,ack tcp dport p3 ip saddr @knock_2_v4
///     delete @knock_2_v4 { ip saddr } add @knock_grant_v4 { ip saddr } drop
/// tcp flags syn / fin,syn,rst,ack tcp dport p2 ip saddr @knock_1_v4
///     delete @knock_1_v4 { ip saddr } add @knock_2_v4 { ip saddr } drop
/// tcp flags syn / fin,syn,rst,ack ip saddr @knock_1_v4 tcp dport != p1
///     delete @knock_1_v4 { ip saddr }                     # any other port: start over
/// tcp flags syn / fin,syn,rst,ack ip saddr @knock_2_v4 tcp dport != p2
///     delete @knock_2_v4 { ip saddr }
/// tcp flags syn / fin,syn,rst,ack tcp dport p1 add @knock_1_v4 { ip saddr } drop
/// ```
/// The steps are looked at from the last to the first, so one packet moves a source one
/// step. A repeat of the port a source is at (a retransmitted SYN) changes nothing; a knock
/// on any other port while staged removes the source from its stage (a port scan passing
/// through the ports in order does not knock); the first port starts over.
fn knock(
    k: &crate::knock::KnockSettings,
    services: &Services,
    allow_chains: &mut AllowChains,
    gate: &Gate,
) -> (Vec<Set>, Vec<Rule>) {
    if !k.enabled() {
        return (Vec::new(), Vec::new());
    }
    let mut labels: Vec<u32> = k
        .services
        .iter()
        .filter_map(|s| {
            let name = services.ordered.iter().find(|p| {
                p.name.eq_ignore_ascii_case(s.trim())
                    || p.code.is_some_and(|c| c.to_string() == s.trim())
            })?;
            services.label_of.get(name.name.as_str()).copied()
        })
        .collect();
    labels.sort_unstable();
    labels.dedup();
    let open = (!labels.is_empty()).then(|| allow_chains.chain_for(&labels));
    let proto = k.protocol;
    let seq = &k.sequence;
    let n = seq.len();
    let step = |extra: Vec<Match>| {
        let mut m = Vec::new();
        if proto == L4Proto::Tcp {
            m.push(Match::TcpSyn);
        }
        m.extend(extra);
        m
    };
    let port = |p: u16| Match::Dport(proto, PortRange { first: p, last: p });
    let update = |op: SetOp, family: Family, set: String| SetUpdate {
        op,
        family,
        set,
        timeout: None,
        limit: None,
    };
    let mut sets = Vec::new();
    let mut rules = Vec::new();
    for family in FAMILIES {
        let grant = set_name(KNOCK_GRANT_SET, family);
        let stage = |i: usize| knock_stage_set(i, family);
        for i in 1..n {
            sets.push(Set::dynamic(
                &stage(i),
                family,
                Dynamic {
                    timeout: Some(k.step_timeout.to_std()),
                    size: Some(KNOCK_SET_SIZE),
                    ..Dynamic::default()
                },
            ));
        }
        sets.push(Set::dynamic(
            &grant,
            family,
            Dynamic {
                timeout: Some(k.grant_for.to_std()),
                size: Some(KNOCK_SET_SIZE),
                persist: true,
                ..Dynamic::default()
            },
        ));
        if let Some(chain) = &open {
            rules.push(Rule {
                matches: vec![Match::SaddrInSet(family, grant.clone())],
                jump: Some(chain.to_string()),
                ..Rule::default()
            });
        }
    }
    for family in FAMILIES {
        let grant = set_name(KNOCK_GRANT_SET, family);
        let stage = |i: usize| knock_stage_set(i, family);
        // Advance: from stage i on port p(i+1), the last one to the grant.
        for i in (1..n).rev() {
            let next = if i + 1 == n {
                grant.clone()
            } else {
                stage(i + 1)
            };
            rules.push(Rule {
                matches: step(vec![port(seq[i]), Match::SaddrInSet(family, stage(i))]),
                set_updates: vec![
                    update(SetOp::Delete, family, stage(i)),
                    update(SetOp::Add, family, next),
                ],
                verdict: Some(Verdict::Drop),
                ..Rule::default()
            });
        }
        // Reset: a staged source knocking any other port than the one it is at.
        for i in 1..n {
            rules.push(Rule {
                matches: step(vec![
                    Match::SaddrInSet(family, stage(i)),
                    Match::DportNot(proto, seq[i - 1]),
                ]),
                set_updates: vec![update(SetOp::Delete, family, stage(i))],
                ..Rule::default()
            });
        }
        // The first port: stage 1. Knocking is an open path: behind the geo gate (a rule
        // per alternative of the gate's match).
        for gated in gate.family_matches(family) {
            let mut first = vec![port(seq[0])];
            first.extend(gated);
            rules.push(Rule {
                matches: step(first),
                set_updates: vec![update(SetOp::Add, family, stage(1))],
                verdict: Some(Verdict::Drop),
                ..Rule::default()
            });
        }
    }
    (sets, rules)
}

// ---------------------------------------------------------------------------------------
// Services as labels

/// Label of media-only ranges in the partition (after every profile index).
const MEDIA_LABEL: u32 = u32::MAX;

/// The services, as the labels [`partition`] works with: a profile's label is its index in
/// profile order, so a sorted label set lists its services in profile order, and
/// [`MEDIA_LABEL`] stands for "media only".
struct Services<'a> {
    /// The profiles in profile order: label → profile.
    ordered: Vec<&'a Profile>,
    /// Profile name → label.
    label_of: BTreeMap<&'a str, u32>,
    /// Media is accepted from whitelisted sources through their chains: with
    /// `[rtp] from = "whitelist"` (instead of from anyone in the input chain), and with a geo
    /// gate (so whitelisted sources and providers' media ranges never depend on it).
    rtp_whitelist: bool,
    /// `udp dport RTP-PORTS`.
    rtp: Match,
}

impl<'a> Services<'a> {
    fn new(settings: &Settings, profiles: &'a Profiles, gate: &Gate) -> Self {
        let ordered = profiles.ordered();
        let label_of = ordered
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i as u32))
            .collect();
        Services {
            ordered,
            label_of,
            rtp_whitelist: settings.rtp.from == RtpFrom::Whitelist || gate.is_on(),
            rtp: Match::Dport(L4Proto::Udp, settings.rtp.ports),
        }
    }

    /// An account's services as labels, sorted; an account without a known service sends
    /// media only when RTP is whitelisted.
    fn labels(&self, account: &Account) -> Vec<u32> {
        let mut labels: Vec<u32> = account
            .services
            .iter()
            .filter_map(|s| self.label_of.get(s.as_str()).copied())
            .collect();
        if self.rtp_whitelist && labels.is_empty() {
            labels.push(MEDIA_LABEL);
        }
        labels.sort_unstable();
        labels.dedup();
        labels
    }

    /// The profiles a label set opens: "all" alone when it is among them (it absorbs the
    /// rest); none for media only.
    fn profiles(&self, labels: &[u32]) -> Vec<&'a Profile> {
        let profiles: Vec<&Profile> = labels
            .iter()
            .filter_map(|l| self.ordered.get(*l as usize).copied())
            .collect();
        match profiles.iter().find(|p| p.is_all()) {
            Some(all) => vec![*all],
            None => profiles,
        }
    }
}

/// Every source range labelled with each of its account's labels, and, when RTP is
/// whitelisted, every media range with [`MEDIA_LABEL`].
fn labelled_sources(
    services: &Services,
    accounts: &[Account],
    account_labels: &[Vec<u32>],
    resolved: &Resolved,
) -> Vec<(AddrRange, u32)> {
    let mut labelled: Vec<(AddrRange, u32)> = Vec::new();
    for (account, labels) in accounts.iter().zip(account_labels) {
        for r in account_sources(account, resolved) {
            labelled.extend(labels.iter().map(|l| (r, *l)));
        }
        if services.rtp_whitelist {
            labelled.extend(
                account
                    .media
                    .iter()
                    .map(|n| (AddrRange::from_net(*n), MEDIA_LABEL)),
            );
        }
    }
    labelled
}

// ---------------------------------------------------------------------------------------
// The chains of the combinations of services

/// The `allow_*` chains, one per combination of services that occurs, by name.
struct AllowChains<'s, 'a> {
    services: &'s Services<'a>,
    chains: BTreeMap<String, Chain>,
}

impl<'s, 'a> AllowChains<'s, 'a> {
    fn new(services: &'s Services<'a>) -> Self {
        AllowChains {
            services,
            chains: BTreeMap::new(),
        }
    }

    /// Adds the chain of every account's own combination of services, and the media-only
    /// chain for accounts with media ranges when RTP is whitelisted.
    fn add_accounts_own(&mut self, accounts: &[Account], account_labels: &[Vec<u32>]) {
        for (account, labels) in accounts.iter().zip(account_labels) {
            if !labels.is_empty() {
                self.chain_for(labels);
            }
            if self.services.rtp_whitelist && !account.media.is_empty() {
                self.chain_for(&[MEDIA_LABEL]);
            }
        }
    }

    /// The name of the chain of a label set, adding the chain on first use.
    fn chain_for(&mut self, labels: &[u32]) -> Arc<str> {
        let profiles = self.services.profiles(labels);
        let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
        let name = allow_chain_name(&names);
        if !self.chains.contains_key(&name) {
            let chain = Chain {
                name: name.clone(),
                base: None,
                rules: self.allow_rules(&profiles),
            };
            self.chains.insert(name.clone(), chain);
        }
        Arc::from(name)
    }

    /// What a combination of services accepts: each profile's ports in profile order
    /// (everything for "all"), then the media ports when RTP is whitelisted.
    fn allow_rules(&self, profiles: &[&Profile]) -> Vec<Rule> {
        let mut rules = Vec::new();
        for p in profiles {
            if p.is_all() {
                rules.push(rule(vec![], Verdict::Accept));
                continue;
            }
            for spec in &p.ports {
                if let PortSpec::Port(proto, range) = *spec {
                    rules.push(rule(vec![Match::Dport(proto, range)], Verdict::Accept));
                }
            }
        }
        if self.services.rtp_whitelist && !profiles.iter().any(|p| p.is_all()) {
            rules.push(rule(vec![self.services.rtp.clone()], Verdict::Accept));
        }
        rules
    }

    /// The chains, in name order.
    fn into_chains(self) -> impl Iterator<Item = Chain> {
        self.chains.into_values()
    }
}

// ---------------------------------------------------------------------------------------
// Sets

/// Interval set of the whitelisted sources (trusted networks and every account's
/// addresses, `known_v4`, `known_v6`), which the SIP guard leaves alone; only made with the
/// SIP layer.
pub const KNOWN_SET: &str = "known";
/// Dynamic set of the sources a REGISTER for a `[sip] register_domains` name admitted
/// (`admitted_v4`, `admitted_v6`).
pub const ADMITTED_SET: &str = "admitted";
/// The dynamic sets whose elements are kernel state worth keeping (bans, admissions, knock
/// grants): recorded in the state folder and restored when the table is created again. Each
/// is one set per family ([`set_name`]).
pub const PERSISTED_SETS: [&str; 3] = [BAN_SET, ADMITTED_SET, KNOCK_GRANT_SET];
/// Dynamic set of the guard's per-source meters (`meter_v4`, `meter_v6`).
pub const METER_SET: &str = "meter";
/// The regular chain of the SIP layer, jumped to for every packet to a SIP port.
pub const SIP_GUARD_CHAIN: &str = "sip_guard";
/// Most sources metered or admitted at once, per family.
pub const SIP_SET_SIZE: u32 = 65536;
/// What may follow `REGISTER sip:<name>` in a matching request line: the end of the URI
/// (a space before `SIP/2.0`), a port, URI parameters, or the `>` of a bracketed URI.
pub const REGISTER_TERMINATORS: [u8; 4] = [b' ', b':', b';', b'>'];

/// The SIP layer as compiled: the ports of the sip-udp and sip-tcp profiles and the
/// register names.
pub struct SipLayer {
    ports: Vec<(L4Proto, crate::ruleset::PortRange)>,
}

impl SipLayer {
    /// The layer when `[sip]` turns it on (register domains or open) and there are SIP
    /// ports to guard.
    pub fn new(settings: &Settings, profiles: &Profiles) -> Option<SipLayer> {
        if !settings.sip.enabled() {
            return None;
        }
        let mut ports = Vec::new();
        for name in ["sip-udp", "sip-tcp"] {
            for spec in profiles
                .get(name)
                .map(|p| p.ports.as_slice())
                .unwrap_or(&[])
            {
                if let PortSpec::Port(proto, range) = *spec
                    && !ports.contains(&(proto, range))
                {
                    ports.push((proto, range));
                }
            }
        }
        (!ports.is_empty()).then_some(SipLayer { ports })
    }

    /// The SIP ports the layer guards (of the sip-udp and sip-tcp profiles).
    pub fn ports(&self) -> &[(L4Proto, crate::ruleset::PortRange)] {
        &self.ports
    }

    /// `known_*` (trusted networks and accounts, merged), `admitted_*`, `meter_*`.
    fn sets(&self, settings: &Settings, sources: &[(AddrRange, u32)]) -> Vec<Set> {
        let dynamic = |persist| Dynamic {
            size: Some(SIP_SET_SIZE),
            persist,
            ..Dynamic::default()
        };
        let mut out = Vec::new();
        for family in FAMILIES {
            let known = settings
                .trusted
                .iter()
                .map(|n| AddrRange::from_net(*n))
                .chain(sources.iter().map(|(r, _)| *r));
            out.push(Set::addresses(
                &set_name(KNOWN_SET, family),
                family,
                merge(family, known),
            ));
        }
        for family in FAMILIES {
            out.push(Set::dynamic(
                &set_name(ADMITTED_SET, family),
                family,
                dynamic(true),
            ));
        }
        for family in FAMILIES {
            out.push(Set::dynamic(
                &set_name(METER_SET, family),
                family,
                dynamic(false),
            ));
        }
        out
    }

    /// `udp dport 5060-5061 jump sip_guard` for every SIP port range.
    fn jump_rules(&self) -> impl Iterator<Item = Rule> + '_ {
        self.ports.iter().map(|(proto, range)| Rule {
            matches: vec![Match::Dport(*proto, *range)],
            jump: Some(SIP_GUARD_CHAIN.to_owned()),
            ..Rule::default()
        })
    }

    /// The guard chain, in order: answers to what this host opened and whitelisted
    /// sources return; every other source is metered (over the limit: banned for
    /// `ban_for`, dropped); a REGISTER for a register name admits (or renews) its source;
    /// admitted sources are accepted; then open mode accepts everyone else, or a closed
    /// layer lets only TCP handshakes through (so a REGISTER over TCP can arrive) and drops
    /// the rest. Admission, the TCP handshakes and open mode are open paths: behind the geo
    /// gate when there is one (a stranger outside it is dropped).
    fn guard_chain(&self, settings: &Settings, gate: &Gate) -> Chain {
        let mut rules = vec![rule(vec![Match::CtReply], Verdict::Return)];
        for family in FAMILIES {
            rules.push(rule(
                vec![Match::SaddrInSet(family, set_name(KNOWN_SET, family))],
                Verdict::Return,
            ));
        }
        let g = &settings.guard;
        // The meter's element lives while the source keeps sending: at least one unit of
        // the rate, so a bucket is not forgotten while it still counts.
        let meter_for = std::time::Duration::from_secs(g.limit.unit_secs.max(60));
        for family in FAMILIES {
            rules.push(Rule {
                set_updates: vec![
                    SetUpdate {
                        op: SetOp::Update,
                        family,
                        set: set_name(METER_SET, family),
                        timeout: Some(meter_for),
                        limit: Some(RateLimit {
                            rate: g.limit.packets,
                            unit_secs: g.limit.unit_secs,
                            burst: g.burst,
                        }),
                    },
                    SetUpdate {
                        op: SetOp::Add,
                        family,
                        set: set_name(BAN_SET, family),
                        timeout: Some(g.ban_for.to_std()),
                        limit: None,
                    },
                ],
                // What is over the limit: the guard's hits (`status`).
                counter: true,
                verdict: Some(Verdict::Drop),
                ..Rule::default()
            });
        }
        for name in &settings.sip.register_domains {
            for term in REGISTER_TERMINATORS {
                let mut prefix = b"REGISTER sip:".to_vec();
                prefix.extend_from_slice(name.as_str().as_bytes());
                prefix.push(term);
                for family in FAMILIES {
                    for gated in gate.family_matches(family) {
                        let mut matches = Match::payload_prefix(&prefix);
                        matches.extend(gated);
                        rules.push(Rule {
                            matches,
                            set_updates: vec![SetUpdate {
                                op: SetOp::Update,
                                family,
                                set: set_name(ADMITTED_SET, family),
                                timeout: Some(settings.sip.admit_for.to_std()),
                                limit: None,
                            }],
                            verdict: Some(Verdict::Accept),
                            ..Rule::default()
                        });
                    }
                }
            }
        }
        for family in FAMILIES {
            rules.push(rule(
                vec![Match::SaddrInSet(family, set_name(ADMITTED_SET, family))],
                Verdict::Accept,
            ));
        }
        if settings.sip.open {
            rules.extend(gate.gated(rule(vec![], Verdict::Accept)));
        } else {
            for (proto, range) in &self.ports {
                if *proto == L4Proto::Tcp {
                    rules.extend(gate.gated(rule(
                        vec![Match::Dport(*proto, *range), Match::CtNew],
                        Verdict::Accept,
                    )));
                }
            }
            rules.push(rule(vec![], Verdict::Drop));
        }
        Chain {
            name: SIP_GUARD_CHAIN.to_owned(),
            base: None,
            rules,
        }
    }
}

/// `ban_v4` and `ban_v6`: dynamic sets whose elements (with their timeouts) are kernel
/// state, kept by every apply and recorded in the state folder.
fn ban_sets() -> Vec<Set> {
    FAMILIES
        .into_iter()
        .map(|family| {
            Set::dynamic(
                &set_name(BAN_SET, family),
                family,
                Dynamic {
                    size: Some(BAN_SET_SIZE),
                    persist: true,
                    ..Dynamic::default()
                },
            )
        })
        .collect()
}

/// `trusted_v4` and `trusted_v6`: the trusted networks, merged.
fn trusted_sets(settings: &Settings) -> Vec<Set> {
    let trusted: Vec<AddrRange> = settings
        .trusted
        .iter()
        .map(|n| AddrRange::from_net(*n))
        .collect();
    FAMILIES
        .into_iter()
        .map(|family| {
            Set::addresses(
                &set_name(TRUSTED_SET, family),
                family,
                merge(family, trusted.iter().copied()),
            )
        })
        .collect()
}

/// The two source maps of a family, `hosts_*` then `ranges_*`: the labelled sources cut into
/// disjoint ranges, each jumping to the chain of the union of the services covering it.
fn source_maps(
    family: Family,
    labelled: &[(AddrRange, u32)],
    allow_chains: &mut AllowChains,
) -> [Set; 2] {
    let parts = partition(family, labelled.iter().copied());
    let targets: Vec<Arc<str>> = parts
        .label_sets
        .iter()
        .map(|l| allow_chains.chain_for(l))
        .collect();
    let elements = jump_elements(parts.ranges, &targets);
    // Single addresses go to the hash map, ranges to the interval map: the two are
    // disjoint, so a source matches at most one element of one of them.
    let (hosts, ranges): (Vec<Element>, Vec<Element>) = elements
        .into_iter()
        .partition(|e| e.range.start == e.range.end);
    [
        Set {
            name: set_name(HOSTS_MAP, family),
            family,
            kind: SetKind::HostMap,
            elements: hosts,
            dynamic: None,
        },
        Set {
            name: set_name(RANGES_MAP, family),
            family,
            kind: SetKind::VerdictMap,
            elements: ranges,
            dynamic: None,
        },
    ]
}

/// The map elements of partitioned ranges (sorted, each with the index of its chain in
/// `targets`): neighbours jumping to the same chain become one element.
fn jump_elements(ranges: Vec<(AddrRange, usize)>, targets: &[Arc<str>]) -> Vec<Element> {
    let mut elements: Vec<Element> = Vec::with_capacity(ranges.len());
    for (range, id) in ranges {
        let jump = &targets[id];
        match elements.last_mut() {
            // Different label sets can share a chain ("all" absorbs the rest).
            Some(last) if last.jump.as_ref() == Some(jump) && last.range.end + 1 == range.start => {
                last.range.end = range.end;
            }
            _ => elements.push(Element {
                range,
                jump: Some(Arc::clone(jump)),
            }),
        }
    }
    elements
}

// ---------------------------------------------------------------------------------------
// The input chain

/// The base chain, hooked on input with a drop policy: its rules in the order of the
/// module documentation, each step explaining its place.
fn input_chain(
    settings: &Settings,
    gate: &Gate,
    sip: Option<&SipLayer>,
    extra: Vec<Rule>,
) -> Chain {
    // First what needs no whitelist: the host talking to itself. Its own traffic, to any of
    // its addresses, arrives on lo.
    let mut rules = vec![loopback_rule()];
    // So a packet from one of the host's own addresses on any other interface is spoofed:
    // dropped before anything could admit it. Before the conntrack rule, which would take a
    // spoof matching a flow the host has with itself as established, and before the
    // whitelist: `pbx-self` (made by `init`) whitelists the host's own addresses with every
    // service, and a trusted LAN holds the host's address too. The kernel drops such IPv4
    // packets itself (martian sources), but not IPv6 ones.
    rules.push(spoofed_local_source_rule());
    // Banned sources: before the conntrack rule, so a ban also stops the banned source's
    // running flows (`pbxwall ban` ends their conntrack entries too), and before
    // everything that could admit them: a ban beats an account.
    rules.extend(ban_rules());
    // The SIP layer: SIP packets (every one, established flows included: a brute-forcer
    // reuses one socket, and after the first answer conntrack would wave the rest through)
    // go to the guard, which meters the sources that are not whitelisted and admits or
    // drops them; whitelisted sources come back and go on as without it.
    if let Some(sip) = sip {
        rules.extend(sip.jump_rules());
    }
    // The replies and ICMP errors of flows already accepted (the bulk of the traffic, which
    // so leaves after three rules); invalid packets are dropped before any lookup.
    rules.extend(known_flow_rules());
    // ICMP errors and neighbour discovery come from anyone (routers on the path,
    // neighbours), so they are accepted whatever the source.
    rules.extend(icmp_rules());
    // The LAN before the whitelist: full access, nothing more to look up.
    rules.extend(trusted_rules());
    // The whitelist: one lookup per map; a source in no map, or a packet its chain does
    // not accept, falls through to the next rule.
    rules.extend(source_map_rules());
    // Then the temporary accounts' sets, the knock grants, and the knock steps (which drop
    // knocks; a reset lets the packet go on).
    rules.extend(extra);
    // Media from anyone (`[rtp] from = "any"`): the one port range open to strangers, the
    // last accept before the drop policy. With "whitelist" the chains accept it instead.
    // An open path: behind the geo gate when there is one.
    if settings.rtp.from != RtpFrom::Whitelist {
        rules.extend(gate.gated(rule(
            vec![Match::Dport(L4Proto::Udp, settings.rtp.ports)],
            Verdict::Accept,
        )));
    }
    // Only what is about to be dropped is logged and counted: last, before the policy.
    if settings.log_drops {
        rules.push(drop_log_rule());
    }
    rules.push(drop_counter_rule());
    Chain {
        name: INPUT_CHAIN.to_owned(),
        base: Some(BaseChain {
            priority: INPUT_PRIORITY,
            policy: Verdict::Drop,
        }),
        rules,
    }
}

/// A rule of matches and a verdict, without log or counter.
fn rule(matches: Vec<Match>, verdict: Verdict) -> Rule {
    Rule {
        matches,
        verdict: Some(verdict),
        ..Rule::default()
    }
}

/// `iif "lo" accept`.
fn loopback_rule() -> Rule {
    rule(vec![Match::Loopback], Verdict::Accept)
}

/// `fib saddr type local drop`: a source address of the host's own, arriving on an
/// interface other than lo.
fn spoofed_local_source_rule() -> Rule {
    rule(vec![Match::SaddrIsLocal], Verdict::Drop)
}

/// `ct state established,related accept`, `ct state invalid drop`.
fn known_flow_rules() -> [Rule; 2] {
    [
        rule(vec![Match::CtEstablishedRelated], Verdict::Accept),
        rule(vec![Match::CtInvalid], Verdict::Drop),
    ]
}

/// `icmp type T accept` for [`ICMP_V4`], then `icmpv6 type T accept` for [`ICMP_V6`].
fn icmp_rules() -> impl Iterator<Item = Rule> {
    let v4 = ICMP_V4.into_iter().map(|t| (Family::V4, t));
    let v6 = ICMP_V6.into_iter().map(|t| (Family::V6, t));
    v4.chain(v6)
        .map(|(family, t)| rule(vec![Match::IcmpType(family, t)], Verdict::Accept))
}

/// `ip saddr @trusted_v4 accept`, `ip6 saddr @trusted_v6 accept`.
fn trusted_rules() -> impl Iterator<Item = Rule> {
    FAMILIES.into_iter().map(|family| {
        rule(
            vec![Match::SaddrInSet(family, set_name(TRUSTED_SET, family))],
            Verdict::Accept,
        )
    })
}

/// `ip saddr vmap @hosts_v4`, `ip saddr vmap @ranges_v4`, then the same for IPv6: the
/// source maps in the order of the sets.
fn source_map_rules() -> impl Iterator<Item = Rule> {
    FAMILIES.into_iter().flat_map(|family| {
        [HOSTS_MAP, RANGES_MAP].map(|map| Rule {
            saddr_vmap: Some((family, set_name(map, family))),
            ..Rule::default()
        })
    })
}

/// `limit rate 10/minute log prefix "pbxwall drop: "`.
/// `ip saddr @ban_v4 drop`, `ip6 saddr @ban_v6 drop`.
fn ban_rules() -> impl Iterator<Item = Rule> {
    FAMILIES.into_iter().map(|family| {
        rule(
            vec![Match::SaddrInSet(family, set_name(BAN_SET, family))],
            Verdict::Drop,
        )
    })
}

fn drop_log_rule() -> Rule {
    Rule {
        log: Some(Log {
            per_minute: LOG_PER_MINUTE,
            prefix: LOG_PREFIX.to_owned(),
        }),
        ..Rule::default()
    }
}

/// `counter`: what the drop policy is about to drop.
fn drop_counter_rule() -> Rule {
    Rule {
        counter: true,
        ..Rule::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn shipped_profiles() -> Profiles {
        crate::store::builtin_profiles()
    }

    /// `joe`: 203.0.113.7 and 2001:db8::/48 with sip-udp.
    pub(crate) fn joe_sip_udp() -> Account {
        account(
            "joe",
            &["203.0.113.7/32", "2001:db8::/48"],
            &[],
            &["sip-udp"],
        )
    }

    /// The default settings with `trusted` = `[net]`.
    pub(crate) fn trusting(net: &str) -> Settings {
        Settings {
            trusted: vec![net.parse().unwrap()],
            ..Settings::default()
        }
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
            expires: None,
        }
    }

    fn elements(rs: &Ruleset, set: &str) -> Vec<String> {
        rs.set(set)
            .unwrap_or_else(|| panic!("no set {set}"))
            .elements
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    /// The elements of both source maps of a family (`v4`, `v6`), in address order.
    fn sources(rs: &Ruleset, family: &str) -> Vec<String> {
        let mut v: Vec<&Element> = [HOSTS_MAP, RANGES_MAP]
            .iter()
            .flat_map(|m| &rs.set(&format!("{m}_{family}")).unwrap().elements)
            .collect();
        v.sort();
        v.iter().map(|e| e.to_string()).collect()
    }

    fn chain_rules(rs: &Ruleset, chain: &str) -> Vec<String> {
        rs.chain(chain)
            .unwrap_or_else(|| panic!("no chain {chain}"))
            .rules
            .iter()
            .map(|r| r.to_string())
            .collect()
    }

    fn knocking(protocol: L4Proto) -> Settings {
        let mut settings = trusting("10.0.0.0/8");
        settings.knock = crate::knock::KnockSettings {
            sequence: vec![23456, 34567, 45678],
            protocol,
            services: vec!["8".into(), "sip-udp".into()],
            ..crate::knock::KnockSettings::default()
        };
        settings
    }

    /// `rs` with `addrs` as the live elements of set `name`.
    fn with_live(mut rs: Ruleset, name: &str, addrs: &[&str]) -> Ruleset {
        let set = rs.sets.iter_mut().find(|s| s.name == name).unwrap();
        set.elements = addrs
            .iter()
            .map(|a| Element::address(AddrRange::from_addr(a.parse().unwrap())))
            .collect();
        rs
    }

    #[test]
    fn persisted_sets_are_the_sets_compiled_as_persisted() {
        let mut settings = knocking(L4Proto::Udp);
        settings.sip.register_domains = vec!["pbx.example.com".parse().unwrap()];
        let rs = compile(&settings, &shipped_profiles(), &[], &Resolved::new());
        let mut persisted: Vec<&str> = rs
            .sets
            .iter()
            .filter(|s| s.dynamic.as_ref().is_some_and(|d| d.persist))
            .map(|s| s.name.as_str())
            .collect();
        persisted.sort_unstable();
        let mut listed: Vec<String> = PERSISTED_SETS
            .iter()
            .flat_map(|base| [Family::V4, Family::V6].map(|f| set_name(base, f)))
            .collect();
        listed.sort_unstable();
        assert_eq!(persisted, listed);
    }

    #[test]
    fn knock_steps_come_after_the_accounts_last_step_first() {
        let off = compile(
            &trusting("10.0.0.0/8"),
            &shipped_profiles(),
            &[],
            &Resolved::new(),
        );
        assert!(!off.sets.iter().any(|s| s.name.starts_with("knock")));
        let rs = compile(
            &knocking(L4Proto::Tcp),
            &shipped_profiles(),
            &[joe_sip_udp()],
            &Resolved::new(),
        );
        let names: Vec<&str> = rs.sets.iter().map(|s| s.name.as_str()).collect();
        assert!(names.ends_with(&[
            "knock_1_v4",
            "knock_2_v4",
            "knock_grant_v4",
            "knock_1_v6",
            "knock_2_v6",
            "knock_grant_v6"
        ]));
        let stage = rs.set("knock_1_v4").unwrap().dynamic.clone().unwrap();
        assert_eq!(stage.timeout, Some(std::time::Duration::from_secs(10)));
        assert!(!stage.persist, "stages are not recorded");
        let grant = rs.set("knock_grant_v6").unwrap().dynamic.clone().unwrap();
        assert_eq!(grant.timeout, Some(std::time::Duration::from_secs(3600)));
        assert!(grant.persist, "grants are recorded and restored");
        let rules = chain_rules(&rs, INPUT_CHAIN);
        let at = |text: &str| {
            rules
                .iter()
                .position(|r| r == text)
                .unwrap_or_else(|| panic!("{text} not in {rules:#?}"))
        };
        let syn = "tcp flags syn / fin,syn,rst,ack";
        let maps = at("ip6 saddr vmap @ranges_v6");
        let grant_v4 = at("ip saddr @knock_grant_v4 jump allow_sip-udp.ssh");
        let last = at(&format!(
            "{syn} tcp dport 45678 ip saddr @knock_2_v4 delete @knock_2_v4 {{ ip saddr }} add @knock_grant_v4 {{ ip saddr }} drop"
        ));
        let second = at(&format!(
            "{syn} tcp dport 34567 ip saddr @knock_1_v4 delete @knock_1_v4 {{ ip saddr }} add @knock_2_v4 {{ ip saddr }} drop"
        ));
        let reset = at(&format!(
            "{syn} ip saddr @knock_1_v4 tcp dport != 23456 delete @knock_1_v4 {{ ip saddr }}"
        ));
        let first = at(&format!(
            "{syn} tcp dport 23456 add @knock_1_v4 {{ ip saddr }} drop"
        ));
        let rtp = at("udp dport 10000-20000 accept");
        assert!(
            maps < grant_v4
                && grant_v4 < last
                && last < second
                && second < reset
                && reset < first
                && first < rtp
        );
        assert!(
            rules[..3].iter().all(|r| !r.contains("knock")),
            "bans come first"
        );

        // What a grant opens, and nothing else.
        let granted = with_live(rs, "knock_grant_v4", &["198.51.100.7"]);
        let src = "198.51.100.7".parse().unwrap();
        assert!(granted.accepts_new(src, L4Proto::Tcp, 22));
        assert!(granted.accepts_new(src, L4Proto::Udp, 5060));
        assert!(!granted.accepts_new(src, L4Proto::Tcp, 80));
        assert!(
            !granted.accepts_new(src, L4Proto::Tcp, 23456),
            "knock ports stay closed"
        );
        let other = "198.51.100.8".parse().unwrap();
        assert!(!granted.accepts_new(other, L4Proto::Tcp, 22));

        let udp = compile(
            &knocking(L4Proto::Udp),
            &shipped_profiles(),
            &[],
            &Resolved::new(),
        );
        let rules = chain_rules(&udp, INPUT_CHAIN);
        assert!(
            rules.contains(&"udp dport 23456 add @knock_1_v4 { ip saddr } drop".to_owned()),
            "{rules:#?}"
        );
        assert!(rules.iter().all(|r| !r.contains("tcp flags")));
    }

    #[test]
    fn temporary_accounts_are_timed_elements_beside_the_maps() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-03T06:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let mut visitor = account(
            "visitor",
            &["203.0.113.7/32", "198.51.100.0/30"],
            &[],
            &["ssh"],
        );
        visitor.expires = Some(now + chrono::TimeDelta::hours(2));
        let mut late = account("late", &["203.0.113.7/32"], &[], &["ssh"]);
        late.expires = Some(now + chrono::TimeDelta::hours(3));
        let mut gone = account("gone", &["192.0.2.9/32"], &[], &["ssh"]);
        gone.expires = Some(now - chrono::TimeDelta::seconds(1));
        let accounts = [joe_sip_udp(), visitor, late, gone];
        let mut rs = compile(
            &trusting("10.0.0.0/8"),
            &shipped_profiles(),
            &accounts,
            &Resolved::new(),
        );
        assert_eq!(
            sources(&rs, "v4"),
            ["203.0.113.7 : jump allow_sip-udp"],
            "the maps hold joe only"
        );
        assert!(
            chain_rules(&rs, INPUT_CHAIN)
                .contains(&"ip saddr @temp_ssh_v4 jump allow_ssh".to_owned())
        );
        set_temporary_timeouts(&mut rs, &accounts, now);
        let d = rs.set("temp_ssh_v4").unwrap().dynamic.clone().unwrap();
        assert!(d.configured && !d.persist);
        let got: Vec<(String, u64, String)> = d
            .restore
            .iter()
            .map(|e| {
                (
                    e.addr.to_string(),
                    e.timeout.unwrap().as_secs(),
                    e.comment.clone().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("198.51.100.0".to_owned(), 7200, "visitor".to_owned()),
                ("198.51.100.1".to_owned(), 7200, "visitor".to_owned()),
                ("198.51.100.2".to_owned(), 7200, "visitor".to_owned()),
                ("198.51.100.3".to_owned(), 7200, "visitor".to_owned()),
                ("203.0.113.7".to_owned(), 10800, "late".to_owned()),
            ],
            "one element per address, the later expiry wins, expired accounts give none"
        );
        let rs = with_live(rs, "temp_ssh_v4", &["203.0.113.7"]);
        assert!(rs.accepts_new("203.0.113.7".parse().unwrap(), L4Proto::Tcp, 22));
        assert!(
            rs.accepts_new("203.0.113.7".parse().unwrap(), L4Proto::Udp, 5060),
            "joe's service too"
        );
    }

    #[test]
    fn each_source_is_one_map_element_jumping_to_its_services() {
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
                "hosts_v4",
                "ranges_v4",
                "hosts_v6",
                "ranges_v6",
                "ban_v4",
                "ban_v6"
            ]
        );
        assert_eq!(rs.set("hosts_v4").unwrap().kind, SetKind::HostMap);
        assert_eq!(rs.set("ranges_v4").unwrap().kind, SetKind::VerdictMap);
        // Single addresses in the hash map, ranges in the interval map.
        assert_eq!(
            elements(&rs, "hosts_v4"),
            [
                "192.0.2.44 : jump allow_all",
                "203.0.113.7 : jump allow_sip-udp.iax"
            ]
        );
        assert_eq!(
            elements(&rs, "ranges_v6"),
            ["2001:db8::/48 : jump allow_sip-udp.iax"]
        );
        assert_eq!(
            sources(&rs, "v4"),
            [
                "192.0.2.44 : jump allow_all",
                "198.51.100.0/28 : jump allow_all",
                // joe's address inside the office network: the union of both.
                "203.0.113.0-203.0.113.6 : jump allow_sip-udp",
                "203.0.113.7 : jump allow_sip-udp.iax",
                "203.0.113.8-203.0.113.255 : jump allow_sip-udp",
            ]
        );
        assert_eq!(
            sources(&rs, "v6"),
            [
                "2001:db8::/48 : jump allow_sip-udp.iax",
                "2001:db8:1::44 : jump allow_all"
            ]
        );
        let chains: Vec<&str> = rs.chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            chains,
            ["input", "allow_all", "allow_sip-udp", "allow_sip-udp.iax"]
        );
        assert_eq!(chain_rules(&rs, "allow_all"), ["accept"]);
        assert_eq!(
            chain_rules(&rs, "allow_sip-udp.iax"),
            [
                "udp dport 5060-5061 accept",
                "udp dport 5160-5161 accept",
                "udp dport 4569 accept"
            ]
        );
        assert_eq!(
            elements(&rs, "trusted_v4"),
            ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
        );
        let input = chain_rules(&rs, "input");
        let lookups: Vec<&String> = input.iter().filter(|r| r.contains(" vmap ")).collect();
        assert_eq!(
            lookups,
            [
                "ip saddr vmap @hosts_v4",
                "ip saddr vmap @ranges_v4",
                "ip6 saddr vmap @hosts_v6",
                "ip6 saddr vmap @ranges_v6"
            ]
        );
    }

    #[test]
    fn all_absorbs_other_services_and_neighbours_with_one_chain_merge() {
        let ps = shipped_profiles();
        let accounts = [
            account("a", &["192.0.2.0/25"], &[], &["all"]),
            account("b", &["192.0.2.0/26"], &[], &["ssh"]),
            account("c", &["192.0.2.128/25"], &[], &["all"]),
        ];
        let rs = compile(&Settings::default(), &ps, &accounts, &Resolved::new());
        assert_eq!(sources(&rs, "v4"), ["192.0.2.0/24 : jump allow_all"]);
        // b's own chain exists even though none of its addresses jump there.
        assert_eq!(chain_rules(&rs, "allow_ssh"), ["tcp dport 22 accept"]);
    }

    #[test]
    fn unresolved_names_contribute_nothing_but_keep_their_chain() {
        let ps = shipped_profiles();
        let accounts = [account("mobile", &[], &["gone.example"], &["ssh"])];
        let rs = compile(&Settings::default(), &ps, &accounts, &Resolved::new());
        assert!(sources(&rs, "v4").is_empty());
        assert!(sources(&rs, "v6").is_empty());
        assert_eq!(chain_rules(&rs, "allow_ssh"), ["tcp dport 22 accept"]);
    }

    #[test]
    fn rtp_from_whitelist_goes_through_the_chains_and_media_ranges() {
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
            sources(&rs, "v4"),
            [
                "192.0.2.10 : jump allow_ssh",
                "198.51.100.8/30 : jump allow_sip-udp",
                "203.0.113.128/25 : jump allow_rtp_media"
            ]
        );
        assert_eq!(
            chain_rules(&rs, "allow_ssh"),
            ["tcp dport 22 accept", "udp dport 10000-20000 accept"]
        );
        assert_eq!(
            chain_rules(&rs, MEDIA_ONLY_CHAIN),
            ["udp dport 10000-20000 accept"]
        );
        let input = chain_rules(&rs, "input");
        assert!(
            !input.iter().any(|r| r.contains("10000-20000")),
            "{input:?}"
        );
    }

    #[test]
    fn chain_names_stay_short_and_distinct() {
        assert_eq!(allow_chain_name(&["sip-udp", "iax"]), "allow_sip-udp.iax");
        assert_eq!(allow_chain_name(&[]), MEDIA_ONLY_CHAIN);
        let many: Vec<String> = (0..10).map(|i| format!("custom-profile-{i:02}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let long = allow_chain_name(&many);
        assert!(long.starts_with("allow_h_") && long.len() < 40, "{long}");
        assert_ne!(long, allow_chain_name(&many[1..]));
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
    fn spoofed_own_addresses_are_dropped_right_after_lo_for_every_account() {
        // An account whitelisting the host's own addresses with every service, as `init`
        // makes `pbx-self`, and a trusted LAN holding them too: neither comes before the drop.
        let settings = trusting("2001:db8::/64");
        let accounts = [account(
            "pbx-self",
            &["192.0.2.1/32", "2001:db8::1/128"],
            &[],
            &["all"],
        )];
        let rs = compile(&settings, &shipped_profiles(), &accounts, &Resolved::new());
        assert_eq!(
            chain_rules(&rs, INPUT_CHAIN)[..6],
            [
                "iif \"lo\" accept",
                "fib saddr type local drop",
                "ip saddr @ban_v4 drop",
                "ip6 saddr @ban_v6 drop",
                "ct state established,related accept",
                "ct state invalid drop",
            ]
        );
        // The same with the default settings and no account.
        let bare = compile(
            &Settings::default(),
            &shipped_profiles(),
            &[],
            &Resolved::new(),
        );
        assert_eq!(
            chain_rules(&bare, INPUT_CHAIN)[1],
            "fib saddr type local drop"
        );
    }

    #[test]
    fn accepts_new_follows_the_rules() {
        use crate::ruleset::L4Proto::{Tcp, Udp};
        let ps = shipped_profiles();
        let settings = trusting("198.51.100.0/28");
        let accounts = [
            joe_sip_udp(),
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

    /// xorshift64*: a deterministic source of test cases (seeded with anything but 0).
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        /// The next number, below `n`.
        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    #[test]
    fn map_lookups_agree_with_a_plain_reading_of_the_accounts() {
        use crate::ruleset::L4Proto::{Tcp, Udp};
        // Random accounts crowded into 192.0.2.0/27 and 2001:db8::/123, so that sources
        // overlap, nest and touch all the time; then every address of that space on every
        // port that matters is checked against the accounts read directly.
        let ps = shipped_profiles();
        let services = ["sip-udp", "sip-tcp", "iax", "web", "ssh", "all"];
        let ports: Vec<(L4Proto, u16)> = vec![
            (Udp, 5060),
            (Udp, 5161),
            (Tcp, 5061),
            (Udp, 4569),
            (Tcp, 80),
            (Tcp, 443),
            (Tcp, 22),
            (Udp, 10000),
            (Tcp, 3306),
        ];
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        for case in 0..200 {
            let mut settings = Settings {
                trusted: vec![],
                ..Settings::default()
            };
            if rng.below(2) == 0 {
                settings.rtp.from = RtpFrom::Whitelist;
            }
            let mut accounts = Vec::new();
            for a in 0..1 + rng.below(6) {
                let mut addrs = Vec::new();
                for _ in 0..1 + rng.below(3) {
                    let len = 27 + rng.below(6) as u8;
                    let host = rng.below(32) as u8;
                    addrs.push(if rng.below(2) == 0 {
                        format!("192.0.2.{host}/{len}")
                    } else {
                        format!("2001:db8::{host:x}/{}", len as u32 + 96)
                    });
                }
                let nets: Vec<ipnet::IpNet> = addrs
                    .iter()
                    .map(|s| s.parse::<ipnet::IpNet>().unwrap().trunc())
                    .collect();
                let mut svc: Vec<&str> = services
                    .iter()
                    .copied()
                    .filter(|_| rng.below(3) == 0)
                    .collect();
                if svc.is_empty() {
                    svc.push(services[rng.below(6) as usize]);
                }
                let mut acct = account(&format!("a{a}"), &[], &[], &svc);
                acct.addresses = nets;
                if rng.below(4) == 0 {
                    acct.media = vec![format!("192.0.2.{}/30", rng.below(8) * 4).parse().unwrap()];
                }
                accounts.push(acct);
            }
            let rs = compile(&settings, &ps, &accounts, &Resolved::new());

            // Elements: sorted, disjoint, single addresses exactly in the host maps.
            for set in &rs.sets {
                for pair in set.elements.windows(2) {
                    assert!(
                        pair[0].range.end < pair[1].range.start,
                        "case {case}: {set:?}"
                    );
                }
                for e in &set.elements {
                    let single = e.range.start == e.range.end;
                    match set.kind {
                        SetKind::HostMap => assert!(single, "case {case}: {e:?}"),
                        SetKind::VerdictMap => assert!(!single, "case {case}: {e:?}"),
                        SetKind::Addresses => {}
                        SetKind::Dynamic => panic!("case {case}: {set:?} has elements"),
                    }
                }
            }
            let addrs = (0..32u8)
                .map(|h| IpAddr::from([192, 0, 2, h]))
                .chain((0..32u16).map(|h| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, h])));
            for src in addrs {
                for &(proto, port) in &ports {
                    let covers = |a: &Account| a.addresses.iter().any(|n| n.contains(&src));
                    let by_service = accounts.iter().filter(|a| covers(a)).any(|a| {
                        a.services.iter().any(|s| {
                            ps.get(s).unwrap().ports.iter().any(|p| match *p {
                                PortSpec::All => true,
                                PortSpec::Port(pr, r) => {
                                    pr == proto && (r.first..=r.last).contains(&port)
                                }
                            })
                        })
                    });
                    let rtp_port = proto == Udp
                        && (settings.rtp.ports.first..=settings.rtp.ports.last).contains(&port);
                    let by_rtp = rtp_port
                        && (settings.rtp.from == RtpFrom::Any
                            || accounts
                                .iter()
                                .any(|a| covers(a) || a.media.iter().any(|n| n.contains(&src))));
                    assert_eq!(
                        rs.accepts_new(src, proto, port),
                        by_service || by_rtp,
                        "case {case}: {src} {proto:?} {port}\n{accounts:#?}\n{rs}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_sip_layer_is_off_by_default_and_guards_strangers_when_on() {
        let ps = shipped_profiles();
        let bare = compile(
            &Settings::default(),
            &ps,
            &[joe_sip_udp()],
            &Resolved::new(),
        );
        assert!(bare.chain(SIP_GUARD_CHAIN).is_none());
        assert!(bare.set("known_v4").is_none());

        let mut settings = trusting("192.0.2.0/28");
        settings.sip.register_domains = vec!["pbx.dyndns.example".parse().unwrap()];
        let rs = compile(&settings, &ps, &[joe_sip_udp()], &Resolved::new());
        // Known: the trusted network and joe, merged per family.
        let known: Vec<String> = rs
            .set("known_v4")
            .unwrap()
            .ranges()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(known, ["192.0.2.0/28", "203.0.113.7"]);
        assert_eq!(rs.set("admitted_v6").unwrap().kind, SetKind::Dynamic);
        let input = chain_rules(&rs, INPUT_CHAIN);
        // After the bans, before the established accept: every SIP port range jumps.
        assert_eq!(input[4], "udp dport 5060-5061 jump sip_guard");
        assert_eq!(input[7], "tcp dport 5160-5161 jump sip_guard");
        assert_eq!(input[8], "ct state established,related accept");
        let guard = chain_rules(&rs, SIP_GUARD_CHAIN);
        assert_eq!(guard[0], "ct direction reply return");
        assert_eq!(guard[1], "ip saddr @known_v4 return");
        assert_eq!(
            guard[3],
            "update @meter_v4 { ip saddr timeout 1m limit rate over 10/minute burst 20 packets } \
             add @ban_v4 { ip saddr timeout 1h } counter drop"
        );
        // "REGISTER sip:pbx.dyndns.example" and a terminator: 32 bytes, two expressions.
        assert_eq!(
            guard[5],
            "@ih,0,128 0x5245474953544552207369703a706278 \
             @ih,128,128 0x2e64796e646e732e6578616d706c6520 \
             update @admitted_v4 { ip saddr timeout 1h } accept"
        );
        assert_eq!(guard.len(), 5 + 4 * 2 + 2 + 2 + 1);
        assert_eq!(guard.last().unwrap(), "drop");
        // A stranger's new SIP connection is not accepted; joe's is.
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        assert!(!rs.accepts_new(stranger, L4Proto::Udp, 5060));
        assert!(rs.accepts_new("203.0.113.7".parse().unwrap(), L4Proto::Udp, 5060));
        // Open mode accepts strangers (under the meter).
        settings.sip.open = true;
        let open = compile(&settings, &ps, &[], &Resolved::new());
        assert!(open.accepts_new(stranger, L4Proto::Udp, 5060));
        assert!(!open.accepts_new(stranger, L4Proto::Udp, 5070));
    }
}
