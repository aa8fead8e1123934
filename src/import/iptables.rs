//! iptables-save files (`/etc/sysconfig/iptables`) and Travelin' Man 3's account files: rule
//! lines such as `-A INPUT -s 203.0.113.7/32 -p udp -m udp --dport 5060:5061 -m comment
//! --comment "Joe's office" -j ACCEPT`, inside `*filter` ... `COMMIT` or on their own. A
//! leading `iptables` or `ip6tables` (a line of a shell script) is accepted too.
//!
//! Only the `INPUT` chain of the `filter` table holds whitelist rules; every other rule line
//! is reported as skipped with the reason.

use super::{Line, LineError, Parsed, Ports, Rule, parse_net};
use crate::ruleset::{L4Proto, PortRange};

/// The rest of `line` after a leading `iptables`, `ip6tables` or a path ending in them.
pub fn strip_program(line: &str) -> Option<&str> {
    let (first, rest) = line.split_once(char::is_whitespace)?;
    let program = first.rsplit('/').next().unwrap_or(first);
    matches!(program, "iptables" | "ip6tables").then_some(rest.trim_start())
}

/// Splits a rule line into words as iptables-save quotes them: `"..."` with `\"` and `\\`
/// inside, and `'...'` as a shell would.
pub fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return Ok(out);
        };
        let mut word = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quote {first}")),
                    Some(c) if c == first => break,
                    Some('\\') if first == '"' => match chars.next() {
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated quote {first}")),
                    },
                    Some(c) => word.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        out.push(word);
    }
}

/// Parses a whole file. `force` lets ranges wider than /8 (IPv4) or /32 (IPv6) through.
pub fn parse(text: &str, force: bool) -> Result<Parsed, LineError> {
    let mut table: Option<String> = None;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') || l == "COMMIT" || l.starts_with(':') {
            continue;
        }
        if let Some(name) = l.strip_prefix('*') {
            table = Some(name.trim().to_owned());
            continue;
        }
        let l = strip_program(l).unwrap_or(l);
        if !(l.starts_with("-A ") || l.starts_with("-I ")) {
            out.push((
                line,
                Line::Skipped("not an iptables rule (-A CHAIN ...)".into()),
            ));
            continue;
        }
        let words = words(l).map_err(|message| LineError { line, message })?;
        let parsed =
            rule(&words, table.as_deref(), force).map_err(|message| LineError { line, message })?;
        out.push((line, parsed));
    }
    Ok(out)
}

/// The options of one rule that matter here.
#[derive(Default)]
struct Options<'a> {
    sources: Option<&'a str>,
    proto: Option<&'a str>,
    dports: Vec<&'a str>,
    comment: Option<&'a str>,
    state: Option<&'a str>,
    target: Option<&'a str>,
    interface: Option<&'a str>,
    /// Options pbxwall cannot express (`-d`, `--sport`, `!`, an unknown match).
    unsupported: Vec<String>,
}

