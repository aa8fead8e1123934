//! Reading the live table back: the dumps, and what they become ([`Snapshot`] for the
//! replace batch, [`LiveTable`] for callers).

use std::collections::HashMap;
use std::ffi::{CString, c_int};
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use nftnl::nftnl_sys as attr;

use super::elements::{
    KEY_TYPE_IPV4_ADDR, KEY_TYPE_IPV6_ADDR, RawElem, data_type, decode_hosts, decode_intervals,
    key_of, set_flags, set_identity, udata_comment,
};
use super::expr::{fingerprint, first_counter};
use super::sys::{NfChain, NfRule, NfSet, NfTable, Obj, RequestError, SetElem, Socket};
use super::{LiveChain, LiveHook, LiveSet, LiveTable, NFPROTO_INET, NetlinkError, Result, cstring};
use crate::addrset::Family;
use crate::ruleset::{SetKind, TABLE_NAME, TimedElement, Verdict};

/// `NFT_SET_ELEM_CATCHALL` (not in the libc crate).
const NFT_SET_ELEM_CATCHALL: u32 = 2;

/// A live set as dumped.
pub(super) struct SnapSet {
    pub(super) name: String,
    /// The name again, to name the set in a message.
    pub(super) cname: CString,
    pub(super) handle: u64,
    /// Key family and key length in bytes, when the key type is an address.
    pub(super) key: Option<(Family, u32)>,
    /// `NFTNL_SET_FLAGS`.
    pub(super) flags: Option<u32>,
    /// `NFTNL_SET_DATA_TYPE`.
    pub(super) data_type: Option<u32>,
    /// `NFTNL_SET_TIMEOUT`: the default element timeout in ms (`None`: none).
    pub(super) timeout_ms: Option<u64>,
    /// `NFTNL_SET_DESC_SIZE`: the size limit (`None`: none).
    pub(super) size: Option<u32>,
    /// Elements as dumped (none without `full`).
    pub(super) elems: Vec<RawElem>,
}

/// A live chain as dumped.
pub(super) struct SnapChain {
    pub(super) name: String,
    /// The name again, to name the chain in a message.
    pub(super) cname: CString,
    pub(super) handle: u64,
    /// Hook parameters of a base chain.
    pub(super) base: Option<LiveHook>,
    /// Rules in order (none without `full`).
    pub(super) rules: Vec<SnapRule>,
}

/// A live rule as dumped.
pub(super) struct SnapRule {
    handle: u64,
    counter: Option<(u64, u64)>,
    fingerprint: String,
}

/// What was live in the table. Without `full`, sets have no elements and chains no rules.
pub(super) struct Snapshot {
    /// `NFTNL_TABLE_FLAGS` of the table.
    pub(super) table_flags: u32,
    pub(super) sets: Vec<SnapSet>,
    pub(super) chains: Vec<SnapChain>,
}

