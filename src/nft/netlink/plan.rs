//! The apply plan: the IR checked once (every name a C string, every element a valid range
//! of its set, every set numbered for the batch), and the replace batch built from it as a
//! list of named steps.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;

use nftnl::nftnl_sys as attr;

use super::elements::{
    ElemOp, ElementsOf, JumpNames, SET_UDATA_KEY_BIG_ENDIAN, VERDICT_DATA_LEN, add_elements,
    add_timed_elements, check_elements, check_timed, data_type, key_of, set_flags, set_identity,
};
use super::expr::{WireRule, fingerprint, nf_verdict};
use super::read::{SnapChain, Snapshot};
use super::sys::{Batch, NfChain, NfRule, NfSet, NfTable, Obj};
use super::{NFPROTO_INET, NetlinkError, Result, cstring};
use crate::ruleset::{self, Rule, Ruleset, SetKind, TABLE_NAME};

/// The IR ready to send: what [`super::apply`] and [`super::rule_fingerprints`] build
/// messages from, with nothing left to fail.
pub(super) struct Plan<'a> {
    table: CString,
    sets: Vec<PlanSet<'a>>,
    chains: Vec<PlanChain<'a>>,
    /// The chains the map elements jump to.
    jumps: JumpNames,
}

/// A set of the IR, named and numbered.
struct PlanSet<'a> {
    ir: &'a ruleset::Set,
    name: CString,
    /// `NFTNL_SET_ID`: lets rules and elements find the set when it is created in the same
    /// batch (from 1, in IR order).
    id: u32,
}

/// A chain of the IR with its rules ready to encode.
struct PlanChain<'a> {
    ir: &'a ruleset::Chain,
    name: CString,
    /// One per rule of `ir`, in order.
    rules: Vec<WireRule>,
}

