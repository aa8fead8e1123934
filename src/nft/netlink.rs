//! The ruleset IR as one nf_tables netlink batch, and the live table read back.
//!
//! This is the only module with `unsafe`: it drives libnftnl through `nftnl::nftnl_sys`.
//! The unsafe code is confined to a few small wrappers (owned libnftnl objects, one
//! expression builder, one batch, one socket); everything that decides *what* is sent is
//! plain Rust on top of them.
//!
//! # What [`apply`] sends
//!
//! One batch, sent with one `sendmsg()` whose iovec holds every batch page (research
//! §1.5: `mnl::Socket::send_all` sends one datagram per page and the kernel then sees a
//! batch without its END). In nft terms:
//!
//! ```text
//! add table inet pbxwall                                  # idempotent
//! flush table inet pbxwall                                # DELRULE with only the table
//! flush set inet pbxwall <s>       # every live set the IR has too (same key, flags, data)
//! flush map inet pbxwall <m>       # a live map the IR does not have: drop its jumps first,
//! delete map inet pbxwall <m>      #   then the map (older kernels keep the chains in use)
//! delete set inet pbxwall <s>      # every other live set
//! delete chain inet pbxwall <c>    # every live chain the IR does not have (by name and kind)
//! add chain inet pbxwall input { type filter hook input priority filter; policy drop; }
//! add chain inet pbxwall allow_ssh                        # idempotent for kept chains
//! add set inet pbxwall new_v4 { type ipv4_addr; flags interval; }  # sets not live yet
//! add rule inet pbxwall input ...                         # every chain's rules
//! add element inet pbxwall hosts_v4 { 192.0.2.1 : jump allow_ssh, ... }  # every set, refilled
//! ```
//!
//! The base chain is updated in place, never deleted and re-created: a re-created base
//! chain is hooked with policy accept until the commit reaches it, so packets leak
//! (research §3.3). Sets that stay are flushed and refilled rather than deleted and
//! re-created: a re-created interval set made the kernel drop packets of whitelisted
//! sources for a moment during the commit (about one packet per restart under a flood,
//! measured by `tests/torture.rs`; flush and refill drops none); regular chains that stay
//! are kept the same way (their rules go with the table flush). Rules are added before
//! elements: binding a verdict map to its lookup rule makes the kernel check every element
//! already in it for jump loops, so the maps are bound while still empty (a third of the
//! time of a 100k-address restart). Element lists go to libnftnl a few thousand at a time,
//! which bounds memory and changes nothing on the wire.
//!
//! The batch begin carries the nf_tables generation id read before the live sets and
//! chains were listed (`NFNL_BATCH_GENID`); if anything changed nf_tables in between, the
//! kernel refuses the batch with `ERESTART` and [`apply`] starts again.
//!
//! No message asks for an ACK (the batch begin/end neither), so on success the kernel
//! queues nothing, on any kernel version; every failing message still gets an
//! `NLMSG_ERROR` carrying its sequence number, which maps back to a description of the
//! object ("rule 3 of chain input (...)"). Because the kernel handles the whole batch
//! inside `sendmsg()`, the answers are drained with non-blocking `recv` until `EAGAIN`.
//! A rejected batch changes nothing: the old ruleset stays live.
//!
//! # Rule encoding
//!
//! Each IR match becomes exactly the expressions nft 1.0.6 generates for its text (checked
//! with `nft --debug=netlink`), so `nft list table inet pbxwall` prints what
//! [`crate::nft::render`] prints. The helpers below each carry the nft text they stand for.
//!
//! # Rule fingerprints
//!
//! [`read_table`] prints every live rule's expressions with libnftnl's own printer
//! ([`LiveChain::rules`]); [`rule_fingerprints`] builds the IR's rules with the same code
//! [`apply`] uses (`Plan::rule`) and prints them the same way, without the kernel. Both
//! sides go through one canonicalisation (counter values zeroed, what the kernel fills in
//! filled in), so equal lines mean equal rules and `status` sees a rule replaced behind
//! pbxwall's back even when the rule count is unchanged.

#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io;
use std::mem;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::time::Duration;

use nftnl::nftnl_sys as sys;

use crate::addrset::{AddrRange, Family};
use crate::ruleset::{self, Element, L4Proto, Match, Rule, Ruleset, SetKind, TABLE_NAME, Verdict};

/// Errors of the netlink backend. Messages name what failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The nf_tables netlink socket could not be opened.
    #[error("cannot open the nf_tables netlink socket")]
    Socket(#[source] io::Error),
    /// A request or the batch could not be sent.
    #[error("cannot send {what} to the kernel")]
    Send {
        /// What was being sent.
        what: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The kernel's answer could not be read.
    #[error("cannot read the kernel's answer to {what}")]
    Receive {
        /// What the answer was for.
        what: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The kernel rejected the batch; nothing of it was applied.
    #[error("kernel rejected {what}{}", detail_suffix(.detail))]
    Rejected {
        /// The object whose message failed, e.g. `rule 3 of chain input (...)`.
        what: String,
        /// The errno the kernel reported.
        #[source]
        source: io::Error,
        /// The kernel's extended-ack message, when it sent one.
        detail: Option<String>,
    },
    /// Listing live objects failed.
    #[error("cannot list {what}")]
    Dump {
        /// What was being listed.
        what: String,
        /// The errno the kernel reported (or a receive error).
        #[source]
        source: io::Error,
    },
    /// Other processes kept changing nf_tables while [`apply`] ran.
    #[error("nf_tables changed under pbxwall {attempts} times in a row while applying; gave up")]
    Busy {
        /// How many batches were refused with `ERESTART`.
        attempts: usize,
    },
    /// The ruleset cannot be encoded (a name with a NUL byte, an element of the wrong family).
    #[error("cannot encode {what}: {reason}")]
    Invalid {
        /// The object.
        what: String,
        /// Why.
        reason: String,
    },
    /// The kernel answered something this module does not understand.
    #[error("unexpected netlink answer to {what}: {reason}")]
    Protocol {
        /// What the answer was for.
        what: String,
        /// What was wrong with it.
        reason: String,
    },
}

fn detail_suffix(detail: &Option<String>) -> String {
    detail
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default()
}

type Result<T, E = NetlinkError> = std::result::Result<T, E>;

/// Size of what [`apply`], [`update_set_elements`] and [`delete_table`] sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplyStats {
    /// Netlink messages in the batch, batch begin and end included.
    pub messages: usize,
    /// Bytes of the batch (the length of the one `sendmsg`).
    pub bytes: usize,
}

/// What is live in `table inet pbxwall`, as [`read_table`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTable {
    /// Table flags (`NFTNL_TABLE_FLAGS`): 0 as pbxwall creates it; bit 0x1 is dormant (the
    /// kernel evaluates none of its chains).
    pub flags: u32,
    /// Sets, in the kernel's order.
    pub sets: Vec<LiveSet>,
    /// Chains, in the kernel's order.
    pub chains: Vec<LiveChain>,
}

/// A live set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSet {
    /// Set name.
    pub name: String,
    /// Key family (`None` for a key type other than `ipv4_addr`/`ipv6_addr`).
    pub family: Option<Family>,
    /// An interval set, an interval verdict map, a host (hash) verdict map, or `None` for
    /// anything else.
    pub kind: Option<SetKind>,
    /// Elements decoded from the interval start/end elements into inclusive ranges, sorted,
    /// with the chain each jumps to in a map (a verdict other than a jump shows as
    /// `verdict N`). Empty when `family` is `None`.
    pub elements: Vec<Element>,
    /// Kernel handle.
    pub handle: u64,
}

/// Hook parameters of a live base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveHook {
    /// Netfilter hook number (1 = input).
    pub hook: u32,
    /// Priority.
    pub priority: i32,
    /// Chain type (`filter`).
    pub chain_type: String,
    /// Policy, when it is accept or drop.
    pub policy: Option<Verdict>,
}

/// A live chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveChain {
    /// Chain name.
    pub name: String,
    /// Kernel handle (stays the same while the chain is updated in place).
    pub handle: u64,
    /// Hook parameters of a base chain; `None` for a regular chain.
    pub base: Option<LiveHook>,
    /// Handles of the rules, in evaluation order.
    pub rule_handles: Vec<u64>,
    /// Number of rules.
    pub rule_count: usize,
    /// `(rule handle, packets, bytes)` of every rule that has a `counter`.
    pub counters: Vec<(u64, u64, u64)>,
    /// Content fingerprint of every rule, in evaluation order (see [`rule_fingerprints`]
    /// for the form): equal to what [`rule_fingerprints`] gives for the chain exactly when
    /// the live rules are the ones [`apply`] added.
    pub rules: Vec<String>,
}

const NFPROTO_INET: u16 = libc::NFPROTO_INET as u16;
const NFPROTO_IPV4: u8 = libc::NFPROTO_IPV4 as u8;
const NFPROTO_IPV6: u8 = libc::NFPROTO_IPV6 as u8;
/// nft's data type ids for set keys.
const KEY_TYPE_IPV4_ADDR: u32 = 7;
const KEY_TYPE_IPV6_ADDR: u32 = 8;
/// `NFT_DATA_VERDICT`: the data type of a verdict map (not in the libc crate).
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
/// Data length nft sends for a verdict map (the kernel uses its own for verdicts).
const VERDICT_DATA_LEN: u32 = 16;
/// Set userdata nft writes for address keys: `NFTNL_UDATA_SET_KEYBYTEORDER` (0), length 4,
/// `BYTEORDER_BIG_ENDIAN` (2) as a host-order u32.
const SET_UDATA_KEY_BIG_ENDIAN: [u8; 6] = udata_u32(0, 2);
/// Element userdata nft writes on a start element whose interval runs to the top of the
/// address space (no END element follows): `NFTNL_UDATA_SET_ELEM_FLAGS` (1), length 4,
/// `NFTNL_SET_ELEM_F_INTERVAL_OPEN` (1).
const ELEM_UDATA_INTERVAL_OPEN: [u8; 6] = udata_u32(1, 1);
/// `NFT_LIMIT_PKTS`; nft's default burst for `limit rate N/minute` is 5 packets.
const LIMIT_BURST: u32 = 5;
/// Attempts of [`apply`] when the generation changes under it.
const MAX_ATTEMPTS: usize = 5;
/// Receive buffer: room for many error reports; dumps are paced by our reads anyway.
const RCVBUF_BYTES: usize = 4 << 20;
/// Receive buffer for one `recv` (dump messages are at most 32 KiB, errors are capped).
const RECV_CHUNK: usize = 128 << 10;
/// How long a request waits for its answer.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

const fn udata_u32(kind: u8, value: u32) -> [u8; 6] {
    let v = value.to_ne_bytes();
    [kind, 4, v[0], v[1], v[2], v[3]]
}

// ---------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------

/// Replace the contents of table `inet pbxwall` with `ruleset`, atomically, in one netlink
/// batch sent with one `sendmsg`.
///
/// The table and the IR's base chains are kept (updated in place), all rules are flushed,
/// every live set and every other chain is deleted, then the IR's sets, elements, chains
/// and rules are added. If the kernel rejects any message, nothing changes and the error
/// names the object. Runs in the network namespace of the calling thread.
pub fn apply(ruleset: &Ruleset) -> Result<ApplyStats> {
    let plan = Plan::new(ruleset)?;
    let mut sock = Socket::open()?;
    for _ in 0..MAX_ATTEMPTS {
        let genid = sock.generation()?;
        let live = match read_snapshot(&mut sock, false) {
            Ok(live) => live,
            Err(ReadError::Changed) => continue,
            Err(ReadError::Failed(e)) => return Err(e),
        };
        let batch = plan.batch(live.as_ref(), genid, &mut sock);
        match sock.commit(&batch) {
            Err(CommitError::GenerationChanged) => continue,
            Err(CommitError::Failed(e)) => return Err(e),
            Ok(stats) => return Ok(stats),
        }
    }
    Err(NetlinkError::Busy {
        attempts: MAX_ATTEMPTS,
    })
}

/// Read back what is live: `None` if table `inet pbxwall` does not exist.
///
/// Sets come with their elements decoded into inclusive ranges, chains with their rule
/// handles and counter values. The snapshot is consistent: if nf_tables changed while it
/// was read, it is read again.
pub fn read_table() -> Result<Option<LiveTable>> {
    let mut sock = Socket::open()?;
    for _ in 0..MAX_ATTEMPTS {
        let before = sock.generation()?;
        let snap = match read_snapshot(&mut sock, true) {
            Ok(s) => s,
            Err(ReadError::Changed) => continue,
            Err(ReadError::Failed(e)) => return Err(e),
        };
        if sock.generation()? != before {
            continue;
        }
        return Ok(snap.map(Snapshot::into_live));
    }
    Err(NetlinkError::Dump {
        what: format!("table inet {TABLE_NAME}"),
        source: io::Error::other(format!(
            "nf_tables kept changing while it was read ({MAX_ATTEMPTS} attempts)"
        )),
    })
}

/// Content fingerprints of the rules [`apply`] adds for `ruleset`: per IR chain, in IR
/// order, one line per rule, in the form of [`LiveChain::rules`].
///
/// The rules are built by the same code [`apply`] uses and printed the way live rules are,
/// so `status` can tell a rule changed, inserted or removed behind pbxwall's back even when
/// the count is unchanged. No kernel access: works without root.
///
/// A line is the rule's expressions, each printed by libnftnl (`nftnl_expr_snprintf`,
/// default output) as `nft --debug=netlink` shows them, joined by one space:
///
/// ```text
/// [ meta load iif => reg 1 ] [ cmp eq reg 1 0x00000001 ] [ immediate reg 0 accept ]
/// ```
///
/// Handle, position, family, table and chain are not part of it, counter values print as 0,
/// and a lookup names its set (set ids are never printed). What the kernel fills in is
/// filled in the same way on both sides (see `canonicalize_expr`). A rule carrying userdata
/// (an nft `comment`) gets ` userdata 0x...` appended; pbxwall's rules have none.
pub fn rule_fingerprints(ruleset: &Ruleset) -> Result<Vec<(String, Vec<String>)>> {
    let plan = Plan::new(ruleset)?;
    Ok(ruleset
        .chains
        .iter()
        .zip(&plan.chains)
        .map(|(chain, cname)| {
            let rules = chain
                .rules
                .iter()
                .map(|rule| plan.rule(cname, rule).fingerprint())
                .collect();
            (chain.name.clone(), rules)
        })
        .collect())
}

