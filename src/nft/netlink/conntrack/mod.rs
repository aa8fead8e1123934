//! Ending the flows of sources that lost access: after a ruleset is applied, every flow
//! into this host that the new ruleset would not admit as a new connection is ended.
//!
//! # Why
//!
//! The input chain accepts `ct state established,related` first, so a packet of a flow
//! conntrack already knows never meets the whitelist again. Without this module a removed
//! source keeps what it has open: a SIP phone's keepalive (UDP, every few seconds, so its
//! conntrack entry never times out) is answered for good, an SSH connection stays open,
//! the old address of a dynamic-DNS name keeps talking after `ipchecker` moved the name.
//!
//! # What [`end_revoked_flows`] does
//!
//! All in-process over netlink (no `conntrack` program), in the namespace of the calling
//! thread:
//!
//! 1. reads this host's addresses (rtnetlink `RTM_GETADDR`, every interface, both families);
//! 2. dumps the conntrack table (ctnetlink `IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`, every
//!    family);
//! 3. keeps the entries that are flows *into this host* the input chain judged: TCP or UDP;
//!    not expected by a helper (`IPS_EXPECTED`: a related flow, admitted with its master);
//!    the answering end (the reply direction's source, i.e. after any DNAT) is an address
//!    of this host, so the flow was delivered here and not forwarded; the opening end is
//!    neither loopback nor an address of this host (the host talking to itself arrives on
//!    `lo`, which is always accepted). The input chain saw the opening end's address as
//!    source and this host's port (again the reply direction's, after any redirect) as
//!    destination port: that is the [`Flow`];
//! 4. ends every flow for which [`Ruleset::accepts_new`] says no, i.e. whose source the new
//!    ruleset would not let open it again: not trusted, not in a verdict map whose chain
//!    accepts that protocol and port, not RTP open to everyone. Nothing else is touched: a
//!    source that lost one service keeps its flows to the others, and flows the host opened
//!    itself (to a SIP provider, a DNS server, ...) are outbound and never looked at.
//!
//! Ending a flow:
//!
//! * a TCP connection: this host's socket is closed first (`sock_diag` `SOCK_DESTROY`, as
//!   `ss -K` does; the program gets `ECONNABORTED`, the peer a reset), then the conntrack
//!   entry deleted. Deleting the entry alone is not enough: the next segment this host sends
//!   on the connection (data, a retransmission, a keepalive) makes conntrack pick the
//!   connection up again as a new entry opened *by this host*, and the peer's packets then
//!   pass as its replies. When the kernel cannot close sockets (built without
//!   `CONFIG_INET_DIAG_DESTROY`) the entry is still deleted and the problem reported;
//! * a UDP flow: its conntrack entry is deleted (`IPCTNL_MSG_CT_DELETE` with the original
//!   tuple, the zone and the entry's id, so only the entry that was judged goes). The next
//!   packet from the source is new and meets the whitelist. An answer the local program
//!   sends in the instant between its request's arrival and the deletion would create the
//!   flow again in the other direction, so once every entry is deleted, and after a short
//!   pause ([`LATE_ANSWER_PAUSE`]), the same tuples are deleted once more, whichever
//!   direction now holds them.
//!
//! The caller may name one flow to keep ([`end_revoked_flows`]'s `keep`): the SSH
//! connection the command itself runs in, so `--force` past the lockout guard does not cut
//! the command off half way.
//!
//! # Limits
//!
//! A flow this host opens itself is its own and stays: if the PBX keeps sending to a
//! removed source (Asterisk qualifying a phone it still has configured, the media of a call
//! in progress), the packets it sends open an outbound flow whose answers pass. Such a flow
//! ends when the PBX stops sending to that address. Protocols other than TCP and UDP
//! (ICMP echo, SCTP, GRE) are not looked at.
//!
//! # Cost
//!
//! Two dumps and one lookup per flow (a binary search in each map, see
//! [`Ruleset::accepts_new`]), plus one round trip per flow ended: independent of the size
//! of the whitelist, proportional to the conntrack table.

#![deny(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use super::sys::{Protocol, RawSocket};
use super::{NetlinkError, Result};
use crate::ruleset::{L4Proto, Ruleset};