impl Snapshot {
    /// The snapshot for callers: set kinds recognised, elements decoded into ranges, rule
    /// handles, counters and fingerprints per chain.
    pub(super) fn into_live(self) -> LiveTable {
        LiveTable {
            flags: self.table_flags,
            sets: self
                .sets
                .into_iter()
                .map(|s| {
                    let family = s.key.and_then(|(f, len)| (len == key_of(f).1).then_some(f));
                    let kind = [
                        SetKind::Addresses,
                        SetKind::VerdictMap,
                        SetKind::HostMap,
                        SetKind::Dynamic,
                    ]
                    .into_iter()
                    .find(|k| s.flags == Some(set_flags(*k)) && s.data_type == data_type(*k));
                    LiveSet {
                        kind,
                        elements: family
                            .map(|f| match kind {
                                Some(SetKind::HostMap | SetKind::Dynamic) => {
                                    decode_hosts(f, &s.elems)
                                }
                                _ => decode_intervals(f, &s.elems),
                            })
                            .unwrap_or_default(),
                        name: s.name,
                        family,
                        handle: s.handle,
                        timeout_ms: s.timeout_ms,
                        size: s.size,
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

/// Why [`read_snapshot`] did not return a snapshot.
pub(super) enum ReadError {
    /// nf_tables changed during a dump (or the table vanished between dumps): read again.
    Changed,
    /// Reading failed.
    Failed(NetlinkError),
}

impl From<NetlinkError> for ReadError {
    fn from(e: NetlinkError) -> Self {
        ReadError::Failed(e)
    }
}

impl RequestError {
    /// The error of a dump of `what`.
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

/// Reads table `inet pbxwall`: `None` if it does not exist. With `full`, also every rule
/// and every set's elements (the replace batch needs only the names and kinds).
pub(super) fn read_snapshot(sock: &mut Socket, full: bool) -> Result<Option<Snapshot>, ReadError> {
    let table = cstring(TABLE_NAME, "table")?;
    let tname = format!("table inet {TABLE_NAME}");

    // nft list table inet pbxwall  (existence and flags)
    let mut t = NfTable::new();
    t.set_u32(attr::NFTNL_TABLE_FAMILY, NFPROTO_INET.into());
    t.set_str(attr::NFTNL_TABLE_NAME, &table);
    let mut table_flags = 0;
    match sock.request(
        &tname,
        libc::NFT_MSG_GETTABLE,
        libc::NLM_F_ACK,
        Obj::Table(&t),
        |msg| {
            if msg.nft_type() == Some(libc::NFT_MSG_NEWTABLE) {
                let t = NfTable::parse(msg, &tname)?;
                table_flags = t.get_u32(attr::NFTNL_TABLE_FLAGS).unwrap_or_default();
            }
            Ok(())
        },
    ) {
        Ok(()) => {}
        Err(RequestError::Kernel(e)) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e.into_read(&tname)),
    }

    let mut sets = read_sets(sock, &table, &tname)?;
    let mut chains = read_chains(sock, &table, &tname)?;
    if full {
        read_rules(sock, &table, &tname, &mut chains)?;
        for set in sets.iter_mut().filter(|s| super::dumps_elements(&s.name)) {
            set.elems = read_elements(sock, &table, set)?;
        }
    }
    Ok(Some(Snapshot {
        table_flags,
        sets,
        chains,
    }))
}

/// The sets of the table (the kernel filters by table).
fn read_sets(sock: &mut Socket, table: &CString, tname: &str) -> Result<Vec<SnapSet>, ReadError> {
    let mut sets = Vec::new();
    let mut filter = NfSet::new();
    filter.set_u32(attr::NFTNL_SET_FAMILY, NFPROTO_INET.into());
    filter.set_str(attr::NFTNL_SET_TABLE, table);
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
            if s.get_str(attr::NFTNL_SET_TABLE).as_deref() != Some(TABLE_NAME) {
                return Ok(());
            }
            let name = s.get_str(attr::NFTNL_SET_NAME).unwrap_or_default();
            let key = match (
                s.get_u32(attr::NFTNL_SET_KEY_TYPE),
                s.get_u32(attr::NFTNL_SET_KEY_LEN),
            ) {
                (Some(KEY_TYPE_IPV4_ADDR), Some(len)) => Some((Family::V4, len)),
                (Some(KEY_TYPE_IPV6_ADDR), Some(len)) => Some((Family::V6, len)),
                _ => None,
            };
            sets.push(SnapSet {
                cname: cstring(&name, &what)?,
                name,
                handle: s.get_u64(attr::NFTNL_SET_HANDLE).unwrap_or_default(),
                key,
                flags: s.get_u32(attr::NFTNL_SET_FLAGS),
                data_type: s.get_u32(attr::NFTNL_SET_DATA_TYPE),
                timeout_ms: s.get_u64(attr::NFTNL_SET_TIMEOUT).filter(|t| *t != 0),
                size: s.get_u32(attr::NFTNL_SET_DESC_SIZE).filter(|n| *n != 0),
                elems: Vec::new(),
            });
            Ok(())
        },
    )
    .map_err(|e| e.into_read(&what))?;
    Ok(sets)
}

/// The chains of the table (the kernel dumps all inet chains; ours are kept).
fn read_chains(
    sock: &mut Socket,
    table: &CString,
    tname: &str,
) -> Result<Vec<SnapChain>, ReadError> {
    let mut chains = Vec::new();
    let mut filter = NfChain::new();
    filter.set_u32(attr::NFTNL_CHAIN_FAMILY, NFPROTO_INET.into());
    filter.set_str(attr::NFTNL_CHAIN_TABLE, table);
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
            if c.get_str(attr::NFTNL_CHAIN_TABLE).as_deref() != Some(TABLE_NAME) {
                return Ok(());
            }
            let name = c.get_str(attr::NFTNL_CHAIN_NAME).unwrap_or_default();
            let base = c.get_u32(attr::NFTNL_CHAIN_HOOKNUM).map(|hook| LiveHook {
                hook,
                priority: c.get_s32(attr::NFTNL_CHAIN_PRIO).unwrap_or_default(),
                chain_type: c.get_str(attr::NFTNL_CHAIN_TYPE).unwrap_or_default(),
                policy: match c.get_u32(attr::NFTNL_CHAIN_POLICY) {
                    Some(p) if p == libc::NF_ACCEPT as u32 => Some(Verdict::Accept),
                    Some(p) if p == libc::NF_DROP as u32 => Some(Verdict::Drop),
                    _ => None,
                },
            });
            chains.push(SnapChain {
                cname: cstring(&name, &what)?,
                name,
                handle: c.get_u64(attr::NFTNL_CHAIN_HANDLE).unwrap_or_default(),
                base,
                rules: Vec::new(),
            });
            Ok(())
        },
    )
    .map_err(|e| e.into_read(&what))?;
    Ok(chains)
}

/// The rules of the table, appended to their chains in order.
fn read_rules(
    sock: &mut Socket,
    table: &CString,
    tname: &str,
    chains: &mut [SnapChain],
) -> Result<(), ReadError> {
    let mut filter = NfRule::new();
    filter.set_u32(attr::NFTNL_RULE_FAMILY, NFPROTO_INET.into());
    filter.set_str(attr::NFTNL_RULE_TABLE, table);
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
            if r.get_str(attr::NFTNL_RULE_TABLE).as_deref() != Some(TABLE_NAME) {
                return Ok(());
            }
            let chain = r.get_str(attr::NFTNL_RULE_CHAIN).unwrap_or_default();
            if let Some(c) = chains.iter_mut().find(|c| c.name == chain) {
                // The counter values first: the fingerprint zeroes them.
                let counter = first_counter(&mut r);
                c.rules.push(SnapRule {
                    handle: r.get_u64(attr::NFTNL_RULE_HANDLE).unwrap_or_default(),
                    counter,
                    fingerprint: fingerprint(&mut r),
                });
            }
            Ok(())
        },
    )
    .map_err(|e| e.into_read(&what))
}

