//! Sets and their elements on the wire: key and data types, set flags, and nft's interval
//! encoding, both ways.
//!
//! An interval set holds half-open intervals `[start, end)`, sent the way nft sends them
//! (checked with `nft --debug=netlink`): one element per range start (flags 0, carrying
//! the jump in a map) and one END element (`NFT_SET_ELEM_INTERVAL_END`) at `last + 1`, so
//! `10.0.0.0/8` is `10.0.0.0` + `11.0.0.0 [end]` and `192.0.2.7` is `192.0.2.7` +
//! `192.0.2.8 [end]`. nft adds a leading END element at `0.0.0.0` (`::`) when the first
//! range does not start at 0; the kernel does not need it, it is what nft sends and costs
//! one element. A range that runs to the top of the address space has no END element;
//! nft marks its start with element userdata `NFTNL_SET_ELEM_F_INTERVAL_OPEN`, which only
//! nft's listing reads. The kernel refuses overlapping intervals (`EEXIST`), so the IR's
//! elements arrive merged ([`crate::addrset`]). A host map is a hash: one element per
//! address, no END elements.
//!
//! Reading back, the kernel dumps an interval set's elements in descending order; they are
//! sorted again and paired into inclusive ranges.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::net::IpAddr;
use std::sync::Arc;

use nftnl::nftnl_sys as attr;

use super::sys::{Batch, NfSet};
use super::{NFPROTO_INET, NetlinkError, Result, cstring};
use crate::addrset::{AddrRange, Family};
use crate::ruleset::{Element, SetKind, TimedElement};

/// nft's data type ids for set keys.
pub(super) const KEY_TYPE_IPV4_ADDR: u32 = 7;
pub(super) const KEY_TYPE_IPV6_ADDR: u32 = 8;
/// `NFT_DATA_VERDICT`: the data type of a verdict map (not in the libc crate).
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
/// Data length nft sends for a verdict map (the kernel uses its own for verdicts).
pub(super) const VERDICT_DATA_LEN: u32 = 16;
/// Set userdata nft writes for address keys: `NFTNL_UDATA_SET_KEYBYTEORDER` (0), length 4,
/// `BYTEORDER_BIG_ENDIAN` (2) as a host-order u32.
pub(super) const SET_UDATA_KEY_BIG_ENDIAN: [u8; 6] = udata_u32(0, 2);
/// Element userdata nft writes on a start element whose interval runs to the top of the
/// address space (no END element follows): `NFTNL_UDATA_SET_ELEM_FLAGS` (1), length 4,
/// `NFTNL_SET_ELEM_F_INTERVAL_OPEN` (1).
const ELEM_UDATA_INTERVAL_OPEN: [u8; 6] = udata_u32(1, 1);

/// One nft userdata TLV holding a u32: type, length 4, the value in host order.
const fn udata_u32(kind: u8, value: u32) -> [u8; 6] {
    let v = value.to_ne_bytes();
    [kind, 4, v[0], v[1], v[2], v[3]]
}

/// `NFTNL_SET_FLAGS` of a set of this kind.
pub(super) fn set_flags(kind: SetKind) -> u32 {
    match kind {
        SetKind::Addresses => libc::NFT_SET_INTERVAL as u32,
        SetKind::VerdictMap => (libc::NFT_SET_INTERVAL | libc::NFT_SET_MAP) as u32,
        SetKind::HostMap => libc::NFT_SET_MAP as u32,
        // nft: flags dynamic,timeout
        SetKind::Dynamic => (libc::NFT_SET_EVAL | libc::NFT_SET_TIMEOUT) as u32,
    }
}

/// `NFTNL_SET_DATA_TYPE` of a set of this kind (`None`: a set has no data).
pub(super) fn data_type(kind: SetKind) -> Option<u32> {
    match kind {
        SetKind::Addresses | SetKind::Dynamic => None,
        SetKind::VerdictMap | SetKind::HostMap => Some(NFT_DATA_VERDICT),
    }
}

/// Key type id and key length in bytes of a set of addresses of `family`.
pub(super) fn key_of(family: Family) -> (u32, u32) {
    match family {
        Family::V4 => (KEY_TYPE_IPV4_ADDR, 4),
        Family::V6 => (KEY_TYPE_IPV6_ADDR, 16),
    }
}