impl<'a> Plan<'a> {
    /// Checks the IR: set elements and every name the batch sends. The first problem is
    /// the error, naming its object (sets first, then chain names, then rules).
    pub(super) fn new(ruleset: &'a Ruleset) -> Result<Plan<'a>> {
        let table = cstring(TABLE_NAME, "table")?;
        let mut sets = Vec::with_capacity(ruleset.sets.len());
        let mut set_ids = HashMap::new();
        let mut jumps = JumpNames::default();
        for (i, set) in ruleset.sets.iter().enumerate() {
            let what = format!("set {}", set.name);
            check_elements(&what, set.family, set.kind, &set.elements)?;
            if (set.kind == SetKind::Dynamic) != set.dynamic.is_some() {
                return Err(NetlinkError::Invalid {
                    what,
                    reason: "only a dynamic set has a timeout, a size and elements to restore"
                        .into(),
                });
            }
            if let Some(d) = &set.dynamic {
                check_timed(&what, set.family, &d.restore)?;
            }
            jumps.add(&set.elements)?;
            let id = i as u32 + 1;
            sets.push(PlanSet {
                ir: set,
                name: cstring(&set.name, &what)?,
                id,
            });
            set_ids.insert(set.name.as_str(), id);
        }
        let names = ruleset
            .chains
            .iter()
            .map(|c| cstring(&c.name, &format!("chain {}", c.name)))
            .collect::<Result<Vec<_>>>()?;
        let mut chains = Vec::with_capacity(ruleset.chains.len());
        for (chain, name) in ruleset.chains.iter().zip(names) {
            let rules = chain
                .rules
                .iter()
                .enumerate()
                .map(|(i, rule)| WireRule::new(rule, &set_ids, || rule_what(&chain.name, i, rule)))
                .collect::<Result<_>>()?;
            chains.push(PlanChain {
                ir: chain,
                name,
                rules,
            });
        }
        Ok(Plan {
            table,
            sets,
            chains,
            jumps,
        })
    }

    /// Content fingerprints of the plan's rules, per chain (see [`super::rule_fingerprints`]).
    pub(super) fn rule_fingerprints(&self) -> Vec<(String, Vec<String>)> {
        self.chains
            .iter()
            .map(|chain| {
                let rules = chain
                    .rules
                    .iter()
                    .map(|rule| fingerprint(&mut rule.build(&self.table, &chain.name)))
                    .collect();
                (chain.ir.name.clone(), rules)
            })
            .collect()
    }

    /// The whole replace batch, given what is live (`None`: no table), numbered from
    /// `first_seq`, refused by the kernel if nf_tables is no longer at generation `genid`.
    ///
    /// One step per concern, in the order the kernel needs them: what holds a reference
    /// goes before what it refers to when deleting, and after it when adding.
    pub(super) fn batch(&self, live: Option<&Snapshot>, genid: u32, first_seq: u32) -> Batch {
        let mut b = ReplaceBatch {
            plan: self,
            kept: kept_sets(self, live),
            live,
            batch: Batch::new(first_seq, Some(genid)),
        };
        b.add_table();
        b.flush_rules();
        b.empty_or_drop_live_sets();
        b.drop_stale_chains();
        b.add_chains();
        b.add_new_sets();
        b.add_rules();
        b.add_elements();
        b.batch.finish()
    }
}

/// The live sets the IR has with the same key, flags and data (and for a dynamic set the
/// same timeout and size): flushed and refilled in place rather than deleted and
/// re-created; a kept dynamic set is not even flushed (its elements are kernel state). A re-created interval set made the kernel
/// drop packets of whitelisted sources for a moment during the commit (about one packet
/// per restart under a flood, measured by `tests/torture.rs`); flush and refill drops none.
fn kept_sets<'l>(plan: &Plan<'_>, live: Option<&'l Snapshot>) -> HashSet<&'l str> {
    live.map(|l| {
        l.sets
            .iter()
            .filter(|ls| {
                plan.sets.iter().any(|s| {
                    let s = s.ir;
                    s.name == ls.name
                        && ls.key == Some((s.family, key_of(s.family).1))
                        && ls.flags == Some(set_flags(s.kind))
                        && ls.data_type == data_type(s.kind)
                        && s.dynamic.as_ref().is_none_or(|d| {
                            ls.timeout_ms == d.timeout.map(|t| t.as_millis() as u64)
                                && (d.size.is_none() || ls.size == d.size)
                        })
                })
            })
            .map(|ls| ls.name.as_str())
            .collect()
    })
    .unwrap_or_default()
}

/// Whether the live chain is the IR chain's base chain with the same hook, priority and
/// type, so it can be updated in place (only the policy may differ).
fn base_matches(chain: &ruleset::Chain, live: &SnapChain) -> bool {
    match (&chain.base, &live.base) {
        (Some(b), Some(l)) => {
            l.hook == libc::NF_INET_LOCAL_IN as u32
                && l.priority == b.priority
                && l.chain_type == "filter"
        }
        _ => false,
    }
}

/// "rule 3 of chain input (udp dport 5060 ip saddr @x accept)": names a rule in errors, with
/// the rule's nft text (its `Display`, the text `render` prints).
fn rule_what(chain: &str, index: usize, rule: &Rule) -> String {
    format!("rule {} of chain {chain} ({rule})", index + 1)
}

/// The replace batch under construction: one method per step of [`Plan::batch`].
struct ReplaceBatch<'p, 'a> {
    plan: &'p Plan<'a>,
    live: Option<&'p Snapshot>,
    /// Names of the live sets that stay (see [`kept_sets`]).
    kept: HashSet<&'p str>,
    batch: Batch,
}

impl ReplaceBatch<'_, '_> {
    fn tname() -> String {
        format!("table inet {TABLE_NAME}")
    }

    /// `add table inet pbxwall`: idempotent, and first, since everything else lives in it.
    /// The table is never deleted: that would take the base chain with it.
    ///
    /// The message always carries `NFTA_TABLE_FLAGS` = 0: for a live table the kernel then
    /// updates its flags to none, which wakes a table someone made dormant (`nft add table
    /// inet pbxwall '{ flags dormant; }'` unhooks every chain: the firewall is off). Without
    /// the attribute the kernel leaves the flags as they are, and every apply would load the
    /// rules into a table that evaluates none of them.
    fn add_table(&mut self) {
        let mut table = NfTable::new();
        table.set_u32(attr::NFTNL_TABLE_FAMILY, NFPROTO_INET.into());
        table.set_str(attr::NFTNL_TABLE_NAME, &self.plan.table);
        table.set_u32(attr::NFTNL_TABLE_FLAGS, 0);
        self.batch.add(
            libc::NFT_MSG_NEWTABLE,
            libc::NLM_F_CREATE,
            Obj::Table(&table),
            Self::tname,
        );
    }

