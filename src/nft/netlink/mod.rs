//! The ruleset IR as one nf_tables netlink batch, the live table read back, and the flows
//! of sources that lost access ended after an apply ([`conntrack`]).
//!
//! It drives libnftnl through `nftnl::nftnl_sys`. All of the FFI, and the only `unsafe` in
//! pbxwall, is in `sys`: owned libnftnl objects, the expression builder, the batch, the
//! nf_tables socket and a plain netlink socket for [`conntrack`], each with a safe
//! interface. Everything that decides *what* is sent is plain
//! Rust on top of them, under `deny(unsafe_code)`:
//!
//! * `plan`: the IR checked once (names kept as C strings, elements checked against their
//!   set, sets numbered for the batch) and the replace batch as a list of named steps;
//! * `elements`: sets and their elements on the wire (nft's interval encoding, both ways);
//! * `expr`: rules as expressions (the `check_*` helpers) and rule fingerprints;
//! * `read`: the dumps of the live table and what they become ([`LiveTable`]);
//! * [`conntrack`]: after an apply, ending the flows of sources that lost access
//!   (ctnetlink, with rtnetlink for this host's addresses and `sock_diag` to close TCP
//!   sockets; its messages are written and read in safe Rust, only the socket I/O is in
//!   `sys`).
//!
//! # What [`apply`] sends
//!
//! One batch, sent with one `sendmsg()` whose iovec holds every batch page, as nft does:
//! sending one datagram per page (`mnl::Socket::send_all`, the pattern of the nftnl
//! examples) breaks any batch larger than a page, since the kernel then sees a batch begin
//! without its end and refuses it. In nft terms, with the step of `Plan::batch` that sends
//! each line:
//!
//! ```text
//! add table inet pbxwall                 # add_table: idempotent; flags 0 wakes a
//!                                        #   dormant table
//! flush table inet pbxwall               # flush_rules: DELRULE with only the table
//! flush set inet pbxwall <s>             # empty_or_drop_live_sets: every live set the IR
//!                                        #   has too (same key, flags, data)
//! flush map inet pbxwall <m>             #   a live map the IR does not have: drop its
//! delete map inet pbxwall <m>            #   jumps first, then the map (older kernels
//!                                        #   keep the chains in use otherwise)
//! delete set inet pbxwall <s>            #   every other live set
//! delete chain inet pbxwall <c>          # drop_stale_chains: every live chain the IR
//!                                        #   does not have (by name and kind)
//! add chain inet pbxwall input { type filter hook input priority filter; policy drop; }
//! add chain inet pbxwall allow_ssh       # add_chains: idempotent for kept chains
//! add set inet pbxwall new_v4 { type ipv4_addr; flags interval; }
//!                                        # add_new_sets: sets not live yet
//! add rule inet pbxwall input ...        # add_rules: every chain's rules
//! add element inet pbxwall hosts_v4 { 192.0.2.1 : jump allow_ssh, ... }
//!                                        # add_elements: every set, refilled
//! ```
//!
//! The base chain is updated in place, never deleted and re-created: a re-created base
//! chain is hooked with policy accept during the prepare phase and gets its drop policy
//! only when the commit reaches it, while the old chain is unhooked earlier in the same
//! commit, so packets leak (a UDP flood during repeated replaces got hundreds through).
//! Sets that stay are flushed and refilled rather than deleted and re-created: a
//! re-created interval set made the kernel drop packets of whitelisted sources for a
//! moment during the commit (about one packet per restart under a flood, measured by
//! `tests/torture.rs`; flush and refill drops none); regular chains that stay are kept the
//! same way (their rules go with the table flush). Rules are added before elements:
//! binding a verdict map to its lookup rule makes the kernel check every element already
//! in it for jump loops, so the maps are bound while still empty (a third of the time of a
//! 100k-address restart). Element lists go to libnftnl a few thousand at a time, which
//! bounds memory and changes nothing on the wire.
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
//! [`crate::nft::render`] prints. The helpers in `expr` each carry the nft text they stand
//! for.
//!
//! # Rule fingerprints
//!
//! [`read_table`] prints every live rule's expressions with libnftnl's own printer
//! ([`LiveChain::rules`]); [`rule_fingerprints`] builds the IR's rules with the same code
//! [`apply`] uses (`plan` and `expr`) and prints them the same way, without the kernel. Both
//! sides go through one canonicalisation (counter values zeroed, what the kernel fills in
//! filled in), so equal lines mean equal rules and `status` sees a rule replaced behind
//! pbxwall's back even when the rule count is unchanged.

#![deny(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::net::IpAddr;

use nftnl::nftnl_sys as attr;

use crate::addrset::Family;
use crate::ruleset::{Element, Ruleset, SetKind, TABLE_NAME, TimedElement, Verdict};

