//! This host's own addresses, from rtnetlink (`RTM_GETADDR` dump, as `ip address` reads
//! them): what tells a flow into this host from one passing through it.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::wire::{Attrs, Msg, MsgBuilder, NLM_F_DUMP, NLM_F_REQUEST};

/// `IFA_ADDRESS`: the address (the peer's on a point-to-point IPv4 link).
const IFA_ADDRESS: u16 = libc::IFA_ADDRESS;
/// `IFA_LOCAL`: the local address, when it differs from `IFA_ADDRESS`.
const IFA_LOCAL: u16 = libc::IFA_LOCAL;
/// Length of `struct ifaddrmsg` (family, prefix length, flags, scope, interface index).
const IFADDRMSG_LEN: usize = 8;

/// The request listing every address of every interface, both families.
pub(super) fn dump_request(seq: u32) -> Vec<u8> {
    MsgBuilder::new(libc::RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq)
        .header(&[libc::AF_UNSPEC as u8, 0, 0, 0, 0, 0, 0, 0])
        .finish()
}

/// Adds the local address of one `RTM_NEWADDR` message to `out`: `IFA_LOCAL` when the
/// message has it, else `IFA_ADDRESS` (what glibc's `getifaddrs` does too). Other messages
/// and families are skipped.
pub(super) fn add_address(msg: Msg<'_>, out: &mut BTreeSet<IpAddr>) -> Result<(), String> {
    if msg.ty != libc::RTM_NEWADDR {
        return Ok(());
    }
    let header = msg
        .payload
        .get(..IFADDRMSG_LEN)
        .ok_or("an address message without its header")?;
    let attrs = Attrs::parse(&msg.payload[IFADDRMSG_LEN..])?;
    let Some(bytes) = attrs.get(IFA_LOCAL).or_else(|| attrs.get(IFA_ADDRESS)) else {
        return Ok(());
    };
    let addr = match i32::from(header[0]) {
        libc::AF_INET => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|o| Ipv4Addr::from(o).into()),
        libc::AF_INET6 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|o| Ipv6Addr::from(o).into()),
        _ => return Ok(()),
    };
    out.insert(addr.ok_or("an address of the wrong length")?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::wire::messages;
    use super::*;

    fn newaddr(family: i32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut m =
            MsgBuilder::new(libc::RTM_NEWADDR, 2, 1).header(&[family as u8, 24, 0, 0, 2, 0, 0, 0]);
        for (ty, payload) in attrs {
            m = m.attr(*ty, payload);
        }
        m.finish()
    }

    #[test]
    fn local_addresses_are_read_from_newaddr() {
        let mut out = BTreeSet::new();
        // A plain IPv4 address: IFA_LOCAL and IFA_ADDRESS alike.
        let plain = newaddr(
            libc::AF_INET,
            &[(IFA_ADDRESS, &[192, 0, 2, 1]), (IFA_LOCAL, &[192, 0, 2, 1])],
        );
        // Point-to-point: IFA_ADDRESS is the peer, IFA_LOCAL ours.
        let ptp = newaddr(
            libc::AF_INET,
            &[
                (IFA_ADDRESS, &[203, 0, 113, 9]),
                (IFA_LOCAL, &[203, 0, 113, 1]),
            ],
        );
        // IPv6 sends IFA_ADDRESS only.
        let v6 = newaddr(
            libc::AF_INET6,
            &[(IFA_ADDRESS, &Ipv6Addr::LOCALHOST.octets())],
        );
        for m in [plain, ptp, v6] {
            add_address(messages(&m).unwrap()[0], &mut out).unwrap();
        }
        let want: BTreeSet<IpAddr> = ["192.0.2.1", "203.0.113.1", "::1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(out, want);

        let bad = newaddr(libc::AF_INET, &[(IFA_LOCAL, &[192, 0, 2])]);
        assert!(add_address(messages(&bad).unwrap()[0], &mut out).is_err());
    }

    #[test]
    fn the_request_is_what_ip_address_sends() {
        let req = dump_request(1);
        assert_eq!(req.len(), 24);
        assert_eq!(&req[4..6], &libc::RTM_GETADDR.to_ne_bytes());
        assert_eq!(&req[6..8], &(0x301u16).to_ne_bytes(), "REQUEST | DUMP");
    }
}
