//! Netlink messages as bytes, both ways: a [`MsgBuilder`] writes a header, a family header
//! and attributes (nested ones too); [`messages`] and [`Attrs`] read them back, checking
//! every length against the buffer. [`exchange`] sends one request on a [`RawSocket`] and
//! hands every answer to a callback until the kernel says it is done. The element messages
//! of a bulk ban are written with [`MsgBuilder`] too (`super::super::elements`).
//!
//! Netlink's own headers and attribute headers are in host byte order; the payloads the
//! conntrack and socket subsystems use (addresses, ports, status, ids) are big-endian, which
//! the callers handle.

use std::io;

use super::super::sys::RawSocket;
use super::super::{NetlinkError, Result};

/// `NLA_F_NESTED`: the attribute holds attributes.
pub(super) const NLA_F_NESTED: u16 = 1 << 15;
/// `NLA_F_NET_BYTEORDER`: a flag some attributes carry; not part of the type.
const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
/// Length of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;
/// Length of `struct nlattr`.
const NLA_HDRLEN: usize = 4;

/// `NLMSG_ERROR`, `NLMSG_DONE`, `NLMSG_NOOP` as message types.
const NLMSG_NOOP: u16 = libc::NLMSG_NOOP as u16;
const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;
const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;

/// `NLM_F_REQUEST` and the flags requests add to it.
pub(super) const NLM_F_REQUEST: u16 = libc::NLM_F_REQUEST as u16;
/// Ask for an acknowledgement (an `NLMSG_ERROR` with errno 0 on success).
pub(super) const NLM_F_ACK: u16 = libc::NLM_F_ACK as u16;
/// Dump every object (answered by several messages and `NLMSG_DONE`).
pub(super) const NLM_F_DUMP: u16 = libc::NLM_F_DUMP as u16;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A netlink message under construction.
#[derive(Debug)]
pub(in crate::nft::netlink) struct MsgBuilder {
    buf: Vec<u8>,
    /// Offsets of the nests still open.
    open: Vec<usize>,
}

impl MsgBuilder {
    /// A message of type `ty` with `flags` and sequence number `seq` (port id 0: the kernel
    /// fills in ours).
    pub(in crate::nft::netlink) fn new(ty: u16, flags: u16, seq: u32) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        MsgBuilder {
            buf,
            open: Vec::new(),
        }
    }

    fn pad(&mut self) {
        self.buf.resize(align4(self.buf.len()), 0);
    }

    /// Appends a fixed header of the subsystem (`nfgenmsg`, `ifaddrmsg`, ...), padded to 4.
    pub(in crate::nft::netlink) fn header(mut self, bytes: &[u8]) -> Self {
        self.buf.extend_from_slice(bytes);
        self.pad();
        self
    }

    /// Appends one attribute, padded to 4.
    pub(in crate::nft::netlink) fn attr(mut self, ty: u16, payload: &[u8]) -> Self {
        let len = u16::try_from(NLA_HDRLEN + payload.len()).expect("netlink attribute too long");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    /// Opens a nested attribute: what follows, up to [`MsgBuilder::end_nest`], is inside it.
    pub(in crate::nft::netlink) fn begin_nest(mut self, ty: u16) -> Self {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Closes the innermost open nest.
    pub(in crate::nft::netlink) fn end_nest(mut self) -> Self {
        let start = self.open.pop().expect("end_nest without begin_nest");
        let len = u16::try_from(self.buf.len() - start).expect("netlink nest too long");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// Bytes written so far.
    pub(in crate::nft::netlink) fn len(&self) -> usize {
        self.buf.len()
    }

    /// The finished message, its length filled in.
    pub(in crate::nft::netlink) fn finish(mut self) -> Vec<u8> {
        assert!(self.open.is_empty(), "a netlink nest was left open");
        let len = u32::try_from(self.buf.len()).expect("netlink message too long");
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// One message of a received datagram.
#[derive(Debug, Clone, Copy)]
pub(super) struct Msg<'a> {
    /// Message type (for nfnetlink: subsystem << 8 | message).
    pub(super) ty: u16,
    /// Sequence number of the request it answers.
    pub(super) seq: u32,
    /// What follows the header.
    pub(super) payload: &'a [u8],
}

impl Msg<'_> {
    /// The errno of an `NLMSG_ERROR` (0 for an acknowledgement).
    fn errno(&self) -> Result<i32, String> {
        let code = self
            .payload
            .get(0..4)
            .ok_or("an error message without its code")?;
        Ok(-i32::from_ne_bytes(code.try_into().unwrap_or_default()))
    }
}

/// Splits a received datagram into its messages; a length that does not fit is an error.
pub(super) fn messages(buf: &[u8]) -> Result<Vec<Msg<'_>>, String> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let h = &buf[off..off + NLMSG_HDRLEN];
        let len = u32::from_ne_bytes(h[0..4].try_into().unwrap_or_default()) as usize;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return Err(format!(
                "truncated netlink message ({len} bytes at offset {off} of {})",
                buf.len()
            ));
        }
        out.push(Msg {
            ty: u16::from_ne_bytes([h[4], h[5]]),
            seq: u32::from_ne_bytes(h[8..12].try_into().unwrap_or_default()),
            payload: &buf[off + NLMSG_HDRLEN..off + len],
        });
        off += align4(len);
    }
    Ok(out)
}