/// Incremental element update of an existing set or map, in one batch: delete the `remove`
/// elements and add the `add` elements.
///
/// `remove` must hold elements of the set exactly as they were added (the merged form),
/// otherwise the kernel refuses the batch (`ENOENT`) and nothing changes; their jumps are
/// not sent (the kernel finds elements by key). Added elements must not overlap what stays
/// in the set (`EEXIST`) and, in a map, must jump to existing chains. The leading
/// `0.0.0.0` END element of a fresh set is neither removed nor added here (nft does the
/// same; the kernel does not need it). Nothing is sent when both lists are empty.
pub fn update_set_elements(
    set: &str,
    family: Family,
    kind: SetKind,
    remove: &[Element],
    add: &[Element],
) -> Result<ApplyStats> {
    update_sets(&[SetChange {
        set,
        family,
        kind,
        remove,
        add,
    }])
}

/// Element changes of one set, for [`update_sets`].
#[derive(Debug, Clone, Copy)]
pub struct SetChange<'a> {
    /// Name of an existing set of table `inet pbxwall`.
    pub set: &'a str,
    /// Its family.
    pub family: Family,
    /// Its kind (how its elements are encoded).
    pub kind: SetKind,
    /// Elements to remove, exactly as they are elements now.
    pub remove: &'a [Element],
    /// Elements to add.
    pub add: &'a [Element],
}

/// Changes the elements of several sets in ONE transaction: every removal first, then every
/// addition, so either all of it is live or none. Same rules as [`update_set_elements`];
/// nothing is sent when there is nothing to change.
pub fn update_sets(changes: &[SetChange<'_>]) -> Result<ApplyStats> {
    let table = cstring(TABLE_NAME, "table")?;
    let mut names = Vec::with_capacity(changes.len());
    let mut jumps = JumpNames::default();
    for c in changes {
        let what = format!("set {}", c.set);
        names.push(cstring(c.set, &what)?);
        check_elements(&what, c.family, c.kind, c.remove.iter().chain(c.add))?;
        jumps.add(c.add)?;
    }
    if changes
        .iter()
        .all(|c| c.remove.is_empty() && c.add.is_empty())
    {
        return Ok(ApplyStats::default());
    }
    let mut sock = Socket::open()?;
    let mut batch = Batch::new(sock.take_seqs(), None);
    for (c, name) in changes.iter().zip(&names) {
        let of = ElementsOf {
            set: name,
            id: None,
            kind: c.kind,
            elements: c.remove,
            leading_zero: false,
        };
        let what = format!("removal of elements from set {}", c.set);
        add_elements(&mut batch, &table, of, ElemOp::Remove, &jumps, &what);
    }
    for (c, name) in changes.iter().zip(&names) {
        let of = ElementsOf {
            set: name,
            id: None,
            kind: c.kind,
            elements: c.add,
            leading_zero: false,
        };
        let what = format!("new elements of set {}", c.set);
        add_elements(&mut batch, &table, of, ElemOp::Add, &jumps, &what);
    }
    let batch = batch.finish();
    sock.commit(&batch).map_err(CommitError::into_error)
}

/// Delete table `inet pbxwall` if it exists, in one batch (add-then-delete, so it works
/// when the table is absent and on kernels without `NFT_MSG_DESTROYTABLE`).
pub fn delete_table() -> Result<()> {
    let table = cstring(TABLE_NAME, "table")?;
    let mut t = NfTable::new();
    t.set_u32(sys::NFTNL_TABLE_FAMILY, NFPROTO_INET.into());
    t.set_str(sys::NFTNL_TABLE_NAME, &table);
    let what = format!("table inet {TABLE_NAME}");
    let mut sock = Socket::open()?;
    let mut batch = Batch::new(sock.take_seqs(), None);
    // nft: add table inet pbxwall
    batch.add(
        libc::NFT_MSG_NEWTABLE,
        libc::NLM_F_CREATE,
        Obj::Table(&t),
        || format!("creation of {what}"),
    );
    // nft: delete table inet pbxwall
    batch.add(libc::NFT_MSG_DELTABLE, 0, Obj::Table(&t), || {
        format!("deletion of {what}")
    });
    let batch = batch.finish();
    sock.commit(&batch).map_err(CommitError::into_error)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The apply plan: the IR checked and turned into C strings once
// ---------------------------------------------------------------------------------------

struct Plan<'a> {
    ruleset: &'a Ruleset,
    table: CString,
    jumps: JumpNames,
    sets: Vec<(CString, u32)>,
    chains: Vec<CString>,
    set_ids: HashMap<&'a str, u32>,
}

impl<'a> Plan<'a> {
    fn new(ruleset: &'a Ruleset) -> Result<Plan<'a>> {
        let table = cstring(TABLE_NAME, "table")?;
        let mut sets = Vec::with_capacity(ruleset.sets.len());
        let mut set_ids = HashMap::new();
        let mut jumps = JumpNames::default();
        for (i, set) in ruleset.sets.iter().enumerate() {
            let what = format!("set {}", set.name);
            check_elements(&what, set.family, set.kind, &set.elements)?;
            jumps.add(&set.elements)?;
            let id = i as u32 + 1;
            sets.push((cstring(&set.name, &what)?, id));
            set_ids.insert(set.name.as_str(), id);
        }
        let chains = ruleset
            .chains
            .iter()
            .map(|c| cstring(&c.name, &format!("chain {}", c.name)))
            .collect::<Result<Vec<_>>>()?;
        for chain in &ruleset.chains {
            for (i, rule) in chain.rules.iter().enumerate() {
                for m in &rule.matches {
                    if let Match::SaddrInSet(_, name) = m {
                        cstring(name, &rule_what(&chain.name, i, rule))?;
                    }
                }
                if let Some(log) = &rule.log {
                    cstring(&log.prefix, &rule_what(&chain.name, i, rule))?;
                }
                if let Some((_, map)) = &rule.saddr_vmap {
                    cstring(map, &rule_what(&chain.name, i, rule))?;
                }
            }
        }
        Ok(Plan {
            ruleset,
            table,
            jumps,
            sets,
            chains,
            set_ids,
        })
    }

    /// The whole replace batch, given what is live (`None`: no table).
    fn batch(&self, live: Option<&Snapshot>, genid: u32, sock: &mut Socket) -> Batch {
        let rs = self.ruleset;
        let tname = format!("table inet {TABLE_NAME}");
        let mut batch = Batch::new(sock.take_seqs(), Some(genid));

        // nft: add table inet pbxwall
        let mut table = NfTable::new();
        table.set_u32(sys::NFTNL_TABLE_FAMILY, NFPROTO_INET.into());
        table.set_str(sys::NFTNL_TABLE_NAME, &self.table);
        batch.add(
            libc::NFT_MSG_NEWTABLE,
            libc::NLM_F_CREATE,
            Obj::Table(&table),
            || tname.clone(),
        );

        // Live sets the IR has with the same key, flags and data: flushed and refilled in
        // place.
        let kept: HashSet<&str> = live
            .map(|l| {
                l.sets
                    .iter()
                    .filter(|ls| {
                        rs.sets.iter().any(|s| {
                            s.name == ls.name
                                && ls.key == Some((s.family, key_of(s.family).1))
                                && ls.flags == Some(set_flags(s.kind))
                                && ls.data_type == data_type(s.kind)
                        })
                    })
                    .map(|ls| ls.name.as_str())
                    .collect()
            })
            .unwrap_or_default();

        if let Some(live) = live {
            // nft: flush table inet pbxwall
            let mut flush = NfRule::new();
            flush.set_u32(sys::NFTNL_RULE_FAMILY, NFPROTO_INET.into());
            flush.set_str(sys::NFTNL_RULE_TABLE, &self.table);
            batch.add(libc::NFT_MSG_DELRULE, 0, Obj::Rule(&flush), || {
                format!("flush of the rules of {tname}")
            });

            // Sets before chains: map elements hold references to the chains they jump to.
            for ls in &live.sets {
                let mut s = NfSet::new();
                s.set_u32(sys::NFTNL_SET_FAMILY, NFPROTO_INET.into());
                s.set_str(sys::NFTNL_SET_TABLE, &self.table);
                s.set_str(sys::NFTNL_SET_NAME, &ls.cname);
                let keep = kept.contains(ls.name.as_str());
                let is_map = ls.flags.is_some_and(|f| f & libc::NFT_SET_MAP as u32 != 0);
                if keep || is_map {
                    // nft: flush set inet pbxwall NAME   (refilled below, same transaction)
                    batch.add(libc::NFT_MSG_DELSETELEM, 0, Obj::SetElemsOf(&s), || {
                        format!("flush of set {}", ls.name)
                    });
                }
                if !keep {
                    // nft: delete set inet pbxwall NAME
                    batch.add(libc::NFT_MSG_DELSET, 0, Obj::Set(&s), || {
                        format!("deletion of old set {}", ls.name)
                    });
                }
            }

            // nft: delete chain inet pbxwall NAME   (live chains the IR does not have)
            for lc in &live.chains {
                let keep = rs.chains.iter().any(|c| {
                    c.name == lc.name
                        && match c.base {
                            Some(_) => base_matches(c, lc),
                            None => lc.base.is_none(),
                        }
                });
                if keep {
                    continue;
                }
                let mut c = NfChain::new();
                c.set_u32(sys::NFTNL_CHAIN_FAMILY, NFPROTO_INET.into());
                c.set_str(sys::NFTNL_CHAIN_TABLE, &self.table);
                c.set_str(sys::NFTNL_CHAIN_NAME, &lc.cname);
                batch.add(libc::NFT_MSG_DELCHAIN, 0, Obj::Chain(&c), || {
                    format!("deletion of old chain {}", lc.name)
                });
            }
        }

        // nft: add chain inet pbxwall input { type filter hook input priority P; policy V; }
        for (chain, cname) in rs.chains.iter().zip(&self.chains) {
            let mut c = NfChain::new();
            c.set_u32(sys::NFTNL_CHAIN_FAMILY, NFPROTO_INET.into());
            c.set_str(sys::NFTNL_CHAIN_TABLE, &self.table);
            c.set_str(sys::NFTNL_CHAIN_NAME, cname);
            if let Some(base) = &chain.base {
                c.set_u32(sys::NFTNL_CHAIN_HOOKNUM, libc::NF_INET_LOCAL_IN as u32);
                c.set_s32(sys::NFTNL_CHAIN_PRIO, base.priority);
                c.set_str(sys::NFTNL_CHAIN_TYPE, c"filter");
                c.set_u32(sys::NFTNL_CHAIN_POLICY, nf_verdict(base.policy));
            }
            batch.add(
                libc::NFT_MSG_NEWCHAIN,
                libc::NLM_F_CREATE,
                Obj::Chain(&c),
                || format!("chain {}", chain.name),
            );
        }

        // nft: add set inet pbxwall NAME { type ipv4_addr; flags interval; elements = { ... } }
        // nft: add map inet pbxwall NAME { type ipv4_addr : verdict; flags interval; ... }
        // A set that is live with the same name, key and flags is kept (flushed above) and
        // only refilled: deleting and re-creating it lets the kernel drop packets of
        // whitelisted sources for a moment (tests/torture.rs measured it).
        for (set, (cname, id)) in rs.sets.iter().zip(&self.sets) {
            let mut s = NfSet::new();
            let keep = kept.contains(set.name.as_str());
            set_identity(&mut s, &self.table, cname, (!keep).then_some(*id));
            s.set_u32(sys::NFTNL_SET_FLAGS, set_flags(set.kind));
            let (key_type, key_len) = key_of(set.family);
            s.set_u32(sys::NFTNL_SET_KEY_TYPE, key_type);
            s.set_u32(sys::NFTNL_SET_KEY_LEN, key_len);
            if let Some(dtype) = data_type(set.kind) {
                s.set_u32(sys::NFTNL_SET_DATA_TYPE, dtype);
                s.set_u32(sys::NFTNL_SET_DATA_LEN, VERDICT_DATA_LEN);
            }
            s.set_data(sys::NFTNL_SET_USERDATA, &SET_UDATA_KEY_BIG_ENDIAN);
            if !keep {
                batch.add(
                    libc::NFT_MSG_NEWSET,
                    libc::NLM_F_CREATE,
                    Obj::Set(&s),
                    || format!("set {}", set.name),
                );
            }
        }

        // nft: add rule inet pbxwall CHAIN ...
        // Rules before elements: binding a map to its lookup rule makes the kernel check
        // every element already in it, so the map is bound while still empty.
        for (chain, cname) in rs.chains.iter().zip(&self.chains) {
            for (i, rule) in chain.rules.iter().enumerate() {
                let r = self.rule(cname, rule);
                batch.add(
                    libc::NFT_MSG_NEWRULE,
                    libc::NLM_F_CREATE | libc::NLM_F_APPEND,
                    Obj::Rule(&r),
                    || rule_what(&chain.name, i, rule),
                );
            }
        }

        // nft: add element inet pbxwall NAME { ... }
        for (set, (cname, id)) in rs.sets.iter().zip(&self.sets) {
            let keep = kept.contains(set.name.as_str());
            let of = ElementsOf {
                set: cname,
                id: (!keep).then_some(*id),
                kind: set.kind,
                elements: &set.elements,
                leading_zero: set.elements.first().is_some_and(|e| e.range.start != 0),
            };
            let what = format!("elements of set {}", set.name);
            add_elements(&mut batch, &self.table, of, ElemOp::Add, &self.jumps, &what);
        }
        batch.finish()
    }

    fn rule(&self, chain: &CStr, rule: &Rule) -> NfRule {
        let mut r = NfRule::new();
        r.set_u32(sys::NFTNL_RULE_FAMILY, NFPROTO_INET.into());
        r.set_str(sys::NFTNL_RULE_TABLE, &self.table);
        r.set_str(sys::NFTNL_RULE_CHAIN, chain);
        for m in &rule.matches {
            for e in self.check(m) {
                r.add_expr(e);
            }
        }
        if let Some(log) = &rule.log {
            // nft: limit rate N/minute log prefix "..."
            r.add_expr(limit_per_minute(log.per_minute));
            // Checked in Plan::new.
            if let Ok(prefix) = CString::new(log.prefix.as_str()) {
                r.add_expr(log_prefix(&prefix));
            }
        }
        if rule.counter {
            // nft: counter   [ counter pkts 0 bytes 0 ]
            r.add_expr(Expr::new(c"counter"));
        }
        if let Some((family, map)) = &rule.saddr_vmap {
            // Checked in Plan::new.
            let cname = CString::new(map.as_str()).unwrap_or_default();
            for e in check_saddr(
                *family,
                &cname,
                self.set_ids.get(map.as_str()).copied(),
                true,
            ) {
                r.add_expr(e);
            }
        }
        if let Some(v) = rule.verdict {
            r.add_expr(verdict(v));
        }
        r
    }

    /// The expressions nft generates for one match, its protocol guards included.
    fn check(&self, m: &Match) -> Vec<Expr> {
        match m {
            Match::Loopback => check_loopback(),
            Match::CtEstablishedRelated => check_ct_state(CT_ESTABLISHED | CT_RELATED),
            Match::CtInvalid => check_ct_state(CT_INVALID),
            Match::IcmpType(family, t) => check_icmp_type(*family, t.code),
            Match::Dport(proto, range) => check_dport(*proto, range.first, range.last),
            Match::SaddrInSet(family, name) => {
                // Checked in Plan::new.
                let cname = CString::new(name.as_str()).unwrap_or_default();
                check_saddr(
                    *family,
                    &cname,
                    self.set_ids.get(name.as_str()).copied(),
                    false,
                )
            }
        }
    }
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

fn nf_verdict(v: Verdict) -> u32 {
    match v {
        Verdict::Accept => libc::NF_ACCEPT as u32,
        Verdict::Drop => libc::NF_DROP as u32,
    }
}

/// `NFTNL_SET_FLAGS` of a set of this kind.
fn set_flags(kind: SetKind) -> u32 {
    match kind {
        SetKind::Addresses => libc::NFT_SET_INTERVAL as u32,
        SetKind::VerdictMap => (libc::NFT_SET_INTERVAL | libc::NFT_SET_MAP) as u32,
        SetKind::HostMap => libc::NFT_SET_MAP as u32,
    }
}

/// `NFTNL_SET_DATA_TYPE` of a set of this kind (`None`: a set has no data).
fn data_type(kind: SetKind) -> Option<u32> {
    match kind {
        SetKind::Addresses => None,
        SetKind::VerdictMap | SetKind::HostMap => Some(NFT_DATA_VERDICT),
    }
}

fn key_of(family: Family) -> (u32, u32) {
    match family {
        Family::V4 => (KEY_TYPE_IPV4_ADDR, 4),
        Family::V6 => (KEY_TYPE_IPV6_ADDR, 16),
    }
}

/// Family, table, name and (for a set created in the same batch) id of a set.
fn set_identity(s: &mut NfSet, table: &CStr, name: &CStr, id: Option<u32>) {
    s.set_u32(sys::NFTNL_SET_FAMILY, NFPROTO_INET.into());
    s.set_str(sys::NFTNL_SET_TABLE, table);
    s.set_str(sys::NFTNL_SET_NAME, name);
    if let Some(id) = id {
        s.set_u32(sys::NFTNL_SET_ID, id);
    }
}

fn cstring(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| NetlinkError::Invalid {
        what: what.to_owned(),
        reason: format!("the name {s:?} contains a NUL byte"),
    })
}

/// Checks that every element is a valid range of `family`, a single address in a host
/// map, and jumps to a chain exactly when the set is a map.
fn check_elements<'e>(
    what: &str,
    family: Family,
    kind: SetKind,
    elements: impl IntoIterator<Item = &'e Element>,
) -> Result<()> {
    for e in elements {
        let r = e.range;
        let reason = if r.family != family || r.start > r.end || r.end > family.max() {
            format!("element {r} is not a valid {family:?} range")
        } else if kind == SetKind::HostMap && r.start != r.end {
            format!("element {r} of a host map is not a single address")
        } else if e.jump.is_some() != (kind != SetKind::Addresses) {
            format!("element {e:?} does not fit a {}", kind.noun())
        } else {
            continue;
        };
        return Err(NetlinkError::Invalid {
            what: what.to_owned(),
            reason,
        });
    }
    Ok(())
}

/// "rule 3 of chain input (udp dport 5060 ip saddr @x accept)": names a rule in errors.
fn rule_what(chain: &str, index: usize, rule: &Rule) -> String {
    let mut parts: Vec<String> = rule.matches.iter().map(describe_match).collect();
    if let Some(log) = &rule.log {
        parts.push(format!(
            "limit rate {}/minute log prefix {:?}",
            log.per_minute, log.prefix
        ));
    }
    if rule.counter {
        parts.push("counter".into());
    }
    if let Some(v) = rule.verdict {
        parts.push(
            match v {
                Verdict::Accept => "accept",
                Verdict::Drop => "drop",
            }
            .into(),
        );
    }
    format!("rule {} of chain {chain} ({})", index + 1, parts.join(" "))
}

fn describe_match(m: &Match) -> String {
    match m {
        Match::Loopback => "iif \"lo\"".into(),
        Match::CtEstablishedRelated => "ct state established,related".into(),
        Match::CtInvalid => "ct state invalid".into(),
        Match::IcmpType(Family::V4, t) => format!("icmp type {}", t.name),
        Match::IcmpType(Family::V6, t) => format!("icmpv6 type {}", t.name),
        Match::Dport(p, r) if r.first == r.last => format!("{} dport {}", p.keyword(), r.first),
        Match::Dport(p, r) => format!("{} dport {}-{}", p.keyword(), r.first, r.last),
        Match::SaddrInSet(Family::V4, s) => format!("ip saddr @{s}"),
        Match::SaddrInSet(Family::V6, s) => format!("ip6 saddr @{s}"),
    }
}

// ---------------------------------------------------------------------------------------
// Interval encoding (research §2.1)
// ---------------------------------------------------------------------------------------

/// One element of a set as it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WireElem<'a> {
    /// Key, network byte order (4 or 16 bytes of `buf`).
    key: Key,
    /// `NFT_SET_ELEM_INTERVAL_END`: the half-open interval before this key ends here.
    end: bool,
    /// A start element whose interval runs to the top of the address space.
    open: bool,
    /// In a verdict map, on a start (or hash) element: the chain it jumps to.
    jump: Option<&'a CStr>,
}

