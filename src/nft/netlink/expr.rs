//! Rules as expressions, both ways: a checked IR rule built into the expressions nft
//! generates for its text, and a rule (built here or dumped by the kernel) printed as its
//! content fingerprint.
//!
//! Each `check_*` helper adds its own nfproto/l4proto guard, as nft does implicitly for
//! the text it stands for, and carries that text and the expressions in its doc
//! (`nft --debug=netlink` prints them the same way).

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_int};

use nftnl::nftnl_sys as attr;

use super::sys::{Expr, NfRule, RuleExpr};
use super::{NFPROTO_INET, Result, cstring};
use crate::addrset::Family;
use crate::ruleset::{
    L4Proto, MAX_PAYLOAD_MATCH, Match, PortRange, RateLimit, Rule, SetOp, SetUpdate, Verdict,
};

const NFPROTO_IPV4: u8 = libc::NFPROTO_IPV4 as u8;
const NFPROTO_IPV6: u8 = libc::NFPROTO_IPV6 as u8;
const REG_1: u32 = libc::NFT_REG_1 as u32;
const CT_INVALID: u32 = 1;
const CT_ESTABLISHED: u32 = 2;
const CT_RELATED: u32 = 4;
const CT_NEW: u32 = 8;
/// `IP_CT_DIR_REPLY`.
const CT_DIR_REPLY: u8 = 1;
/// `NFT_LIMIT_PKTS`; nft's default burst for `limit rate N/minute` is 5 packets.
const LIMIT_BURST: u32 = 5;
/// `LOGLEVEL_WARNING`: the kernel's log level when none is given.
const LOG_LEVEL_DEFAULT: u32 = 4;
/// `NFTA_FIB_F_SADDR` (not in the libc crate): the fib lookup is of the source address.
const FIB_F_SADDR: u32 = 1 << 0;
/// `NFT_FIB_RESULT_ADDRTYPE` (not in the libc crate): the fib lookup yields the address's
/// route type (`RTN_LOCAL`, `RTN_UNICAST`, ...).
const FIB_RESULT_ADDRTYPE: u32 = 3;
/// `NFT_PAYLOAD_INNER_HEADER` (not in the libc crate): nft's `@ih`, the transport payload.
const PAYLOAD_INNER_HEADER: c_int = 3;
/// `NFT_DYNSET_OP_DELETE` (not in the libc crate; kernel 5.19 and later).
const DYNSET_OP_DELETE: u32 = 2;

/// A set a rule looks up: its name, and its id in the batch (lets the rule find a set
/// created earlier in the same batch).
pub(super) struct SetRef {
    name: CString,
    id: Option<u32>,
}

/// One match of a rule in the form its expressions are built from: [`Match`] with the set
/// it names checked.
enum WireMatch {
    /// `iif "lo"`.
    Loopback,
    /// `fib saddr type local`.
    SaddrIsLocal,
    /// `ct state S`, with the state bits of S.
    CtState(u32),
    /// `ct direction reply`.
    CtReply,
    /// `icmp type T` / `icmpv6 type T`, with the type number.
    IcmpType(Family, u8),
    /// `tcp|udp dport A[-B]`.
    Dport(L4Proto, PortRange),
    /// `ip saddr @S` / `ip6 saddr @S`.
    SaddrInSet(Family, SetRef),
    /// `ip saddr != @S` / `ip6 saddr != @S`.
    SaddrNotInSet(Family, SetRef),
    /// `@ih,OFFSET,LEN 0xDATA`.
    Payload(u32, Vec<u8>),
    /// `tcp flags syn / fin,syn,rst,ack`.
    TcpSyn,
    /// `tcp dport != P`.
    DportNot(L4Proto, u16),
}

/// A [`SetUpdate`] with its set checked.
struct WireUpdate {
    op: SetOp,
    family: Family,
    set: SetRef,
    timeout_ms: Option<u64>,
    limit: Option<RateLimit>,
}

