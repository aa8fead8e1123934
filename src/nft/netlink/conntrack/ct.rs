//! ctnetlink, the conntrack subsystem of nfnetlink (`NFNL_SUBSYS_CTNETLINK`): the dump of
//! the connection tracking table and the deletion of one entry, as bytes.
//!
//! Every message starts with `struct nfgenmsg` (address family, version 0, resource id 0).
//! An entry is a list of attributes (`enum ctattr_type` of
//! `linux/netfilter/nfnetlink_conntrack.h`); those read here:
//!
//! ```text
//! CTA_TUPLE_ORIG   nested: CTA_TUPLE_IP    nested: CTA_IP_V4_SRC / _DST (4 bytes)
//!                                                 CTA_IP_V6_SRC / _DST (16 bytes)
//!                          CTA_TUPLE_PROTO nested: CTA_PROTO_NUM (u8)
//!                                                  CTA_PROTO_SRC_PORT / _DST_PORT (be16)
//! CTA_TUPLE_REPLY  the same, for the answers' direction
//! CTA_STATUS       be32, IPS_* bits
//! CTA_ID           be32, the entry's id
//! CTA_ZONE         be16, present for an entry outside the default zone
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::wire::{Attrs, Msg, MsgBuilder, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};

/// `NFNL_SUBSYS_CTNETLINK`: the high byte of every message type of this subsystem.
const SUBSYS: u16 = libc::NFNL_SUBSYS_CTNETLINK as u16;
/// `IPCTNL_MSG_CT_NEW`: the type of every entry of a dump.
const MSG_NEW: u16 = 0;
/// `IPCTNL_MSG_CT_GET`: with `NLM_F_DUMP`, list the table.
const MSG_GET: u16 = 1;
/// `IPCTNL_MSG_CT_DELETE`: delete the entry holding a tuple.
const MSG_DELETE: u16 = 2;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;

const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;

const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;

const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// `IPS_EXPECTED`: the entry was expected by a helper (FTP data, SIP media of a helper):
/// a related flow, admitted because of its master, not by a rule of its own.
pub(super) const IPS_EXPECTED: u32 = 1 << 0;

/// One direction of an entry: addresses, protocol and ports (0 for a protocol without).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tuple {
    /// Source address.
    pub(super) src: IpAddr,
    /// Destination address.
    pub(super) dst: IpAddr,
    /// IP protocol number (6 TCP, 17 UDP, ...).
    pub(super) proto: u8,
    /// Source port.
    pub(super) sport: u16,
    /// Destination port.
    pub(super) dport: u16,
}

#[cfg(test)]
impl Tuple {
    /// The tuple seen from the other end.
    pub(super) fn reversed(self) -> Tuple {
        Tuple {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            sport: self.dport,
            dport: self.sport,
        }
    }
}

/// One entry of the conntrack table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    /// The direction of the packet that created it.
    pub(super) orig: Tuple,
    /// The direction of the answers: after NAT, what the answering end really is.
    pub(super) reply: Tuple,
    /// `IPS_*` bits.
    pub(super) status: u32,
    /// The entry's id, when the kernel gave one.
    pub(super) id: Option<u32>,
    /// Its conntrack zone, when not the default one.
    pub(super) zone: Option<u16>,
}

/// The `nfgenmsg` of a message about `family` (`AF_UNSPEC` for every family).
fn nfgenmsg(family: u8) -> [u8; 4] {
    [family, libc::NFNETLINK_V0 as u8, 0, 0]
}

