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
    /// in a verdict map adjacent ranges jump to different chains. Always empty in a
    /// [`SetKind::Dynamic`] set, whose elements are kernel state (see [`Dynamic`]).
    pub elements: Vec<Element>,
    /// Timeout, size and elements to restore of a [`SetKind::Dynamic`] set; `None` for
    /// every other kind.
    pub dynamic: Option<Dynamic>,
}

/// What a dynamic set (`flags dynamic, timeout`) has beyond its key: its elements are
/// kernel state, added by commands (`pbxwall ban`) or by rules (`add @set { ip saddr }`),
/// each with its own timeout. A full apply keeps them: a live dynamic set with the same
/// key, flags, timeout and size is neither flushed nor re-created, and [`Dynamic::restore`]
/// is added in the same transaction (re-adding a live element changes nothing), so a table
/// created from nothing (boot, a deleted table) gets back what was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dynamic {
    /// The set's default element timeout (`timeout 1h`); `None`: elements added without
    /// one stay until deleted.
    pub timeout: Option<std::time::Duration>,
    /// Maximum number of elements (`size N`); `None`: the kernel's default (a dynamic set
    /// then lists as `size 65535`; any live size is accepted as it).
    pub size: Option<u32>,
    /// Whether the elements come from the configuration (temporary accounts): a full
    /// apply flushes the set and adds [`Dynamic::restore`], the whole list, each element
    /// with the time it has left; nothing is recorded in the state folder.
    pub configured: bool,
    /// Whether the elements are recorded in the state folder and restored (bans,
    /// admissions, grants); `false` for short-lived sets (meters, knock stages).
    pub persist: bool,
    /// Elements added by the apply, with the time each has left; not printed by the
    /// renderer (they are state, not configuration).
    pub restore: Vec<TimedElement>,
}

/// One element of a dynamic set: an address with the time it has left and the comment
/// it carries (nft's element `comment`, element userdata).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimedElement {
    /// The address (a dynamic set holds single addresses).
    pub addr: IpAddr,
    /// The element's timeout: when adding, how long it stays (`None`: the set's default);
    /// when read back, the timeout it was added with.
    pub timeout: Option<std::time::Duration>,
    /// When read back: the time it has left (`None`: it never expires). Ignored when adding.
    pub expires: Option<std::time::Duration>,
    /// Element comment (at most 128 bytes, as nft allows).
    pub comment: Option<String>,
}

impl TimedElement {
    /// An element to add: `addr` for `timeout`, with an optional comment.
    pub fn new(
        addr: IpAddr,
        timeout: Option<std::time::Duration>,
        comment: Option<String>,
    ) -> TimedElement {
        TimedElement {
            addr: addr.to_canonical(),
            timeout,
            expires: None,
            comment,
        }
    }
}

/// Longest element comment (bytes), as nft's `NFT_USERDATA_MAXLEN`-bound comments.
pub const MAX_ELEMENT_COMMENT: usize = 128;

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
    /// `set NAME { type ipv4_addr; flags dynamic,timeout; }`: a hash of single addresses
    /// with timeouts, changed by element operations and by rules (`add @NAME { ip saddr }`);
    /// its elements are kernel state, kept by a full apply (see [`Dynamic`]).
    Dynamic,
}

impl SetKind {
    /// "set" or "map", as nft calls it.
    pub fn noun(self) -> &'static str {
        match self {
            SetKind::Addresses | SetKind::Dynamic => "set",
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
        Set::address_elements(
            name,
            family,
            ranges.into_iter().map(Element::address).collect(),
        )
    }

    /// A plain interval set holding `elements` (plain, sorted, merged), taken as they are.
    pub fn address_elements(name: &str, family: Family, elements: Vec<Element>) -> Set {
        Set {
            name: name.to_owned(),
            family,
            kind: SetKind::Addresses,
            elements,
            dynamic: None,
        }
    }

    /// An empty dynamic set (`flags dynamic,timeout`) of single addresses.
    pub fn dynamic(name: &str, family: Family, dynamic: Dynamic) -> Set {
        Set {
            name: name.to_owned(),
            family,
            kind: SetKind::Dynamic,
            elements: Vec::new(),
            dynamic: Some(dynamic),
        }
    }