/// An address key without a heap allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    buf: [u8; 16],
    len: usize,
}

impl Key {
    fn of(a: IpAddr) -> Key {
        let mut buf = [0; 16];
        let len = match a {
            IpAddr::V4(a) => {
                buf[..4].copy_from_slice(&a.octets());
                4
            }
            IpAddr::V6(a) => {
                buf = a.octets();
                16
            }
        };
        Key { buf, len }
    }

    fn zero(family: Family) -> Key {
        Key {
            buf: [0; 16],
            len: key_of(family).1 as usize,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The chain names the elements of some sets jump to, as C strings, made once.
#[derive(Default)]
struct JumpNames(HashMap<Arc<str>, CString>);

impl JumpNames {
    /// Adds every chain the elements jump to; fails on a name with a NUL byte.
    fn add(&mut self, elements: &[Element]) -> Result<()> {
        for name in elements.iter().filter_map(|e| e.jump.as_ref()) {
            if !self.0.contains_key(name) {
                let c = cstring(name, &format!("chain {name}"))?;
                self.0.insert(Arc::clone(name), c);
            }
        }
        Ok(())
    }

    fn get(&self, jump: Option<&Arc<str>>) -> Option<&CStr> {
        jump.and_then(|name| self.0.get(name))
            .map(CString::as_c_str)
    }
}

/// Elements per element list handed to libnftnl at once: bounds the memory of a big set
/// (libnftnl's element objects are large) without changing what goes on the wire.
const ELEMENTS_PER_CHUNK: usize = 4096;

/// The wire elements of `elements` of a set of `kind`.
///
/// Interval kinds use nft's interval encoding: a start element per range (carrying its
/// jump, in a map) and an END element at `end_exclusive()` (none at the top of the address
/// space), preceded by an END element at 0 when `leading_zero` (nft sends it when the
/// first range does not start at 0). Where map ranges are adjacent, the END of one and the
/// start of the next share a key, as nft sends them. A host map has one element per
/// address. `jumps` must hold every chain the elements jump to.
fn wire_elements<'a>(
    kind: SetKind,
    elements: &[Element],
    leading_zero: bool,
    jumps: &'a JumpNames,
) -> Vec<WireElem<'a>> {
    let mut out = Vec::with_capacity(elements.len() * 2 + 1);
    if kind == SetKind::HostMap {
        for e in elements {
            out.push(WireElem {
                key: Key::of(e.range.first()),
                end: false,
                open: false,
                jump: jumps.get(e.jump.as_ref()),
            });
        }
        return out;
    }
    if let Some(first) = elements.first()
        && leading_zero
    {
        out.push(WireElem {
            key: Key::zero(first.range.family),
            end: true,
            open: false,
            jump: None,
        });
    }
    for e in elements {
        let r = e.range;
        let end = r.end_exclusive();
        out.push(WireElem {
            key: Key::of(r.first()),
            end: false,
            open: end.is_none(),
            jump: jumps.get(e.jump.as_ref()),
        });
        if let Some(end) = end {
            out.push(WireElem {
                key: Key::of(end),
                end: true,
                open: false,
                jump: None,
            });
        }
    }
    out
}

/// Whether [`add_elements`] adds or removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElemOp {
    /// NEWSETELEM.
    Add,
    /// DELSETELEM; no jumps are sent (the kernel finds elements by their keys).
    Remove,
}

/// The elements of one set, for [`add_elements`]: `id` names a set created earlier in the
/// same batch; `leading_zero` as in [`wire_elements`].
struct ElementsOf<'e> {
    set: &'e CStr,
    id: Option<u32>,
    kind: SetKind,
    elements: &'e [Element],
    leading_zero: bool,
}

/// Adds element messages of one set to the batch, [`ELEMENTS_PER_CHUNK`] elements at a
/// time.
fn add_elements(
    batch: &mut Batch,
    table: &CStr,
    of: ElementsOf<'_>,
    op: ElemOp,
    jumps: &JumpNames,
    what: &str,
) {
    let (ty, flags) = match op {
        ElemOp::Add => (libc::NFT_MSG_NEWSETELEM, libc::NLM_F_CREATE),
        ElemOp::Remove => (libc::NFT_MSG_DELSETELEM, 0),
    };
    for (i, chunk) in of.elements.chunks(ELEMENTS_PER_CHUNK).enumerate() {
        let mut s = NfSet::new();
        set_identity(&mut s, table, of.set, of.id);
        for mut e in wire_elements(of.kind, chunk, of.leading_zero && i == 0, jumps) {
            if op == ElemOp::Remove {
                e.jump = None;
            }
            s.add_elem(&e);
        }
        batch.add_elems(ty, flags, &s, what);
    }
}

fn key_number(key: &[u8]) -> Option<(Family, u128)> {
    match key.len() {
        4 => Some((Family::V4, u32::from_be_bytes(key.try_into().ok()?) as u128)),
        16 => Some((Family::V6, u128::from_be_bytes(key.try_into().ok()?))),
        _ => None,
    }
}

/// Decodes the elements of a host map: one address each.
fn decode_hosts(family: Family, elems: &[RawElem]) -> Vec<Element> {
    let mut out: Vec<Element> = elems
        .iter()
        .filter_map(|(k, end, jump)| match key_number(k) {
            Some((f, n)) if f == family && !end => Some(Element {
                range: AddrRange {
                    family,
                    start: n,
                    end: n,
                },
                jump: jump.clone(),
            }),
            _ => None,
        })
        .collect();
    out.sort_unstable();
    out
}

/// A live element as read: key, whether it is an END element, and a start element's jump.
type RawElem = (Vec<u8>, bool, Option<Arc<str>>);

/// Decodes interval elements (any order) back into sorted inclusive ranges, each with the
/// jump of its start element.
fn decode_intervals(family: Family, elems: &[RawElem]) -> Vec<Element> {
    let mut keys: Vec<(u128, bool, Option<&Arc<str>>)> = elems
        .iter()
        .filter_map(|(k, end, jump)| match key_number(k) {
            Some((f, n)) if f == family => Some((n, *end, jump.as_ref())),
            _ => None,
        })
        .collect();
    // At equal keys the END (closing the range before) sorts before the START.
    keys.sort_unstable_by_key(|&(n, end, _)| (n, !end));
    let mut out = Vec::new();
    let mut open: Option<(u128, Option<&Arc<str>>)> = None;
    let close = |out: &mut Vec<Element>, (start, jump): (u128, Option<&Arc<str>>), end| {
        out.push(Element {
            range: AddrRange { family, start, end },
            jump: jump.cloned(),
        });
    };
    for (n, end, jump) in keys {
        if end {
            if let Some(o) = open.take()
                && n > o.0
            {
                close(&mut out, o, n - 1);
            }
        } else if let Some(o) = open.replace((n, jump))
            && n > o.0
        {
            // Two starts in a row: the first interval runs up to the second.
            close(&mut out, o, n - 1);
        }
    }
    if let Some(o) = open {
        close(&mut out, o, family.max());
    }
    out
}

// ---------------------------------------------------------------------------------------
// Rule expressions: each helper adds its own nfproto/l4proto guard, like nft does
// ---------------------------------------------------------------------------------------

const REG_1: u32 = libc::NFT_REG_1 as u32;
const CT_INVALID: u32 = 1;
const CT_ESTABLISHED: u32 = 2;
const CT_RELATED: u32 = 4;

/// `[ meta load KEY => reg 1 ]`
fn meta_load(key: c_int) -> Expr {
    Expr::new(c"meta")
        .u32(sys::NFTNL_EXPR_META_KEY, key as u32)
        .u32(sys::NFTNL_EXPR_META_DREG, REG_1)
}

/// `[ cmp OP reg 1 DATA ]`
fn cmp(op: c_int, data: &[u8]) -> Expr {
    Expr::new(c"cmp")
        .u32(sys::NFTNL_EXPR_CMP_SREG, REG_1)
        .u32(sys::NFTNL_EXPR_CMP_OP, op as u32)
        .data(sys::NFTNL_EXPR_CMP_DATA, data)
}