impl WireMatch {
    fn new(
        m: &Match,
        set: impl Fn(&str) -> Result<SetRef>,
        what: impl Fn() -> String,
    ) -> Result<WireMatch> {
        Ok(match m {
            Match::Loopback => WireMatch::Loopback,
            Match::SaddrIsLocal => WireMatch::SaddrIsLocal,
            Match::CtEstablishedRelated => WireMatch::CtState(CT_ESTABLISHED | CT_RELATED),
            Match::CtInvalid => WireMatch::CtState(CT_INVALID),
            Match::CtNew => WireMatch::CtState(CT_NEW),
            Match::CtReply => WireMatch::CtReply,
            Match::IcmpType(family, t) => WireMatch::IcmpType(*family, t.code),
            Match::Dport(proto, range) => WireMatch::Dport(*proto, *range),
            Match::SaddrInSet(family, name) => WireMatch::SaddrInSet(*family, set(name)?),
            Match::SaddrNotInSet(family, name) => WireMatch::SaddrNotInSet(*family, set(name)?),
            Match::TcpSyn => WireMatch::TcpSyn,
            Match::DportNot(proto, port) => WireMatch::DportNot(*proto, *port),
            Match::Payload { offset, data } => {
                if data.is_empty() || data.len() > MAX_PAYLOAD_MATCH {
                    return Err(super::NetlinkError::Invalid {
                        what: what(),
                        reason: format!(
                            "a payload match compares 1 to {MAX_PAYLOAD_MATCH} bytes, not {}",
                            data.len()
                        ),
                    });
                }
                WireMatch::Payload(*offset, data.clone())
            }
        })
    }

    /// The expressions nft generates for the match, its protocol guards included.
    fn exprs(&self) -> Vec<Expr> {
        match self {
            WireMatch::Loopback => check_loopback(),
            WireMatch::SaddrIsLocal => check_saddr_is_local(),
            WireMatch::CtState(mask) => check_ct_state(*mask),
            WireMatch::CtReply => vec![
                // nft: ct direction reply  [ ct load direction => reg 1 ] [ cmp eq reg 1 0x01 ]
                Expr::new(c"ct")
                    .u32(attr::NFTNL_EXPR_CT_KEY, libc::NFT_CT_DIRECTION as u32)
                    .u32(attr::NFTNL_EXPR_CT_DREG, REG_1),
                cmp(libc::NFT_CMP_EQ, &[CT_DIR_REPLY]),
            ],
            WireMatch::IcmpType(family, code) => check_icmp_type(*family, *code),
            WireMatch::Dport(proto, range) => check_dport(*proto, range.first, range.last),
            WireMatch::SaddrInSet(family, set) => check_saddr(*family, set, Lookup::In),
            WireMatch::SaddrNotInSet(family, set) => check_saddr(*family, set, Lookup::NotIn),
            WireMatch::Payload(offset, data) => check_payload(*offset, data),
            WireMatch::TcpSyn => check_tcp_syn(),
            WireMatch::DportNot(proto, port) => {
                let mut v = Vec::from(check_l4proto(proto.number()));
                v.push(payload_load(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2));
                v.push(cmp(libc::NFT_CMP_NEQ, &port.to_be_bytes()));
                v
            }
        }
    }
}

/// An IR rule ready to encode: every name it sends (sets, maps, the log prefix) checked
/// once and kept as a C string.
pub(super) struct WireRule {
    matches: Vec<WireMatch>,
    /// `limit rate N/minute log prefix "P"`: N and P.
    log: Option<(u32, CString)>,
    counter: bool,
    /// `add @S { ip saddr ... }` and its forms.
    updates: Vec<WireUpdate>,
    /// `ip saddr vmap @MAP` / `ip6 saddr vmap @MAP`.
    vmap: Option<(Family, SetRef)>,
    /// `jump CHAIN`.
    jump: Option<CString>,
    verdict: Option<Verdict>,
}