    /// The set without its elements.
    pub fn clone_empty(&self) -> Set {
        Set {
            name: self.name.clone(),
            family: self.family,
            kind: self.kind,
            elements: Vec::new(),
            dynamic: self.dynamic.clone(),
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
    /// `add|update|delete @SET { ip saddr ... }`: after the matches and the log, before the
    /// counter, in order. A statement with a limit stops the rule while the source is under
    /// it (so a counter after it counts what is over the limit).
    pub set_updates: Vec<SetUpdate>,
    /// `ip saddr vmap @MAP` / `ip6 saddr vmap @MAP`: after the matches, jump to the chain
    /// the source address maps to; a source not in the map falls through.
    pub saddr_vmap: Option<(Family, String)>,
    /// `jump CHAIN`: after the matches and statements, evaluate the regular chain CHAIN; a
    /// packet it neither accepts nor drops (its `return`, or its end) comes back to the
    /// next rule. Exclusive with `verdict`.
    pub jump: Option<String>,
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
    /// `ct state new`: the first packet of a flow.
    CtNew,
    /// `ct direction reply`: a packet of a flow this host opened (its answers).
    CtReply,
    /// `icmp type N` (V4) or `icmpv6 type N` (V6).
    IcmpType(Family, IcmpType),
    /// `tcp dport A-B` / `udp dport A-B` (a single port when `first == last`).
    Dport(L4Proto, PortRange),
    /// `ip saddr @set` / `ip6 saddr @set`.
    SaddrInSet(Family, String),
    /// `ip saddr != @set` / `ip6 saddr != @set`: a packet of that family whose source is
    /// not in the set.
    SaddrNotInSet(Family, String),
    /// `tcp flags syn / fin,syn,rst,ack`: a TCP packet with SYN set and FIN, RST and ACK
    /// clear: the first packet of a connection attempt (what a TCP knock sends).
    TcpSyn,
    /// `tcp dport != P` / `udp dport != P`: that protocol, to any port but `P`.
    DportNot(L4Proto, u16),
    /// `@ih,OFFSET,LEN 0xDATA`: raw bytes of the transport payload (after the TCP or UDP
    /// header) at byte `offset` equal `data`, 1 to 16 bytes (one register: the kernel
    /// refuses longer loads). A longer prefix is several of these.
    Payload {
        /// Byte offset from the start of the transport payload.
        offset: u32,
        /// The bytes, 1 to [`MAX_PAYLOAD_MATCH`].
        data: Vec<u8>,
    },
}

/// Most bytes one [`Match::Payload`] compares: one 128-bit register.
pub const MAX_PAYLOAD_MATCH: usize = 16;

impl Match {
    /// `@ih` matches for a prefix of the transport payload: [`MAX_PAYLOAD_MATCH`] bytes
    /// each, from byte 0 on. Empty for an empty prefix.
    pub fn payload_prefix(prefix: &[u8]) -> Vec<Match> {
        prefix
            .chunks(MAX_PAYLOAD_MATCH)
            .enumerate()
            .map(|(i, chunk)| Match::Payload {
                offset: (i * MAX_PAYLOAD_MATCH) as u32,
                data: chunk.to_vec(),
            })
            .collect()
    }
}

/// A statement that changes a dynamic set from a rule: `add @SET { ip saddr }` and its
/// forms (nft's dynset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetUpdate {
    /// Add (a live element keeps its expiry), update (a live element's timeout starts
    /// again) or delete.
    pub op: SetOp,
    /// Key: the packet's source address of this family (the rule applies to this family's
    /// packets only).
    pub family: Family,
    /// The dynamic set.
    pub set: String,
    /// Timeout of the added or updated element (`None`: the set's default).
    pub timeout: Option<std::time::Duration>,
    /// `limit rate over N/UNIT burst B packets` kept per element: a meter. The statement
    /// (and so the rule) continues only while the element's source is over the rate.
    pub limit: Option<RateLimit>,
}

/// What a [`SetUpdate`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOp {
    /// `add @SET { ... }` (`NFT_DYNSET_OP_ADD`).
    Add,
    /// `update @SET { ... }` (`NFT_DYNSET_OP_UPDATE`): refreshes a live element's timeout.
    Update,
    /// `delete @SET { ... }` (`NFT_DYNSET_OP_DELETE`).
    Delete,
}

/// A packet rate: `N/second|minute|hour|day` with a burst, matched when exceeded
/// (`limit rate over`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Packets per unit.
    pub rate: u32,
    /// Seconds per unit: 1, 60, 3600 or 86400.
    pub unit_secs: u64,
    /// Packets allowed above the rate in a burst.
    pub burst: u32,
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
    /// Leave a regular chain: back to the rule after the jump.
    Return,
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
            let verdict = verdict.filter(|v| *v != Verdict::Return);
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
            // A meter stops the rule while the source is under its rate: a new connection
            // is taken as being under it.
            if rule.set_updates.iter().any(|u| u.limit.is_some()) {
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
            if let Some(target) = rule.jump.as_deref().and_then(|name| self.chain(name))
                && depth < 4
            {
                match self.chain_accepts(target, src, proto, dport, depth + 1) {
                    Some(Verdict::Return) | None => continue,
                    Some(v) => return Some(v),
                }
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
            Match::CtNew => true,
            Match::CtReply => false,
            // A connection from another machine: its source is none of the host's own
            // addresses (the host's own connections arrive on lo, accepted first).
            Match::SaddrIsLocal => false,
            Match::IcmpType(..) => false,
            Match::Dport(p, range) => *p == proto && (range.first..=range.last).contains(&dport),
            // The first packet of a new TCP connection is a SYN.
            Match::TcpSyn => proto == L4Proto::Tcp,
            Match::DportNot(p, port) => *p == proto && dport != *port,
            // A dynamic set's elements are kernel state; those known (the elements to restore,
            // filled from the live set and the record before an apply) count.
            Match::SaddrInSet(family, name) => {
                Family::of(src) == *family
                    && self.set(name).is_some_and(|s| {
                        s.element_of(src).is_some()
                            || s.dynamic
                                .as_ref()
                                .is_some_and(|d| d.restore.iter().any(|e| e.addr == src))
                    })
            }
            // Only the geo gate's sets are looked up negated; they hold no dynamic elements.
            Match::SaddrNotInSet(family, name) => {
                Family::of(src) == *family
                    && self.set(name).is_none_or(|s| s.element_of(src).is_none())
            }
            // The content of a packet is not known here: a rule that needs some is not
            // taken as accepting a new connection.
            Match::Payload { .. } => false,
        }
    }
}