fn family_of(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

/// The request listing every entry of every family of the namespace.
pub(super) fn dump_request(seq: u32) -> Vec<u8> {
    MsgBuilder::new(SUBSYS << 8 | MSG_GET, NLM_F_REQUEST | NLM_F_DUMP, seq)
        .header(&nfgenmsg(libc::AF_UNSPEC as u8))
        .finish()
}

/// The request deleting the entry whose original direction is `entry.orig`, in its zone.
/// With `by_id`, only the very entry that was dumped (the kernel answers `ENOENT` when the
/// entry holding the tuple has another id); without, whatever entry holds the tuple in
/// either direction. Acknowledged.
pub(super) fn delete_request(entry: &Entry, by_id: bool, seq: u32) -> Vec<u8> {
    let m = MsgBuilder::new(SUBSYS << 8 | MSG_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq)
        .header(&nfgenmsg(family_of(entry.orig.src)));
    let mut m = put_tuple(m, CTA_TUPLE_ORIG, &entry.orig);
    if let Some(zone) = entry.zone {
        m = m.attr(CTA_ZONE, &zone.to_be_bytes());
    }
    if by_id && let Some(id) = entry.id {
        m = m.attr(CTA_ID, &id.to_be_bytes());
    }
    m.finish()
}

/// Adds `t` as the nested tuple attribute `ty` (`CTA_TUPLE_ORIG` or `CTA_TUPLE_REPLY`):
/// addresses, then protocol and ports, as ctnetlink nests them.
fn put_tuple(m: MsgBuilder, ty: u16, t: &Tuple) -> MsgBuilder {
    let (src_attr, dst_attr) = match t.src {
        IpAddr::V4(_) => (CTA_IP_V4_SRC, CTA_IP_V4_DST),
        IpAddr::V6(_) => (CTA_IP_V6_SRC, CTA_IP_V6_DST),
    };
    m.begin_nest(ty)
        .begin_nest(CTA_TUPLE_IP)
        .attr(src_attr, &octets(t.src))
        .attr(dst_attr, &octets(t.dst))
        .end_nest()
        .begin_nest(CTA_TUPLE_PROTO)
        .attr(CTA_PROTO_NUM, &[t.proto])
        .attr(CTA_PROTO_SRC_PORT, &t.sport.to_be_bytes())
        .attr(CTA_PROTO_DST_PORT, &t.dport.to_be_bytes())
        .end_nest()
        .end_nest()
}

fn octets(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// One message of a dump as an entry; `None` for a message that is not an entry, or an
/// entry of a family other than IPv4 and IPv6.
pub(super) fn parse_entry(msg: Msg<'_>) -> Result<Option<Entry>, String> {
    if msg.ty != SUBSYS << 8 | MSG_NEW {
        return Ok(None);
    }
    let family = *msg
        .payload
        .first()
        .ok_or("a conntrack entry without its header")?;
    if family != libc::AF_INET as u8 && family != libc::AF_INET6 as u8 {
        return Ok(None);
    }
    let attrs = Attrs::parse(msg.payload.get(4..).unwrap_or_default())?;
    let tuple = |ty: u16, name: &str| -> Result<Tuple, String> {
        let t = attrs
            .nested(ty)?
            .ok_or_else(|| format!("a conntrack entry without its {name} tuple"))?;
        parse_tuple(&t).map_err(|e| format!("{name} tuple: {e}"))
    };
    Ok(Some(Entry {
        orig: tuple(CTA_TUPLE_ORIG, "original")?,
        reply: tuple(CTA_TUPLE_REPLY, "reply")?,
        status: attrs.be32(CTA_STATUS).unwrap_or(0),
        id: attrs.be32(CTA_ID),
        zone: attrs.be16(CTA_ZONE),
    }))
}

fn parse_tuple(t: &Attrs<'_>) -> Result<Tuple, String> {
    let ip = t.nested(CTA_TUPLE_IP)?.ok_or("no addresses")?;
    let (src, dst) = match (ip.get(CTA_IP_V4_SRC), ip.get(CTA_IP_V4_DST)) {
        (Some(s), Some(d)) => (v4(s)?, v4(d)?),
        _ => match (ip.get(CTA_IP_V6_SRC), ip.get(CTA_IP_V6_DST)) {
            (Some(s), Some(d)) => (v6(s)?, v6(d)?),
            _ => return Err("no source and destination address".into()),
        },
    };
    let proto = t.nested(CTA_TUPLE_PROTO)?.ok_or("no protocol")?;
    Ok(Tuple {
        src,
        dst,
        proto: proto.u8(CTA_PROTO_NUM).ok_or("no protocol number")?,
        sport: proto.be16(CTA_PROTO_SRC_PORT).unwrap_or(0),
        dport: proto.be16(CTA_PROTO_DST_PORT).unwrap_or(0),
    })
}

fn v4(b: &[u8]) -> Result<IpAddr, String> {
    let o: [u8; 4] = b
        .try_into()
        .map_err(|_| "an IPv4 address not 4 bytes long")?;
    Ok(IpAddr::V4(Ipv4Addr::from(o)))
}

fn v6(b: &[u8]) -> Result<IpAddr, String> {
    let o: [u8; 16] = b
        .try_into()
        .map_err(|_| "an IPv6 address not 16 bytes long")?;
    Ok(IpAddr::V6(Ipv6Addr::from(o)))
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::wire::messages;
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    pub(in super::super) fn tuple(
        src: &str,
        sport: u16,
        dst: &str,
        dport: u16,
        proto: u8,
    ) -> Tuple {
        Tuple {
            src: ip(src),
            dst: ip(dst),
            proto,
            sport,
            dport,
        }
    }

    /// An entry as the kernel dumps it (nested flags set, status and id big-endian).
    fn dumped(e: &Entry) -> Vec<u8> {
        let mut m =
            MsgBuilder::new(SUBSYS << 8 | MSG_NEW, 2, 9).header(&nfgenmsg(family_of(e.orig.src)));
        m = put_tuple(m, CTA_TUPLE_ORIG, &e.orig);
        m = put_tuple(m, CTA_TUPLE_REPLY, &e.reply);
        m = m.attr(CTA_STATUS, &e.status.to_be_bytes());
        if let Some(id) = e.id {
            m = m.attr(CTA_ID, &id.to_be_bytes());
        }
        if let Some(zone) = e.zone {
            m = m.attr(CTA_ZONE, &zone.to_be_bytes());
        }
        m.finish()
    }

    #[test]
    fn dumped_entries_decode() {
        for e in [
            Entry {
                orig: tuple("192.0.2.10", 40000, "192.0.2.1", 22, 6),
                reply: tuple("192.0.2.1", 22, "192.0.2.10", 40000, 6),
                status: 0x18e,
                id: Some(0xdead_beef),
                zone: None,
            },
            Entry {
                orig: tuple("2001:db8::10", 5060, "2001:db8::1", 5060, 17),
                reply: tuple("2001:db8::1", 5060, "2001:db8::10", 5060, 17),
                status: IPS_EXPECTED,
                id: None,
                zone: Some(7),
            },
        ] {
            let bytes = dumped(&e);
            let msg = messages(&bytes).unwrap()[0];
            assert_eq!(parse_entry(msg), Ok(Some(e)));
        }
    }

    #[test]
    fn other_messages_and_families_are_skipped_and_garbage_refused() {
        let other = MsgBuilder::new(SUBSYS << 8 | 5, 0, 1)
            .header(&nfgenmsg(2))
            .finish();
        assert_eq!(parse_entry(messages(&other).unwrap()[0]), Ok(None));
        let bridge = MsgBuilder::new(SUBSYS << 8 | MSG_NEW, 0, 1)
            .header(&nfgenmsg(libc::AF_BRIDGE as u8))
            .finish();
        assert_eq!(parse_entry(messages(&bridge).unwrap()[0]), Ok(None));
        let no_tuple = MsgBuilder::new(SUBSYS << 8 | MSG_NEW, 0, 1)
            .header(&nfgenmsg(2))
            .attr(CTA_STATUS, &[0, 0, 0, 8])
            .finish();
        assert!(parse_entry(messages(&no_tuple).unwrap()[0]).is_err());
        let short_addr = MsgBuilder::new(SUBSYS << 8 | MSG_NEW, 0, 1)
            .header(&nfgenmsg(2))
            .begin_nest(CTA_TUPLE_ORIG)
            .begin_nest(CTA_TUPLE_IP)
            .attr(CTA_IP_V4_SRC, &[192, 0, 2])
            .attr(CTA_IP_V4_DST, &[192, 0, 2, 1])
            .end_nest()
            .end_nest()
            .finish();
        assert!(parse_entry(messages(&short_addr).unwrap()[0]).is_err());
    }

    #[test]
    fn requests_are_what_conntrack_sends() {
        // `conntrack -L` sends exactly these 20 bytes (header and nfgenmsg, no attributes).
        let dump = dump_request(5);
        assert_eq!(dump.len(), 20);
        assert_eq!(&dump[4..6], &(0x101u16).to_ne_bytes());
        assert_eq!(&dump[6..8], &(0x301u16).to_ne_bytes(), "REQUEST | DUMP");
        assert_eq!(&dump[16..20], &[0, 0, 0, 0]);

        let e = Entry {
            orig: tuple("192.0.2.10", 40000, "192.0.2.1", 22, 6),
            reply: tuple("192.0.2.1", 22, "192.0.2.10", 40000, 6),
            status: 0,
            id: Some(0x0102_0304),
            zone: Some(3),
        };
        let del = delete_request(&e, true, 6);
        let msg = messages(&del).unwrap()[0];
        assert_eq!(msg.ty, 0x102);
        assert_eq!(&del[6..8], &(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        assert_eq!(msg.payload[0], libc::AF_INET as u8);
        let attrs = Attrs::parse(&msg.payload[4..]).unwrap();
        let orig = attrs.nested(CTA_TUPLE_ORIG).unwrap().unwrap();
        assert_eq!(parse_tuple(&orig), Ok(e.orig));
        assert_eq!(attrs.be32(CTA_ID), Some(0x0102_0304));
        assert_eq!(attrs.be16(CTA_ZONE), Some(3));
        assert!(attrs.get(CTA_TUPLE_REPLY).is_none());
        // The same bytes as a hand-written message: the port of 40000 big-endian, the
        // nested flag on both nests.
        assert_eq!(
            &del[20..28],
            &[52, 0, 0x01, 0x80, 20, 0, 0x01, 0x80],
            "CTA_TUPLE_ORIG(52 bytes) > CTA_TUPLE_IP(20 bytes)"
        );
        assert!(del.windows(6).any(|w| w == [6, 0, 2, 0, 0x9c, 0x40]));

        let v6 = Entry {
            orig: tuple("2001:db8::10", 5060, "2001:db8::1", 5060, 17),
            ..e
        };
        let del = delete_request(&v6, false, 7);
        let msg = messages(&del).unwrap()[0];
        assert_eq!(msg.payload[0], libc::AF_INET6 as u8);
        let attrs = Attrs::parse(&msg.payload[4..]).unwrap();
        assert_eq!(
            parse_tuple(&attrs.nested(CTA_TUPLE_ORIG).unwrap().unwrap()),
            Ok(v6.orig)
        );
        assert!(attrs.get(CTA_ID).is_none(), "by tuple only");
    }
}