pub mod conntrack;
mod elements;
mod expr;
mod plan;
mod read;
mod sys;

use elements::{
    ElemOp, ElementsOf, JumpNames, add_elements, add_timed, check_elements, check_timed,
};
use plan::Plan;
use read::{ReadError, Snapshot, read_snapshot, read_timed};
use sys::{Batch, CommitError, NfTable, Obj, Socket};

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
    /// The table's flags (`NFTA_TABLE_FLAGS`) as read back, e.g. 1 = dormant (its chains
    /// unhooked). [`apply`] sets them to 0, so a table it made or replaced reads 0.
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
    /// Default element timeout in milliseconds (`None`: none).
    pub timeout_ms: Option<u64>,
    /// Size limit (`None`: none).
    pub size: Option<u32>,
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

/// The nfgenmsg family of every message: `inet`, the family of pbxwall's table.
const NFPROTO_INET: u16 = libc::NFPROTO_INET as u16;
/// Attempts of [`apply`] when the generation changes under it.
const MAX_ATTEMPTS: usize = 5;

/// `s` as a C string, to send as a name; fails, naming `what`, on a NUL byte.
fn cstring(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| NetlinkError::Invalid {
        what: what.to_owned(),
        reason: format!("the name {s:?} contains a NUL byte"),
    })
}

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
        let batch = plan.batch(live.as_ref(), genid, sock.take_seqs());
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

/// Whether [`read_table`] reads the elements of the set called `name`: not for the geo
/// gate's sets (`geo_v4`, `geo_v6`). The kernel dumps an interval set's elements in chunks,
/// walking its tree from the first element again for every chunk, so a dump costs time
/// quadratic in the set's size: 12 s for 300,000 ranges (measured, BENCHMARKS.md). Their
/// live elements are what pbxwall recorded when it applied them
/// (`crate::geo::Applied`); their existence and type are still read.
pub fn dumps_elements(name: &str) -> bool {
    !name.starts_with("geo_")
}

/// Read back what is live: `None` if table `inet pbxwall` does not exist.
///
/// The elements of the sets [`dumps_elements`] excludes are not read (left empty).
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
/// filled in the same way on both sides (see `expr::canonicalize`). A rule carrying userdata
/// (an nft `comment`) gets ` userdata 0x...` appended; pbxwall's rules have none.
pub fn rule_fingerprints(ruleset: &Ruleset) -> Result<Vec<(String, Vec<String>)>> {
    Ok(Plan::new(ruleset)?.rule_fingerprints())
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

/// The elements of dynamic set `set` of table `inet pbxwall` with the timeout each was
/// added with, the time it has left and its comment, sorted by address; `None` when the
/// table or the set does not exist. One dump, no change.
pub fn list_timed_elements(set: &str) -> Result<Option<Vec<TimedElement>>> {
    let table = cstring(TABLE_NAME, "table")?;
    let name = cstring(set, &format!("set {set}"))?;
    let mut sock = Socket::open()?;
    read_timed(&mut sock, &table, &name, set)
}

/// Element operation on dynamic set `set` (of `family`), in ONE small batch: delete the
/// `remove` addresses, then add `add` with their timeouts and comments. Never a full
/// apply. Every removed address must be an element now (else the kernel refuses the batch
/// with `ENOENT` and nothing changes); adding an address that is an element already
/// leaves it as it is (remove it in the same call to replace it). Nothing is sent when
/// both lists are empty.
pub fn update_timed_elements(
    set: &str,
    family: Family,
    remove: &[IpAddr],
    add: &[TimedElement],
) -> Result<ApplyStats> {
    update_timed_sets(&[TimedChange {
        set,
        family,
        remove,
        add,
    }])
}

/// Element changes of one dynamic set, for [`update_timed_sets`].
#[derive(Debug, Clone, Copy)]
pub struct TimedChange<'a> {
    /// Name of an existing dynamic set of table `inet pbxwall`.
    pub set: &'a str,
    /// Its family.
    pub family: Family,
    /// Addresses to remove (each must be an element now).
    pub remove: &'a [IpAddr],
    /// Elements to add, with their timeouts and comments.
    pub add: &'a [TimedElement],
}

