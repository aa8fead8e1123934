//! Closing this host's end of a TCP connection through `sock_diag` (what `ss -K` does):
//! look the socket up by its four addresses and ports (`SOCK_DIAG_BY_FAMILY`), then destroy
//! it by the cookie the lookup returned (`SOCK_DESTROY`). The kernel aborts it as if the
//! peer had reset it: the program holding it sees `ECONNABORTED`, the peer gets a reset.
//!
//! The lookup falls back to the *listening* socket of the port when the connection is gone,
//! so a socket is destroyed only when the answer is that connection (not listening, same
//! peer), and by its cookie, which no other socket has.
//!
//! Both messages carry `struct inet_diag_req_v2` (`linux/inet_diag.h`):
//!
//! ```text
//! 0  family u8, protocol u8, ext u8, pad u8, states u32
//! 8  id: sport be16, dport be16, src [16 bytes], dst [16 bytes], if u32, cookie [u32; 2]
//! ```
//! where `src`/`sport` are the socket's own end; the answer, `struct inet_diag_msg`, has
//! family, state, timer, retransmits, then the same `id` at offset 4.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::wire::{Msg, MsgBuilder, NLM_F_ACK, NLM_F_REQUEST};

/// `SOCK_DIAG_BY_FAMILY`: look sockets up.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `SOCK_DESTROY`: close one.
const SOCK_DESTROY: u16 = 21;
/// `TCP_LISTEN` as the diag answer's state.
const TCP_LISTEN: u8 = 10;
/// `INET_DIAG_NOCOOKIE`: look up by addresses only.
const NO_COOKIE: [u8; 8] = [0xff; 8];
/// Length of `struct inet_diag_msg` up to the end of its `id`.
const DIAG_MSG_MIN: usize = 52;

/// One TCP connection of this host: its own end and the peer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Connection {
    /// This host's address.
    pub(super) local: IpAddr,
    /// This host's port.
    pub(super) local_port: u16,
    /// The peer's address.
    pub(super) remote: IpAddr,
    /// The peer's port.
    pub(super) remote_port: u16,
}

fn request(ty: u16, c: &Connection, cookie: [u8; 8], seq: u32) -> Vec<u8> {
    let (family, src, dst) = match (c.local, c.remote) {
        (IpAddr::V4(l), IpAddr::V4(r)) => (libc::AF_INET, padded(&l.octets()), padded(&r.octets())),
        (l, r) => (libc::AF_INET6, v6(l).octets(), v6(r).octets()),
    };
    let mut req = Vec::with_capacity(56);
    req.extend_from_slice(&[family as u8, libc::IPPROTO_TCP as u8, 0, 0]);
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    req.extend_from_slice(&c.local_port.to_be_bytes());
    req.extend_from_slice(&c.remote_port.to_be_bytes());
    req.extend_from_slice(&src);
    req.extend_from_slice(&dst);
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&cookie);
    MsgBuilder::new(ty, NLM_F_REQUEST | NLM_F_ACK, seq)
        .header(&req)
        .finish()
}

