//! The files against the kernel: what differs between the table `restart` would apply (the
//! IR, [`Ruleset`]) and the table that is live ([`LiveTable`]).
//!
//! `status` reports every difference as drift; `ipchecker` updates set elements in place
//! when they are the only difference and applies the whole table otherwise. Both call
//! [`diff`], so they agree on what counts as a difference.
//!
//! Compared is everything that decides what a packet meets:
//!
//! - the table's flags (every apply sets them to none; a dormant table evaluates none of
//!   its chains),
//! - the sets and maps: which exist, their key type and kind (interval set, interval
//!   verdict map, host verdict map), and their elements,
//! - the chains: which exist, regular or base, and for a base chain its type, hook,
//!   priority and policy,
//! - every chain's rules, in order, by content. The kernel gives rules back as expressions,
//!   not as the IR, so both sides are compared as fingerprints: the expressions printed by
//!   libnftnl ([`crate::nft::netlink::rule_fingerprints`] for the IR, [`LiveChain::rules`]
//!   for the kernel).
//!
//! Nothing here talks to the kernel or to libnftnl: the live table and the fingerprints of
//! the wanted rules come in as plain values, so every kind of difference is unit-tested on
//! hand-built tables, without root.

use std::fmt;

use crate::addrset::Family;
use crate::nft::netlink::{LiveChain, LiveHook, LiveSet, LiveTable, NetlinkError, SetChange};
use crate::ruleset::{
    BaseChain, Chain, Element, Ruleset, Set, SetKind, TABLE_NAME, Verdict, element_changes,
    element_list,
};

/// Netfilter hook of pbxwall's base chain: `NF_INET_LOCAL_IN`, nft's `hook input`.
pub const BASE_CHAIN_HOOK: u32 = libc::NF_INET_LOCAL_IN as u32;
/// Type of pbxwall's base chain.
pub const BASE_CHAIN_TYPE: &str = "filter";

/// `NFT_TABLE_F_DORMANT`: the table is loaded but the kernel evaluates none of its chains.
const TABLE_F_DORMANT: u32 = 0x1;
/// `NFT_TABLE_F_OWNER`: the table belongs to one netlink socket and goes away with it.
const TABLE_F_OWNER: u32 = 0x2;
/// `NFT_TABLE_F_PERSIST`: an owned table stays when its owner goes away.
const TABLE_F_PERSIST: u32 = 0x4;

/// Fingerprints of the rules a ruleset adds: per IR chain, in IR order, one line per rule,
/// as [`crate::nft::netlink::rule_fingerprints`] returns them.
pub type RuleFingerprints = [(String, Vec<String>)];

/// Everything that differs between the wanted table and the live one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableDiff {
    /// The table is not loaded at all (the other fields are then empty).
    pub missing: bool,
    /// Differences of the table, its sets and chains, and its rules: all but set elements,
    /// in order (table, sets in IR order, sets pbxwall does not have, chains in IR order,
    /// chains pbxwall does not have).
    pub structure: Vec<Difference>,
    /// Element changes of the sets both sides have, in IR order; only sets whose elements
    /// differ.
    pub elements: Vec<SetElements>,
}

impl TableDiff {
    /// Whether the live table is exactly what would be applied.
    pub fn is_in_sync(&self) -> bool {
        !self.missing && self.structure.is_empty() && self.elements.is_empty()
    }

    /// Whether only set elements differ (at least one): updating those elements makes the
    /// live table what would be applied, no full apply needed.
    pub fn elements_only(&self) -> bool {
        !self.missing && self.structure.is_empty() && !self.elements.is_empty()
    }

    /// One line per difference, as `status` reports drift: the table's and the sets'
    /// differences, then the element changes, then the chains' differences.
    pub fn lines(&self) -> Vec<String> {
        if self.missing {
            return vec![format!("table inet {TABLE_NAME} is not loaded")];
        }
        let (chains, table_and_sets): (Vec<&Difference>, Vec<&Difference>) =
            self.structure.iter().partition(|d| d.chain().is_some());
        table_and_sets
            .iter()
            .map(|d| d.to_string())
            .chain(self.elements.iter().flat_map(SetElements::drift_lines))
            .chain(chains.iter().map(|d| d.to_string()))
            .collect()
    }
}