/// Family, table, name and (for a set created in the same batch) id of a set: what names
/// the set in a set or element message.
pub(super) fn set_identity(s: &mut NfSet, table: &CStr, name: &CStr, id: Option<u32>) {
    s.set_u32(attr::NFTNL_SET_FAMILY, NFPROTO_INET.into());
    s.set_str(attr::NFTNL_SET_TABLE, table);
    s.set_str(attr::NFTNL_SET_NAME, name);
    if let Some(id) = id {
        s.set_u32(attr::NFTNL_SET_ID, id);
    }
}

/// Checks that every element is a valid range of `family`, a single address in a host
/// map, and jumps to a chain exactly when the set is a map.
pub(super) fn check_elements<'e>(
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
        } else if kind == SetKind::Dynamic {
            format!("element {r}: a dynamic set's elements are added with their timeouts")
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

/// `NFTNL_UDATA_SET_ELEM_COMMENT`: the userdata TLV type of an element comment, as nft
/// writes it (the text with its NUL).
const UDATA_ELEM_COMMENT: u8 = 0;

/// Element userdata carrying `comment` as nft writes it: type 0, length, text, NUL.
pub(super) fn comment_udata(comment: &str) -> Vec<u8> {
    let bytes = comment.as_bytes();
    let len = bytes.len().min(crate::ruleset::MAX_ELEMENT_COMMENT);
    let mut out = Vec::with_capacity(len + 3);
    out.push(UDATA_ELEM_COMMENT);
    out.push((len + 1) as u8);
    out.extend_from_slice(&bytes[..len]);
    out.push(0);
    out
}

/// The comment in element userdata (nft's TLVs), if any.
pub(super) fn udata_comment(udata: &[u8]) -> Option<String> {
    let mut rest = udata;
    while rest.len() >= 2 {
        let (kind, len) = (rest[0], rest[1] as usize);
        let value = rest.get(2..2 + len)?;
        if kind == UDATA_ELEM_COMMENT {
            let text = value.strip_suffix(&[0]).unwrap_or(value);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        rest = &rest[2 + len..];
    }
    None
}

/// Checks the elements of a dynamic set of `family`: addresses of the family, comments
/// within [`crate::ruleset::MAX_ELEMENT_COMMENT`] bytes without NUL.
pub(super) fn check_timed(what: &str, family: Family, elements: &[TimedElement]) -> Result<()> {
    for e in elements {
        let reason = if Family::of(e.addr) != family {
            format!("{} is not an {family:?} address", e.addr)
        } else if e
            .comment
            .as_ref()
            .is_some_and(|c| c.len() > crate::ruleset::MAX_ELEMENT_COMMENT || c.contains('\0'))
        {
            format!(
                "the comment of {} is longer than {} bytes or holds a NUL",
                e.addr,
                crate::ruleset::MAX_ELEMENT_COMMENT
            )
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

/// Attribute numbers of element messages, from the kernel's
/// `include/uapi/linux/netfilter/nf_tables.h`
/// (<https://github.com/torvalds/linux/blob/master/include/uapi/linux/netfilter/nf_tables.h>):
/// `enum nft_set_elem_list_attributes`, `enum nft_list_attributes`,
/// `enum nft_set_elem_attributes` and `enum nft_data_attributes`.
mod wire_attr {
    pub const ELEM_LIST_TABLE: u16 = 1;
    pub const ELEM_LIST_SET: u16 = 2;
    pub const ELEM_LIST_ELEMENTS: u16 = 3;
    pub const ELEM_LIST_SET_ID: u16 = 4;
    pub const LIST_ELEM: u16 = 1;
    pub const ELEM_KEY: u16 = 1;
    pub const ELEM_TIMEOUT: u16 = 4;
    pub const ELEM_USERDATA: u16 = 6;
    pub const DATA_VALUE: u16 = 1;
    /// `NLA_F_NESTED`: the attribute holds attributes.
    pub const NESTED: u16 = 1 << 15;
}

/// Most bytes of element attributes in one message: the element list is one attribute,
/// whose length is 16 bits, and the whole message must fit a batch slot.
const ELEMENT_LIST_BYTES: usize = 60 * 1024;

/// Adds element messages of one dynamic set to the batch: with their timeouts and
/// comments when adding, keys only when removing. These messages are written directly
/// (a bulk ban has 100,000 elements; going through libnftnl's element objects cost three
/// allocations each), attribute for attribute what libnftnl writes for the same elements.
pub(super) fn add_timed_elements(
    batch: &mut Batch,
    table: &CStr,
    set: (&CStr, Option<u32>),
    elements: &[TimedElement],
    op: ElemOp,
    what: &str,
) {
    add_timed(
        batch,
        table,
        set,
        elements
            .iter()
            .map(|e| (e.addr, e.timeout, e.comment.as_deref())),
        op,
        what,
    );
}

/// [`add_timed_elements`] of `(address, timeout, comment)`s: a bulk ban's elements all
/// share one timeout and comment, with no element object each.
pub(super) fn add_timed<'c>(
    batch: &mut Batch,
    table: &CStr,
    (set, id): (&CStr, Option<u32>),
    elements: impl Iterator<Item = (IpAddr, Option<std::time::Duration>, Option<&'c str>)>,
    op: ElemOp,
    what: &str,
) {
    use super::conntrack::wire::MsgBuilder;
    let (ty, flags) = match op {
        ElemOp::Add => (libc::NFT_MSG_NEWSETELEM, libc::NLM_F_CREATE),
        ElemOp::Remove => (libc::NFT_MSG_DELSETELEM, 0),
    };
    let ty = ((libc::NFNL_SUBSYS_NFTABLES as u16) << 8) | ty as u16;
    let flags = (libc::NLM_F_REQUEST | flags) as u16;
    // nfgenmsg: family, version NFNETLINK_V0, resource id 0.
    let nfgenmsg = [NFPROTO_INET as u8, libc::NFNETLINK_V0 as u8, 0, 0];
    let start = |seq: u32| {
        let mut m = MsgBuilder::new(ty, flags, seq)
            .header(&nfgenmsg)
            .attr(wire_attr::ELEM_LIST_TABLE, table.to_bytes_with_nul())
            .attr(wire_attr::ELEM_LIST_SET, set.to_bytes_with_nul());
        if let Some(id) = id {
            m = m.attr(wire_attr::ELEM_LIST_SET_ID, &id.to_be_bytes());
        }
        m.begin_nest(wire_attr::ELEM_LIST_ELEMENTS)
    };
    // The elements of a bulk ban differ only in their keys: an element's attributes are
    // encoded once and copied with each key put in (a tenth of the time of encoding each).
    let mut template: Option<ElemTemplate<'c>> = None;
    let mut part = 1;
    let mut msg: Option<(MsgBuilder, usize)> = None;
    let flush = |batch: &mut Batch, m: MsgBuilder, last: bool, part: &mut usize| {
        let name = if *part == 1 && last {
            what.to_owned()
        } else {
            format!("{what} (message {part})")
        };
        batch.add_message(&m.end_nest().finish(), name);
        *part += 1;
    };
    let mut elements = elements.peekable();
    while let Some((addr, timeout, comment)) = elements.next() {
        let key = Key::of(addr);
        let (mut m, list_start) = match msg.take() {
            Some(open) => open,
            None => {
                let m = start(batch.next_seq());
                let at = m.len();
                (m, at)
            }
        };
        let t = match &mut template {
            Some(t) if t.fits(key, timeout, comment) => t,
            t => t.insert(ElemTemplate::new(key, timeout, comment, op)),
        };
        m = m.attr(wire_attr::LIST_ELEM | wire_attr::NESTED, t.with_key(key));
        let last = elements.peek().is_none();
        if m.len() - list_start >= ELEMENT_LIST_BYTES || last {
            flush(batch, m, last, &mut part);
        } else {
            msg = Some((m, list_start));
        }
    }
}

/// The attributes of one element of a dynamic set (inside its `NFTA_LIST_ELEM` nest), as
/// [`add_timed`] sends them: its key, and when adding its timeout and comment.
struct ElemTemplate<'c> {
    key_len: usize,
    timeout: Option<std::time::Duration>,
    comment: Option<&'c str>,
    bytes: Vec<u8>,
}

impl<'c> ElemTemplate<'c> {
    /// Where the key starts: after the headers of the key nest and of its value.
    const KEY_AT: usize = 8;

    fn new(
        key: Key,
        timeout: Option<std::time::Duration>,
        comment: Option<&'c str>,
        op: ElemOp,
    ) -> Self {
        use super::conntrack::wire::MsgBuilder;
        let mut m = MsgBuilder::new(0, 0, 0)
            .begin_nest(wire_attr::ELEM_KEY)
            .attr(wire_attr::DATA_VALUE, key.bytes())
            .end_nest();
        if op == ElemOp::Add {
            if let Some(t) = timeout {
                // The kernel takes milliseconds; at least 1 (0 would mean "no timeout").
                let ms = (t.as_millis() as u64).max(1);
                m = m.attr(wire_attr::ELEM_TIMEOUT, &ms.to_be_bytes());
            }
            if let Some(c) = comment {
                m = m.attr(wire_attr::ELEM_USERDATA, &comment_udata(c));
            }
        }
        // Without the message header (16 bytes) the builder starts with.
        let bytes = m.finish().split_off(16);
        ElemTemplate {
            key_len: key.len,
            timeout,
            comment,
            bytes,
        }
    }

    /// Whether an element with these values is this one with another key.
    fn fits(&self, key: Key, timeout: Option<std::time::Duration>, comment: Option<&str>) -> bool {
        self.key_len == key.len && self.timeout == timeout && self.comment == comment
    }

    /// The attributes with `key` put in.
    fn with_key(&mut self, key: Key) -> &[u8] {
        self.bytes[Self::KEY_AT..Self::KEY_AT + key.len].copy_from_slice(key.bytes());
        &self.bytes
    }
}

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
pub(super) struct JumpNames(HashMap<Arc<str>, CString>);

impl JumpNames {
    /// Adds every chain the elements jump to; fails on a name with a NUL byte.
    pub(super) fn add(&mut self, elements: &[Element]) -> Result<()> {
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
pub(super) enum ElemOp {
    /// NEWSETELEM.
    Add,
    /// DELSETELEM; no jumps are sent (the kernel finds elements by their keys).
    Remove,
}

/// The elements of one set, for [`add_elements`]: `id` names a set created earlier in the
/// same batch; `leading_zero` as in [`wire_elements`].
pub(super) struct ElementsOf<'e> {
    /// Set name.
    pub(super) set: &'e CStr,
    /// Id of a set created earlier in the same batch.
    pub(super) id: Option<u32>,
    /// How the elements are encoded.
    pub(super) kind: SetKind,
    /// The elements.
    pub(super) elements: &'e [Element],
    /// Whether the first message starts with the END element at 0 nft sends.
    pub(super) leading_zero: bool,
}

/// Adds element messages of one set to the batch, [`ELEMENTS_PER_CHUNK`] elements at a
/// time.
pub(super) fn add_elements(
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
        for e in wire_elements(of.kind, chunk, of.leading_zero && i == 0, jumps) {
            let udata = e.open.then_some(&ELEM_UDATA_INTERVAL_OPEN[..]);
            let jump = e.jump.filter(|_| op == ElemOp::Add);
            s.add_elem(e.key.bytes(), e.end, udata, jump);
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
pub(super) fn decode_hosts(family: Family, elems: &[RawElem]) -> Vec<Element> {
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
pub(super) type RawElem = (Vec<u8>, bool, Option<Arc<str>>);

/// Decodes interval elements (any order) back into sorted inclusive ranges, each with the
/// jump of its start element.
pub(super) fn decode_intervals(family: Family, elems: &[RawElem]) -> Vec<Element> {
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

    /// The attributes of a netlink attribute stream: (type without flags, payload).
    fn tlvs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
        let mut out = Vec::new();
        while b.len() >= 4 {
            let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
            let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
            assert!(len >= 4 && len <= b.len(), "attribute length {len}");
            out.push((ty, &b[4..len]));
            b = &b[((len + 3) & !3).min(b.len())..];
        }
        out
    }

    #[test]
    fn timed_elements_are_encoded_as_the_builder_encodes_each() {
        use crate::nft::netlink::conntrack::wire::MsgBuilder;
        let t = |s| Some(std::time::Duration::from_secs(s));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let elements = [
            (ip("192.0.2.1"), t(3600), Some("manual")),
            (ip("192.0.2.2"), t(3600), Some("manual")),
            (ip("2001:db8::1"), t(3600), Some("manual")),
            (ip("2001:db8::2"), t(60), Some("manual")),
            (ip("2001:db8::3"), t(60), Some("f2b:sshd")),
            (ip("2001:db8::4"), None, None),
            (ip("192.0.2.3"), t(1), Some("a comment of eleven")),
            (ip("192.0.2.4"), t(1), Some("a comment of eleven")),
        ];
        for op in [ElemOp::Add, ElemOp::Remove] {
            let mut batch = Batch::new(100, None);
            add_timed(
                &mut batch,
                c"pbxwall",
                (c"ban_v6", None),
                elements.iter().copied(),
                op,
                "x",
            );
            let (bytes, _) = batch.finish().bytes();
            // The element list of the one element message: after the batch begin (20
            // bytes), the message header (16 + 4), table and set attributes.
            let msg_len = u32::from_ne_bytes(bytes[20..24].try_into().unwrap()) as usize;
            let msg = &bytes[20..20 + msg_len];
            let attrs = tlvs(&msg[20..]);
            assert_eq!(attrs[2].0, wire_attr::ELEM_LIST_ELEMENTS);
            let mut list = attrs[2].1;
            for (addr, timeout, comment) in elements {
                let key = Key::of(addr);
                let mut m = MsgBuilder::new(0, 0, 0)
                    .begin_nest(wire_attr::LIST_ELEM)
                    .begin_nest(wire_attr::ELEM_KEY)
                    .attr(wire_attr::DATA_VALUE, key.bytes())
                    .end_nest();
                if op == ElemOp::Add {
                    if let Some(t) = timeout {
                        m = m.attr(
                            wire_attr::ELEM_TIMEOUT,
                            &(t.as_millis() as u64).to_be_bytes(),
                        );
                    }
                    if let Some(c) = comment {
                        m = m.attr(wire_attr::ELEM_USERDATA, &comment_udata(c));
                    }
                }
                let want = m.end_nest().finish().split_off(16);
                assert_eq!(&list[..want.len()], &want[..], "{addr} {op:?}");
                list = &list[want.len()..];
            }
            assert!(list.is_empty());
        }
    }

    #[test]
    fn timed_elements_are_split_into_messages_that_carry_every_element() {
        let elements: Vec<TimedElement> = (0..5000u32)
            .map(|i| {
                let addr = IpAddr::V6(std::net::Ipv6Addr::from(
                    0x2001_0db8_u128 << 96 | u128::from(i),
                ));
                TimedElement::new(
                    addr,
                    Some(std::time::Duration::from_secs(3600)),
                    Some("manual".into()),
                )
            })
            .collect();
        let mut batch = Batch::new(100, None);
        add_timed_elements(
            &mut batch,
            c"pbxwall",
            (c"ban_v6", None),
            &elements,
            ElemOp::Add,
            "new elements of set ban_v6",
        );
        let batch = batch.finish();
        let names = batch.descriptions();
        assert!(names.len() > 3, "{names:?}");
        assert_eq!(names[1], "new elements of set ban_v6 (message 1)");
        let (bytes, largest) = batch.bytes();
        let mut seen = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[..4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes([rest[4], rest[5]]);
            assert!(len <= largest, "message of {len} bytes");
            if ty == ((libc::NFNL_SUBSYS_NFTABLES as u16) << 8 | libc::NFT_MSG_NEWSETELEM as u16) {
                let attrs = tlvs(&rest[20..len]);
                assert_eq!(attrs[0], (wire_attr::ELEM_LIST_TABLE, &b"pbxwall\0"[..]));
                assert_eq!(attrs[1], (wire_attr::ELEM_LIST_SET, &b"ban_v6\0"[..]));
                assert_eq!(attrs[2].0, wire_attr::ELEM_LIST_ELEMENTS);
                for (kind, elem) in tlvs(attrs[2].1) {
                    assert_eq!(kind, wire_attr::LIST_ELEM);
                    let a = tlvs(elem);
                    assert_eq!(a[0].0, wire_attr::ELEM_KEY);
                    let key = tlvs(a[0].1);
                    assert_eq!(key[0].0, wire_attr::DATA_VALUE);
                    let key: [u8; 16] = key[0].1.try_into().unwrap();
                    assert_eq!(
                        a[1],
                        (wire_attr::ELEM_TIMEOUT, &3_600_000u64.to_be_bytes()[..])
                    );
                    assert_eq!(
                        a[2],
                        (wire_attr::ELEM_USERDATA, &comment_udata("manual")[..])
                    );
                    seen.push(IpAddr::V6(key.into()));
                }
            }
            rest = &rest[len..];
        }
        let want: Vec<IpAddr> = elements.iter().map(|e| e.addr).collect();
        assert_eq!(seen, want);
    }
}
