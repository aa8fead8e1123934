//! The ruleset IR: plain data describing the one table pbxwall owns.
//!
//! [`crate::compile`] builds it from accounts, profiles, settings and name resolution.
//! Every type prints itself in nft syntax (its `Display`, in the `display` submodule):
//! [`crate::nft::render`] prints the whole table that way (`restart --dry-run`), and
//! [`crate::nft::netlink`], which turns the IR into one netlink batch, names a rejected rule
//! with the same text. A root test checks that `nft list table inet pbxwall` shows what the
//! renderer printed, so the two views of the same value cannot drift apart.
//!
//! Everything here is deterministic: sets and rules keep the order the compiler gave them,
//! and set elements are sorted, non-overlapping ranges (merged when they lead to the same
//! place: adjacent ranges of a verdict map may jump to different chains).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use crate::addrset::{AddrRange, Family};

mod display;

/// Name of the nftables table pbxwall owns (family `inet`). Nothing outside it is touched.
pub const TABLE_NAME: &str = "pbxwall";
/// Name of the one base chain (hook input, policy drop).
pub const INPUT_CHAIN: &str = "input";
/// Priority of the input base chain (`filter`). Never changed on replace: the kernel refuses
/// to re-add an existing base chain with another hook or priority (`EOPNOTSUPP`), and
/// deleting and re-creating it in the same batch lets packets through, because a new base
/// chain is hooked with policy accept until the commit reaches its drop policy.
pub const INPUT_PRIORITY: i32 = 0;

/// The whole ruleset: one `table inet pbxwall`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// Named interval sets and verdict maps of source addresses.
    pub sets: Vec<Set>,
    /// Chains; the first is the input base chain.
    pub chains: Vec<Chain>,
}

/// A named interval set of IPv4 or IPv6 source addresses (`flags interval`), or an
/// interval verdict map from source addresses to the chain a packet jumps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// Set name, e.g. `trusted_v4` or `ranges_v6`.
    pub name: String,
    /// Address family of the keys (`ipv4_addr` or `ipv6_addr`).
    pub family: Family,
    /// A plain set or a verdict map.
    pub kind: SetKind,
    /// Sorted, non-overlapping elements. In a plain set they are merged and non-adjacent;
    /// in a verdict map adjacent ranges jump to different chains.
    pub elements: Vec<Element>,
}

/// What a set's elements are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SetKind {
    /// `set NAME { type ipv4_addr; flags interval; }`: addresses, matched with `@NAME`.
    Addresses,
    /// `map NAME { type ipv4_addr : verdict; flags interval; }`: every element carries a
    /// `jump CHAIN`, used with `ip saddr vmap @NAME`.
    VerdictMap,
    /// `map NAME { type ipv4_addr : verdict; }`: a hash of single addresses, each with a
    /// `jump CHAIN`. Cheaper to load and to look up than an interval map.
    HostMap,
}

impl SetKind {
    /// "set" or "map", as nft calls it.
    pub fn noun(self) -> &'static str {
        match self {
            SetKind::Addresses => "set",
            SetKind::VerdictMap | SetKind::HostMap => "map",
        }
    }
}

/// One set element: a range of addresses and, in a verdict map, the chain it jumps to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    /// Inclusive range of source addresses.
    pub range: AddrRange,
    /// Chain a packet from `range` jumps to (verdict maps only).
    pub jump: Option<Arc<str>>,
}

impl Element {
    /// An element of a plain address set.
    pub fn address(range: AddrRange) -> Element {
        Element { range, jump: None }
    }
}

/// What turns the elements `have` into `want`: `(add, remove)`, the elements of `want` not
/// in `have` and those of `have` not in `want`, each sorted. Sorted inputs (the IR's sets
/// and the decoded live ones are) are compared in one linear pass.
pub fn element_changes(want: &[Element], have: &[Element]) -> (Vec<Element>, Vec<Element>) {
    if !(want.is_sorted() && have.is_sorted()) {
        let want_set: BTreeSet<&Element> = want.iter().collect();
        let have_set: BTreeSet<&Element> = have.iter().collect();
        let add = want_set
            .difference(&have_set)
            .map(|e| (*e).clone())
            .collect();
        let remove = have_set
            .difference(&want_set)
            .map(|e| (*e).clone())
            .collect();
        return (add, remove);
    }
    let (mut add, mut remove) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < want.len() || j < have.len() {
        match (want.get(i), have.get(j)) {
            (Some(w), Some(h)) if w == h => {
                i += 1;
                j += 1;
            }
            (Some(w), Some(h)) if w < h => {
                add.push(w.clone());
                i += 1;
            }
            (Some(_), Some(h)) | (None, Some(h)) => {
                remove.push(h.clone());
                j += 1;
            }
            (Some(w), None) => {
                add.push(w.clone());
                i += 1;
            }
            (None, None) => break,
        }
    }
    // Duplicates (not in a set, but not excluded by the types) as the set difference has it.
    add.dedup();
    remove.dedup();
    (add, remove)
}