impl WireRule {
    /// Checks the rule's names; `set_ids` numbers the sets of the batch, `what` names the
    /// rule in the error.
    pub(super) fn new(
        rule: &Rule,
        set_ids: &HashMap<&str, u32>,
        what: impl Fn() -> String,
    ) -> Result<WireRule> {
        let set = |name: &str| {
            Ok(SetRef {
                name: cstring(name, &what())?,
                id: set_ids.get(name).copied(),
            })
        };
        let matches = rule
            .matches
            .iter()
            .map(|m| WireMatch::new(m, set, &what))
            .collect::<Result<_>>()?;
        let updates = rule
            .set_updates
            .iter()
            .map(|u: &SetUpdate| {
                Ok(WireUpdate {
                    op: u.op,
                    family: u.family,
                    set: set(&u.set)?,
                    timeout_ms: u.timeout.map(|t| (t.as_millis() as u64).max(1)),
                    limit: u.limit,
                })
            })
            .collect::<Result<_>>()?;
        let log = match &rule.log {
            Some(log) => Some((log.per_minute, cstring(&log.prefix, &what())?)),
            None => None,
        };
        let vmap = match &rule.saddr_vmap {
            Some((family, map)) => Some((*family, set(map)?)),
            None => None,
        };
        Ok(WireRule {
            matches,
            log,
            counter: rule.counter,
            updates,
            vmap,
            jump: match &rule.jump {
                Some(chain) => Some(cstring(chain, &what())?),
                None => None,
            },
            verdict: rule.verdict,
        })
    }

    /// The rule as a libnftnl rule of `table`/`chain`: matches, log, counter, vmap lookup,
    /// verdict, in the order nft lists them.
    pub(super) fn build(&self, table: &CStr, chain: &CStr) -> NfRule {
        let mut r = NfRule::new();
        r.set_u32(attr::NFTNL_RULE_FAMILY, NFPROTO_INET.into());
        r.set_str(attr::NFTNL_RULE_TABLE, table);
        r.set_str(attr::NFTNL_RULE_CHAIN, chain);
        for m in &self.matches {
            for e in m.exprs() {
                r.add_expr(e);
            }
        }
        if let Some((per_minute, prefix)) = &self.log {
            // nft: limit rate N/minute log prefix "..."
            r.add_expr(limit_per_minute(*per_minute));
            r.add_expr(log_prefix(prefix));
        }
        for u in &self.updates {
            for e in set_update(u) {
                r.add_expr(e);
            }
        }
        if self.counter {
            // nft: counter   [ counter pkts 0 bytes 0 ]  (after a meter: what is over it)
            r.add_expr(Expr::new(c"counter"));
        }
        if let Some((family, map)) = &self.vmap {
            for e in check_saddr(*family, map, Lookup::Vmap) {
                r.add_expr(e);
            }
        }
        if let Some(chain) = &self.jump {
            // nft: jump CHAIN  [ immediate reg 0 jump -> CHAIN ]
            r.add_expr(
                Expr::new(c"immediate")
                    .u32(attr::NFTNL_EXPR_IMM_DREG, libc::NFT_REG_VERDICT as u32)
                    .u32(attr::NFTNL_EXPR_IMM_VERDICT, libc::NFT_JUMP as u32)
                    .str(attr::NFTNL_EXPR_IMM_CHAIN, chain),
            );
        }
        if let Some(v) = self.verdict {
            r.add_expr(verdict(v));
        }
        r
    }
}

/// `NF_ACCEPT` / `NF_DROP`: a verdict as the kernel numbers it (rule verdicts and chain
/// policies).
pub(super) fn nf_verdict(v: Verdict) -> u32 {
    match v {
        Verdict::Accept => libc::NF_ACCEPT as u32,
        Verdict::Drop => libc::NF_DROP as u32,
        Verdict::Return => libc::NFT_RETURN as u32,
    }
}

/// `[ meta load KEY => reg 1 ]`
fn meta_load(key: c_int) -> Expr {
    Expr::new(c"meta")
        .u32(attr::NFTNL_EXPR_META_KEY, key as u32)
        .u32(attr::NFTNL_EXPR_META_DREG, REG_1)
}

/// `[ cmp OP reg 1 DATA ]`
fn cmp(op: c_int, data: &[u8]) -> Expr {
    Expr::new(c"cmp")
        .u32(attr::NFTNL_EXPR_CMP_SREG, REG_1)
        .u32(attr::NFTNL_EXPR_CMP_OP, op as u32)
        .data(attr::NFTNL_EXPR_CMP_DATA, data)
}