fn padded(v4: &[u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(v4);
    out
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// The request looking up the socket of `c` (acknowledged).
pub(super) fn lookup_request(c: &Connection, seq: u32) -> Vec<u8> {
    request(SOCK_DIAG_BY_FAMILY, c, NO_COOKIE, seq)
}

/// The request destroying the socket with `cookie` that holds `c` (acknowledged).
pub(super) fn destroy_request(c: &Connection, cookie: [u8; 8], seq: u32) -> Vec<u8> {
    request(SOCK_DESTROY, c, cookie, seq)
}

/// The cookie of the socket an answer to [`lookup_request`] describes, when it is the
/// connection `c` itself: not a listening socket, and the same peer (an IPv4 connection of
/// a dual-stack socket shows its peer as an IPv4-mapped IPv6 address).
pub(super) fn cookie_of(msg: Msg<'_>, c: &Connection) -> Option<[u8; 8]> {
    if msg.ty != SOCK_DIAG_BY_FAMILY || msg.payload.len() < DIAG_MSG_MIN {
        return None;
    }
    let p = msg.payload;
    let family = i32::from(p[0]);
    let state = p[1];
    let remote_port = u16::from_be_bytes([p[6], p[7]]);
    let remote: IpAddr = match family {
        libc::AF_INET => Ipv4Addr::from(<[u8; 4]>::try_from(&p[24..28]).ok()?).into(),
        libc::AF_INET6 => Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).ok()?).into(),
        _ => return None,
    };
    let same_peer =
        remote.to_canonical() == c.remote.to_canonical() && remote_port == c.remote_port;
    (state != TCP_LISTEN && same_peer)
        .then(|| p[44..52].try_into().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::super::wire::messages;
    use super::*;

    fn conn() -> Connection {
        Connection {
            local: "192.0.2.1".parse().unwrap(),
            local_port: 22,
            remote: "192.0.2.10".parse().unwrap(),
            remote_port: 40000,
        }
    }

    /// An answer as the kernel writes it for a socket of `family`.
    fn answer(
        family: i32,
        state: u8,
        remote: IpAddr,
        remote_port: u16,
        cookie: [u8; 8],
    ) -> Vec<u8> {
        let mut p = vec![family as u8, state, 0, 0];
        p.extend_from_slice(&22u16.to_be_bytes());
        p.extend_from_slice(&remote_port.to_be_bytes());
        p.extend_from_slice(&[0u8; 16]);
        let r = match (family, remote) {
            (libc::AF_INET, IpAddr::V4(a)) => padded(&a.octets()),
            (_, a) => v6(a).octets(),
        };
        p.extend_from_slice(&r);
        p.extend_from_slice(&0u32.to_ne_bytes());
        p.extend_from_slice(&cookie);
        p.extend_from_slice(&[0u8; 20]);
        MsgBuilder::new(SOCK_DIAG_BY_FAMILY, 0, 1)
            .header(&p)
            .finish()
    }

    #[test]
    fn requests_carry_inet_diag_req_v2() {
        let req = lookup_request(&conn(), 4);
        assert_eq!(req.len(), 16 + 56);
        let m = messages(&req).unwrap()[0];
        assert_eq!(m.ty, SOCK_DIAG_BY_FAMILY);
        assert_eq!(&req[6..8], &(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        let p = m.payload;
        assert_eq!(&p[0..2], &[libc::AF_INET as u8, libc::IPPROTO_TCP as u8]);
        assert_eq!(&p[8..12], &[0, 22, 0x9c, 0x40], "own port, then the peer's");
        assert_eq!(&p[12..16], &[192, 0, 2, 1]);
        assert_eq!(&p[28..32], &[192, 0, 2, 10]);
        assert_eq!(&p[48..56], &NO_COOKIE);

        let cookie = [1, 2, 3, 4, 5, 6, 7, 8];
        let m6 = Connection {
            local: "2001:db8::1".parse().unwrap(),
            remote: "2001:db8::10".parse().unwrap(),
            ..conn()
        };
        let req = destroy_request(&m6, cookie, 5);
        let m = messages(&req).unwrap()[0];
        assert_eq!(m.ty, SOCK_DESTROY);
        assert_eq!(m.payload[0], libc::AF_INET6 as u8);
        assert_eq!(
            &m.payload[28..44],
            &m6.remote.to_string().parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(&m.payload[48..56], &cookie);
    }

    #[test]
    fn only_the_connection_itself_gives_a_cookie() {
        let c = conn();
        let cookie = [9, 8, 7, 6, 5, 4, 3, 2];
        let established = 1;
        let ok = answer(libc::AF_INET, established, c.remote, 40000, cookie);
        assert_eq!(cookie_of(messages(&ok).unwrap()[0], &c), Some(cookie));
        // A dual-stack socket: the peer as ::ffff:192.0.2.10.
        let mapped = answer(libc::AF_INET6, established, c.remote, 40000, cookie);
        assert_eq!(cookie_of(messages(&mapped).unwrap()[0], &c), Some(cookie));
        // The listener the lookup falls back to when the connection is gone.
        let listener = answer(libc::AF_INET6, TCP_LISTEN, "::".parse().unwrap(), 0, cookie);
        assert_eq!(cookie_of(messages(&listener).unwrap()[0], &c), None);
        // Another peer.
        let other = answer(libc::AF_INET, established, c.remote, 40001, cookie);
        assert_eq!(cookie_of(messages(&other).unwrap()[0], &c), None);
        let short = MsgBuilder::new(SOCK_DIAG_BY_FAMILY, 0, 1)
            .header(&[2, 1, 0, 0])
            .finish();
        assert_eq!(cookie_of(messages(&short).unwrap()[0], &c), None);
    }
}