/// Most elements [`element_list`] names; the rest are counted (a geo set changes by
/// thousands).
pub const ELEMENT_LIST_MAX: usize = 20;

/// Elements as a list for messages: `192.0.2.1 : jump allow_ssh, 198.51.100.0/28`; after
/// [`ELEMENT_LIST_MAX`] of them, `and N more`.
pub fn element_list(elements: &[Element]) -> String {
    let mut out = elements
        .iter()
        .take(ELEMENT_LIST_MAX)
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if elements.len() > ELEMENT_LIST_MAX {
        out.push_str(&format!(" and {} more", elements.len() - ELEMENT_LIST_MAX));
    }
    out
}

impl Set {
    /// A plain interval set holding `ranges` (already merged).
    pub fn addresses(name: &str, family: Family, ranges: Vec<AddrRange>) -> Set {
        Set {
            name: name.to_owned(),
            family,
            kind: SetKind::Addresses,
            elements: ranges.into_iter().map(Element::address).collect(),
        }
    }

    /// The set without its elements.
    pub fn clone_empty(&self) -> Set {
        Set {
            name: self.name.clone(),
            family: self.family,
            kind: self.kind,
            elements: Vec::new(),
        }
    }

    /// The address ranges of the elements, in order.
    pub fn ranges(&self) -> impl Iterator<Item = AddrRange> + '_ {
        self.elements.iter().map(|e| e.range)
    }

    /// The element whose range holds `addr`, found by binary search: the elements are
    /// sorted and disjoint, so their ends are sorted too.
    pub fn element_of(&self, addr: IpAddr) -> Option<&Element> {
        let key = AddrRange::from_addr(addr);
        let i = self
            .elements
            .partition_point(|e| (e.range.family, e.range.end) < (key.family, key.start));
        self.elements.get(i).filter(|e| e.range.contains(addr))
    }
}

/// A chain; `base` is set for chains hooked into netfilter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Chain name.
    pub name: String,
    /// Hook, priority and policy of a base chain; `None` for a regular chain.
    pub base: Option<BaseChain>,
    /// Rules in evaluation order.
    pub rules: Vec<Rule>,
}

#[cfg(test)]
impl Chain {
    /// The input base chain (hook input, policy drop) with `rules`, for the unit tests'
    /// hand-built rulesets.
    pub(crate) fn input_dropping(rules: Vec<Rule>) -> Chain {
        Chain {
            name: INPUT_CHAIN.into(),
            base: Some(BaseChain {
                priority: INPUT_PRIORITY,
                policy: Verdict::Drop,
            }),
            rules,
        }
    }

    /// `chain NAME { tcp dport PORT accept }`: a regular chain as a verdict map element
    /// jumps to, for the unit tests' hand-built rulesets.
    pub(crate) fn accepting_tcp_port(name: &str, port: u16) -> Chain {
        Chain {
            name: name.into(),
            base: None,
            rules: vec![Rule {
                matches: vec![Match::Dport(
                    L4Proto::Tcp,
                    PortRange {
                        first: port,
                        last: port,
                    },
                )],
                verdict: Some(Verdict::Accept),
                ..Rule::default()
            }],
        }
    }
}

/// Hook parameters of a base chain. pbxwall only uses hook input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    /// Priority (0 = `filter`).
    pub priority: i32,
    /// Verdict for packets no rule accepted.
    pub policy: Verdict,
}

/// One rule: all matches must hold, then the statements run, then the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    /// Conditions, in order.
    pub matches: Vec<Match>,
    /// Rate-limited log of what reaches this rule.
    pub log: Option<Log>,
    /// Count packets and bytes reaching this rule.
    pub counter: bool,
    /// `ip saddr vmap @MAP` / `ip6 saddr vmap @MAP`: after the matches, jump to the chain
    /// the source address maps to; a source not in the map falls through.
    pub saddr_vmap: Option<(Family, String)>,
    /// Final verdict; `None` falls through to the next rule.
    pub verdict: Option<Verdict>,
}