/// The attributes of a payload (or of a nested attribute), by type; the last of a type
/// wins, as in the kernel's own parser.
#[derive(Debug, Default)]
pub(super) struct Attrs<'a> {
    found: Vec<(u16, &'a [u8])>,
}

impl<'a> Attrs<'a> {
    /// Reads every attribute of `buf`; one whose length does not fit is an error.
    pub(super) fn parse(buf: &'a [u8]) -> Result<Self, String> {
        let mut found = Vec::new();
        let mut off = 0;
        while off + NLA_HDRLEN <= buf.len() {
            let len = u16::from_ne_bytes([buf[off], buf[off + 1]]) as usize;
            let ty = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]);
            if len < NLA_HDRLEN || off + len > buf.len() {
                return Err(format!(
                    "malformed netlink attribute (type {ty}, {len} bytes at offset {off} of {})",
                    buf.len()
                ));
            }
            found.push((
                ty & !(NLA_F_NESTED | NLA_F_NET_BYTEORDER),
                &buf[off + NLA_HDRLEN..off + len],
            ));
            off += align4(len);
        }
        Ok(Attrs { found })
    }

    /// The payload of the attribute of type `ty`.
    pub(super) fn get(&self, ty: u16) -> Option<&'a [u8]> {
        self.found
            .iter()
            .rev()
            .find(|(t, _)| *t == ty)
            .map(|(_, p)| *p)
    }

    /// The attributes nested in the attribute of type `ty`.
    pub(super) fn nested(&self, ty: u16) -> Result<Option<Attrs<'a>>, String> {
        self.get(ty).map(Attrs::parse).transpose()
    }

    /// A big-endian u16 attribute.
    pub(super) fn be16(&self, ty: u16) -> Option<u16> {
        Some(u16::from_be_bytes(
            self.get(ty)?.get(0..2)?.try_into().ok()?,
        ))
    }

    /// A big-endian u32 attribute.
    pub(super) fn be32(&self, ty: u16) -> Option<u32> {
        Some(u32::from_be_bytes(
            self.get(ty)?.get(0..4)?.try_into().ok()?,
        ))
    }

    /// A u8 attribute.
    pub(super) fn u8(&self, ty: u16) -> Option<u8> {
        self.get(ty)?.first().copied()
    }
}

/// Receive buffer: the kernel never puts more than 32 KiB into one dump datagram.
const RECV_BUF: usize = 64 << 10;

/// How a request ended.
#[derive(Debug)]
pub(super) enum Answer {
    /// Acknowledged, or the dump is complete.
    Done,
    /// The kernel refused it with this errno.
    Refused(io::Error),
}