/// One difference other than set elements. `Display` names it in one line, saying what is
/// live and what pbxwall wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// libnftnl could not build the wanted rules, so their content was not compared (only
    /// their number).
    RulesNotCompared {
        /// Why, with its causes.
        reason: String,
    },
    /// The table has flags; pbxwall wants none.
    TableFlags {
        /// The live flags.
        live: u32,
    },
    /// A set or map of the IR is not live.
    SetMissing {
        /// Its name.
        set: String,
        /// Its kind.
        kind: SetKind,
    },
    /// A live set or map is not in the IR.
    SetExtra {
        /// Its name.
        set: String,
    },
    /// A set or map of the IR is live with another key type or kind.
    SetType {
        /// Its name.
        set: String,
        /// The IR's key family.
        family: Family,
        /// The IR's kind.
        kind: SetKind,
        /// The live key family (`None`: not an address of either family).
        live_family: Option<Family>,
        /// The live kind (`None`: other flags or data than pbxwall's kinds).
        live_kind: Option<SetKind>,
    },
    /// A dynamic set is live with another default timeout or size.
    SetLimits {
        /// Its name.
        set: String,
        /// Live `(timeout in ms, size)`.
        live: (Option<u64>, Option<u32>),
        /// The IR's `(timeout in ms, size)`.
        want: (Option<u64>, Option<u32>),
    },
    /// A chain of the IR is not live.
    ChainMissing {
        /// Its name.
        chain: String,
    },
    /// A live chain is not in the IR.
    ChainExtra {
        /// Its name.
        chain: String,
    },
    /// A base chain of the IR is live as a regular chain.
    ChainNotBase {
        /// Its name.
        chain: String,
    },
    /// A regular chain of the IR is live as a base chain.
    ChainIsBase {
        /// Its name.
        chain: String,
        /// The live hook number.
        live_hook: u32,
    },
    /// A base chain is live with another type than `filter`.
    ChainType {
        /// Its name.
        chain: String,
        /// The live type.
        live: String,
    },
    /// A base chain is live on another hook than input.
    ChainHook {
        /// Its name.
        chain: String,
        /// The live hook number.
        live: u32,
    },
    /// A base chain is live with another priority.
    ChainPriority {
        /// Its name.
        chain: String,
        /// The live priority.
        live: i32,
        /// The IR's priority.
        want: i32,
    },
    /// A base chain is live with another policy.
    ChainPolicy {
        /// Its name.
        chain: String,
        /// The live policy (`None`: neither accept nor drop).
        live: Option<Verdict>,
        /// The IR's policy.
        want: Verdict,
    },
    /// A chain has more or fewer rules live than the IR: rules added or removed.
    RuleCount {
        /// The chain.
        chain: String,
        /// Rules live.
        live: usize,
        /// Rules in the IR.
        want: usize,
    },
    /// A chain has as many rules live as the IR, but the one at `position` is another:
    /// replaced in place.
    RuleDiffers {
        /// The chain.
        chain: String,
        /// Position in the chain, from 1.
        position: usize,
        /// The IR's rule there, as nft text.
        want: String,
    },
}