/// `[ payload load LENb @ BASE header + OFFSET => reg 1 ]` (offset and length in bytes).
fn payload_load(base: c_int, offset: u32, len: u32) -> Expr {
    Expr::new(c"payload")
        .u32(attr::NFTNL_EXPR_PAYLOAD_DREG, REG_1)
        .u32(attr::NFTNL_EXPR_PAYLOAD_BASE, base as u32)
        .u32(attr::NFTNL_EXPR_PAYLOAD_OFFSET, offset)
        .u32(attr::NFTNL_EXPR_PAYLOAD_LEN, len)
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

/// `fib saddr type local`: `[ fib saddr type => reg 1 ] [ cmp eq reg 1 0x00000002 ]`
/// (`RTN_LOCAL`). The kernel looks the source address up in the routing tables of the
/// packet's family (no nfproto guard: the inet table's `fib` handles both families).
fn check_saddr_is_local() -> Vec<Expr> {
    vec![
        Expr::new(c"fib")
            .u32(attr::NFTNL_EXPR_FIB_FLAGS, FIB_F_SADDR)
            .u32(attr::NFTNL_EXPR_FIB_RESULT, FIB_RESULT_ADDRTYPE)
            .u32(attr::NFTNL_EXPR_FIB_DREG, REG_1),
        cmp(libc::NFT_CMP_EQ, &u32::from(libc::RTN_LOCAL).to_ne_bytes()),
    ]
}

/// `ct state S`: `[ ct load state => reg 1 ] [ bitwise reg 1 = ( reg 1 & MASK ) ^ 0 ]
/// [ cmp neq reg 1 0x00000000 ]`
fn check_ct_state(mask: u32) -> Vec<Expr> {
    vec![
        Expr::new(c"ct")
            .u32(attr::NFTNL_EXPR_CT_KEY, libc::NFT_CT_STATE as u32)
            .u32(attr::NFTNL_EXPR_CT_DREG, REG_1),
        Expr::new(c"bitwise")
            .u32(attr::NFTNL_EXPR_BITWISE_SREG, REG_1)
            .u32(attr::NFTNL_EXPR_BITWISE_DREG, REG_1)
            .u32(attr::NFTNL_EXPR_BITWISE_LEN, 4)
            .data(attr::NFTNL_EXPR_BITWISE_MASK, &mask.to_ne_bytes())
            .data(attr::NFTNL_EXPR_BITWISE_XOR, &0u32.to_ne_bytes()),
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

/// `tcp flags syn / fin,syn,rst,ack`: l4proto guard, `[ payload load 1b @ transport header
/// + 13 => reg 1 ]`, `[ bitwise reg 1 = ( reg 1 & 0x17 ) ^ 0 ]`, `[ cmp eq reg 1 0x02 ]`.
fn check_tcp_syn() -> Vec<Expr> {
    const FIN_SYN_RST_ACK: u8 = 0x01 | 0x02 | 0x04 | 0x10;
    const SYN: u8 = 0x02;
    let mut v = Vec::from(check_l4proto(L4Proto::Tcp.number()));
    v.push(payload_load(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 13, 1));
    v.push(
        Expr::new(c"bitwise")
            .u32(attr::NFTNL_EXPR_BITWISE_SREG, REG_1)
            .u32(attr::NFTNL_EXPR_BITWISE_DREG, REG_1)
            .u32(attr::NFTNL_EXPR_BITWISE_LEN, 1)
            .data(attr::NFTNL_EXPR_BITWISE_MASK, &[FIN_SYN_RST_ACK])
            .data(attr::NFTNL_EXPR_BITWISE_XOR, &[0]),
    );
    v.push(cmp(libc::NFT_CMP_EQ, &[SYN]));
    v
}

/// What a source lookup does with its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// `ip saddr @S`: the rule goes on when the source is in the set.
    In,
    /// `ip saddr != @S`: when it is not (`NFT_LOOKUP_F_INV`).
    NotIn,
    /// `ip saddr vmap @M`: the element's verdict goes to the verdict register.
    Vmap,
}

/// Inverts a lookup (`enum nft_lookup_flags` in
/// <https://github.com/torvalds/linux/blob/master/include/uapi/linux/netfilter/nf_tables.h>).
const NFT_LOOKUP_F_INV: u32 = 1;

/// `ip saddr @S` / `ip6 saddr @S`: nfproto guard, `[ payload load 4b @ network header + 12
/// => reg 1 ]` (or `16b @ network header + 8`), `[ lookup reg 1 set S ]`. The set id
/// lets the rule find a set created earlier in the same batch.
/// [`Lookup::NotIn`] is `ip saddr != @S` (`[ lookup reg 1 set S 0x1 ]`, the inverted
/// flag); [`Lookup::Vmap`] is `ip saddr vmap @map` (`[ lookup reg 1 set S dreg 0 ]`: the
/// element's verdict goes to the verdict register).
fn check_saddr(family: Family, set: &SetRef, how: Lookup) -> Vec<Expr> {
    let (offset, len) = match family {
        Family::V4 => (12, 4),
        Family::V6 => (8, 16),
    };
    let mut v = Vec::from(check_nfproto(family));
    v.push(payload_load(libc::NFT_PAYLOAD_NETWORK_HEADER, offset, len));
    let mut lookup = Expr::new(c"lookup")
        .u32(attr::NFTNL_EXPR_LOOKUP_SREG, REG_1)
        .str(attr::NFTNL_EXPR_LOOKUP_SET, &set.name);
    if let Some(id) = set.id {
        lookup = lookup.u32(attr::NFTNL_EXPR_LOOKUP_SET_ID, id);
    }
    match how {
        Lookup::In => {}
        Lookup::NotIn => lookup = lookup.u32(attr::NFTNL_EXPR_LOOKUP_FLAGS, NFT_LOOKUP_F_INV),
        Lookup::Vmap => {
            lookup = lookup.u32(attr::NFTNL_EXPR_LOOKUP_DREG, libc::NFT_REG_VERDICT as u32)
        }
    }
    v.push(lookup);
    v
}

/// `@ih,OFFSET*8,LEN*8 0xDATA`: `[ payload load LENb @ inner header + OFFSET => reg 1 ]
/// [ cmp eq reg 1 DATA ]` (no protocol guard: nft adds none for a raw payload; the rule's
/// `udp dport`/`tcp dport` match comes first).
fn check_payload(offset: u32, data: &[u8]) -> Vec<Expr> {
    vec![
        payload_load(PAYLOAD_INNER_HEADER, offset, data.len() as u32),
        cmp(libc::NFT_CMP_EQ, data),
    ]
}

/// `add|update|delete @S { ip saddr [timeout T] [limit rate over N/U burst B packets] }`:
/// nfproto guard, the source address into reg 1, then
/// `[ dynset OP reg_key 1 set S [timeout Tms] [expr [ limit ... flags 0x1 ]] ]`.
fn set_update(u: &WireUpdate) -> Vec<Expr> {
    let (offset, len) = match u.family {
        Family::V4 => (12, 4),
        Family::V6 => (8, 16),
    };
    let mut v = Vec::from(check_nfproto(u.family));
    v.push(payload_load(libc::NFT_PAYLOAD_NETWORK_HEADER, offset, len));
    let op = match u.op {
        SetOp::Add => libc::NFT_DYNSET_OP_ADD as u32,
        SetOp::Update => libc::NFT_DYNSET_OP_UPDATE as u32,
        SetOp::Delete => DYNSET_OP_DELETE,
    };
    let mut d = Expr::new(c"dynset")
        .u32(attr::NFTNL_EXPR_DYNSET_SREG_KEY, REG_1)
        .u32(attr::NFTNL_EXPR_DYNSET_OP, op)
        .str(attr::NFTNL_EXPR_DYNSET_SET_NAME, &u.set.name);
    if let Some(id) = u.set.id {
        d = d.u32(attr::NFTNL_EXPR_DYNSET_SET_ID, id);
    }
    if let Some(ms) = u.timeout_ms {
        d = d.u64(attr::NFTNL_EXPR_DYNSET_TIMEOUT, ms);
    }
    if let Some(l) = &u.limit {
        let limit = Expr::new(c"limit")
            .u64(attr::NFTNL_EXPR_LIMIT_RATE, l.rate.into())
            .u64(attr::NFTNL_EXPR_LIMIT_UNIT, l.unit_secs)
            .u32(attr::NFTNL_EXPR_LIMIT_BURST, l.burst)
            .u32(attr::NFTNL_EXPR_LIMIT_TYPE, libc::NFT_LIMIT_PKTS as u32)
            .u32(attr::NFTNL_EXPR_LIMIT_FLAGS, libc::NFT_LIMIT_F_INV as u32);
        d = d.nested(attr::NFTNL_EXPR_DYNSET_EXPRESSIONS, limit);
    }
    v.push(d);
    v
}

/// `limit rate N/minute`: `[ limit rate N/minute burst 5 type packets flags 0x0 ]`
fn limit_per_minute(per_minute: u32) -> Expr {
    Expr::new(c"limit")
        .u64(attr::NFTNL_EXPR_LIMIT_RATE, per_minute.into())
        .u64(attr::NFTNL_EXPR_LIMIT_UNIT, 60)
        .u32(attr::NFTNL_EXPR_LIMIT_BURST, LIMIT_BURST)
        .u32(attr::NFTNL_EXPR_LIMIT_TYPE, libc::NFT_LIMIT_PKTS as u32)
        .u32(attr::NFTNL_EXPR_LIMIT_FLAGS, 0)
}

/// `log prefix "P"`: `[ log prefix P ]`
fn log_prefix(prefix: &CStr) -> Expr {
    Expr::new(c"log").str(attr::NFTNL_EXPR_LOG_PREFIX, prefix)
}

/// `accept` / `drop`: `[ immediate reg 0 accept|drop ]`
fn verdict(v: Verdict) -> Expr {
    Expr::new(c"immediate")
        .u32(attr::NFTNL_EXPR_IMM_DREG, libc::NFT_REG_VERDICT as u32)
        .u32(attr::NFTNL_EXPR_IMM_VERDICT, nf_verdict(v))
}

/// Packets and bytes of the rule's first `counter` expression.
pub(super) fn first_counter(rule: &mut NfRule) -> Option<(u64, u64)> {
    let mut found = None;
    rule.for_each_expr(|e| {
        if found.is_none() && e.name() == Some(c"counter") {
            found = Some((
                e.get_u64(attr::NFTNL_EXPR_CTR_PACKETS),
                e.get_u64(attr::NFTNL_EXPR_CTR_BYTES),
            ));
        }
    });
    found
}

/// The rule's content fingerprint (see [`super::rule_fingerprints`]): every expression
/// canonicalised in place (counter values become 0), printed as `[ NAME BODY]`, joined by
/// one space, and ` userdata 0x...` for a rule that carries userdata.
pub(super) fn fingerprint(rule: &mut NfRule) -> String {
    let mut exprs: Vec<String> = Vec::new();
    rule.for_each_expr(|e| {
        canonicalize(e);
        let name = e
            .name()
            .map_or_else(|| String::from("?"), |n| n.to_string_lossy().into_owned());
        exprs.push(format!("[ {name} {}]", e.text()));
    });
    let mut line = exprs.join(" ");
    if let Some(udata) = rule.get_data(attr::NFTNL_RULE_USERDATA) {
        line.push_str(" userdata 0x");
        for b in udata {
            line.push_str(&format!("{b:02x}"));
        }
    }
    line
}

/// Brings one expression into the form the kernel reports it in, so a rule built here and
/// the same rule dumped by the kernel print identically, and zeroes counter values.
///
/// What the kernel reports that nft (and [`WireRule::build`]) does not send:
/// * `lookup`: `NFTA_LOOKUP_FLAGS` always (0 unless `!=`); printed as `0x0`.
/// * `log`: `NFTA_LOG_LEVEL` always for a syslog log (default `LOGLEVEL_WARNING`); printed
///   as `level 4`.
///
/// The lookup's set id is only sent, never reported, and libnftnl does not print it; the
/// set name is on both sides. `cmp` data keeps the length sent, `limit` is sent with its
/// flags, and `counter`, `meta`, `fib`, `ct`, `payload`, `bitwise` and `immediate` come back as
/// sent (checked by the root test `live_rule_fingerprints_match_the_ir_and_see_replacements`).
fn canonicalize(e: &mut RuleExpr<'_>) {
    let Some(name) = e.name() else {
        return;
    };
    match name.to_bytes() {
        b"counter" => {
            e.set_u64(attr::NFTNL_EXPR_CTR_PACKETS, 0);
            e.set_u64(attr::NFTNL_EXPR_CTR_BYTES, 0);
        }
        b"lookup" if !e.is_set(attr::NFTNL_EXPR_LOOKUP_FLAGS) => {
            e.set_u32(attr::NFTNL_EXPR_LOOKUP_FLAGS, 0);
        }
        b"dynset" => {
            if !e.is_set(attr::NFTNL_EXPR_DYNSET_TIMEOUT) {
                e.set_u64(attr::NFTNL_EXPR_DYNSET_TIMEOUT, 0);
            }
            if !e.is_set(attr::NFTNL_EXPR_DYNSET_FLAGS) {
                e.set_u32(attr::NFTNL_EXPR_DYNSET_FLAGS, 0);
            }
        }
        b"log"
            if !e.is_set(attr::NFTNL_EXPR_LOG_GROUP) && !e.is_set(attr::NFTNL_EXPR_LOG_LEVEL) =>
        {
            e.set_u32(attr::NFTNL_EXPR_LOG_LEVEL, LOG_LEVEL_DEFAULT);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addrset::AddrRange;
    use crate::nft::netlink::rule_fingerprints;
    use crate::ruleset::{self, Ruleset};

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
                vec![AddrRange::from_net("192.0.2.0/24".parse().unwrap())],
            )],
            chains: vec![ruleset::Chain {
                name: "input".into(),
                base: Some(ruleset::BaseChain {
                    priority: 0,
                    policy: Verdict::Drop,
                }),
                rules: vec![
                    rule(vec![Match::Loopback], Some(Verdict::Accept)),
                    rule(vec![Match::SaddrIsLocal], Some(Verdict::Drop)),
                    rule(vec![Match::CtEstablishedRelated], Some(Verdict::Accept)),
                    rule(vec![Match::CtInvalid], Some(Verdict::Drop)),
                    rule(
                        vec![
                            Match::Dport(
                                L4Proto::Tcp,
                                PortRange {
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
                            PortRange {
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
            "[ fib saddr type => reg 1 ] [ cmp eq reg 1 0x00000002 ] [ immediate reg 0 drop ]",
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
        rule.set_u32(attr::NFTNL_RULE_FAMILY, NFPROTO_INET.into());
        rule.set_str(attr::NFTNL_RULE_TABLE, c"pbxwall");
        rule.set_str(attr::NFTNL_RULE_CHAIN, c"input");
        rule.add_expr(
            Expr::new(c"counter")
                .u64(attr::NFTNL_EXPR_CTR_PACKETS, 12345)
                .u64(attr::NFTNL_EXPR_CTR_BYTES, 67890),
        );
        // A log prefix longer than the first print buffer.
        let long = "x".repeat(300);
        rule.add_expr(log_prefix(&CString::new(long.as_str()).unwrap()));
        assert_eq!(first_counter(&mut rule), Some((12345, 67890)));
        assert_eq!(
            fingerprint(&mut rule),
            format!("[ counter pkts 0 bytes 0 ] [ log prefix {long} level 4 ]")
        );
        rule.set_data(attr::NFTNL_RULE_USERDATA, &[0, 2, b'h', 0]);
        assert!(fingerprint(&mut rule).ends_with("] userdata 0x00026800"));
    }
}