/// `[ payload load LENb @ BASE header + OFFSET => reg 1 ]` (offset and length in bytes).
fn payload_load(base: c_int, offset: u32, len: u32) -> Expr {
    Expr::new(c"payload")
        .u32(sys::NFTNL_EXPR_PAYLOAD_DREG, REG_1)
        .u32(sys::NFTNL_EXPR_PAYLOAD_BASE, base as u32)
        .u32(sys::NFTNL_EXPR_PAYLOAD_OFFSET, offset)
        .u32(sys::NFTNL_EXPR_PAYLOAD_LEN, len)
}

/// `meta nfproto ipv4|ipv6`: `[ meta load nfproto => reg 1 ] [ cmp eq reg 1 0x02|0x0a ]`
fn check_nfproto(family: Family) -> [Expr; 2] {
    let proto = match family {
        Family::V4 => NFPROTO_IPV4,
        Family::V6 => NFPROTO_IPV6,
    };
    [
        meta_load(libc::NFT_META_NFPROTO),
        cmp(libc::NFT_CMP_EQ, &[proto]),
    ]
}

/// `meta l4proto P`: `[ meta load l4proto => reg 1 ] [ cmp eq reg 1 P ]`
fn check_l4proto(proto: u8) -> [Expr; 2] {
    [
        meta_load(libc::NFT_META_L4PROTO),
        cmp(libc::NFT_CMP_EQ, &[proto]),
    ]
}

/// `iif "lo"`: `[ meta load iif => reg 1 ] [ cmp eq reg 1 0x00000001 ]` (lo is ifindex 1
/// in every namespace).
fn check_loopback() -> Vec<Expr> {
    vec![
        meta_load(libc::NFT_META_IIF),
        cmp(libc::NFT_CMP_EQ, &1u32.to_ne_bytes()),
    ]
}

/// `ct state S`: `[ ct load state => reg 1 ] [ bitwise reg 1 = ( reg 1 & MASK ) ^ 0 ]
/// [ cmp neq reg 1 0x00000000 ]`
fn check_ct_state(mask: u32) -> Vec<Expr> {
    vec![
        Expr::new(c"ct")
            .u32(sys::NFTNL_EXPR_CT_KEY, libc::NFT_CT_STATE as u32)
            .u32(sys::NFTNL_EXPR_CT_DREG, REG_1),
        Expr::new(c"bitwise")
            .u32(sys::NFTNL_EXPR_BITWISE_SREG, REG_1)
            .u32(sys::NFTNL_EXPR_BITWISE_DREG, REG_1)
            .u32(sys::NFTNL_EXPR_BITWISE_LEN, 4)
            .data(sys::NFTNL_EXPR_BITWISE_MASK, &mask.to_ne_bytes())
            .data(sys::NFTNL_EXPR_BITWISE_XOR, &0u32.to_ne_bytes()),
        cmp(libc::NFT_CMP_NEQ, &0u32.to_ne_bytes()),
    ]
}

/// `icmp type T` / `icmpv6 type T`: nfproto guard, l4proto guard (1 / 58), then
/// `[ payload load 1b @ transport header + 0 => reg 1 ] [ cmp eq reg 1 T ]`
fn check_icmp_type(family: Family, code: u8) -> Vec<Expr> {
    let l4 = match family {
        Family::V4 => libc::IPPROTO_ICMP as u8,
        Family::V6 => libc::IPPROTO_ICMPV6 as u8,
    };
    let mut v = Vec::from(check_nfproto(family));
    v.extend(check_l4proto(l4));
    v.push(payload_load(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1));
    v.push(cmp(libc::NFT_CMP_EQ, &[code]));
    v
}

/// `tcp|udp dport A[-B]`: l4proto guard, `[ payload load 2b @ transport header + 2 => reg 1 ]`,
/// then `[ cmp eq reg 1 A ]` or `[ cmp gte reg 1 A ] [ cmp lte reg 1 B ]` (big endian).
fn check_dport(proto: L4Proto, first: u16, last: u16) -> Vec<Expr> {
    let mut v = Vec::from(check_l4proto(proto.number()));
    v.push(payload_load(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2));
    if first == last {
        v.push(cmp(libc::NFT_CMP_EQ, &first.to_be_bytes()));
    } else {
        v.push(cmp(libc::NFT_CMP_GTE, &first.to_be_bytes()));
        v.push(cmp(libc::NFT_CMP_LTE, &last.to_be_bytes()));
    }
    v
}

/// `ip saddr @S` / `ip6 saddr @S`: nfproto guard, `[ payload load 4b @ network header + 12
/// => reg 1 ]` (or `16b @ network header + 8`), `[ lookup reg 1 set S ]`. The set id
/// lets the rule find a set created earlier in the same batch.
/// `ip saddr @set` (`[ lookup reg 1 set S ]`), or with `vmap` `ip saddr vmap @map`
/// (`[ lookup reg 1 set S dreg 0 ]`: the element's verdict goes to the verdict register).
fn check_saddr(family: Family, set: &CStr, set_id: Option<u32>, vmap: bool) -> Vec<Expr> {
    let (offset, len) = match family {
        Family::V4 => (12, 4),
        Family::V6 => (8, 16),
    };
    let mut v = Vec::from(check_nfproto(family));
    v.push(payload_load(libc::NFT_PAYLOAD_NETWORK_HEADER, offset, len));
    let mut lookup = Expr::new(c"lookup")
        .u32(sys::NFTNL_EXPR_LOOKUP_SREG, REG_1)
        .str(sys::NFTNL_EXPR_LOOKUP_SET, set);
    if let Some(id) = set_id {
        lookup = lookup.u32(sys::NFTNL_EXPR_LOOKUP_SET_ID, id);
    }
    if vmap {
        lookup = lookup.u32(sys::NFTNL_EXPR_LOOKUP_DREG, libc::NFT_REG_VERDICT as u32);
    }
    v.push(lookup);
    v
}

/// `limit rate N/minute`: `[ limit rate N/minute burst 5 type packets flags 0x0 ]`
fn limit_per_minute(per_minute: u32) -> Expr {
    Expr::new(c"limit")
        .u64(sys::NFTNL_EXPR_LIMIT_RATE, per_minute.into())
        .u64(sys::NFTNL_EXPR_LIMIT_UNIT, 60)
        .u32(sys::NFTNL_EXPR_LIMIT_BURST, LIMIT_BURST)
        .u32(sys::NFTNL_EXPR_LIMIT_TYPE, libc::NFT_LIMIT_PKTS as u32)
        .u32(sys::NFTNL_EXPR_LIMIT_FLAGS, 0)
}

/// `log prefix "P"`: `[ log prefix P ]`
fn log_prefix(prefix: &CStr) -> Expr {
    Expr::new(c"log").str(sys::NFTNL_EXPR_LOG_PREFIX, prefix)
}

/// `accept` / `drop`: `[ immediate reg 0 accept|drop ]`
fn verdict(v: Verdict) -> Expr {
    Expr::new(c"immediate")
        .u32(sys::NFTNL_EXPR_IMM_DREG, libc::NFT_REG_VERDICT as u32)
        .u32(sys::NFTNL_EXPR_IMM_VERDICT, nf_verdict(v))
}

// ---------------------------------------------------------------------------------------
// Reading the live table
// ---------------------------------------------------------------------------------------

struct SnapSet {
    name: String,
    cname: CString,
    handle: u64,
    key: Option<(Family, u32)>,
    flags: Option<u32>,
    data_type: Option<u32>,
    elems: Vec<RawElem>,
}

struct SnapChain {
    name: String,
    cname: CString,
    handle: u64,
    base: Option<LiveHook>,
    rules: Vec<SnapRule>,
}

struct SnapRule {
    handle: u64,
    counter: Option<(u64, u64)>,
    fingerprint: String,
}

/// What was live in the table. Without `full`, sets have no elements and chains no rules.
struct Snapshot {
    flags: u32,
    sets: Vec<SnapSet>,
    chains: Vec<SnapChain>,
}

impl Snapshot {
    fn into_live(self) -> LiveTable {
        LiveTable {
            flags: self.flags,
            sets: self
                .sets
                .into_iter()
                .map(|s| {
                    let family = s.key.and_then(|(f, len)| (len == key_of(f).1).then_some(f));
                    let kind = [SetKind::Addresses, SetKind::VerdictMap, SetKind::HostMap]
                        .into_iter()
                        .find(|k| s.flags == Some(set_flags(*k)) && s.data_type == data_type(*k));
                    LiveSet {
                        kind,
                        elements: family
                            .map(|f| match kind {
                                Some(SetKind::HostMap) => decode_hosts(f, &s.elems),
                                _ => decode_intervals(f, &s.elems),
                            })
                            .unwrap_or_default(),
                        name: s.name,
                        family,
                        handle: s.handle,
                    }
                })
                .collect(),
            chains: self
                .chains
                .into_iter()
                .map(|c| LiveChain {
                    rule_handles: c.rules.iter().map(|r| r.handle).collect(),
                    rule_count: c.rules.len(),
                    counters: c
                        .rules
                        .iter()
                        .filter_map(|r| r.counter.map(|(p, b)| (r.handle, p, b)))
                        .collect(),
                    rules: c.rules.into_iter().map(|r| r.fingerprint).collect(),
                    name: c.name,
                    handle: c.handle,
                    base: c.base,
                })
                .collect(),
        }
    }
}

enum ReadError {
    /// nf_tables changed during a dump (or the table vanished between dumps): read again.
    Changed,
    Failed(NetlinkError),
}

impl From<NetlinkError> for ReadError {
    fn from(e: NetlinkError) -> Self {
        ReadError::Failed(e)
    }
}

fn read_snapshot(sock: &mut Socket, full: bool) -> Result<Option<Snapshot>, ReadError> {
    let table = cstring(TABLE_NAME, "table")?;
    let tname = format!("table inet {TABLE_NAME}");

    // nft list table inet pbxwall  (existence and flags)
    let mut t = NfTable::new();
    t.set_u32(sys::NFTNL_TABLE_FAMILY, NFPROTO_INET.into());
    t.set_str(sys::NFTNL_TABLE_NAME, &table);
    let mut flags = 0;
    match sock.request(
        &tname,
        libc::NFT_MSG_GETTABLE,
        libc::NLM_F_ACK,
        Obj::Table(&t),
        |msg| {
            if msg.nft_type() == Some(libc::NFT_MSG_NEWTABLE) {
                let t = NfTable::parse(msg, &tname)?;
                flags = t.get_u32(sys::NFTNL_TABLE_FLAGS).unwrap_or_default();
            }
            Ok(())
        },
    ) {
        Ok(()) => {}
        Err(RequestError::Kernel(e)) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e.into_read(&tname)),
    }

    // Sets of the table (the kernel filters by table).
    let mut sets = Vec::new();
    let mut filter = NfSet::new();
    filter.set_u32(sys::NFTNL_SET_FAMILY, NFPROTO_INET.into());
    filter.set_str(sys::NFTNL_SET_TABLE, &table);
    let what = format!("the sets of {tname}");
    sock.request(
        &what,
        libc::NFT_MSG_GETSET,
        libc::NLM_F_DUMP,
        Obj::Set(&filter),
        |msg| {
            if msg.nft_type() != Some(libc::NFT_MSG_NEWSET) {
                return Ok(());
            }
            let s = NfSet::parse(msg, &what)?;
            if s.get_str(sys::NFTNL_SET_TABLE).as_deref() != Some(TABLE_NAME) {
                return Ok(());
            }
            let name = s.get_str(sys::NFTNL_SET_NAME).unwrap_or_default();
            let key = match (
                s.get_u32(sys::NFTNL_SET_KEY_TYPE),
                s.get_u32(sys::NFTNL_SET_KEY_LEN),
            ) {
                (Some(KEY_TYPE_IPV4_ADDR), Some(len)) => Some((Family::V4, len)),
                (Some(KEY_TYPE_IPV6_ADDR), Some(len)) => Some((Family::V6, len)),
                _ => None,
            };
            sets.push(SnapSet {
                cname: cstring(&name, &what)?,
                name,
                handle: s.get_u64(sys::NFTNL_SET_HANDLE).unwrap_or_default(),
                key,
                flags: s.get_u32(sys::NFTNL_SET_FLAGS),
                data_type: s.get_u32(sys::NFTNL_SET_DATA_TYPE),
                elems: Vec::new(),
            });
            Ok(())
        },
    )
    .map_err(|e| e.into_read(&what))?;

    // Chains (the kernel dumps all inet chains; keep ours).
    let mut chains = Vec::new();
    let mut filter = NfChain::new();
    filter.set_u32(sys::NFTNL_CHAIN_FAMILY, NFPROTO_INET.into());
    filter.set_str(sys::NFTNL_CHAIN_TABLE, &table);
    let what = format!("the chains of {tname}");
    sock.request(
        &what,
        libc::NFT_MSG_GETCHAIN,
        libc::NLM_F_DUMP,
        Obj::Chain(&filter),
        |msg| {
            if msg.nft_type() != Some(libc::NFT_MSG_NEWCHAIN) {
                return Ok(());
            }
            let c = NfChain::parse(msg, &what)?;
            if c.get_str(sys::NFTNL_CHAIN_TABLE).as_deref() != Some(TABLE_NAME) {
                return Ok(());
            }
            let name = c.get_str(sys::NFTNL_CHAIN_NAME).unwrap_or_default();
            let base = c.get_u32(sys::NFTNL_CHAIN_HOOKNUM).map(|hook| LiveHook {
                hook,
                priority: c.get_s32(sys::NFTNL_CHAIN_PRIO).unwrap_or_default(),
                chain_type: c.get_str(sys::NFTNL_CHAIN_TYPE).unwrap_or_default(),
                policy: match c.get_u32(sys::NFTNL_CHAIN_POLICY) {
                    Some(p) if p == libc::NF_ACCEPT as u32 => Some(Verdict::Accept),
                    Some(p) if p == libc::NF_DROP as u32 => Some(Verdict::Drop),
                    _ => None,
                },
            });
            chains.push(SnapChain {
                cname: cstring(&name, &what)?,
                name,
                handle: c.get_u64(sys::NFTNL_CHAIN_HANDLE).unwrap_or_default(),
                base,
                rules: Vec::new(),
            });
            Ok(())
        },
    )
    .map_err(|e| e.into_read(&what))?;

    if full {
        // Rules of the table, in order within each chain.
        let mut filter = NfRule::new();
        filter.set_u32(sys::NFTNL_RULE_FAMILY, NFPROTO_INET.into());
        filter.set_str(sys::NFTNL_RULE_TABLE, &table);
        let what = format!("the rules of {tname}");
        sock.request(
            &what,
            libc::NFT_MSG_GETRULE,
            libc::NLM_F_DUMP,
            Obj::Rule(&filter),
            |msg| {
                if msg.nft_type() != Some(libc::NFT_MSG_NEWRULE) {
                    return Ok(());
                }
                let mut r = NfRule::parse(msg, &what)?;
                if r.get_str(sys::NFTNL_RULE_TABLE).as_deref() != Some(TABLE_NAME) {
                    return Ok(());
                }
                let chain = r.get_str(sys::NFTNL_RULE_CHAIN).unwrap_or_default();
                if let Some(c) = chains.iter_mut().find(|c| c.name == chain) {
                    // The counter values first: the fingerprint zeroes them.
                    let counter = r.first_counter();
                    c.rules.push(SnapRule {
                        handle: r.get_u64(sys::NFTNL_RULE_HANDLE).unwrap_or_default(),
                        counter,
                        fingerprint: r.fingerprint(),
                    });
                }
                Ok(())
            },
        )
        .map_err(|e| e.into_read(&what))?;

        // Elements of each set.
        for set in &mut sets {
            let what = format!("the elements of set {}", set.name);
            let mut filter = NfSet::new();
            filter.set_u32(sys::NFTNL_SET_FAMILY, NFPROTO_INET.into());
            filter.set_str(sys::NFTNL_SET_TABLE, &table);
            filter.set_str(sys::NFTNL_SET_NAME, &set.cname);
            let mut elems = Vec::new();
            let mut chains = HashMap::new();
            let res = sock.request(
                &what,
                libc::NFT_MSG_GETSETELEM,
                libc::NLM_F_DUMP,
                Obj::SetElemsOf(&filter),
                |msg| {
                    if msg.nft_type() != Some(libc::NFT_MSG_NEWSETELEM) {
                        return Ok(());
                    }
                    let s = NfSet::parse_elems(msg, &what)?;
                    elems.extend(s.elems(&mut chains));
                    Ok(())
                },
            );
            match res {
                Ok(()) => set.elems = elems,
                // The set or table went away between the dumps.
                Err(RequestError::Kernel(e)) if e.raw_os_error() == Some(libc::ENOENT) => {
                    return Err(ReadError::Changed);
                }
                Err(e) => return Err(e.into_read(&what)),
            }
        }
    }
    Ok(Some(Snapshot {
        flags,
        sets,
        chains,
    }))
}