    /// `flush table inet pbxwall` (DELRULE with only the table): every rule goes, before
    /// any set or chain is touched, since rules look sets up and live in chains. The base
    /// chain stays hooked, with no rules and its drop policy, until the commit brings the
    /// new rules: nothing gets in meanwhile.
    fn flush_rules(&mut self) {
        if self.live.is_none() {
            return;
        }
        let mut flush = NfRule::new();
        flush.set_u32(attr::NFTNL_RULE_FAMILY, NFPROTO_INET.into());
        flush.set_str(attr::NFTNL_RULE_TABLE, &self.plan.table);
        self.batch
            .add(libc::NFT_MSG_DELRULE, 0, Obj::Rule(&flush), || {
                format!("flush of the rules of {}", Self::tname())
            });
    }

    /// Per live set, in the kernel's order: `flush set` for a set that stays (refilled
    /// below, in the same transaction); `flush map` then `delete map` for a map that goes
    /// (its elements' jumps hold the chains, which older kernels then refuse to delete);
    /// `delete set` for any other set that goes. Before the chains are deleted, for the
    /// same reason: map elements hold references to the chains they jump to.
    fn empty_or_drop_live_sets(&mut self) {
        let Some(live) = self.live else {
            return;
        };
        for ls in &live.sets {
            let mut s = NfSet::new();
            set_identity(&mut s, &self.plan.table, &ls.cname, None);
            let keep = self.kept.contains(ls.name.as_str());
            let is_map = ls.flags.is_some_and(|f| f & libc::NFT_SET_MAP as u32 != 0);
            let dynamic = ls.flags == Some(set_flags(SetKind::Dynamic));
            // A dynamic set whose elements are configuration is refilled like any set.
            let configured = self.plan.sets.iter().any(|p| {
                p.ir.name == ls.name && p.ir.dynamic.as_ref().is_some_and(|d| d.configured)
            });
            if (keep && (!dynamic || configured)) || is_map {
                // nft: flush set inet pbxwall NAME
                self.batch
                    .add(libc::NFT_MSG_DELSETELEM, 0, Obj::SetElemsOf(&s), || {
                        format!("flush of set {}", ls.name)
                    });
            }
            if !keep {
                // nft: delete set inet pbxwall NAME
                self.batch.add(libc::NFT_MSG_DELSET, 0, Obj::Set(&s), || {
                    format!("deletion of old set {}", ls.name)
                });
            }
        }
    }

    /// `delete chain inet pbxwall NAME` for every live chain the IR does not have, by name
    /// and kind: a regular chain that stays keeps its handle (its rules went with the
    /// flush). A base chain stays only with the same hook, priority and type: re-adding it
    /// with another hook or priority is refused (`EOPNOTSUPP`), while the policy is updated
    /// in place by [`Self::add_chains`].
    fn drop_stale_chains(&mut self) {
        let Some(live) = self.live else {
            return;
        };
        for lc in &live.chains {
            let keep = self.plan.chains.iter().any(|c| {
                c.ir.name == lc.name
                    && match c.ir.base {
                        Some(_) => base_matches(c.ir, lc),
                        None => lc.base.is_none(),
                    }
            });
            if keep {
                continue;
            }
            let mut c = NfChain::new();
            c.set_u32(attr::NFTNL_CHAIN_FAMILY, NFPROTO_INET.into());
            c.set_str(attr::NFTNL_CHAIN_TABLE, &self.plan.table);
            c.set_str(attr::NFTNL_CHAIN_NAME, &lc.cname);
            self.batch
                .add(libc::NFT_MSG_DELCHAIN, 0, Obj::Chain(&c), || {
                    format!("deletion of old chain {}", lc.name)
                });
        }
    }