mod addrs;
mod ct;
mod sockets;
pub(in crate::nft::netlink) mod wire;

use ct::{Entry, IPS_EXPECTED};
use sockets::Connection;
use wire::{Answer, exchange};

/// How long any answer of the kernel is waited for.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause before UDP tuples are deleted a second time (see the module documentation):
/// room for a local program to send the answer to a request that arrived just before its
/// flow was ended. Only taken when a UDP flow was ended.
pub const LATE_ANSWER_PAUSE: Duration = Duration::from_millis(50);
/// At most this many sources are listed in [`Ended::summary`]; the rest are counted.
const LISTED: usize = 10;

/// A flow into this host, as the input chain saw its first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    /// The source address (the end that opened it).
    pub src: IpAddr,
    /// Its source port.
    pub sport: u16,
    /// TCP or UDP.
    pub proto: L4Proto,
    /// This host's address it went to.
    pub dst: IpAddr,
    /// This host's port it went to.
    pub dport: u16,
}

impl fmt::Display for Flow {
    /// `192.0.2.10 tcp/22`: the source and the service it reached.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.src, self.proto.keyword(), self.dport)
    }
}

/// What [`end_revoked_flows`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ended {
    /// The flows ended, sorted.
    pub flows: Vec<Flow>,
    /// The flow that was to be kept (`keep`), when its source lost access: still open.
    pub kept: Option<Flow>,
    /// What could not be done, one line each (a flow whose entry could not be deleted, a
    /// socket that could not be closed). The other flows were ended all the same.
    pub problems: Vec<String>,
}

impl Ended {
    /// One line for the command's output, `None` when nothing was ended:
    /// `ended 3 flows of sources that lost access: 192.0.2.10 tcp/22, 192.0.2.10 udp/5060 (2 flows)`.
    /// Flows of the same source and service are counted together; after ten sources and
    /// services the rest are counted.
    pub fn summary(&self) -> Option<String> {
        let n = self.flows.len();
        let (flows, whose) = match n {
            0 => return None,
            1 => ("flow", "a source"),
            _ => ("flows", "sources"),
        };
        Some(format!(
            "ended {n} {flows} of {whose} that lost access: {}",
            flow_list(&self.flows)
        ))
    }
}

/// Flows as a list for messages: `192.0.2.10 tcp/22, 192.0.2.10 udp/5060 (2 flows)`, by
/// source and service, each counted; after ten of them the rest are counted.
fn flow_list(flows: &[Flow]) -> String {
    let mut groups: BTreeMap<(IpAddr, L4Proto, u16), usize> = BTreeMap::new();
    for f in flows {
        *groups.entry((f.src, f.proto, f.dport)).or_default() += 1;
    }
    let mut items: Vec<String> = groups
        .iter()
        .take(LISTED)
        .map(|((src, proto, port), n)| {
            let count = if *n > 1 {
                format!(" ({n} flows)")
            } else {
                String::new()
            };
            format!("{src} {}/{port}{count}", proto.keyword())
        })
        .collect();
    if groups.len() > LISTED {
        items.push(format!("and {} more", groups.len() - LISTED));
    }
    items.join(", ")
}

/// A netlink socket with its own sequence numbers.
struct Link {
    sock: RawSocket,
    seq: u32,
    name: &'static str,
}