impl Difference {
    /// The chain this difference is about, if it is about a chain or its rules.
    pub fn chain(&self) -> Option<&str> {
        match self {
            Difference::ChainMissing { chain }
            | Difference::ChainExtra { chain }
            | Difference::ChainNotBase { chain }
            | Difference::ChainIsBase { chain, .. }
            | Difference::ChainType { chain, .. }
            | Difference::ChainHook { chain, .. }
            | Difference::ChainPriority { chain, .. }
            | Difference::ChainPolicy { chain, .. }
            | Difference::RuleCount { chain, .. }
            | Difference::RuleDiffers { chain, .. } => Some(chain),
            Difference::RulesNotCompared { .. }
            | Difference::TableFlags { .. }
            | Difference::SetLimits { .. }
            | Difference::SetMissing { .. }
            | Difference::SetExtra { .. }
            | Difference::SetType { .. } => None,
        }
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::RulesNotCompared { reason } => {
                write!(f, "cannot compare rules: {reason}")
            }
            Difference::TableFlags { live } => write!(
                f,
                "table flags {live:#x} ({}), want 0",
                table_flag_names(*live)
            ),
            Difference::SetMissing { set, kind } => write!(f, "{} {set} is missing", kind.noun()),
            Difference::SetExtra { set } => write!(f, "set {set} is not pbxwall's"),
            Difference::SetType {
                set,
                family,
                kind,
                live_family,
                live_kind,
            } => write!(
                f,
                "{} {set}: {}, want {}",
                kind.noun(),
                set_type(*live_kind, *live_family),
                set_type(Some(*kind), Some(*family))
            ),
            Difference::SetLimits { set, live, want } => {
                let text = |(t, n): (Option<u64>, Option<u32>)| {
                    format!(
                        "timeout {}, size {}",
                        t.map_or("none".into(), |ms| format!("{ms} ms")),
                        n.map_or("none".into(), |n| n.to_string())
                    )
                };
                write!(f, "set {set}: {}, want {}", text(*live), text(*want))
            }
            Difference::ChainMissing { chain } => write!(f, "chain {chain} is missing"),
            Difference::ChainExtra { chain } => write!(f, "chain {chain} is not pbxwall's"),
            Difference::ChainNotBase { chain } => write!(
                f,
                "chain {chain}: a regular chain, want a base chain (hook {})",
                hook_name(BASE_CHAIN_HOOK)
            ),
            Difference::ChainIsBase { chain, live_hook } => write!(
                f,
                "chain {chain}: a base chain (hook {}), want a regular chain",
                hook_name(*live_hook)
            ),
            Difference::ChainType { chain, live } => {
                write!(f, "chain {chain}: type {live}, want {BASE_CHAIN_TYPE}")
            }
            Difference::ChainHook { chain, live } => write!(
                f,
                "chain {chain}: hook {}, want {}",
                hook_name(*live),
                hook_name(BASE_CHAIN_HOOK)
            ),
            Difference::ChainPriority { chain, live, want } => {
                write!(f, "chain {chain}: priority {live}, want {want}")
            }
            Difference::ChainPolicy { chain, live, want } => write!(
                f,
                "chain {chain}: policy is {}, expected {want}",
                live.map_or("none".to_owned(), |p| p.to_string())
            ),
            Difference::RuleCount { chain, live, want } => write!(
                f,
                "chain {chain}: {live} rules, expected {want} (rules added or removed behind \
                 pbxwall's back)"
            ),
            Difference::RuleDiffers {
                chain,
                position,
                want,
            } => write!(
                f,
                "chain {chain}: rule {position} differs from what pbxwall applied ({want})"
            ),
        }
    }
}

/// The element changes of one set or map that turn the live elements into the IR's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetElements {
    /// The set's name.
    pub set: String,
    /// Its key family.
    pub family: Family,
    /// Its kind.
    pub kind: SetKind,
    /// Elements the IR has and the kernel lacks, sorted.
    pub add: Vec<Element>,
    /// Elements the kernel has and the IR does not, sorted, exactly as they are live.
    pub remove: Vec<Element>,
}

impl SetElements {
    /// The change for [`crate::nft::netlink::update_sets`].
    pub fn change(&self) -> SetChange<'_> {
        SetChange {
            set: &self.set,
            family: self.family,
            kind: self.kind,
            remove: &self.remove,
            add: &self.add,
        }
    }

    /// As drift, one line for what the kernel lacks and one for what it has too many:
    /// `map hosts_v4: missing 192.0.2.1 : jump allow_ssh`, `map hosts_v4: extra ...`.
    pub fn drift_lines(&self) -> Vec<String> {
        let noun = self.kind.noun();
        let mut out = Vec::new();
        if !self.add.is_empty() {
            out.push(format!(
                "{noun} {}: missing {}",
                self.set,
                element_list(&self.add)
            ));
        }
        if !self.remove.is_empty() {
            out.push(format!(
                "{noun} {}: extra {}",
                self.set,
                element_list(&self.remove)
            ));
        }
        out
    }

    /// As an update made: `map hosts_v4: added A; removed B` (either part alone when the
    /// other is empty).
    pub fn update_line(&self) -> String {
        let (noun, set) = (self.kind.noun(), &self.set);
        match (self.add.is_empty(), self.remove.is_empty()) {
            (false, false) => format!(
                "{noun} {set}: added {}; removed {}",
                element_list(&self.add),
                element_list(&self.remove)
            ),
            (false, true) => format!("{noun} {set}: added {}", element_list(&self.add)),
            _ => format!("{noun} {set}: removed {}", element_list(&self.remove)),
        }
    }
}