/// Reads one `-A CHAIN ...` / `-I CHAIN [N] ...` line (already split into words) in `table`
/// (`None`: no `*table` line seen, read as filter).
fn rule(words: &[String], table: Option<&str>, force: bool) -> Result<Line, String> {
    let chain = words.get(1).map(String::as_str).unwrap_or("");
    if let Some(t) = table.filter(|t| *t != "filter") {
        return Ok(Line::Skipped(format!("a rule of the {t} table")));
    }
    if chain != "INPUT" {
        return Ok(Line::Skipped(format!("a rule of chain {chain}, not INPUT")));
    }
    let mut rest = &words[2..];
    if words[0] == "-I" && rest.first().is_some_and(|w| w.parse::<u32>().is_ok()) {
        rest = &rest[1..];
    }
    let mut o = Options::default();
    let mut it = rest.iter().map(String::as_str);
    let missing = |opt: &str| format!("{opt} without a value");
    while let Some(w) = it.next() {
        let mut value = |opt: &str| it.next().ok_or_else(|| missing(opt));
        match w {
            "-s" | "--source" | "--src" => o.sources = Some(value(w)?),
            "-p" | "--protocol" => o.proto = Some(value(w)?),
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                o.dports.extend(value(w)?.split(','))
            }
            "--comment" => o.comment = Some(value(w)?),
            "--state" | "--ctstate" => o.state = Some(value(w)?),
            "-j" | "--jump" => o.target = Some(value(w)?),
            "-i" | "--in-interface" => o.interface = Some(value(w)?),
            "-m" | "--match" => {
                let m = value(w)?;
                if !matches!(
                    m,
                    "tcp" | "udp" | "comment" | "multiport" | "state" | "conntrack"
                ) {
                    o.unsupported.push(format!("-m {m}"));
                }
            }
            other => {
                // The option's value, if it has one, is not an option of its own.
                let value = it
                    .clone()
                    .next()
                    .filter(|v| other.starts_with('-') && !v.starts_with('-'));
                match value {
                    Some(v) => {
                        o.unsupported.push(format!("{other} {v}"));
                        it.next();
                    }
                    None => o.unsupported.push(other.to_owned()),
                }
            }
        }
    }
    let target = o.target.unwrap_or("(none)");
    if target != "ACCEPT" {
        return Ok(Line::Skipped(format!("-j {target}: not an ACCEPT rule")));
    }
    if o.interface == Some("lo") {
        return Ok(Line::Skipped(
            "-i lo: pbxwall always accepts loopback traffic".into(),
        ));
    }
    if let Some(state) = o.state
        && !state.split(',').any(|s| s == "NEW")
    {
        return Ok(Line::Skipped(format!(
            "state {state}: pbxwall accepts established and related flows itself"
        )));
    }
    let proto = o.proto.map(str::to_ascii_lowercase);
    if let Some(p @ ("icmp" | "ipv6-icmp" | "icmpv6" | "1" | "58")) = proto.as_deref() {
        return Ok(Line::Skipped(format!(
            "-p {p}: pbxwall accepts the ICMP the stack needs itself"
        )));
    }
    let Some(sources) = o.sources else {
        if o.unsupported.iter().any(|u| u == "-m set") {
            return Ok(Line::NotImported(
                "-m set: the addresses of an ipset are not read (list them with ipset save and \
                 import or add them)"
                    .into(),
            ));
        }
        return Ok(Line::Skipped(
            "accepts from any source, not from a whitelisted one (pbxwall opens RTP itself: \
             [rtp] in pbxwall.toml)"
                .into(),
        ));
    };
    if let Some(i) = o.interface {
        return Ok(Line::NotImported(format!(
            "-i {i}: pbxwall accounts apply on every interface"
        )));
    }
    if !o.unsupported.is_empty() {
        return Ok(Line::NotImported(format!(
            "{} cannot be expressed by an account",
            o.unsupported.join(" ")
        )));
    }
    let proto = match proto.as_deref() {
        None | Some("all") => None,
        Some("tcp" | "6") => Some(L4Proto::Tcp),
        Some("udp" | "17") => Some(L4Proto::Udp),
        Some(p) => {
            return Ok(Line::NotImported(format!(
                "-p {p}: only tcp and udp ports (or everything) can be imported"
            )));
        }
    };
    let ports = match (proto, o.dports.is_empty()) {
        (None, true) => vec![Ports::All],
        (None, false) => return Err("--dport without -p tcp or -p udp".into()),
        (Some(p), true) => vec![Ports::Every(p)],
        (Some(p), false) => o
            .dports
            .iter()
            .map(|d| port_range(d).map(|r| Ports::Range(p, r)))
            .collect::<Result<_, _>>()?,
    };
    let sources = sources
        .split(',')
        .map(|s| parse_net(s, force).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Line::Rule(Rule {
        sources,
        ports,
        comment: o.comment.map(str::to_owned),
    }))
}

/// `P` or `P:Q` (iptables' range), 1-65535.
fn port_range(s: &str) -> Result<PortRange, String> {
    let (a, b) = s.split_once(':').unwrap_or((s, s));
    crate::model::parse_port_range(&format!("{a}-{b}"))
        .ok_or_else(|| format!("invalid port {s:?}: expected PORT or FIRST:LAST, 1-65535"))
}