// ---------------------------------------------------------------------------------------
// Owned libnftnl objects
// ---------------------------------------------------------------------------------------

/// The libnftnl functions of one object type (table, chain, rule, set); they all share
/// the same shapes.
struct Api<R> {
    alloc: unsafe extern "C" fn() -> *mut R,
    free: unsafe extern "C" fn(*const R),
    set_str: unsafe extern "C" fn(*mut R, u16, *const c_char) -> c_int,
    set_u32: unsafe extern "C" fn(*mut R, u16, u32),
    set_data: unsafe extern "C" fn(*mut R, u16, *const c_void, u32) -> c_int,
    is_set: unsafe extern "C" fn(*const R, u16) -> bool,
    get_str: unsafe extern "C" fn(*const R, u16) -> *const c_char,
    get_u32: unsafe extern "C" fn(*const R, u16) -> u32,
    get_u64: unsafe extern "C" fn(*const R, u16) -> u64,
    parse: unsafe extern "C" fn(*const libc::nlmsghdr, *mut R) -> c_int,
}

trait Kind: Sized + 'static {
    const API: Api<Self>;
}

macro_rules! kind {
    ($raw:ty { $alloc:path, $free:path, $set_str:path, $set_u32:path, $set_data:path,
      $is_set:path, $get_str:path, $get_u32:path, $get_u64:path, $parse:path }) => {
        impl Kind for $raw {
            const API: Api<Self> = Api {
                alloc: $alloc,
                free: $free,
                set_str: $set_str,
                set_u32: $set_u32,
                set_data: $set_data,
                is_set: $is_set,
                get_str: $get_str,
                get_u32: $get_u32,
                get_u64: $get_u64,
                parse: $parse,
            };
        }
    };
}

kind!(sys::nftnl_table {
    sys::nftnl_table_alloc, sys::nftnl_table_free, sys::nftnl_table_set_str,
    sys::nftnl_table_set_u32, sys::nftnl_table_set_data, sys::nftnl_table_is_set,
    sys::nftnl_table_get_str, sys::nftnl_table_get_u32, sys::nftnl_table_get_u64,
    sys::nftnl_table_nlmsg_parse
});
kind!(sys::nftnl_chain {
    sys::nftnl_chain_alloc, sys::nftnl_chain_free, sys::nftnl_chain_set_str,
    sys::nftnl_chain_set_u32, sys::nftnl_chain_set_data, sys::nftnl_chain_is_set,
    sys::nftnl_chain_get_str, sys::nftnl_chain_get_u32, sys::nftnl_chain_get_u64,
    sys::nftnl_chain_nlmsg_parse
});
kind!(sys::nftnl_rule {
    sys::nftnl_rule_alloc, sys::nftnl_rule_free, sys::nftnl_rule_set_str,
    sys::nftnl_rule_set_u32, sys::nftnl_rule_set_data, sys::nftnl_rule_is_set,
    sys::nftnl_rule_get_str, sys::nftnl_rule_get_u32, sys::nftnl_rule_get_u64,
    sys::nftnl_rule_nlmsg_parse
});
kind!(sys::nftnl_set {
    sys::nftnl_set_alloc, sys::nftnl_set_free, sys::nftnl_set_set_str,
    sys::nftnl_set_set_u32, sys::nftnl_set_set_data, sys::nftnl_set_is_set,
    sys::nftnl_set_get_str, sys::nftnl_set_get_u32, sys::nftnl_set_get_u64,
    sys::nftnl_set_nlmsg_parse
});

/// An owned libnftnl object, freed on drop. libnftnl copies every string and byte buffer
/// handed to its setters, so nothing borrowed outlives a call.
struct Nft<R: Kind>(NonNull<R>);

type NfTable = Nft<sys::nftnl_table>;
type NfChain = Nft<sys::nftnl_chain>;
type NfRule = Nft<sys::nftnl_rule>;
type NfSet = Nft<sys::nftnl_set>;

impl<R: Kind> Nft<R> {
    fn new() -> Self {
        // SAFETY: the allocator takes no arguments and returns an owned object or NULL.
        let p = unsafe { (R::API.alloc)() };
        Nft(NonNull::new(p).expect("libnftnl: out of memory"))
    }

    fn ptr(&self) -> *mut R {
        self.0.as_ptr()
    }

    /// Parses one nf_tables message into a fresh object.
    fn parse(msg: &Reply<'_>, what: &str) -> Result<Self> {
        let obj = Self::new();
        // SAFETY: `msg` is a complete, length-checked netlink message in a 4-aligned
        // buffer; `obj` is a valid object of the matching type.
        let rc = unsafe { (R::API.parse)(msg.header(), obj.ptr()) };
        if rc < 0 {
            return Err(NetlinkError::Protocol {
                what: what.to_owned(),
                reason: "libnftnl could not parse a message".into(),
            });
        }
        Ok(obj)
    }

    fn set_str(&mut self, attr: u32, value: &CStr) {
        // SAFETY: valid object; `value` is NUL-terminated and copied by libnftnl.
        unsafe { (R::API.set_str)(self.ptr(), attr as u16, value.as_ptr()) };
    }

    fn set_u32(&mut self, attr: u32, value: u32) {
        // SAFETY: valid object; plain value.
        unsafe { (R::API.set_u32)(self.ptr(), attr as u16, value) };
    }

    fn set_data(&mut self, attr: u32, data: &[u8]) {
        // SAFETY: valid object; `data` is readable for its length and copied by libnftnl.
        unsafe {
            (R::API.set_data)(
                self.ptr(),
                attr as u16,
                data.as_ptr().cast(),
                data.len() as u32,
            )
        };
    }

    fn is_set(&self, attr: u32) -> bool {
        // SAFETY: valid object.
        unsafe { (R::API.is_set)(self.ptr(), attr as u16) }
    }

    fn get_str(&self, attr: u32) -> Option<String> {
        if !self.is_set(attr) {
            return None;
        }
        // SAFETY: valid object and the attribute is set, so libnftnl returns a
        // NUL-terminated string owned by the object, copied before the object can change.
        unsafe {
            let p = (R::API.get_str)(self.ptr(), attr as u16);
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        }
    }

    fn get_u32(&self, attr: u32) -> Option<u32> {
        // SAFETY: valid object; the attribute is set.
        self.is_set(attr)
            .then(|| unsafe { (R::API.get_u32)(self.ptr(), attr as u16) })
    }

    fn get_u64(&self, attr: u32) -> Option<u64> {
        // SAFETY: valid object; the attribute is set.
        self.is_set(attr)
            .then(|| unsafe { (R::API.get_u64)(self.ptr(), attr as u16) })
    }
}

impl<R: Kind> Drop for Nft<R> {
    fn drop(&mut self) {
        // SAFETY: we own the object, allocated by the matching allocator, freed once.
        unsafe { (R::API.free)(self.ptr()) };
    }
}

impl NfChain {
    fn set_s32(&mut self, attr: u32, value: i32) {
        // SAFETY: valid chain object; plain value.
        unsafe { sys::nftnl_chain_set_s32(self.ptr(), attr as u16, value) };
    }

    fn get_s32(&self, attr: u32) -> Option<i32> {
        // SAFETY: valid chain object; the attribute is set.
        self.is_set(attr)
            .then(|| unsafe { sys::nftnl_chain_get_s32(self.ptr(), attr as u16) })
    }
}

impl NfRule {
    fn add_expr(&mut self, e: Expr) {
        let p = e.0.as_ptr();
        mem::forget(e);
        // SAFETY: valid rule; the rule takes ownership of the expression (freed with it).
        unsafe { sys::nftnl_rule_add_expr(self.ptr(), p) };
    }

    /// Packets and bytes of the first `counter` expression.
    fn first_counter(&self) -> Option<(u64, u64)> {
        unsafe extern "C" fn visit(e: *mut sys::nftnl_expr, data: *mut c_void) -> c_int {
            // SAFETY: `data` is the `Option` passed below, alive for the whole foreach and
            // not otherwise borrowed; `e` is a valid expression of the rule.
            unsafe {
                let found = &mut *data.cast::<Option<(u64, u64)>>();
                let name = sys::nftnl_expr_get_str(e, sys::NFTNL_EXPR_NAME as u16);
                if found.is_none() && !name.is_null() && CStr::from_ptr(name) == c"counter" {
                    *found = Some((
                        sys::nftnl_expr_get_u64(e, sys::NFTNL_EXPR_CTR_PACKETS as u16),
                        sys::nftnl_expr_get_u64(e, sys::NFTNL_EXPR_CTR_BYTES as u16),
                    ));
                }
            }
            0
        }
        let mut found: Option<(u64, u64)> = None;
        // SAFETY: valid rule; the callback only touches `found` through `data`.
        unsafe {
            sys::nftnl_expr_foreach(self.ptr(), Some(visit), (&raw mut found).cast());
        }
        found
    }

    /// The rule's content fingerprint (see [`rule_fingerprints`]). Canonicalises the
    /// expressions in place first (counter values become 0).
    fn fingerprint(&mut self) -> String {
        unsafe extern "C" fn visit(e: *mut sys::nftnl_expr, data: *mut c_void) -> c_int {
            // SAFETY: `data` is the Vec passed below, alive and not otherwise borrowed
            // during the foreach; `e` is a valid expression owned by the rule, which is
            // borrowed mutably for the whole foreach, so nothing else sees the change.
            unsafe {
                let out = &mut *data.cast::<Vec<String>>();
                canonicalize_expr(e);
                out.push(print_expr(e));
            }
            0
        }
        let mut exprs: Vec<String> = Vec::new();
        // SAFETY: valid rule, borrowed mutably; the callback only touches `exprs` through
        // `data` and the rule's own expressions.
        unsafe {
            sys::nftnl_expr_foreach(self.ptr(), Some(visit), (&raw mut exprs).cast());
        }
        let mut line = exprs.join(" ");
        if let Some(udata) = self.get_data(sys::NFTNL_RULE_USERDATA) {
            line.push_str(" userdata 0x");
            for b in udata {
                line.push_str(&format!("{b:02x}"));
            }
        }
        line
    }

    fn get_data(&self, attr: u32) -> Option<Vec<u8>> {
        if !self.is_set(attr) {
            return None;
        }
        let mut len = 0u32;
        // SAFETY: valid rule and the attribute is set; libnftnl returns a buffer of `len`
        // bytes owned by the rule, copied before the rule can change.
        unsafe {
            let p = sys::nftnl_rule_get_data(self.ptr(), attr as u16, &mut len);
            (!p.is_null())
                .then(|| std::slice::from_raw_parts(p.cast::<u8>(), len as usize).to_vec())
        }
    }
}

/// `LOGLEVEL_WARNING`: the kernel's log level when none is given.
const LOG_LEVEL_DEFAULT: u32 = 4;