/// What differs between `want` and `live` (`None`: the table is not loaded).
///
/// `want_rules` are the fingerprints of `want`'s rules, or the error libnftnl gave building
/// them: then only the number of rules per chain is compared, and
/// [`Difference::RulesNotCompared`] says so.
pub fn diff(
    want: &Ruleset,
    want_rules: Result<&RuleFingerprints, &NetlinkError>,
    live: Option<&LiveTable>,
) -> TableDiff {
    let Some(live) = live else {
        return TableDiff {
            missing: true,
            ..TableDiff::default()
        };
    };
    let mut d = TableDiff::default();
    let want_rules = match want_rules {
        Ok(rules) => rules,
        Err(e) => {
            d.structure.push(Difference::RulesNotCompared {
                reason: crate::error_chain(e),
            });
            &[]
        }
    };
    if live.flags != 0 {
        d.structure
            .push(Difference::TableFlags { live: live.flags });
    }
    for set in &want.sets {
        match live.sets.iter().find(|s| s.name == set.name) {
            None => d.structure.push(Difference::SetMissing {
                set: set.name.clone(),
                kind: set.kind,
            }),
            Some(have) => compare_set(set, have, &mut d),
        }
    }
    for have in &live.sets {
        if want.set(&have.name).is_none() {
            d.structure.push(Difference::SetExtra {
                set: have.name.clone(),
            });
        }
    }
    for chain in &want.chains {
        match live.chains.iter().find(|c| c.name == chain.name) {
            None => d.structure.push(Difference::ChainMissing {
                chain: chain.name.clone(),
            }),
            Some(have) => {
                let fingerprints = want_rules
                    .iter()
                    .find(|(name, _)| *name == chain.name)
                    .map(|(_, rules)| rules.as_slice());
                compare_chain(chain, fingerprints, have, &mut d.structure);
            }
        }
    }
    for have in &live.chains {
        if want.chain(&have.name).is_none() {
            d.structure.push(Difference::ChainExtra {
                chain: have.name.clone(),
            });
        }
    }
    d
}

/// A set both sides have: its key type and kind, then its elements.
fn compare_set(set: &Set, have: &LiveSet, d: &mut TableDiff) {
    if have.kind != Some(set.kind) || have.family != Some(set.family) {
        d.structure.push(Difference::SetType {
            set: set.name.clone(),
            family: set.family,
            kind: set.kind,
            live_family: have.family,
            live_kind: have.kind,
        });
    }
    // A dynamic set's elements are kernel state (bans, admissions, grants): only the set
    // itself is compared.
    if let Some(dynamic) = &set.dynamic {
        let want = (dynamic.timeout.map(|t| t.as_millis() as u64), dynamic.size);
        // No size wanted: the kernel's default, whatever it lists.
        let live = (
            have.timeout_ms,
            have.size.filter(|_| dynamic.size.is_some()),
        );
        if have.kind == Some(SetKind::Dynamic) && live != want {
            d.structure.push(Difference::SetLimits {
                set: set.name.clone(),
                live,
                want,
            });
        }
        return;
    }
    // Sets whose elements are not read back (the geo gate's) are compared by type only.
    if !crate::nft::netlink::dumps_elements(&set.name) {
        return;
    }
    let (add, remove) = element_changes(&set.elements, &have.elements);
    if !add.is_empty() || !remove.is_empty() {
        d.elements.push(SetElements {
            set: set.name.clone(),
            family: set.family,
            kind: set.kind,
            add,
            remove,
        });
    }
}

