//! The IR in nft syntax: every type prints as `nft list table inet pbxwall` shows it.
//!
//! [`crate::nft::render`] prints a whole [`Ruleset`] with these impls (`restart --dry-run`,
//! the text recorded after an apply), and the netlink backend names a rejected rule with
//! the same text ("rule 5 of chain input (ip saddr vmap @hosts_v4)"), so a rule reads the
//! same wherever it is shown.

use std::fmt::{self, Display, Write};

use crate::addrset::Family;

use super::{
    Chain, Element, Match, PortRange, RateLimit, Rule, Ruleset, Set, SetKind, SetOp, SetUpdate,
    TABLE_NAME, Verdict,
};

/// `table inet pbxwall { ... }`: sets and maps first, then chains, one blank line between
/// blocks.
impl Display for Ruleset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "table inet {TABLE_NAME} {{")?;
        let mut first = true;
        for set in &self.sets {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{set}")?;
        }
        for chain in &self.chains {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{chain}")?;
        }
        writeln!(f, "}}")
    }
}

/// `set NAME { ... }` or `map NAME { ... }`, indented one tab, elements on one line.
impl Display for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = match self.family {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        };
        match self.kind {
            SetKind::Dynamic => {
                // As nft lists it: type, size, flags, timeout; no elements (kernel state).
                writeln!(f, "\tset {} {{", self.name)?;
                writeln!(f, "\t\ttype {key}")?;
                let d = self.dynamic.clone().unwrap_or_default();
                if let Some(size) = d.size {
                    writeln!(f, "\t\tsize {size}")?;
                }
                writeln!(f, "\t\tflags dynamic,timeout")?;
                if let Some(t) = d.timeout {
                    writeln!(f, "\t\ttimeout {}", NftTime(t))?;
                }
                return writeln!(f, "\t}}");
            }
            SetKind::Addresses => {
                writeln!(f, "\tset {} {{", self.name)?;
                writeln!(f, "\t\ttype {key}")?;
            }
            SetKind::VerdictMap | SetKind::HostMap => {
                writeln!(f, "\tmap {} {{", self.name)?;
                writeln!(f, "\t\ttype {key} : verdict")?;
            }
        }
        if self.kind != SetKind::HostMap {
            writeln!(f, "\t\tflags interval")?;
        }
        if !self.elements.is_empty() {
            let mut line = String::with_capacity(self.elements.len() * 16);
            for (i, e) in self.elements.iter().enumerate() {
                if i > 0 {
                    line.push_str(", ");
                }
                write!(line, "{e}")?;
            }
            writeln!(f, "\t\telements = {{ {line} }}")?;
        }
        writeln!(f, "\t}}")
    }
}

/// `a`, `a/len` or `a-b`, and in a map ` : jump CHAIN`.
impl Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.range)?;
        if let Some(chain) = &self.jump {
            write!(f, " : jump {chain}")?;
        }
        Ok(())
    }
}

/// `chain NAME { ... }`, indented one tab, with the hook line of a base chain.
impl Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\tchain {} {{", self.name)?;
        if let Some(base) = &self.base {
            let prio = if base.priority == 0 {
                "filter".to_owned()
            } else {
                format!("filter {:+}", base.priority)
                    .replace('+', "+ ")
                    .replace('-', "- ")
            };
            writeln!(
                f,
                "\t\ttype filter hook input priority {prio}; policy {};",
                base.policy
            )?;
        }
        for rule in &self.rules {
            writeln!(f, "\t\t{rule}")?;
        }
        writeln!(f, "\t}}")
    }
}

/// The rule on one line: matches, `limit ... log ...`, `counter`, `ip saddr vmap @MAP`,
/// verdict, in the order nft lists them.
impl Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self.matches.iter().map(|m| m.to_string()).collect();
        if let Some(log) = &self.log {
            parts.push(format!(
                "limit rate {}/minute log prefix \"{}\"",
                log.per_minute, log.prefix
            ));
        }
        for u in &self.set_updates {
            parts.push(u.to_string());
        }
        if self.counter {
            parts.push("counter".to_owned());
        }
        if let Some((family, map)) = &self.saddr_vmap {
            let key = match family {
                Family::V4 => "ip",
                Family::V6 => "ip6",
            };
            parts.push(format!("{key} saddr vmap @{map}"));
        }
        if let Some(chain) = &self.jump {
            parts.push(format!("jump {chain}"));
        }
        if let Some(v) = self.verdict {
            parts.push(v.to_string());
        }
        f.write_str(&parts.join(" "))
    }
}

/// `iif "lo"`, `fib saddr type local`, `ct state ...`, `icmp type ...`,
/// `udp dport 5060-5061`, `ip saddr @SET`.
impl Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::Loopback => f.write_str("iif \"lo\""),
            Match::SaddrIsLocal => f.write_str("fib saddr type local"),
            Match::CtEstablishedRelated => f.write_str("ct state established,related"),
            Match::CtInvalid => f.write_str("ct state invalid"),
            Match::CtNew => f.write_str("ct state new"),
            Match::CtReply => f.write_str("ct direction reply"),
            Match::IcmpType(Family::V4, t) => write!(f, "icmp type {}", t.name),
            Match::IcmpType(Family::V6, t) => write!(f, "icmpv6 type {}", t.name),
            Match::Dport(proto, range) => write!(f, "{} dport {range}", proto.keyword()),
            Match::SaddrInSet(Family::V4, set) => write!(f, "ip saddr @{set}"),
            Match::SaddrInSet(Family::V6, set) => write!(f, "ip6 saddr @{set}"),
            Match::SaddrNotInSet(Family::V4, set) => write!(f, "ip saddr != @{set}"),
            Match::SaddrNotInSet(Family::V6, set) => write!(f, "ip6 saddr != @{set}"),
            Match::TcpSyn => f.write_str("tcp flags syn / fin,syn,rst,ack"),
            Match::DportNot(proto, port) => write!(f, "{} dport != {port}", proto.keyword()),
            Match::Payload { offset, data } => {
                write!(f, "@ih,{},{} 0x", offset * 8, data.len() * 8)?;
                for b in data {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// `add @ban_v4 { ip saddr timeout 1h }`,
/// `update @meter_v4 { ip saddr limit rate over 10/minute burst 20 packets }`.
impl Display for SetUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            SetOp::Add => "add",
            SetOp::Update => "update",
            SetOp::Delete => "delete",
        };
        let key = match self.family {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        };
        write!(f, "{op} @{} {{ {key} saddr", self.set)?;
        if let Some(t) = self.timeout {
            write!(f, " timeout {}", NftTime(t))?;
        }
        if let Some(l) = &self.limit {
            write!(f, " {l}")?;
        }
        f.write_str(" }")
    }
}

/// `limit rate over 10/minute burst 20 packets`.
impl Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = crate::model::rate_unit(self.unit_secs);
        write!(
            f,
            "limit rate over {}/{unit} burst {} packets",
            self.rate, self.burst
        )
    }
}

/// A timeout as nft prints it: `1h`, `1d2h30m`, `1s500ms`; `0s` for none.
pub(crate) struct NftTime(pub(crate) std::time::Duration);

impl Display for NftTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        let mut rest = ms;
        for (unit, suffix) in [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1000, "s"),
            (1, "ms"),
        ] {
            if rest >= unit {
                write!(f, "{}{suffix}", rest / unit)?;
                rest %= unit;
            }
        }
        Ok(())
    }
}

/// `5060`, or `5060-5061` for a range.
impl Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// `accept` / `drop`.
impl Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Accept => "accept",
            Verdict::Drop => "drop",
            Verdict::Return => "return",
        })
    }
}