/// Brings one expression into the form the kernel reports it in, so a rule built here and
/// the same rule dumped by the kernel print identically, and zeroes counter values.
///
/// What the kernel reports that nft (and [`Plan::rule`]) does not send:
/// * `lookup`: `NFTA_LOOKUP_FLAGS` always (0 unless `!=`); printed as `0x0`.
/// * `log`: `NFTA_LOG_LEVEL` always for a syslog log (default `LOGLEVEL_WARNING`); printed
///   as `level 4`.
///
/// The lookup's set id is only sent, never reported, and libnftnl does not print it; the
/// set name is on both sides. `cmp` data keeps the length sent, `limit` is sent with its
/// flags, and `counter`, `meta`, `ct`, `payload`, `bitwise` and `immediate` come back as
/// sent (checked by the root test `live_rule_fingerprints_match_the_ir_and_see_replacements`).
///
/// # Safety
/// `e` must be a valid expression that nothing else is reading or writing.
unsafe fn canonicalize_expr(e: *mut sys::nftnl_expr) {
    // SAFETY: `e` is valid and exclusively ours (caller); the name is a NUL-terminated
    // string owned by the expression; setters copy plain values.
    unsafe {
        let name = sys::nftnl_expr_get_str(e, sys::NFTNL_EXPR_NAME as u16);
        if name.is_null() {
            return;
        }
        let is_set = |attr: u32| sys::nftnl_expr_is_set(e, attr as u16);
        match CStr::from_ptr(name).to_bytes() {
            b"counter" => {
                sys::nftnl_expr_set_u64(e, sys::NFTNL_EXPR_CTR_PACKETS as u16, 0);
                sys::nftnl_expr_set_u64(e, sys::NFTNL_EXPR_CTR_BYTES as u16, 0);
            }
            b"lookup" if !is_set(sys::NFTNL_EXPR_LOOKUP_FLAGS) => {
                sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_LOOKUP_FLAGS as u16, 0);
            }
            b"log" if !is_set(sys::NFTNL_EXPR_LOG_GROUP) && !is_set(sys::NFTNL_EXPR_LOG_LEVEL) => {
                sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_LOG_LEVEL as u16, LOG_LEVEL_DEFAULT);
            }
            _ => {}
        }
    }
}

/// `[ NAME BODY]`: the expression as `nft --debug=netlink` prints it, BODY from
/// `nftnl_expr_snprintf` (default output type).
///
/// # Safety
/// `e` must be a valid expression.
unsafe fn print_expr(e: *const sys::nftnl_expr) -> String {
    // SAFETY: `e` is valid (caller); the name is NUL-terminated and owned by it.
    let name = unsafe {
        let p = sys::nftnl_expr_get_str(e, sys::NFTNL_EXPR_NAME as u16);
        if p.is_null() {
            String::from("?")
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: `buf` is writable for its length; libnftnl writes at most that many bytes,
        // NUL included, and returns the length the whole text needs.
        let n = unsafe {
            sys::nftnl_expr_snprintf(
                buf.as_mut_ptr().cast(),
                buf.len(),
                e,
                sys::NFTNL_OUTPUT_DEFAULT,
                0,
            )
        };
        let n = n.max(0) as usize;
        if n < buf.len() {
            let body = String::from_utf8_lossy(&buf[..n]);
            return format!("[ {name} {body}]");
        }
        buf.resize(n + 1, 0);
    }
}

impl NfSet {
    /// Adds one wire element to the set's element list.
    fn add_elem(&mut self, e: &WireElem) {
        // SAFETY: the element is fresh; key/udata buffers are readable for their lengths
        // and copied by libnftnl; the set takes ownership of the element.
        unsafe {
            let el = sys::nftnl_set_elem_alloc();
            assert!(!el.is_null(), "libnftnl: out of memory");
            sys::nftnl_set_elem_set(
                el,
                sys::NFTNL_SET_ELEM_KEY as u16,
                e.key.bytes().as_ptr().cast(),
                e.key.bytes().len() as u32,
            );
            if e.end {
                sys::nftnl_set_elem_set_u32(
                    el,
                    sys::NFTNL_SET_ELEM_FLAGS as u16,
                    libc::NFT_SET_ELEM_INTERVAL_END as u32,
                );
            }
            if e.open {
                sys::nftnl_set_elem_set(
                    el,
                    sys::NFTNL_SET_ELEM_USERDATA as u16,
                    ELEM_UDATA_INTERVAL_OPEN.as_ptr().cast(),
                    ELEM_UDATA_INTERVAL_OPEN.len() as u32,
                );
            }
            if let Some(chain) = &e.jump {
                // nft: ... : jump CHAIN
                sys::nftnl_set_elem_set_u32(
                    el,
                    sys::NFTNL_SET_ELEM_VERDICT as u16,
                    libc::NFT_JUMP as u32,
                );
                sys::nftnl_set_elem_set_str(el, sys::NFTNL_SET_ELEM_CHAIN as u16, chain.as_ptr());
            }
            sys::nftnl_set_elem_add(self.ptr(), el);
        }
    }

    /// Parses a NEWSETELEM message (elements land in the set's element list).
    fn parse_elems(msg: &Reply<'_>, what: &str) -> Result<NfSet> {
        let s = NfSet::new();
        // SAFETY: `msg` is a complete, length-checked message in a 4-aligned buffer.
        let rc = unsafe { sys::nftnl_set_elems_nlmsg_parse(msg.header(), s.ptr()) };
        if rc < 0 {
            return Err(NetlinkError::Protocol {
                what: what.to_owned(),
                reason: "libnftnl could not parse set elements".into(),
            });
        }
        Ok(s)
    }

    /// `(key, is END element, jump)` of every element; catch-all elements are skipped.
    /// A map element's verdict is its chain name for a jump (names shared through
    /// `chains`), else `goto NAME` or `verdict N`.
    fn elems(&self, chains: &mut HashMap<String, Arc<str>>) -> Vec<RawElem> {
        struct Visit<'a> {
            out: Vec<RawElem>,
            chains: &'a mut HashMap<String, Arc<str>>,
        }
        unsafe extern "C" fn visit(e: *mut sys::nftnl_set_elem, data: *mut c_void) -> c_int {
            // SAFETY: `data` is the Visit passed below, alive and unborrowed during the
            // foreach; `e` is a valid element; the key pointer is valid for `len` bytes and
            // the chain name is NUL-terminated, both owned by the element.
            unsafe {
                let v = &mut *data.cast::<Visit<'_>>();
                let is_set = |attr: u32| sys::nftnl_set_elem_is_set(e, attr as u16);
                let flags = if is_set(sys::NFTNL_SET_ELEM_FLAGS) {
                    sys::nftnl_set_elem_get_u32(e, sys::NFTNL_SET_ELEM_FLAGS as u16)
                } else {
                    0
                };
                if flags & NFT_SET_ELEM_CATCHALL != 0 || !is_set(sys::NFTNL_SET_ELEM_KEY) {
                    return 0;
                }
                let jump = if is_set(sys::NFTNL_SET_ELEM_VERDICT) {
                    let code = sys::nftnl_set_elem_get_u32(e, sys::NFTNL_SET_ELEM_VERDICT as u16);
                    let chain = sys::nftnl_set_elem_get_str(e, sys::NFTNL_SET_ELEM_CHAIN as u16);
                    let chain = (!chain.is_null())
                        .then(|| CStr::from_ptr(chain).to_string_lossy().into_owned());
                    let name = match (code as i32, chain) {
                        (libc::NFT_JUMP, Some(c)) => c,
                        (libc::NFT_GOTO, Some(c)) => format!("goto {c}"),
                        (code, _) => format!("verdict {code}"),
                    };
                    let shared = v
                        .chains
                        .entry(name)
                        .or_insert_with_key(|n| Arc::from(n.as_str()));
                    Some(Arc::clone(shared))
                } else {
                    None
                };
                let mut len = 0u32;
                let key = sys::nftnl_set_elem_get(e, sys::NFTNL_SET_ELEM_KEY as u16, &mut len);
                if !key.is_null() {
                    let key = std::slice::from_raw_parts(key.cast::<u8>(), len as usize).to_vec();
                    v.out.push((
                        key,
                        flags & libc::NFT_SET_ELEM_INTERVAL_END as u32 != 0,
                        jump,
                    ));
                }
            }
            0
        }
        let mut v = Visit {
            out: Vec::new(),
            chains,
        };
        // SAFETY: valid set; the callback only touches `v` through `data`.
        unsafe {
            sys::nftnl_set_elem_foreach(self.ptr(), Some(visit), (&raw mut v).cast());
        }
        v.out
    }
}

/// `NFT_SET_ELEM_CATCHALL` (not in the libc crate).
const NFT_SET_ELEM_CATCHALL: u32 = 2;

/// An expression under construction; owned until a rule takes it.
struct Expr(NonNull<sys::nftnl_expr>);

impl Expr {
    fn new(name: &CStr) -> Expr {
        // SAFETY: `name` is NUL-terminated; returns an owned expression or NULL.
        let p = unsafe { sys::nftnl_expr_alloc(name.as_ptr()) };
        Expr(NonNull::new(p).expect("libnftnl: unknown expression or out of memory"))
    }

    fn u32(self, attr: u32, value: u32) -> Expr {
        // SAFETY: valid expression; plain value.
        unsafe { sys::nftnl_expr_set_u32(self.0.as_ptr(), attr as u16, value) };
        self
    }

    fn u64(self, attr: u32, value: u64) -> Expr {
        // SAFETY: valid expression; plain value.
        unsafe { sys::nftnl_expr_set_u64(self.0.as_ptr(), attr as u16, value) };
        self
    }

    fn data(self, attr: u32, data: &[u8]) -> Expr {
        // SAFETY: valid expression; `data` (at most 16 bytes here) is copied.
        unsafe {
            sys::nftnl_expr_set(
                self.0.as_ptr(),
                attr as u16,
                data.as_ptr().cast(),
                data.len() as u32,
            )
        };
        self
    }

    fn str(self, attr: u32, value: &CStr) -> Expr {
        // SAFETY: valid expression; `value` is NUL-terminated and copied.
        unsafe { sys::nftnl_expr_set_str(self.0.as_ptr(), attr as u16, value.as_ptr()) };
        self
    }
}

impl Drop for Expr {
    fn drop(&mut self) {
        // SAFETY: still owned (add_expr forgets the wrapper when a rule takes it).
        unsafe { sys::nftnl_expr_free(self.0.as_ptr()) };
    }
}

// ---------------------------------------------------------------------------------------
// Messages and the batch
// ---------------------------------------------------------------------------------------