/// A chain both sides have: regular or base, the base chain's hook parameters, its rules.
fn compare_chain(
    chain: &Chain,
    fingerprints: Option<&[String]>,
    have: &LiveChain,
    out: &mut Vec<Difference>,
) {
    let name = || chain.name.clone();
    match (&chain.base, &have.base) {
        (Some(base), Some(hook)) => compare_hook(&chain.name, base, hook, out),
        (Some(_), None) => out.push(Difference::ChainNotBase { chain: name() }),
        (None, Some(hook)) => out.push(Difference::ChainIsBase {
            chain: name(),
            live_hook: hook.hook,
        }),
        (None, None) => {}
    }
    if have.rules.len() != chain.rules.len() {
        out.push(Difference::RuleCount {
            chain: name(),
            live: have.rules.len(),
            want: chain.rules.len(),
        });
        return;
    }
    let Some(fingerprints) = fingerprints else {
        return;
    };
    for (i, (want, live)) in fingerprints.iter().zip(&have.rules).enumerate() {
        if want != live {
            out.push(Difference::RuleDiffers {
                chain: name(),
                position: i + 1,
                want: chain
                    .rules
                    .get(i)
                    .map(|r| r.to_string())
                    .unwrap_or_default(),
            });
        }
    }
}

/// Type, hook, priority and policy of a base chain both sides have as one.
fn compare_hook(chain: &str, want: &BaseChain, have: &LiveHook, out: &mut Vec<Difference>) {
    let chain = chain.to_owned();
    if have.chain_type != BASE_CHAIN_TYPE {
        out.push(Difference::ChainType {
            chain: chain.clone(),
            live: have.chain_type.clone(),
        });
    }
    if have.hook != BASE_CHAIN_HOOK {
        out.push(Difference::ChainHook {
            chain: chain.clone(),
            live: have.hook,
        });
    }
    if have.priority != want.priority {
        out.push(Difference::ChainPriority {
            chain: chain.clone(),
            live: have.priority,
            want: want.priority,
        });
    }
    if have.policy != Some(want.policy) {
        out.push(Difference::ChainPolicy {
            chain,
            live: have.policy,
            want: want.policy,
        });
    }
}

/// Names of table flags: `dormant`, `owner`, `persist`, and any other bits in hex.
fn table_flag_names(flags: u32) -> String {
    let mut names = Vec::new();
    let mut rest = flags;
    for (bit, name) in [
        (TABLE_F_DORMANT, "dormant"),
        (TABLE_F_OWNER, "owner"),
        (TABLE_F_PERSIST, "persist"),
    ] {
        if flags & bit != 0 {
            names.push(name.to_owned());
            rest &= !bit;
        }
    }
    if rest != 0 {
        names.push(format!("unknown {rest:#x}"));
    }
    names.join(", ")
}

/// nft's name of an inet hook number (`input` for 1), or the number.
fn hook_name(hook: u32) -> String {
    let name = match hook as i32 {
        libc::NF_INET_PRE_ROUTING => "prerouting",
        libc::NF_INET_LOCAL_IN => "input",
        libc::NF_INET_FORWARD => "forward",
        libc::NF_INET_LOCAL_OUT => "output",
        libc::NF_INET_POST_ROUTING => "postrouting",
        libc::NF_INET_INGRESS => "ingress",
        _ => return hook.to_string(),
    };
    name.to_owned()
}

/// A set's key type and kind in words: `interval map of ipv4_addr to verdicts`.
fn set_type(kind: Option<SetKind>, family: Option<Family>) -> String {
    let key = match family {
        Some(Family::V4) => "ipv4_addr",
        Some(Family::V6) => "ipv6_addr",
        None => "another key type",
    };
    match kind {
        Some(SetKind::Addresses) => format!("interval set of {key}"),
        Some(SetKind::VerdictMap) => format!("interval map of {key} to verdicts"),
        Some(SetKind::HostMap) => format!("map of {key} to verdicts"),
        Some(SetKind::Dynamic) => format!("dynamic set of {key} with timeouts"),
        None => format!("set of {key} with other flags or data"),
    }
}

#[cfg(test)]
mod tests;