/// The elements of one set, as dumped.
fn read_elements(
    sock: &mut Socket,
    table: &CString,
    set: &SnapSet,
) -> Result<Vec<RawElem>, ReadError> {
    let what = format!("the elements of set {}", set.name);
    let mut elems = Vec::new();
    let mut chains = HashMap::new();
    let res = dump_elements(sock, table, &set.cname, &what, |e| {
        elems.extend(raw_elem(e, &mut chains))
    });
    match res {
        Ok(()) => Ok(elems),
        // The set or table went away between the dumps.
        Err(RequestError::Kernel(e)) if e.raw_os_error() == Some(libc::ENOENT) => {
            Err(ReadError::Changed)
        }
        Err(e) => Err(e.into_read(&what)),
    }
}

/// Dumps the elements of set `set` of `table`, handing each to `f`; `what` names the dump
/// in errors.
fn dump_elements(
    sock: &mut Socket,
    table: &CString,
    set: &CString,
    what: &str,
    mut f: impl FnMut(&SetElem<'_>),
) -> Result<(), RequestError> {
    let mut filter = NfSet::new();
    set_identity(&mut filter, table, set, None);
    sock.request(
        what,
        libc::NFT_MSG_GETSETELEM,
        libc::NLM_F_DUMP,
        Obj::SetElemsOf(&filter),
        |msg| {
            if msg.nft_type() != Some(libc::NFT_MSG_NEWSETELEM) {
                return Ok(());
            }
            NfSet::parse_elems(msg, what)?.for_each_elem(&mut f);
            Ok(())
        },
    )
}

/// The elements of dynamic set `set` with their timeouts, time left and comments;
/// `None` when the set (or the table) does not exist. Sorted by address.
pub(super) fn read_timed(
    sock: &mut Socket,
    table: &CString,
    set: &CString,
    name: &str,
) -> Result<Option<Vec<TimedElement>>> {
    let what = format!("the elements of set {name}");
    let mut out = Vec::new();
    let res = dump_elements(sock, table, set, &what, |e| {
        let addr = match e.key() {
            Some(k) if k.len() == 4 => <[u8; 4]>::try_from(k).ok().map(IpAddr::from),
            Some(k) if k.len() == 16 => <[u8; 16]>::try_from(k).ok().map(IpAddr::from),
            _ => None,
        };
        if let Some(addr) = addr {
            let ms = |a| e.get_u64(a).filter(|v| *v != 0).map(Duration::from_millis);
            out.push(TimedElement {
                addr,
                timeout: ms(attr::NFTNL_SET_ELEM_TIMEOUT),
                expires: ms(attr::NFTNL_SET_ELEM_EXPIRATION),
                comment: e.userdata().and_then(udata_comment),
            });
        }
    });
    match res {
        Ok(()) => {
            out.sort();
            Ok(Some(out))
        }
        Err(RequestError::Kernel(e)) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(RequestError::Kernel(source)) => Err(NetlinkError::Dump { what, source }),
        Err(RequestError::Interrupted) => Err(NetlinkError::Dump {
            what,
            source: io::Error::other("nf_tables changed while the elements were read"),
        }),
        Err(RequestError::Other(e)) => Err(e),
    }
}

/// `(key, is END element, jump)` of a dumped element; `None` for a catch-all element or
/// one without a key. A map element's verdict is its chain name for a jump (names shared
/// through `chains`), else `goto NAME` or `verdict N`.
fn raw_elem(e: &SetElem<'_>, chains: &mut HashMap<String, Arc<str>>) -> Option<RawElem> {
    let flags = e.flags();
    if flags & NFT_SET_ELEM_CATCHALL != 0 {
        return None;
    }
    let key = e.key()?;
    let jump = e.verdict().map(|(code, chain)| {
        let chain = chain.map(|c| c.to_string_lossy().into_owned());
        let name = match (code as c_int, chain) {
            (libc::NFT_JUMP, Some(c)) => c,
            (libc::NFT_GOTO, Some(c)) => format!("goto {c}"),
            (code, _) => format!("verdict {code}"),
        };
        let shared = chains
            .entry(name)
            .or_insert_with_key(|n| Arc::from(n.as_str()));
        Arc::clone(shared)
    });
    Some((
        key.to_vec(),
        flags & libc::NFT_SET_ELEM_INTERVAL_END as u32 != 0,
        jump,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addrset::AddrRange;
    use crate::ruleset::Element;

    #[test]
    fn into_live_keeps_the_table_flags_and_decodes_each_kind_of_set() {
        let set = |name: &str, family: Family, kind: Option<SetKind>, elems| SnapSet {
            name: name.into(),
            cname: CString::new(name).unwrap(),
            handle: 3,
            key: Some((family, key_of(family).1)),
            flags: Some(kind.map_or(0, set_flags)),
            data_type: kind.and_then(data_type),
            timeout_ms: None,
            size: None,
            elems,
        };
        let jump: Arc<str> = Arc::from("allow_ssh");
        let snap = Snapshot {
            table_flags: 1,
            sets: vec![
                // 192.0.2.0/24 as dumped: END at 0, start, END after it (descending order).
                set(
                    "s4",
                    Family::V4,
                    Some(SetKind::Addresses),
                    vec![
                        (vec![192, 0, 3, 0], true, None),
                        (vec![192, 0, 2, 0], false, None),
                        (vec![0, 0, 0, 0], true, None),
                    ],
                ),
                set(
                    "h4",
                    Family::V4,
                    Some(SetKind::HostMap),
                    vec![(vec![203, 0, 113, 7], false, Some(Arc::clone(&jump)))],
                ),
                // Flags pbxwall never makes: no kind.
                set("odd", Family::V6, None, Vec::new()),
            ],
            chains: Vec::new(),
        };
        let live = snap.into_live();
        assert_eq!(live.flags, 1);
        let kinds: Vec<_> = live
            .sets
            .iter()
            .map(|s| (s.name.as_str(), s.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("s4", Some(SetKind::Addresses)),
                ("h4", Some(SetKind::HostMap)),
                ("odd", None)
            ]
        );
        let range = |s: &str| AddrRange::from_net(s.parse().unwrap());
        assert_eq!(
            live.sets[0].elements,
            [Element::address(range("192.0.2.0/24"))]
        );
        assert_eq!(
            live.sets[1].elements,
            [Element {
                range: range("203.0.113.7/32"),
                jump: Some(jump),
            }]
        );
    }
}