    /// `add chain inet pbxwall input { type filter hook input priority P; policy V; }` and
    /// `add chain inet pbxwall NAME` for every chain: idempotent for chains that stay, so
    /// the base chain is updated in place and never deleted and re-created. A re-created
    /// base chain is hooked with policy accept until the commit reaches its drop policy,
    /// while the old one is already unhooked: packets would get through. Before sets and
    /// rules, which refer to chains (map elements jump to them, rules live in them).
    fn add_chains(&mut self) {
        for chain in &self.plan.chains {
            let mut c = NfChain::new();
            c.set_u32(attr::NFTNL_CHAIN_FAMILY, NFPROTO_INET.into());
            c.set_str(attr::NFTNL_CHAIN_TABLE, &self.plan.table);
            c.set_str(attr::NFTNL_CHAIN_NAME, &chain.name);
            if let Some(base) = &chain.ir.base {
                c.set_u32(attr::NFTNL_CHAIN_HOOKNUM, libc::NF_INET_LOCAL_IN as u32);
                c.set_s32(attr::NFTNL_CHAIN_PRIO, base.priority);
                c.set_str(attr::NFTNL_CHAIN_TYPE, c"filter");
                c.set_u32(attr::NFTNL_CHAIN_POLICY, nf_verdict(base.policy));
            }
            self.batch.add(
                libc::NFT_MSG_NEWCHAIN,
                libc::NLM_F_CREATE,
                Obj::Chain(&c),
                || format!("chain {}", chain.ir.name),
            );
        }
    }

    /// `add set inet pbxwall NAME { type ipv4_addr; flags interval; }` and
    /// `add map inet pbxwall NAME { type ipv4_addr : verdict; ... }` for every set that is
    /// not live yet (a kept set was flushed above and is only refilled), with its id so the
    /// rules and elements below find it. Empty: the elements come last.
    fn add_new_sets(&mut self) {
        for set in &self.plan.sets {
            if self.kept.contains(set.ir.name.as_str()) {
                continue;
            }
            let mut s = NfSet::new();
            set_identity(&mut s, &self.plan.table, &set.name, Some(set.id));
            s.set_u32(attr::NFTNL_SET_FLAGS, set_flags(set.ir.kind));
            let (key_type, key_len) = key_of(set.ir.family);
            s.set_u32(attr::NFTNL_SET_KEY_TYPE, key_type);
            s.set_u32(attr::NFTNL_SET_KEY_LEN, key_len);
            if let Some(dtype) = data_type(set.ir.kind) {
                s.set_u32(attr::NFTNL_SET_DATA_TYPE, dtype);
                s.set_u32(attr::NFTNL_SET_DATA_LEN, VERDICT_DATA_LEN);
            }
            if let Some(d) = &set.ir.dynamic {
                if let Some(t) = d.timeout {
                    s.set_u64(attr::NFTNL_SET_TIMEOUT, t.as_millis() as u64);
                }
                if let Some(size) = d.size {
                    s.set_u32(attr::NFTNL_SET_DESC_SIZE, size);
                }
            }
            s.set_data(attr::NFTNL_SET_USERDATA, &SET_UDATA_KEY_BIG_ENDIAN);
            self.batch.add(
                libc::NFT_MSG_NEWSET,
                libc::NLM_F_CREATE,
                Obj::Set(&s),
                || format!("set {}", set.ir.name),
            );
        }
    }

    /// `add rule inet pbxwall CHAIN ...` for every chain's rules, in order. Before the
    /// elements: binding a verdict map to its lookup rule makes the kernel check every
    /// element already in it for jump loops, so the maps are bound while still empty (a
    /// third of the time of a 100k-address restart).
    fn add_rules(&mut self) {
        for chain in &self.plan.chains {
            for (i, (ir, rule)) in chain.ir.rules.iter().zip(&chain.rules).enumerate() {
                let r = rule.build(&self.plan.table, &chain.name);
                self.batch.add(
                    libc::NFT_MSG_NEWRULE,
                    libc::NLM_F_CREATE | libc::NLM_F_APPEND,
                    Obj::Rule(&r),
                    || rule_what(&chain.ir.name, i, ir),
                );
            }
        }
    }

