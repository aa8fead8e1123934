//! CSF's `csf.allow`: one entry a line, `#` starts a comment.
//! - `ADDR` or `ADDR # comment`: full access from an address, a network or a host name.
//! - advanced: `tcp|in|d=22|s=ADDR # comment`: protocol (`tcp` when left out), direction
//!   (`in` when left out; `out` rules are not about who may reach this host), `d=PORT` the
//!   destination port (a range as `FIRST_LAST`), `s=ADDR` the source.
//! - `Include FILE` is reported: import that file as well.
//!
//! CSF's own comments end with ` - DATE` (`csf -a` writes `# joe - Wed Dec  2 10:00:00
//! 2026`); the date is dropped from the comment.

use std::str::FromStr;

use super::{Line, LineError, Parsed, Ports, Rule, Source, parse_net};
use crate::model::Fqdn;
use crate::ruleset::{L4Proto, PortRange};

/// Parses a whole file. `force` lets ranges wider than /8 (IPv4) or /32 (IPv6) through.
pub fn parse(text: &str, force: bool) -> Result<Parsed, LineError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let (body, comment) = match raw.split_once('#') {
            Some((b, c)) => (b.trim(), clean_comment(c)),
            None => (raw.trim(), None),
        };
        if body.is_empty() {
            continue;
        }
        let parsed = entry(body, comment, force).map_err(|message| LineError { line, message })?;
        out.push((line, parsed));
    }
    Ok(out)
}

/// The comment without CSF's ` - DATE` suffix; `None` when empty.
fn clean_comment(c: &str) -> Option<String> {
    let mut c = c.trim();
    if let Some((text, date)) = c.rsplit_once(" - ")
        && date
            .split_whitespace()
            .next()
            .is_some_and(|d| ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].contains(&d))
    {
        c = text.trim();
    }
    (!c.is_empty()).then(|| c.to_owned())
}

/// Whether `s` is meant as an address (digits, dots and a prefix, or IPv6 with `:`), not a
/// host name.
fn looks_like_address(s: &str) -> bool {
    s.contains(':')
        || s.chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '/')
}

/// A source: an address or network as add-ip takes it, or a host name as add-fqdn does.
fn source(s: &str, force: bool) -> Result<Source, String> {
    if looks_like_address(s) {
        parse_net(s, force).map_err(|e| e.to_string())
    } else {
        Fqdn::from_str(s)
            .map(Source::Name)
            .map_err(|e| e.to_string())
    }
}

/// One entry (without its comment).
fn entry(body: &str, comment: Option<String>, force: bool) -> Result<Line, String> {
    if let Some(file) = body
        .strip_prefix("Include ")
        .or_else(|| body.strip_prefix("include "))
    {
        return Ok(Line::NotImported(format!(
            "Include {} is not followed: import that file as well",
            file.trim()
        )));
    }
    if !body.contains('|') {
        if body.split_whitespace().count() != 1 {
            return Err(format!(
                "expected ADDR, ADDR # comment or tcp|in|d=PORT|s=ADDR, not {body:?}"
            ));
        }
        return Ok(Line::Rule(Rule {
            sources: vec![source(body, force)?],
            ports: vec![Ports::All],
            comment,
        }));
    }
    if body.split('|').any(|f| f.trim() == "out") {
        return Ok(Line::Skipped(
            "out: an outgoing rule, not about who may reach this host".into(),
        ));
    }
    let mut proto = L4Proto::Tcp;
    let mut port: Option<PortRange> = None;
    let mut src: Option<Source> = None;
    for field in body.split('|').map(str::trim) {
        match field {
            "tcp" => proto = L4Proto::Tcp,
            "udp" => proto = L4Proto::Udp,
            "icmp" => {
                return Ok(Line::Skipped(
                    "icmp: pbxwall accepts the ICMP the stack needs itself".into(),
                ));
            }
            "in" => {}
            _ => {
                let Some((key, value)) = field.split_once('=') else {
                    return Err(format!("unexpected field {field:?} in {body:?}"));
                };
                let is_port = value
                    .split('_')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
                match (key, is_port) {
                    ("d", true) => port = Some(port_range(value)?),
                    ("s", false) => src = Some(source(value, force)?),
                    ("s", true) => {
                        return Ok(Line::NotImported(format!(
                            "s={value}: source ports cannot be expressed by an account"
                        )));
                    }
                    ("d", false) => {
                        return Ok(Line::NotImported(format!(
                            "d={value}: a destination address cannot be expressed by an account"
                        )));
                    }
                    ("u" | "g", _) => {
                        return Ok(Line::Skipped(format!(
                            "{key}={value}: an outgoing rule for a user or group"
                        )));
                    }
                    _ => return Err(format!("unexpected field {field:?} in {body:?}")),
                }
            }
        }
    }
    let Some(src) = src else {
        return Ok(Line::Skipped(
            "no s=ADDR: accepts from any source, not from a whitelisted one".into(),
        ));
    };
    let ports = match port {
        Some(r) => Ports::Range(proto, r),
        None => Ports::Every(proto),
    };
    Ok(Line::Rule(Rule {
        sources: vec![src],
        ports: vec![ports],
        comment,
    }))
}

/// `P` or `P_Q` (CSF's range), 1-65535.
fn port_range(s: &str) -> Result<PortRange, String> {
    let (a, b) = s.split_once('_').unwrap_or((s, s));
    crate::model::parse_port_range(&format!("{a}-{b}"))
        .ok_or_else(|| format!("invalid port {s:?}: expected PORT or FIRST_LAST, 1-65535"))
}