/// A condition on a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `iif "lo"`: arrived on the loopback interface (ifindex 1 in every namespace).
    Loopback,
    /// `fib saddr type local`: the source address is one of the host's own (a route lookup
    /// of the source finds a local route), IPv4 or IPv6.
    SaddrIsLocal,
    /// `ct state established,related`.
    CtEstablishedRelated,
    /// `ct state invalid`.
    CtInvalid,
    /// `icmp type N` (V4) or `icmpv6 type N` (V6).
    IcmpType(Family, IcmpType),
    /// `tcp dport A-B` / `udp dport A-B` (a single port when `first == last`).
    Dport(L4Proto, PortRange),
    /// `ip saddr @set` / `ip6 saddr @set`.
    SaddrInSet(Family, String),
}

/// Transport protocols a service port can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4Proto {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl L4Proto {
    /// IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            L4Proto::Tcp => libc::IPPROTO_TCP as u8,
            L4Proto::Udp => libc::IPPROTO_UDP as u8,
        }
    }
    /// nft keyword (`tcp`, `udp`).
    pub fn keyword(self) -> &'static str {
        match self {
            L4Proto::Tcp => "tcp",
            L4Proto::Udp => "udp",
        }
    }
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (`>= first`).
    pub last: u16,
}

/// ICMP / ICMPv6 message types the stack needs, with their nft names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpType {
    /// Type number on the wire.
    pub code: u8,
    /// nft's keyword for it.
    pub name: &'static str,
}

/// Rate-limited logging (`limit rate N/minute log prefix "..."`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// Packets per minute logged at most.
    pub per_minute: u32,
    /// Prefix of each log line.
    pub prefix: String,
}

/// Rule verdicts and chain policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let the packet in.
    Accept,
    /// Drop it silently.
    Drop,
}

impl Ruleset {
    /// The set called `name`, if any.
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }

    /// Number of set elements (ranges) in all sets.
    pub fn element_count(&self) -> usize {
        self.sets.iter().map(|s| s.elements.len()).sum()
    }

    /// The chain called `name`, if any.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }
}

impl Ruleset {
    /// Whether a NEW connection from `src` to `proto`/`dport` would be accepted by the input
    /// chain: rules are evaluated in order, as the kernel would for the first packet of a
    /// connection from another machine (arriving on a non-loopback interface, from none of
    /// the host's own addresses: trusted networks, the verdict maps and the chains they jump
    /// to, media ports open to everyone). Used by the SSH lockout guard, to explain what a
    /// ruleset opens, and to tell which running flows lost access
    /// ([`crate::nft::netlink::conntrack`]), once per flow: set lookups are binary searches,
    /// so the cost does not grow with the whitelist.
    pub fn accepts_new(&self, src: IpAddr, proto: L4Proto, dport: u16) -> bool {
        let src = src.to_canonical();
        self.chain(INPUT_CHAIN).is_some_and(|input| {
            let verdict = self.chain_accepts(input, src, proto, dport, 0);
            verdict.or(input.base.map(|b| b.policy)) == Some(Verdict::Accept)
        })
    }

    /// The verdict `chain` reaches for a NEW connection, `None` when it falls off the end.
    /// Jumps are followed (a few levels deep at most: pbxwall's chains jump once).
    fn chain_accepts(
        &self,
        chain: &Chain,
        src: IpAddr,
        proto: L4Proto,
        dport: u16,
        depth: usize,
    ) -> Option<Verdict> {
        for rule in &chain.rules {
            if !rule
                .matches
                .iter()
                .all(|m| self.matches_new(m, src, proto, dport))
            {
                continue;
            }
            if let Some((family, map)) = &rule.saddr_vmap
                && Family::of(src) == *family
                && depth < 4
                && let Some(target) = self
                    .set(map)
                    .and_then(|s| s.element_of(src))
                    .and_then(|e| e.jump.as_deref())
                    .and_then(|name| self.chain(name))
                && let Some(v) = self.chain_accepts(target, src, proto, dport, depth + 1)
            {
                return Some(v);
            }
            if let Some(v) = rule.verdict {
                return Some(v);
            }
        }
        None
    }

    fn matches_new(&self, m: &Match, src: IpAddr, proto: L4Proto, dport: u16) -> bool {
        match m {
            Match::Loopback | Match::CtEstablishedRelated | Match::CtInvalid => false,
            // A connection from another machine: its source is none of the host's own
            // addresses (the host's own connections arrive on lo, accepted first).
            Match::SaddrIsLocal => false,
            Match::IcmpType(..) => false,
            Match::Dport(p, range) => *p == proto && (range.first..=range.last).contains(&dport),
            Match::SaddrInSet(family, name) => {
                Family::of(src) == *family
                    && self.set(name).is_some_and(|s| s.element_of(src).is_some())
            }
        }
    }
}