    /// `add element inet pbxwall NAME { ... }` for every set, kept or new: last, once the
    /// chains the elements jump to exist and the maps are bound to their rules.
    fn add_elements(&mut self) {
        for set in &self.plan.sets {
            let keep = self.kept.contains(set.ir.name.as_str());
            if let Some(d) = &set.ir.dynamic {
                // Re-adding an element that is live changes nothing: what the kernel
                // holds stays, what was recorded and is missing comes back.
                let what = format!("restored elements of set {}", set.ir.name);
                add_timed_elements(
                    &mut self.batch,
                    &self.plan.table,
                    (&set.name, (!keep).then_some(set.id)),
                    &d.restore,
                    ElemOp::Add,
                    &what,
                );
                continue;
            }
            let of = ElementsOf {
                set: &set.name,
                id: (!keep).then_some(set.id),
                kind: set.ir.kind,
                elements: &set.ir.elements,
                leading_zero: set.ir.elements.first().is_some_and(|e| e.range.start != 0),
            };
            let what = format!("elements of set {}", set.ir.name);
            add_elements(
                &mut self.batch,
                &self.plan.table,
                of,
                ElemOp::Add,
                &self.plan.jumps,
                &what,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addrset::{AddrRange, Family};
    use crate::nft::netlink::LiveHook;
    use crate::nft::netlink::read::SnapSet;
    use crate::ruleset::{Element, L4Proto, Match, PortRange, SetKind, Verdict};

    /// `trusted_v4` and a host map `hosts_v4`; chain `input` (trusted accepted, then the
    /// map) and `allow_ssh`.
    fn sample() -> Ruleset {
        let addr = |s: &str| AddrRange::from_net(s.parse().unwrap());
        Ruleset {
            sets: vec![
                ruleset::Set::addresses("trusted_v4", Family::V4, vec![addr("192.0.2.0/28")]),
                ruleset::Set {
                    name: "hosts_v4".into(),
                    family: Family::V4,
                    kind: SetKind::HostMap,
                    elements: vec![Element {
                        range: addr("203.0.113.7/32"),
                        jump: Some("allow_ssh".into()),
                    }],
                    dynamic: None,
                },
            ],
            chains: vec![
                ruleset::Chain::input_dropping(vec![
                    Rule {
                        matches: vec![Match::SaddrInSet(Family::V4, "trusted_v4".into())],
                        verdict: Some(Verdict::Accept),
                        ..Rule::default()
                    },
                    Rule {
                        saddr_vmap: Some((Family::V4, "hosts_v4".into())),
                        ..Rule::default()
                    },
                ]),
                ruleset::Chain::accepting_tcp_port("allow_ssh", 22),
            ],
        }
    }

    fn live_set(name: &str, family: Family, kind: SetKind) -> SnapSet {
        SnapSet {
            name: name.into(),
            cname: CString::new(name).unwrap(),
            handle: 1,
            key: Some((family, key_of(family).1)),
            flags: Some(set_flags(kind)),
            data_type: data_type(kind),
            timeout_ms: None,
            size: None,
            elems: Vec::new(),
        }
    }

    fn live_chain(name: &str, base: Option<LiveHook>) -> SnapChain {
        SnapChain {
            name: name.into(),
            cname: CString::new(name).unwrap(),
            handle: 2,
            base,
            rules: Vec::new(),
        }
    }

    const RULES_AND_ELEMENTS: [&str; 6] = [
        "rule 1 of chain input (ip saddr @trusted_v4 accept)",
        "rule 2 of chain input (ip saddr vmap @hosts_v4)",
        "rule 1 of chain allow_ssh (tcp dport 22 accept)",
        "elements of set trusted_v4",
        "elements of set hosts_v4",
        "the batch end",
    ];

    #[test]
    fn a_fresh_table_gets_chains_then_sets_then_rules_then_elements() {
        let rs = sample();
        let batch = Plan::new(&rs).unwrap().batch(None, 7, 1);
        let mut want = vec![
            "the batch (begin / generation check / commit)",
            "table inet pbxwall",
            "chain input",
            "chain allow_ssh",
            "set trusted_v4",
            "set hosts_v4",
        ];
        want.extend(RULES_AND_ELEMENTS);
        assert_eq!(batch.descriptions(), want);
    }

    #[test]
    fn a_live_table_is_flushed_kept_sets_refilled_and_stale_objects_dropped() {
        let rs = sample();
        let input_hook = LiveHook {
            hook: libc::NF_INET_LOCAL_IN as u32,
            priority: 0,
            chain_type: "filter".into(),
            policy: Some(Verdict::Accept),
        };
        let live = Snapshot {
            table_flags: 0,
            sets: vec![
                live_set("trusted_v4", Family::V4, SetKind::Addresses),
                // Same name, other kind: dropped and created again.
                live_set("hosts_v4", Family::V4, SetKind::VerdictMap),
                live_set("old_v6", Family::V6, SetKind::Addresses),
            ],
            chains: vec![
                live_chain("input", Some(input_hook)),
                live_chain("allow_ssh", None),
                live_chain("allow_old", None),
            ],
        };
        let batch = Plan::new(&rs).unwrap().batch(Some(&live), 7, 1);
        let mut want = vec![
            "the batch (begin / generation check / commit)",
            "table inet pbxwall",
            "flush of the rules of table inet pbxwall",
            "flush of set trusted_v4",
            "flush of set hosts_v4",
            "deletion of old set hosts_v4",
            "deletion of old set old_v6",
            "deletion of old chain allow_old",
            "chain input",
            "chain allow_ssh",
            "set hosts_v4",
        ];
        want.extend(RULES_AND_ELEMENTS);
        assert_eq!(batch.descriptions(), want);
    }

    #[test]
    fn a_base_chain_on_another_priority_is_dropped_and_created_again() {
        let rs = sample();
        let moved = LiveHook {
            hook: libc::NF_INET_LOCAL_IN as u32,
            priority: 10,
            chain_type: "filter".into(),
            policy: Some(Verdict::Drop),
        };
        let live = Snapshot {
            table_flags: 0,
            sets: Vec::new(),
            chains: vec![live_chain("input", Some(moved))],
        };
        let descriptions = Plan::new(&rs)
            .unwrap()
            .batch(Some(&live), 7, 1)
            .descriptions();
        assert_eq!(descriptions[3], "deletion of old chain input");
        assert_eq!(descriptions[4], "chain input");
    }

    #[test]
    fn a_name_with_a_nul_byte_is_refused_before_anything_is_built() {
        let mut rs = sample();
        rs.chains[0].rules[1].saddr_vmap = Some((Family::V4, "hosts\0v4".into()));
        let err = Plan::new(&rs).err().expect("refused");
        assert_eq!(
            err.to_string(),
            "cannot encode rule 2 of chain input (ip saddr vmap @hosts\0v4): \
             the name \"hosts\\0v4\" contains a NUL byte"
        );
    }

    #[test]
    fn rule_descriptions_name_the_rule() {
        let rule = Rule {
            matches: vec![
                Match::Dport(
                    L4Proto::Udp,
                    PortRange {
                        first: 5060,
                        last: 5061,
                    },
                ),
                Match::SaddrInSet(Family::V4, "sip_udp_v4".into()),
            ],
            verdict: Some(Verdict::Accept),
            ..Rule::default()
        };
        assert_eq!(
            rule_what("input", 2, &rule),
            "rule 3 of chain input (udp dport 5060-5061 ip saddr @sip_udp_v4 accept)"
        );
        let vmap = Rule {
            saddr_vmap: Some((Family::V4, "hosts_v4".into())),
            ..Rule::default()
        };
        assert_eq!(
            rule_what("input", 4, &vmap),
            "rule 5 of chain input (ip saddr vmap @hosts_v4)"
        );
        let logged = Rule {
            log: Some(ruleset::Log {
                per_minute: 10,
                prefix: "pbxwall drop: ".into(),
            }),
            counter: true,
            saddr_vmap: Some((Family::V6, "ranges_v6".into())),
            verdict: Some(Verdict::Drop),
            ..Rule::default()
        };
        assert_eq!(
            rule_what("input", 0, &logged),
            "rule 1 of chain input (limit rate 10/minute log prefix \"pbxwall drop: \" counter \
             ip6 saddr vmap @ranges_v6 drop)"
        );
    }
}