/// The payload of one nf_tables message.
enum Obj<'a> {
    Table(&'a NfTable),
    Chain(&'a NfChain),
    Rule(&'a NfRule),
    Set(&'a NfSet),
    /// Table and set name of a set, for a GETSETELEM dump.
    SetElemsOf(&'a NfSet),
    /// No payload (GETGEN).
    Nothing,
}

fn max_msg_size() -> usize {
    nftnl::nft_nlmsg_maxsize() as usize
}

/// Writes one nf_tables message (header with `NLM_F_REQUEST | flags`, family inet).
///
/// # Safety
/// `buf` must point to at least [`max_msg_size`] writable bytes, aligned to 4.
unsafe fn write_msg(buf: *mut c_void, ty: c_int, flags: c_int, seq: u32, obj: &Obj<'_>) {
    // SAFETY: the caller guarantees room for the largest message; the objects are valid.
    unsafe {
        let nlh =
            sys::nftnl_nlmsg_build_hdr(buf.cast(), ty as u16, NFPROTO_INET, flags as u16, seq);
        match obj {
            Obj::Table(t) => sys::nftnl_table_nlmsg_build_payload(nlh, t.ptr()),
            Obj::Chain(c) => sys::nftnl_chain_nlmsg_build_payload(nlh, c.ptr()),
            Obj::Rule(r) => sys::nftnl_rule_nlmsg_build_payload(nlh, r.ptr()),
            Obj::Set(s) => sys::nftnl_set_nlmsg_build_payload(nlh, s.ptr()),
            Obj::SetElemsOf(s) => sys::nftnl_set_elems_nlmsg_build_payload(nlh, s.ptr()),
            Obj::Nothing => {}
        }
    }
}

/// A batch under construction: libnftnl pages plus a description of every message, by
/// sequence number, so an error can name its object.
struct Batch {
    raw: NonNull<sys::nftnl_batch>,
    next_seq: u32,
    begin_seq: u32,
    what: HashMap<u32, String>,
    messages: usize,
}

impl Batch {
    /// Starts a batch; with `genid`, the kernel refuses it (`ERESTART`) if nf_tables
    /// changed since that generation.
    fn new(first_seq: u32, genid: Option<u32>) -> Batch {
        let page = nftnl::default_batch_page_size();
        // SAFETY: plain allocation; the overrun size is the largest message, as nft uses.
        let raw = unsafe { sys::nftnl_batch_alloc(page, max_msg_size() as u32) };
        let mut b = Batch {
            raw: NonNull::new(raw).expect("libnftnl: out of memory"),
            next_seq: first_seq,
            begin_seq: first_seq,
            what: HashMap::new(),
            messages: 0,
        };
        let seq = b.next_seq;
        // SAFETY: the current batch buffer has room for the largest message; the begin
        // message (20 bytes) plus one 8-byte attribute fits easily.
        unsafe {
            let nlh = sys::nftnl_batch_begin(b.current().cast(), seq);
            if let Some(genid) = genid {
                // NFNL_BATCH_GENID, a big-endian u32 attribute after the nfgenmsg header.
                let mut attr = [0u8; 8];
                attr[0..2].copy_from_slice(&8u16.to_ne_bytes());
                attr[2..4].copy_from_slice(&(libc::NFNL_BATCH_GENID as u16).to_ne_bytes());
                attr[4..8].copy_from_slice(&genid.to_be_bytes());
                let len = (*nlh).nlmsg_len as usize;
                ptr::copy_nonoverlapping(attr.as_ptr(), nlh.cast::<u8>().add(len), attr.len());
                (*nlh).nlmsg_len += attr.len() as u32;
            }
        }
        b.advance("the batch (begin / generation check / commit)".into());
        b
    }

    fn current(&self) -> *mut c_void {
        // SAFETY: valid batch.
        unsafe { sys::nftnl_batch_buffer(self.raw.as_ptr()) }
    }

    /// Moves past the message just written into the current buffer.
    fn advance(&mut self, what: String) {
        // SAFETY: valid batch; a complete message was written at the current position.
        if unsafe { sys::nftnl_batch_update(self.raw.as_ptr()) } < 0 {
            panic!("libnftnl: out of memory growing the batch");
        }
        self.what.insert(self.next_seq, what);
        self.next_seq = self.next_seq.wrapping_add(1);
        self.messages += 1;
    }

    /// Adds one message; `what` names its object in error messages.
    fn add(&mut self, ty: c_int, flags: c_int, obj: Obj<'_>, what: impl FnOnce() -> String) {
        // SAFETY: libnftnl keeps room for a largest message at the current buffer, which
        // lies in a malloc'd page (aligned).
        unsafe { write_msg(self.current(), ty, flags, self.next_seq, &obj) };
        self.advance(what());
    }

    /// Adds the set's element list as as many element messages as it takes (each is
    /// filled up to the 64 KiB attribute limit).
    fn add_elems(&mut self, ty: c_int, flags: c_int, set: &NfSet, what: &str) {
        // SAFETY: valid set; the iterator is destroyed below, before the set can change.
        let iter = unsafe { sys::nftnl_set_elems_iter_create(set.ptr()) };
        assert!(!iter.is_null(), "libnftnl: out of memory");
        let mut part = 1;
        loop {
            let seq = self.next_seq;
            // SAFETY: room for a largest message at the current buffer (see `add`); the
            // iterator belongs to `set`, which outlives this loop.
            let more = unsafe {
                let nlh = sys::nftnl_nlmsg_build_hdr(
                    self.current().cast(),
                    ty as u16,
                    NFPROTO_INET,
                    flags as u16,
                    seq,
                );
                sys::nftnl_set_elems_nlmsg_build_payload_iter(nlh, iter)
            };
            self.advance(if part == 1 && more <= 0 {
                what.to_owned()
            } else {
                format!("{what} (message {part})")
            });
            part += 1;
            if more <= 0 {
                break;
            }
        }
        // SAFETY: created above, destroyed once.
        unsafe { sys::nftnl_set_elems_iter_destroy(iter) };
    }

    /// Adds the batch end.
    fn finish(mut self) -> Batch {
        // SAFETY: room for a largest message at the current buffer.
        unsafe { sys::nftnl_batch_end(self.current().cast(), self.next_seq) };
        self.advance("the batch end".into());
        self
    }

    /// Whether `seq` is the sequence number of one of this batch's messages.
    fn sent(&self, seq: u32) -> bool {
        self.what.contains_key(&seq)
    }

    fn describe(&self, seq: u32) -> String {
        self.what
            .get(&seq)
            .cloned()
            .unwrap_or_else(|| format!("an unknown message (sequence number {seq})"))
    }

    /// The pages to send, as one iovec.
    fn iovecs(&self) -> Vec<libc::iovec> {
        // SAFETY: valid batch; the iovec array has exactly the length libnftnl reports.
        unsafe {
            let n = sys::nftnl_batch_iovec_len(self.raw.as_ptr()).max(0) as usize;
            let mut iov = vec![
                libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0,
                };
                n
            ];
            sys::nftnl_batch_iovec(self.raw.as_ptr(), iov.as_mut_ptr(), n as u32);
            iov
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: we own the batch; freed once.
        unsafe { sys::nftnl_batch_free(self.raw.as_ptr()) };
    }
}

// ---------------------------------------------------------------------------------------
// The socket
// ---------------------------------------------------------------------------------------

/// An 8-aligned byte buffer (netlink headers need 4-byte alignment).
struct AlignedBuf(Vec<u64>);

impl AlignedBuf {
    fn new(bytes: usize) -> AlignedBuf {
        AlignedBuf(vec![0u64; bytes.div_ceil(8)])
    }

    fn len(&self) -> usize {
        self.0.len() * 8
    }

    fn as_mut_ptr(&mut self) -> *mut c_void {
        self.0.as_mut_ptr().cast()
    }

    fn bytes(&self, n: usize) -> &[u8] {
        let n = n.min(self.len());
        // SAFETY: the Vec<u64> owns `len()` initialised bytes; `n` is within them.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), n) }
    }
}

/// One netlink message inside a received buffer (length-checked, 4-aligned).
struct Reply<'a> {
    bytes: &'a [u8],
}

impl Reply<'_> {
    fn u16_at(&self, at: usize) -> u16 {
        u16::from_ne_bytes([self.bytes[at], self.bytes[at + 1]])
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_ne_bytes(self.bytes[at..at + 4].try_into().unwrap_or_default())
    }

    fn msg_type(&self) -> u16 {
        self.u16_at(4)
    }

    fn flags(&self) -> u16 {
        self.u16_at(6)
    }

    fn seq(&self) -> u32 {
        self.u32_at(8)
    }

    /// The nf_tables message type, for messages of the nf_tables subsystem.
    fn nft_type(&self) -> Option<c_int> {
        let t = self.msg_type();
        ((t >> 8) as c_int == libc::NFNL_SUBSYS_NFTABLES).then_some((t & 0xff) as c_int)
    }

    fn header(&self) -> *const libc::nlmsghdr {
        self.bytes.as_ptr().cast()
    }

    /// errno (positive, 0 for an ACK) and the extended-ack message of an NLMSG_ERROR.
    fn error(&self) -> (i32, Option<String>) {
        let p = &self.bytes[16..];
        if p.len() < 4 {
            return (libc::EPROTO, None);
        }
        let errno = -i32::from_ne_bytes(p[0..4].try_into().unwrap_or_default());
        let mut msg = None;
        if self.flags() & libc::NLM_F_ACK_TLVS as u16 != 0 && p.len() >= 20 {
            let orig_len = u32::from_ne_bytes(p[4..8].try_into().unwrap_or_default()) as usize;
            let mut off = if self.flags() & libc::NLM_F_CAPPED as u16 != 0 {
                4 + 16
            } else {
                4 + align4(orig_len)
            };
            while off + 4 <= p.len() {
                let len = u16::from_ne_bytes([p[off], p[off + 1]]) as usize;
                let ty = u16::from_ne_bytes([p[off + 2], p[off + 3]]);
                if len < 4 || off + len > p.len() {
                    break;
                }
                if ty == NLMSGERR_ATTR_MSG {
                    let s = &p[off + 4..off + len];
                    let s = s.split(|&b| b == 0).next().unwrap_or_default();
                    msg = Some(String::from_utf8_lossy(s).into_owned());
                }
                off += align4(len);
            }
        }
        (errno, msg)
    }
}

/// `NLMSGERR_ATTR_MSG`.
const NLMSGERR_ATTR_MSG: u16 = 1;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Splits a received buffer into messages.
fn messages(buf: &[u8]) -> Result<Vec<Reply<'_>>, String> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or_default()) as usize;
        if len < 16 || off + len > buf.len() {
            return Err(format!(
                "truncated netlink message ({len} bytes at offset {off})"
            ));
        }
        out.push(Reply {
            bytes: &buf[off..off + len],
        });
        off += align4(len);
    }
    Ok(out)
}

enum RequestError {
    /// The kernel answered with an error.
    Kernel(io::Error),
    /// A dump was interrupted by a concurrent change (`NLM_F_DUMP_INTR`).
    Interrupted,
    Other(NetlinkError),
}

impl RequestError {
    fn into_read(self, what: &str) -> ReadError {
        match self {
            RequestError::Interrupted => ReadError::Changed,
            RequestError::Kernel(source) => ReadError::Failed(NetlinkError::Dump {
                what: what.to_owned(),
                source,
            }),
            RequestError::Other(e) => ReadError::Failed(e),
        }
    }
}

impl From<NetlinkError> for RequestError {
    fn from(e: NetlinkError) -> Self {
        RequestError::Other(e)
    }
}

enum CommitError {
    /// `ERESTART` on the batch begin: the generation changed since it was read.
    GenerationChanged,
    Failed(NetlinkError),
}

impl CommitError {
    fn into_error(self) -> NetlinkError {
        match self {
            CommitError::GenerationChanged => NetlinkError::Busy { attempts: 1 },
            CommitError::Failed(e) => e,
        }
    }
}

impl From<NetlinkError> for CommitError {
    fn from(e: NetlinkError) -> Self {
        CommitError::Failed(e)
    }
}

/// A `NETLINK_NETFILTER` socket in the network namespace of the thread that opened it.
struct Socket {
    fd: OwnedFd,
    seq: u32,
    rbuf: AlignedBuf,
}