impl Link {
    fn open(protocol: Protocol, name: &'static str) -> Result<Link> {
        let sock =
            RawSocket::open(protocol, ANSWER_TIMEOUT).map_err(|source| NetlinkError::Dump {
                what: format!("{name} (cannot open its netlink socket)"),
                source,
            })?;
        Ok(Link { sock, seq: 0, name })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// A dump: every message to `each`; a refusal is an error.
    fn dump(
        &mut self,
        request: impl FnOnce(u32) -> Vec<u8>,
        each: impl FnMut(wire::Msg<'_>) -> Result<(), String>,
    ) -> Result<()> {
        let seq = self.next_seq();
        match exchange(&self.sock, &request(seq), seq, self.name, each)? {
            Answer::Done => Ok(()),
            Answer::Refused(source) => Err(NetlinkError::Dump {
                what: self.name.to_owned(),
                source,
            }),
        }
    }

    /// An acknowledged request: `Ok(Err(errno))` when the kernel refused it.
    fn ask(
        &mut self,
        request: impl FnOnce(u32) -> Vec<u8>,
        what: &str,
        each: impl FnMut(wire::Msg<'_>) -> Result<(), String>,
    ) -> Result<Result<(), io::Error>> {
        let seq = self.next_seq();
        Ok(
            match exchange(&self.sock, &request(seq), seq, what, each)? {
                Answer::Done => Ok(()),
                Answer::Refused(e) => Err(e),
            },
        )
    }
}

/// Ends every flow into this host whose source `ruleset` would not admit as a new
/// connection (see the module documentation), except `keep`, which is reported in
/// [`Ended::kept`] instead. Runs in the network namespace of the calling thread; call it
/// once `ruleset` is live, so nothing it ends can open again.
///
/// An error (the table or the addresses could not be read) means nothing was ended; a flow
/// that could not be ended is in [`Ended::problems`].
pub fn end_revoked_flows(ruleset: &Ruleset, keep: Option<&Flow>) -> Result<Ended> {
    end_flows(keep, |flow| {
        !ruleset.accepts_new(flow.src, flow.proto, flow.dport)
    })
}

/// Ends every TCP or UDP flow into this host whose source is one of `sources` (a ban: the
/// banned sources lose everything they have open), as [`end_revoked_flows`] ends the
/// flows of sources that lost access, `keep` excepted. `sources` holds canonical
/// addresses ([`IpAddr::to_canonical`]).
pub fn end_flows_from<S: std::hash::BuildHasher>(
    sources: &std::collections::HashSet<IpAddr, S>,
    keep: Option<&Flow>,
) -> Result<Ended> {
    end_flows(keep, |flow| sources.contains(&flow.src.to_canonical()))
}

/// How many flows conntrack tracks in this network namespace
/// (`/proc/sys/net/netfilter/nf_conntrack_count`, per namespace); `None` when unknown.
fn tracked_flows() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Ends the inbound flows `doomed` says yes to (see the module documentation).
fn end_flows(keep: Option<&Flow>, doomed: impl Fn(&Flow) -> bool) -> Result<Ended> {
    // A dump walks the kernel's whole conntrack hash table (shared by every namespace:
    // about 12 ms for 262,144 buckets), even when this namespace tracks nothing; its own
    // count says when there is nothing to end.
    if tracked_flows() == Some(0) {
        return Ok(Ended::default());
    }
    let mut route = Link::open(Protocol::Route, "the addresses of this host")?;
    let mut local = BTreeSet::new();
    route.dump(addrs::dump_request, |m| addrs::add_address(m, &mut local))?;
    drop(route);

    let mut conntrack = Link::open(Protocol::Netfilter, "the conntrack table")?;
    let mut entries = Vec::new();
    conntrack.dump(ct::dump_request, |m| {
        entries.extend(ct::parse_entry(m)?);
        Ok(())
    })?;

    let (doomed, kept) = revoked(&entries, &local, &doomed, keep);
    let mut ended = Ended {
        kept,
        ..Ended::default()
    };
    if doomed.is_empty() {
        return Ok(ended);
    }
    let mut sockets = None;
    // Why flows could not be closed or ended, with the flows: one problem line each.
    let mut not_closed: BTreeMap<String, Vec<Flow>> = BTreeMap::new();
    let mut not_ended: BTreeMap<String, Vec<Flow>> = BTreeMap::new();
    for (i, (entry, flow)) in doomed.iter().enumerate() {
        if flow.proto == L4Proto::Tcp
            && let Err(why) = close_socket(&mut sockets, flow)
        {
            not_closed.entry(why).or_default().push(*flow);
        }
        match delete(&mut conntrack, entry, true) {
            Ok(Ok(())) => ended.flows.push(*flow),
            Ok(Err(e)) => not_ended.entry(e.to_string()).or_default().push(*flow),
            // The socket failed: the flows left cannot be ended through it either.
            Err(e) => {
                let left = doomed[i..].iter().map(|(_, f)| *f);
                not_ended
                    .entry(crate::error_chain(&e))
                    .or_default()
                    .extend(left);
                break;
            }
        }
    }
    if ended.flows.iter().any(|f| f.proto == L4Proto::Udp) {
        std::thread::sleep(LATE_ANSWER_PAUSE);
        for (entry, _) in doomed.iter().filter(|(_, f)| f.proto == L4Proto::Udp) {
            // Gone already (ENOENT) is the usual answer; a failure here changes nothing
            // that was reported.
            if delete(&mut conntrack, entry, false).is_err() {
                break;
            }
        }
    }
    for (why, flows) in not_closed {
        let (n, list) = (flows.len(), flow_list(&flows));
        let conns = if n == 1 { "connection" } else { "connections" };
        ended.problems.push(format!(
            "could not close {n} TCP {conns} of sources that lost access ({list}): {why}"
        ));
    }
    for (why, flows) in not_ended {
        let (n, list) = (flows.len(), flow_list(&flows));
        let what = if n == 1 { "flow" } else { "flows" };
        ended.problems.push(format!(
            "could not end {n} {what} of sources that lost access ({list}): {why}"
        ));
    }
    ended.flows.sort();
    Ok(ended)
}

/// Deletes the entry (by its id first, see [`ct::delete_request`]); an entry already gone
/// counts as deleted. When the entry holding the tuple is no longer the one dumped, it is
/// the same flow opened again the other way (a late answer): it is deleted by tuple.
fn delete(link: &mut Link, entry: &Entry, by_id: bool) -> Result<Result<(), io::Error>> {
    let what = "the deletion of a conntrack entry";
    let first = link.ask(
        |seq| ct::delete_request(entry, by_id, seq),
        what,
        |_| Ok(()),
    )?;
    match first {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && by_id => {
            let again = link.ask(
                |seq| ct::delete_request(entry, false, seq),
                what,
                |_| Ok(()),
            )?;
            Ok(again.or_else(gone_is_fine))
        }
        other => Ok(other.or_else(gone_is_fine)),
    }
}

fn gone_is_fine(e: io::Error) -> Result<(), io::Error> {
    if e.raw_os_error() == Some(libc::ENOENT) {
        Ok(())
    } else {
        Err(e)
    }
}

/// Closes this host's socket of a TCP flow, if it still has one (none: closed already).
/// An error says why it could not be closed; the caller deletes the conntrack entry anyway.
fn close_socket(link: &mut Option<Link>, flow: &Flow) -> Result<(), String> {
    let link = match link {
        Some(l) => l,
        None => link.insert(
            Link::open(Protocol::SockDiag, "the sockets of this host")
                .map_err(|e| crate::error_chain(&e))?,
        ),
    };
    let conn = Connection {
        local: flow.dst,
        local_port: flow.dport,
        remote: flow.src,
        remote_port: flow.sport,
    };
    let mut cookie = None;
    let found = link
        .ask(
            |seq| sockets::lookup_request(&conn, seq),
            "the lookup of a socket",
            |m| {
                cookie = cookie.or(sockets::cookie_of(m, &conn));
                Ok(())
            },
        )
        .map_err(|e| crate::error_chain(&e))?;
    let Some(cookie) = cookie else {
        // No socket, or only the port's listener: the connection is closed already.
        return found.or_else(gone_is_fine).map_err(|e| e.to_string());
    };
    let destroyed = link
        .ask(
            |seq| sockets::destroy_request(&conn, cookie, seq),
            "the closing of a socket",
            |_| Ok(()),
        )
        .map_err(|e| crate::error_chain(&e))?;
    destroyed.or_else(gone_is_fine).map_err(|e| {
        if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
            format!(
                "this kernel cannot close sockets (built without CONFIG_INET_DIAG_DESTROY), so \
                 a connection may resume if this host writes to it ({e})"
            )
        } else {
            e.to_string()
        }
    })
}

/// The flow into this host an entry stands for, or `None` when the entry is anything else
/// (see the module documentation, step 3).
fn inbound_flow(e: &Entry, local: &BTreeSet<IpAddr>) -> Option<Flow> {
    let proto = match i32::from(e.orig.proto) {
        libc::IPPROTO_TCP => L4Proto::Tcp,
        libc::IPPROTO_UDP => L4Proto::Udp,
        _ => return None,
    };
    let src = e.orig.src;
    let here = e.reply.src;
    if e.status & IPS_EXPECTED != 0
        || src.is_loopback()
        || local.contains(&src)
        || !local.contains(&here)
    {
        return None;
    }
    Some(Flow {
        src,
        sport: e.orig.sport,
        proto,
        dst: here,
        dport: e.reply.sport,
    })
}

/// The entries to end, each with its flow, and `keep` when it would have been one of them.
fn revoked(
    entries: &[Entry],
    local: &BTreeSet<IpAddr>,
    doomed_flow: &impl Fn(&Flow) -> bool,
    keep: Option<&Flow>,
) -> (Vec<(Entry, Flow)>, Option<Flow>) {
    let mut doomed = Vec::new();
    let mut kept = None;
    for e in entries {
        let Some(flow) = inbound_flow(e, local) else {
            continue;
        };
        if !doomed_flow(&flow) {
            continue;
        }
        if keep.is_some_and(|k| same_flow(k, &flow)) {
            kept = Some(flow);
            continue;
        }
        doomed.push((*e, flow));
    }
    (doomed, kept)
}

fn same_flow(a: &Flow, b: &Flow) -> bool {
    a.src.to_canonical() == b.src.to_canonical()
        && a.dst.to_canonical() == b.dst.to_canonical()
        && (a.proto, a.sport, a.dport) == (b.proto, b.sport, b.dport)
}

#[cfg(test)]
mod tests {
    use super::ct::tests::tuple;
    use super::*;
    use crate::compile::compile;
    use crate::compile::tests::{account, shipped_profiles};
    use crate::model::Settings;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// An entry opened by `src:sport` to `dst:dport`, answered without NAT.
    fn entry(src: &str, sport: u16, dst: &str, dport: u16, proto: u8) -> Entry {
        let orig = tuple(src, sport, dst, dport, proto);
        Entry {
            orig,
            reply: orig.reversed(),
            status: 0x18e,
            id: Some(1),
            zone: None,
        }
    }

    fn local() -> BTreeSet<IpAddr> {
        ["192.0.2.1", "2001:db8::1", "127.0.0.1", "::1"]
            .iter()
            .map(|s| ip(s))
            .collect()
    }

    /// trusted 198.51.100.0/24; joe 192.0.2.10 with ssh and sip-udp; ann 2001:db8::20 with
    /// sip-udp; RTP 10000-20000 from anyone.
    fn ruleset() -> Ruleset {
        let settings = Settings {
            trusted: vec!["198.51.100.0/24".parse().unwrap()],
            ..Settings::default()
        };
        let accounts = [
            account("joe", &["192.0.2.10/32"], &[], &["ssh", "sip-udp"]),
            account("ann", &["2001:db8::20/128"], &[], &["sip-udp"]),
        ];
        compile(
            &settings,
            &shipped_profiles(),
            &accounts,
            &Default::default(),
        )
    }

    fn judged(entries: &[Entry], keep: Option<&Flow>) -> (Vec<String>, Option<String>) {
        let rs = ruleset();
        let lost = |f: &Flow| !rs.accepts_new(f.src, f.proto, f.dport);
        let (doomed, kept) = revoked(entries, &local(), &lost, keep);
        (
            doomed.iter().map(|(_, f)| f.to_string()).collect(),
            kept.map(|f| f.to_string()),
        )
    }

    #[test]
    fn only_inbound_flows_the_ruleset_no_longer_admits_are_ended() {
        let tcp = libc::IPPROTO_TCP as u8;
        let udp = libc::IPPROTO_UDP as u8;
        let entries = [
            // Admitted: joe's services, the trusted network, RTP from anyone, ann over v6.
            entry("192.0.2.10", 40000, "192.0.2.1", 22, tcp),
            entry("192.0.2.10", 5060, "192.0.2.1", 5060, udp),
            entry("198.51.100.7", 40000, "192.0.2.1", 3306, tcp),
            entry("203.0.113.9", 30000, "192.0.2.1", 12000, udp),
            entry("2001:db8::20", 5060, "2001:db8::1", 5060, udp),
            // Not admitted: joe to a service he lacks, a stranger, ann to ssh.
            entry("192.0.2.10", 40001, "192.0.2.1", 80, tcp),
            entry("203.0.113.9", 5060, "192.0.2.1", 5060, udp),
            entry("2001:db8::20", 40000, "2001:db8::1", 22, tcp),
            // Never looked at: outbound, loopback, the host to itself, ICMP, forwarded.
            entry("192.0.2.1", 40000, "203.0.113.9", 5060, udp),
            entry("127.0.0.1", 40000, "127.0.0.1", 22, tcp),
            entry("192.0.2.1", 40000, "192.0.2.1", 22, tcp),
            entry("203.0.113.9", 0, "192.0.2.1", 0, libc::IPPROTO_ICMP as u8),
            entry("203.0.113.9", 40000, "198.51.100.7", 22, tcp),
        ];
        let (ended, kept) = judged(&entries, None);
        assert_eq!(
            ended,
            [
                "192.0.2.10 tcp/80",
                "203.0.113.9 udp/5060",
                "2001:db8::20 tcp/22"
            ]
        );
        assert_eq!(kept, None);
    }

    #[test]
    fn expected_flows_and_nat_are_judged_as_the_input_chain_saw_them() {
        let tcp = libc::IPPROTO_TCP as u8;
        // A flow a helper expected: related to its master, not judged on its own.
        let mut expected = entry("203.0.113.9", 20, "192.0.2.1", 40000, tcp);
        expected.status |= IPS_EXPECTED;
        // Redirected 2222 -> 22: the input chain saw port 22 (the reply's source).
        let mut redirected = entry("203.0.113.9", 40000, "192.0.2.1", 2222, tcp);
        redirected.reply.sport = 22;
        // Forwarded through DNAT to another host: the answering end is not this host.
        let mut dnat = entry("203.0.113.9", 40000, "192.0.2.1", 443, tcp);
        dnat.reply.src = ip("198.51.100.7");
        let (ended, _) = judged(&[expected, redirected, dnat], None);
        assert_eq!(ended, ["203.0.113.9 tcp/22"]);
    }

    #[test]
    fn the_flow_to_keep_is_kept_and_reported() {
        let tcp = libc::IPPROTO_TCP as u8;
        let stranger = entry("203.0.113.9", 40000, "192.0.2.1", 22, tcp);
        let other = entry("203.0.113.9", 40001, "192.0.2.1", 22, tcp);
        let keep = Flow {
            src: ip("::ffff:203.0.113.9"),
            sport: 40000,
            proto: L4Proto::Tcp,
            dst: ip("::ffff:192.0.2.1"),
            dport: 22,
        };
        let (ended, kept) = judged(&[stranger, other], Some(&keep));
        assert_eq!(ended, ["203.0.113.9 tcp/22"]);
        assert_eq!(kept.as_deref(), Some("203.0.113.9 tcp/22"));
    }

    #[test]
    fn the_summary_groups_and_counts() {
        let flow = |src: &str, sport, proto, dport| Flow {
            src: ip(src),
            sport,
            proto,
            dst: ip("192.0.2.1"),
            dport,
        };
        assert_eq!(Ended::default().summary(), None);
        let one = Ended {
            flows: vec![flow("192.0.2.10", 1, L4Proto::Tcp, 22)],
            ..Ended::default()
        };
        assert_eq!(
            one.summary().unwrap(),
            "ended 1 flow of a source that lost access: 192.0.2.10 tcp/22"
        );
        let mut flows = vec![
            flow("192.0.2.10", 1, L4Proto::Tcp, 22),
            flow("192.0.2.10", 2, L4Proto::Udp, 5060),
            flow("192.0.2.10", 3, L4Proto::Udp, 5060),
        ];
        flows.sort();
        let three = Ended {
            flows,
            ..Ended::default()
        };
        assert_eq!(
            three.summary().unwrap(),
            "ended 3 flows of sources that lost access: 192.0.2.10 tcp/22, 192.0.2.10 udp/5060 (2 flows)"
        );
        let many = Ended {
            flows: (0..12u16)
                .map(|i| flow("192.0.2.10", i, L4Proto::Udp, 5000 + i))
                .collect(),
            ..Ended::default()
        };
        let line = many.summary().unwrap();
        assert!(
            line.starts_with("ended 12 flows of sources that lost access: 192.0.2.10 udp/5000, ")
        );
        assert!(line.ends_with("192.0.2.10 udp/5009, and 2 more"), "{line}");
    }
}