/// [`update_timed_elements`] for several dynamic sets in ONE batch (both families of a
/// ban): every removal first, then every addition; all of it or nothing.
pub fn update_timed_sets(changes: &[TimedChange<'_>]) -> Result<ApplyStats> {
    if changes
        .iter()
        .all(|c| c.remove.is_empty() && c.add.is_empty())
    {
        return Ok(ApplyStats::default());
    }
    for c in changes {
        let what = format!("set {}", c.set);
        check_family(&what, c.family, c.remove)?;
        check_timed(&what, c.family, c.add)?;
    }
    let sets: Vec<&str> = changes.iter().map(|c| c.set).collect();
    commit_timed(&sets, |i, op| {
        let c = &changes[i];
        match op {
            ElemOp::Remove => Box::new(c.remove.iter().map(|a| (*a, None, None))),
            ElemOp::Add => Box::new(
                c.add
                    .iter()
                    .map(|e| (e.addr, e.timeout, e.comment.as_deref())),
            ),
        }
    })
}

/// Refuses an address of another family than its set's.
fn check_family(what: &str, family: Family, addrs: &[IpAddr]) -> Result<()> {
    match addrs.iter().find(|a| Family::of(**a) != family) {
        Some(a) => Err(NetlinkError::Invalid {
            what: what.to_owned(),
            reason: format!("{a} is not an {family:?} address"),
        }),
        None => Ok(()),
    }
}

/// An address with its timeout and comment, as [`add_timed`] takes it.
type Timed<'c> = (IpAddr, Option<std::time::Duration>, Option<&'c str>);

/// ONE batch over the dynamic sets `sets`: every set's removals first, then every set's
/// additions, all of it or nothing. `elements(i, op)` gives set `i`'s elements for `op`.
fn commit_timed<'c>(
    sets: &[&str],
    elements: impl Fn(usize, ElemOp) -> Box<dyn Iterator<Item = Timed<'c>> + 'c>,
) -> Result<ApplyStats> {
    let table = cstring(TABLE_NAME, "table")?;
    let names = sets
        .iter()
        .map(|s| cstring(s, &format!("set {s}")))
        .collect::<Result<Vec<_>>>()?;
    let mut sock = Socket::open()?;
    let mut batch = Batch::new(sock.take_seqs(), None);
    for (op, what) in [
        (ElemOp::Remove, "removal of elements from set"),
        (ElemOp::Add, "new elements of set"),
    ] {
        for (i, (set, name)) in sets.iter().zip(&names).enumerate() {
            let what = format!("{what} {set}");
            add_timed(&mut batch, &table, (name, None), elements(i, op), op, &what);
        }
    }
    let batch = batch.finish();
    sock.commit(&batch).map_err(CommitError::into_error)
}

/// The elements a bulk ban adds to one dynamic set, for [`add_timed_bulk`].
#[derive(Debug, Clone, Copy)]
pub struct BulkAdd<'a> {
    /// Name of an existing dynamic set of table `inet pbxwall`.
    pub set: &'a str,
    /// Its family.
    pub family: Family,
    /// Addresses that are elements now: removed and added again in the same transaction,
    /// so that the new timeout and comment hold.
    pub replace: &'a [IpAddr],
    /// Addresses that are not elements now.
    pub new: &'a [IpAddr],
}

/// Adds the addresses of `changes` to their dynamic sets, all with `timeout` and
/// `comment` (a bulk ban): [`update_timed_sets`] with the replaced addresses as its
/// removals, without an element object per address. All of it or nothing.
pub fn add_timed_bulk(
    changes: &[BulkAdd<'_>],
    timeout: Option<std::time::Duration>,
    comment: Option<&str>,
) -> Result<ApplyStats> {
    if changes
        .iter()
        .all(|c| c.replace.is_empty() && c.new.is_empty())
    {
        return Ok(ApplyStats::default());
    }
    for c in changes {
        let what = format!("set {}", c.set);
        if let Some(c) = comment
            && (c.len() > crate::ruleset::MAX_ELEMENT_COMMENT || c.contains('\0'))
        {
            return Err(NetlinkError::Invalid {
                what,
                reason: format!(
                    "the comment is longer than {} bytes or holds a NUL",
                    crate::ruleset::MAX_ELEMENT_COMMENT
                ),
            });
        }
        check_family(&what, c.family, c.replace)?;
        check_family(&what, c.family, c.new)?;
    }
    let sets: Vec<&str> = changes.iter().map(|c| c.set).collect();
    commit_timed(&sets, |i, op| {
        let c = &changes[i];
        match op {
            ElemOp::Remove => Box::new(c.replace.iter().map(|a| (*a, None, None))),
            ElemOp::Add => Box::new(
                c.replace
                    .iter()
                    .chain(c.new)
                    .map(move |a| (*a, timeout, comment)),
            ),
        }
    })
}

/// Delete table `inet pbxwall` if it exists, in one batch (add-then-delete, so it works
/// when the table is absent and on kernels without `NFT_MSG_DESTROYTABLE`).
pub fn delete_table() -> Result<()> {
    let table = cstring(TABLE_NAME, "table")?;
    let mut t = NfTable::new();
    t.set_u32(attr::NFTNL_TABLE_FAMILY, NFPROTO_INET.into());
    t.set_str(attr::NFTNL_TABLE_NAME, &table);
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