/// Sends `request` (sequence number `seq`) and hands each answer message of that sequence
/// number to `each`, until the acknowledgement, the error or the end of a dump. Messages of
/// other sequence numbers (late answers to an earlier request) are skipped. `what` names
/// the request in errors.
pub(super) fn exchange(
    sock: &RawSocket,
    request: &[u8],
    seq: u32,
    what: &str,
    mut each: impl FnMut(Msg<'_>) -> Result<(), String>,
) -> Result<Answer> {
    sock.send(request).map_err(|source| NetlinkError::Send {
        what: what.to_owned(),
        source,
    })?;
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let got = sock
            .recv(&mut buf)
            .map_err(|source| NetlinkError::Receive {
                what: what.to_owned(),
                source,
            })?;
        let protocol = |reason: String| NetlinkError::Protocol {
            what: what.to_owned(),
            reason,
        };
        for msg in messages(got).map_err(protocol)? {
            if msg.seq != seq {
                continue;
            }
            match msg.ty {
                NLMSG_NOOP => {}
                NLMSG_ERROR => {
                    return Ok(match msg.errno().map_err(protocol)? {
                        0 => Answer::Done,
                        errno => Answer::Refused(io::Error::from_raw_os_error(errno)),
                    });
                }
                NLMSG_DONE => {
                    // A dump that failed half way says so in DONE's payload.
                    let status = msg
                        .payload
                        .get(0..4)
                        .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap_or_default()));
                    return Ok(if status < 0 {
                        Answer::Refused(io::Error::from_raw_os_error(-status))
                    } else {
                        Answer::Done
                    });
                }
                _ => each(msg).map_err(protocol)?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_message_reads_back() {
        let msg = MsgBuilder::new(0x102, NLM_F_REQUEST | NLM_F_ACK, 7)
            .header(&[2, 0, 0, 0])
            .begin_nest(1)
            .begin_nest(1)
            .attr(1, &[192, 0, 2, 10])
            .end_nest()
            .attr(9, &[6])
            .end_nest()
            .attr(12, &5u32.to_be_bytes())
            .finish();
        assert_eq!(msg.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(msg[0..4].try_into().unwrap()) as usize,
            msg.len()
        );
        let msgs = messages(&msg).unwrap();
        assert_eq!(msgs.len(), 1);
        let m = msgs[0];
        assert_eq!((m.ty, m.seq), (0x102, 7));
        assert_eq!(&msg[6..8], &(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        assert_eq!(&m.payload[0..4], &[2, 0, 0, 0]);
        let top = Attrs::parse(&m.payload[4..]).unwrap();
        assert_eq!(top.be32(12), Some(5));
        let outer = top.nested(1).unwrap().unwrap();
        assert_eq!(outer.u8(9), Some(6));
        let inner = outer.nested(1).unwrap().unwrap();
        assert_eq!(inner.get(1), Some(&[192, 0, 2, 10][..]));
        // The nested flag is set on the wire and not part of the type read back.
        let nla_type = u16::from_ne_bytes([m.payload[6], m.payload[7]]);
        assert_eq!(nla_type, 1 | NLA_F_NESTED);
    }

    #[test]
    fn padding_follows_odd_lengths() {
        let msg = MsgBuilder::new(1, 0, 1)
            .attr(1, &[1])
            .attr(2, &[2, 2, 2, 2, 2])
            .attr(3, &[])
            .finish();
        let m = messages(&msg).unwrap()[0];
        let a = Attrs::parse(m.payload).unwrap();
        assert_eq!(a.get(1), Some(&[1][..]));
        assert_eq!(a.get(2), Some(&[2, 2, 2, 2, 2][..]));
        assert_eq!(a.get(3), Some(&[][..]));
        assert_eq!(a.get(4), None);
        assert_eq!(a.be16(2), Some(0x0202));
        assert_eq!(a.be32(1), None, "too short for a u32");
    }

    #[test]
    fn truncated_input_is_an_error() {
        let msg = MsgBuilder::new(1, 0, 1).attr(1, &[1, 2, 3, 4]).finish();
        assert!(messages(&msg[..msg.len() - 4]).is_err());
        // An attribute claiming more than its buffer.
        assert!(Attrs::parse(&[40, 0, 1, 0, 9, 9, 9, 9]).is_err());
        assert!(
            Attrs::parse(&[2, 0, 1, 0]).is_err(),
            "shorter than its header"
        );
        // Trailing bytes shorter than a header are ignored, as the kernel does.
        assert!(Attrs::parse(&[8, 0, 1, 0, 9, 9, 9, 9, 0, 0]).is_ok());
        // Two messages in one datagram.
        let mut two = MsgBuilder::new(1, 0, 1).finish();
        two.extend(MsgBuilder::new(2, 0, 2).attr(1, &[7]).finish());
        let msgs = messages(&two).unwrap();
        assert_eq!(msgs.iter().map(|m| m.ty).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn error_codes_are_positive_errnos() {
        let mut err = MsgBuilder::new(NLMSG_ERROR, 0, 3).finish();
        err.extend_from_slice(&(-libc::ENOENT).to_ne_bytes());
        let len = err.len() as u32;
        err[0..4].copy_from_slice(&len.to_ne_bytes());
        let m = messages(&err).unwrap()[0];
        assert_eq!(m.errno(), Ok(libc::ENOENT));
    }
}