impl Socket {
    fn open() -> Result<Socket> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(NetlinkError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let sock = Socket {
            fd,
            seq: 1,
            rbuf: AlignedBuf::new(RECV_CHUNK),
        };
        // Optional: kernel error strings, and errors without the echoed request.
        let _ = sock.setsockopt(libc::SOL_NETLINK, libc::NETLINK_EXT_ACK, 1);
        let _ = sock.setsockopt(libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1);
        sock.grow_buffer(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, RCVBUF_BYTES);
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: valid socket; `tv` is a timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                sock.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(NetlinkError::Socket(io::Error::last_os_error()));
        }
        Ok(sock)
    }

    fn setsockopt(&self, level: c_int, name: c_int, value: c_int) -> io::Result<()> {
        // SAFETY: valid socket; `value` is a c_int of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&raw const value).cast(),
                mem::size_of::<c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Sets a buffer size with the `*FORCE` option (root: above the sysctl maximum),
    /// falling back to the plain option.
    fn grow_buffer(&self, force: c_int, plain: c_int, bytes: usize) {
        let bytes = bytes.min(c_int::MAX as usize) as c_int;
        if self.setsockopt(libc::SOL_SOCKET, force, bytes).is_err() {
            let _ = self.setsockopt(libc::SOL_SOCKET, plain, bytes);
        }
    }

    /// Reserves a block of sequence numbers for a batch.
    fn take_seqs(&mut self) -> u32 {
        let first = self.seq;
        self.seq = self.seq.wrapping_add(1 << 24);
        first
    }

    fn next_seq(&mut self) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        s
    }

    /// The current nf_tables generation id.
    fn generation(&mut self) -> Result<u32> {
        let what = "the nf_tables generation";
        let mut genid = None;
        self.request(
            what,
            libc::NFT_MSG_GETGEN,
            libc::NLM_F_ACK,
            Obj::Nothing,
            |msg| {
                if msg.nft_type() != Some(libc::NFT_MSG_NEWGEN) {
                    return Ok(());
                }
                // SAFETY: allocation without arguments; checked; freed below.
                let g = unsafe { sys::nftnl_gen_alloc() };
                assert!(!g.is_null(), "libnftnl: out of memory");
                // SAFETY: `msg` is a complete message in a 4-aligned buffer; `g` is valid and
                // freed exactly once.
                unsafe {
                    if sys::nftnl_gen_nlmsg_parse(msg.header(), g) >= 0
                        && sys::nftnl_gen_is_set(g, sys::NFTNL_GEN_ID as u16)
                    {
                        genid = Some(sys::nftnl_gen_get_u32(g, sys::NFTNL_GEN_ID as u16));
                    }
                    sys::nftnl_gen_free(g);
                }
                Ok(())
            },
        )
        .map_err(|e| match e {
            RequestError::Kernel(source) => NetlinkError::Dump {
                what: what.into(),
                source,
            },
            RequestError::Interrupted => NetlinkError::Protocol {
                what: what.into(),
                reason: "interrupted".into(),
            },
            RequestError::Other(e) => e,
        })?;
        genid.ok_or_else(|| NetlinkError::Protocol {
            what: what.into(),
            reason: "no generation id in the answer".into(),
        })
    }

    /// Sends one request and hands every answer message to `each`, until the ACK (for
    /// `NLM_F_ACK`), `NLMSG_DONE` (for dumps) or an error.
    fn request(
        &mut self,
        what: &str,
        ty: c_int,
        flags: c_int,
        obj: Obj<'_>,
        mut each: impl FnMut(&Reply<'_>) -> Result<()>,
    ) -> Result<(), RequestError> {
        let seq = self.next_seq();
        let mut buf = AlignedBuf::new(max_msg_size());
        // SAFETY: `buf` has room for the largest message and is 8-aligned.
        unsafe { write_msg(buf.as_mut_ptr(), ty, flags, seq, &obj) };
        let len = u32::from_ne_bytes(buf.bytes(4).try_into().unwrap_or_default()) as usize;
        loop {
            // SAFETY: valid socket; `buf` holds `len` initialised bytes.
            let rc = unsafe { libc::send(self.fd.as_raw_fd(), buf.as_mut_ptr(), len, 0) };
            if rc >= 0 {
                break;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(NetlinkError::Send {
                    what: format!("the request for {what}"),
                    source: err,
                }
                .into());
            }
        }

        let mut interrupted = false;
        loop {
            let n = self.recv(0).map_err(|source| NetlinkError::Receive {
                what: what.to_owned(),
                source,
            })?;
            let rbuf = mem::replace(&mut self.rbuf, AlignedBuf(Vec::new()));
            let outcome = Self::handle(&rbuf, n, seq, what, &mut interrupted, &mut each);
            self.rbuf = rbuf;
            if let Some(done) = outcome? {
                return match done {
                    Ok(()) if interrupted => Err(RequestError::Interrupted),
                    other => other,
                };
            }
        }
    }

    /// Handles one received chunk; `Some(result)` when the request is finished.
    fn handle(
        rbuf: &AlignedBuf,
        n: usize,
        seq: u32,
        what: &str,
        interrupted: &mut bool,
        each: &mut impl FnMut(&Reply<'_>) -> Result<()>,
    ) -> Result<Option<Result<(), RequestError>>, RequestError> {
        let msgs = messages(rbuf.bytes(n)).map_err(|reason| NetlinkError::Protocol {
            what: what.to_owned(),
            reason,
        })?;
        for msg in msgs {
            if msg.seq() != seq {
                continue;
            }
            if msg.flags() & libc::NLM_F_DUMP_INTR as u16 != 0 {
                *interrupted = true;
            }
            match msg.msg_type() as c_int {
                libc::NLMSG_ERROR => {
                    let (errno, _) = msg.error();
                    return Ok(Some(if errno == 0 {
                        Ok(())
                    } else {
                        Err(RequestError::Kernel(io::Error::from_raw_os_error(errno)))
                    }));
                }
                libc::NLMSG_DONE => {
                    let status = if msg.bytes.len() >= 20 {
                        msg.u32_at(16) as i32
                    } else {
                        0
                    };
                    return Ok(Some(if status < 0 {
                        Err(RequestError::Kernel(io::Error::from_raw_os_error(-status)))
                    } else {
                        Ok(())
                    }));
                }
                libc::NLMSG_NOOP => {}
                _ => each(&msg)?,
            }
        }
        Ok(None)
    }

    /// One `recv` into the receive buffer; returns the number of bytes.
    fn recv(&mut self, flags: c_int) -> io::Result<usize> {
        loop {
            let cap = self.rbuf.len();
            // SAFETY: valid socket; the buffer is writable for `cap` bytes.
            let rc = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.rbuf.as_mut_ptr(),
                    cap,
                    flags | libc::MSG_TRUNC,
                )
            };
            if rc < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            let n = rc as usize;
            if n > cap {
                return Err(io::Error::other(format!(
                    "netlink message of {n} bytes does not fit the {cap}-byte buffer"
                )));
            }
            return Ok(n);
        }
    }

    /// Sends the batch with one `sendmsg` and reads back what the kernel queued.
    fn commit(&mut self, batch: &Batch) -> Result<ApplyStats, CommitError> {
        let iov = batch.iovecs();
        let bytes: usize = iov.iter().map(|v| v.iov_len).sum();
        // The kernel refuses a datagram larger than the send buffer (EMSGSIZE).
        self.grow_buffer(libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, bytes + 4096);
        // SAFETY: sockaddr_nl and msghdr are plain C structs; all-zero is valid for both.
        let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = (&raw mut addr).cast();
        msg.msg_namelen = mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        msg.msg_iov = iov.as_ptr().cast_mut();
        msg.msg_iovlen = iov.len() as _;
        let what = || format!("the batch ({} messages, {bytes} bytes)", batch.messages);
        loop {
            // SAFETY: valid socket; `msg` points at `addr` and at `iov`, whose entries
            // point into the batch pages; all outlive the call.
            let rc = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, 0) };
            if rc >= 0 {
                if rc as usize != bytes {
                    return Err(NetlinkError::Send {
                        what: what(),
                        source: io::Error::other(format!("only {rc} bytes were sent")),
                    }
                    .into());
                }
                break;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(NetlinkError::Send {
                    what: what(),
                    source: err,
                }
                .into());
            }
        }

        // The kernel processed the whole batch inside sendmsg(): whatever it has to say is
        // queued already. No message asked for an ACK, so anything but an ACK is an error.
        let mut first: Option<(u32, i32, Option<String>)> = None;
        let mut overflow = false;
        loop {
            let n = match self.recv(libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    overflow = true;
                    continue;
                }
                Err(source) => {
                    return Err(NetlinkError::Receive {
                        what: what(),
                        source,
                    }
                    .into());
                }
            };
            let msgs = messages(self.rbuf.bytes(n)).map_err(|reason| NetlinkError::Protocol {
                what: what(),
                reason,
            })?;
            for m in msgs {
                if m.msg_type() as c_int != libc::NLMSG_ERROR {
                    continue;
                }
                let (errno, detail) = m.error();
                if errno != 0
                    && batch.sent(m.seq())
                    && first.as_ref().is_none_or(|(s, _, _)| m.seq() < *s)
                {
                    first = Some((m.seq(), errno, detail));
                }
            }
        }
        if let Some((seq, errno, detail)) = first {
            if seq == batch.begin_seq && errno == libc::ERESTART {
                return Err(CommitError::GenerationChanged);
            }
            return Err(NetlinkError::Rejected {
                what: batch.describe(seq),
                source: io::Error::from_raw_os_error(errno),
                detail,
            }
            .into());
        }
        if overflow {
            return Err(NetlinkError::Rejected {
                what: what(),
                source: io::Error::from_raw_os_error(libc::ENOBUFS),
                detail: Some("the kernel's error reports overflowed the receive buffer".into()),
            }
            .into());
        }
        Ok(ApplyStats {
            messages: batch.messages,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> AddrRange {
        if let Some((a, b)) = s.split_once('-') {
            let a: IpAddr = a.parse().unwrap();
            let b: IpAddr = b.parse().unwrap();
            let mut x = AddrRange::from_addr(a);
            x.end = AddrRange::from_addr(b).start;
            x
        } else {
            AddrRange::from_net(s.parse().unwrap())
        }
    }

    fn els(ranges: &[AddrRange]) -> Vec<Element> {
        ranges.iter().map(|r| Element::address(*r)).collect()
    }

    /// The wire elements of `elements` of a set of `kind`, printed by [`hex`].
    fn encode(kind: SetKind, elements: &[Element], lead: bool) -> Vec<String> {
        let mut jumps = JumpNames::default();
        jumps.add(elements).unwrap();
        hex(&wire_elements(kind, elements, lead, &jumps))
    }

    /// The elements as the kernel dumps them back (before decoding).
    fn wire(kind: SetKind, elements: &[Element], lead: bool) -> Vec<RawElem> {
        let mut jumps = JumpNames::default();
        jumps.add(elements).unwrap();
        wire_elements(kind, elements, lead, &jumps)
            .into_iter()
            .map(|e| {
                let jump = e.jump.map(|c| Arc::from(c.to_str().unwrap()));
                (e.key.bytes().to_vec(), e.end, jump)
            })
            .collect()
    }

    fn hex(e: &[WireElem]) -> Vec<String> {
        e.iter()
            .map(|e| {
                let k: String = e.key.bytes().iter().map(|b| format!("{b:02x}")).collect();
                format!(
                    "{k}{}{}{}",
                    if e.end { " end" } else { "" },
                    if e.open { " open" } else { "" },
                    e.jump
                        .as_ref()
                        .map(|c| format!(" jump {}", c.to_str().unwrap()))
                        .unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn interval_encoding_matches_nft() {
        // nft --debug=netlink for { 10.0.0.0/8, 192.0.2.7 }:
        // 0[end] 10.0.0.0 11.0.0.0[end] 192.0.2.7 192.0.2.8[end]
        let e = encode(
            SetKind::Addresses,
            &els(&[r("10.0.0.0/8"), r("192.0.2.7/32")]),
            true,
        );
        assert_eq!(
            e,
            [
                "00000000 end",
                "0a000000",
                "0b000000 end",
                "c0000207",
                "c0000208 end"
            ]
        );
        // { 0.0.0.0/8, 240.0.0.0/4 }: no leading zero, no END at the top, open start.
        let e = encode(
            SetKind::Addresses,
            &els(&[r("0.0.0.0/8"), r("240.0.0.0/4")]),
            false,
        );
        assert_eq!(e, ["00000000", "01000000 end", "f0000000 open"]);
    }

    fn jump(range: &str, chain: &str) -> Element {
        Element {
            range: r(range),
            jump: Some(Arc::from(chain)),
        }
    }

    #[test]
    fn map_encoding_matches_nft() {
        // nft --debug=netlink for
        // { 192.0.2.0/25 : jump a, 192.0.2.128/25 : jump b, 198.51.100.1 : jump a }:
        // 0[end] 192.0.2.0 jump a, 192.0.2.128[end], 192.0.2.128 jump b, 192.0.3.0[end],
        // 198.51.100.1 jump a, 198.51.100.2[end]
        let elements = [
            jump("192.0.2.0/25", "a"),
            jump("192.0.2.128/25", "b"),
            jump("198.51.100.1/32", "a"),
        ];
        let e = encode(SetKind::VerdictMap, &elements, true);
        assert_eq!(
            e,
            [
                "00000000 end",
                "c0000200 jump a",
                "c0000280 end",
                "c0000280 jump b",
                "c0000300 end",
                "c6336401 jump a",
                "c6336402 end"
            ]
        );
        let mut w = wire(SetKind::VerdictMap, &elements, true);
        w.reverse();
        assert_eq!(decode_intervals(Family::V4, &w), elements);
        let bad = [jump("192.0.2.0/25", "a\0b")];
        assert!(JumpNames::default().add(&bad).is_err());
    }

    #[test]
    fn host_map_encoding_is_one_element_per_address() {
        let elements = [jump("192.0.2.1/32", "a"), jump("198.51.100.7/32", "b")];
        let e = encode(SetKind::HostMap, &elements, true);
        assert_eq!(e, ["c0000201 jump a", "c6336407 jump b"]);
        let mut raw = wire(SetKind::HostMap, &elements, true);
        raw.reverse();
        assert_eq!(decode_hosts(Family::V4, &raw), elements);
        let range = [jump("192.0.2.0/31", "a")];
        let err = check_elements("map h", Family::V4, SetKind::HostMap, &range).unwrap_err();
        assert!(err.to_string().contains("not a single address"), "{err}");
    }

    #[test]
    fn decode_round_trips() {
        let sets = [
            vec![
                r("0.0.0.0/8"),
                r("192.0.2.7/32"),
                r("198.51.100.0/24"),
                r("240.0.0.0/4"),
            ],
            vec![r("192.0.2.1-192.0.2.5"), r("203.0.113.0/24")],
            vec![r("0.0.0.0/0")],
            vec![
                r("2001:db8::/32"),
                r("2001:db9::5-2001:db9::7"),
                r("ff00::/8"),
            ],
            vec![r("::/0")],
        ];
        for ranges in sets {
            let family = ranges[0].family;
            let lead = ranges[0].start != 0;
            let mut wire = wire(SetKind::Addresses, &els(&ranges), lead);
            wire.reverse(); // the kernel dumps rbtree elements in descending order
            assert_eq!(decode_intervals(family, &wire), els(&ranges));
        }
    }

    #[test]
    fn decode_keeps_adjacent_intervals_apart() {
        // 192.0.2.0/25 and 192.0.2.128/25 sent unmerged: END and START share a key.
        let a = r("192.0.2.0/25");
        let b = r("192.0.2.128/25");
        let mut wire: Vec<RawElem> = wire(SetKind::Addresses, &els(&[a]), true)
            .into_iter()
            .chain(wire(SetKind::Addresses, &els(&[b]), false))
            .collect();
        wire.reverse();
        assert_eq!(decode_intervals(Family::V4, &wire), els(&[a, b]));
    }

    #[test]
    fn fingerprints_print_what_nft_debug_netlink_shows() {
        let s4 = Match::SaddrInSet(Family::V4, "s4".into());
        let rule = |matches: Vec<Match>, verdict| Rule {
            matches,
            verdict,
            ..Rule::default()
        };
        let rs = Ruleset {
            sets: vec![ruleset::Set::addresses(
                "s4",
                Family::V4,
                vec![r("192.0.2.0/24")],
            )],
            chains: vec![ruleset::Chain {
                name: "input".into(),
                base: Some(ruleset::BaseChain {
                    priority: 0,
                    policy: Verdict::Drop,
                }),
                rules: vec![
                    rule(vec![Match::Loopback], Some(Verdict::Accept)),
                    rule(vec![Match::CtEstablishedRelated], Some(Verdict::Accept)),
                    rule(vec![Match::CtInvalid], Some(Verdict::Drop)),
                    rule(
                        vec![
                            Match::Dport(
                                L4Proto::Tcp,
                                ruleset::PortRange {
                                    first: 5061,
                                    last: 5061,
                                },
                            ),
                            s4,
                        ],
                        Some(Verdict::Accept),
                    ),
                    rule(
                        vec![Match::Dport(
                            L4Proto::Udp,
                            ruleset::PortRange {
                                first: 10000,
                                last: 20000,
                            },
                        )],
                        Some(Verdict::Accept),
                    ),
                    Rule {
                        log: Some(ruleset::Log {
                            per_minute: 10,
                            prefix: "pbxwall drop: ".into(),
                        }),
                        ..Rule::default()
                    },
                    Rule {
                        counter: true,
                        ..Rule::default()
                    },
                ],
            }],
        };
        // `nft --debug=netlink list chain inet pbxwall input` of the same rules loaded by
        // nft 1.0.6 (kernel 6.x), one line per rule.
        let want = [
            "[ meta load iif => reg 1 ] [ cmp eq reg 1 0x00000001 ] [ immediate reg 0 accept ]",
            "[ ct load state => reg 1 ] [ bitwise reg 1 = ( reg 1 & 0x00000006 ) ^ 0x00000000 ] \
             [ cmp neq reg 1 0x00000000 ] [ immediate reg 0 accept ]",
            "[ ct load state => reg 1 ] [ bitwise reg 1 = ( reg 1 & 0x00000001 ) ^ 0x00000000 ] \
             [ cmp neq reg 1 0x00000000 ] [ immediate reg 0 drop ]",
            "[ meta load l4proto => reg 1 ] [ cmp eq reg 1 0x00000006 ] \
             [ payload load 2b @ transport header + 2 => reg 1 ] [ cmp eq reg 1 0x0000c513 ] \
             [ meta load nfproto => reg 1 ] [ cmp eq reg 1 0x00000002 ] \
             [ payload load 4b @ network header + 12 => reg 1 ] [ lookup reg 1 set s4 0x0 ] \
             [ immediate reg 0 accept ]",
            "[ meta load l4proto => reg 1 ] [ cmp eq reg 1 0x00000011 ] \
             [ payload load 2b @ transport header + 2 => reg 1 ] [ cmp gte reg 1 0x00001027 ] \
             [ cmp lte reg 1 0x0000204e ] [ immediate reg 0 accept ]",
            "[ limit rate 10/minute burst 5 type packets flags 0x0 ] \
             [ log prefix pbxwall drop:  level 4 ]",
            "[ counter pkts 0 bytes 0 ]",
        ];
        let got = rule_fingerprints(&rs).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "input");
        assert_eq!(got[0].1, want);
    }

    #[test]
    fn fingerprint_zeroes_counters_and_grows_its_buffer() {
        let mut rule = NfRule::new();
        rule.set_u32(sys::NFTNL_RULE_FAMILY, NFPROTO_INET.into());
        rule.set_str(sys::NFTNL_RULE_TABLE, c"pbxwall");
        rule.set_str(sys::NFTNL_RULE_CHAIN, c"input");
        rule.add_expr(
            Expr::new(c"counter")
                .u64(sys::NFTNL_EXPR_CTR_PACKETS, 12345)
                .u64(sys::NFTNL_EXPR_CTR_BYTES, 67890),
        );
        // A log prefix longer than the first print buffer.
        let long = "x".repeat(300);
        rule.add_expr(log_prefix(&CString::new(long.as_str()).unwrap()));
        assert_eq!(rule.first_counter(), Some((12345, 67890)));
        assert_eq!(
            rule.fingerprint(),
            format!("[ counter pkts 0 bytes 0 ] [ log prefix {long} level 4 ]")
        );
        rule.set_data(sys::NFTNL_RULE_USERDATA, &[0, 2, b'h', 0]);
        assert!(rule.fingerprint().ends_with("] userdata 0x00026800"));
    }

    #[test]
    fn rule_descriptions_name_the_rule() {
        let rule = Rule {
            matches: vec![
                Match::Dport(
                    L4Proto::Udp,
                    ruleset::PortRange {
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
    }
}
