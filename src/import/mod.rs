//! Migration from other firewalls: whitelists read from iptables-save files (Travelin' Man 3
//! kept its rules in `/etc/sysconfig/iptables`, and one file of rule lines per account) and
//! from CSF's `csf.allow`, turned into pbxwall accounts.
//!
//! Reading happens in two steps:
//! 1. a parser per format ([`iptables::parse`], [`csf::parse`]) turns every line into a
//!    [`Line`]: a whitelist [`Rule`] (sources, ports, comment), a line [`Line::Skipped`]
//!    because it is not a whitelist rule (DROP, `-i lo`, `RELATED,ESTABLISHED`, ...), or a
//!    whitelist line [`Line::NotImported`] because pbxwall cannot say the same thing (an
//!    interface, a destination address). An address that add-ip would refuse is an error
//!    with its line number, as it is on the command line.
//! 2. [`plan`] groups the rules into accounts and maps their ports to the profiles in force.
//!
//! Grouping: the services of an account apply to all its addresses, so the unit is the
//! source. Every source gets the union of the ports its rules open; sources are then grouped
//! into one account per name hint and set of services. The hint is, in this order: the file
//! name for TM3 account files (`--format tm3`: one file per user), the rule's comment
//! (`--comment` in iptables, `# ...` in csf.allow), else the address itself. Two groups with
//! the same hint and different services get `-2`, `-3`, ... appended.
//!
//! Ports: a profile is given to a source when the source's rules open every port the
//! profile opens (so importing never opens more than the old rules did), and a rule with
//! neither protocol nor port is `all`. A port that no chosen profile covers is reported,
//! never dropped silently; when it is part of a profile that opens more, the report names
//! that profile.

pub mod csf;
pub mod iptables;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ipnet::IpNet;

use crate::model::{Account, AccountName, Fqdn, ModelError, PortSpec, Profiles, display_net};
use crate::ruleset::{L4Proto, PortRange};

/// The format of a file to import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// iptables-save output (`*filter`, `-A INPUT -s ADDR ... -j ACCEPT`, `COMMIT`).
    Iptables,
    /// Travelin' Man 3: iptables rule lines, the file name being the account name (one file
    /// per user); `/etc/sysconfig/iptables` itself is read as `iptables`.
    Tm3,
    /// CSF's csf.allow: `ADDR # comment` and `tcp|in|d=PORT|s=ADDR`.
    Csf,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Iptables => "iptables",
            Format::Tm3 => "tm3",
            Format::Csf => "csf",
        })
    }
}

/// Guesses the format of a file's text: iptables when a line is an iptables-save marker
/// (`*filter`, `:INPUT ...`, `COMMIT`) or a rule (`-A ...`, `iptables -A ...`), else csf.
pub fn detect(text: &str) -> Format {
    let iptables = text.lines().map(str::trim).any(|l| {
        l.starts_with('*')
            || l.starts_with(':')
            || l == "COMMIT"
            || l.starts_with("-A ")
            || l.starts_with("-I ")
            || iptables::strip_program(l).is_some()
    });
    if iptables {
        Format::Iptables
    } else {
        Format::Csf
    }
}

/// Where a rule comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// An address or network, validated as add-ip validates it.
    Net(IpNet),
    /// A host name (csf.allow may hold names); resolved as add-fqdn's are.
    Name(Fqdn),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Net(n) => f.write_str(&display_net(n)),
            Source::Name(n) => f.write_str(n.as_str()),
        }
    }
}

/// What a rule opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ports {
    /// Everything (no protocol, no port): the `all` service.
    All,
    /// Every port of one protocol.
    Every(L4Proto),
    /// Some ports of one protocol.
    Range(L4Proto, PortRange),
}

impl Ports {
    /// The ports as a range of one protocol (`Every` is 1-65535); `None` for `All`.
    fn range(self) -> Option<(L4Proto, PortRange)> {
        match self {
            Ports::All => None,
            Ports::Every(p) => Some((
                p,
                PortRange {
                    first: 1,
                    last: u16::MAX,
                },
            )),
            Ports::Range(p, r) => Some((p, r)),
        }
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ports::All => f.write_str("every protocol and port"),
            Ports::Every(p) => write!(f, "{} (every port)", p.keyword()),
            Ports::Range(p, r) => write!(f, "{} {r}", p.keyword()),
        }
    }
}

/// A whitelist rule: these sources may reach these ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Sources (an iptables `-s` may list several, comma-separated).
    pub sources: Vec<Source>,
    /// What they may reach (a multiport rule lists several).
    pub ports: Vec<Ports>,
    /// The rule's comment, if any.
    pub comment: Option<String>,
}

/// One line of a file, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A whitelist rule.
    Rule(Rule),
    /// Not a whitelist rule (DROP, `-i lo`, established flows, another chain): nothing to
    /// import; why.
    Skipped(String),
    /// A whitelist rule pbxwall cannot express; why. Reported as a warning.
    NotImported(String),
}

/// A line the parser could not accept: an address add-ip refuses, a line that does not
/// parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, as add-ip would say it.
    pub message: String,
}

/// A parsed file: its non-empty, non-comment lines by line number (1-based).
pub type Parsed = Vec<(usize, Line)>;

/// Parses an address or network as add-ip does ([`crate::model::parse_source`]).
pub(crate) fn parse_net(s: &str, force: bool) -> Result<Source, ModelError> {
    crate::model::parse_source(s, force).map(Source::Net)
}

/// A file read for import, with how its accounts are to be named.
#[derive(Debug, Clone)]
pub struct Input {
    /// The file as given, for messages.
    pub label: String,
    /// The account name hint for all its rules (TM3 account files), if any.
    pub name_hint: Option<String>,
    /// Its lines.
    pub lines: Parsed,
}

impl Input {
    /// Reads `text` from `path` in `format` (detected when `None`); `force` lets ranges
    /// larger than /8 (IPv4) or /32 (IPv6) through, as add-ip's `--force` does.
    pub fn read(
        path: &Path,
        text: &str,
        format: Option<Format>,
        force: bool,
    ) -> Result<Input, LineError> {
        let format = format.unwrap_or_else(|| detect(text));
        let label = path.display().to_string();
        let lines = match format {
            Format::Iptables | Format::Tm3 => iptables::parse(text, force)?,
            Format::Csf => csf::parse(text, force)?,
        };
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        let name_hint = match (format, stem) {
            (Format::Tm3, Some(stem)) if !matches!(stem.as_str(), "iptables" | "ip6tables") => {
                Some(stem)
            }
            _ => None,
        };
        Ok(Input {
            label,
            name_hint,
            lines,
        })
    }
}

/// An account the import would write, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The account.
    pub account: Account,
    /// `FILE:LINE` of every rule it holds.
    pub from: Vec<String>,
}

/// What [`plan`] made of the files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Accounts to write, in the order their first rule appears.
    pub accounts: Vec<Planned>,
    /// Whitelist lines (or parts of them) not imported: `FILE:LINE: why`.
    pub not_imported: Vec<String>,
    /// Lines that are not whitelist rules: `FILE:LINE: why`.
    pub skipped: Vec<String>,
}

/// What one source's rules open, while grouping.
struct SourceRules {
    hint: String,
    comment: Option<String>,
    /// File index, file label, line, ports.
    items: Vec<(usize, String, usize, Ports)>,
}

/// The sources that become one account, while grouping.
struct Group {
    hint: String,
    services: Vec<String>,
    comment: String,
    sources: Vec<Source>,
    /// `FILE:LINE` of the rules imported.
    from: Vec<String>,
}

/// Groups the rules of `inputs` into accounts and maps their ports to `profiles` (see the
/// module documentation). Account names are not checked against existing accounts here.
pub fn plan(inputs: &[Input], profiles: &Profiles) -> Plan {
    let mut out = Plan::default();
    // Not imported, by (file, line), so the report reads in file order.
    let mut not_imported: Vec<((usize, usize), String)> = Vec::new();
    let mut order: Vec<Source> = Vec::new();
    let mut by_source: BTreeMap<Source, SourceRules> = BTreeMap::new();
    for (file, input) in inputs.iter().enumerate() {
        for (line, parsed) in &input.lines {
            let at = format!("{}:{line}", input.label);
            let rule = match parsed {
                Line::Rule(rule) => rule,
                Line::Skipped(why) => {
                    out.skipped.push(format!("{at}: {why}"));
                    continue;
                }
                Line::NotImported(why) => {
                    not_imported.push(((file, *line), format!("{at}: {why}; not imported")));
                    continue;
                }
            };
            for source in &rule.sources {
                let entry = by_source.entry(source.clone()).or_insert_with(|| {
                    order.push(source.clone());
                    SourceRules {
                        hint: input
                            .name_hint
                            .clone()
                            .or_else(|| rule.comment.clone())
                            .unwrap_or_else(|| source.to_string()),
                        comment: rule.comment.clone(),
                        items: Vec::new(),
                    }
                });
                if entry.comment.is_none() {
                    entry.comment = rule.comment.clone();
                }
                for ports in &rule.ports {
                    entry.items.push((file, input.label.clone(), *line, *ports));
                }
            }
        }
    }

    // (name hint, services) -> the account's sources, in the order of first appearance.
    let mut groups: Vec<Group> = Vec::new();
    for source in order {
        let rules = &by_source[&source];
        let ports: Vec<Ports> = rules.items.iter().map(|(_, _, _, p)| *p).collect();
        let (services, uncovered) = services_for(&ports, profiles);
        for (file, label, line, ports) in &rules.items {
            if uncovered.contains(ports) {
                let why = format!(
                    "{label}:{line}: {ports} from {source} matches no service{}; not imported",
                    partial_hint(*ports, profiles)
                );
                not_imported.push(((*file, *line), why));
            }
        }
        if services.is_empty() {
            continue;
        }
        let group = match groups
            .iter()
            .position(|g| g.hint == rules.hint && g.services == services)
        {
            Some(i) => &mut groups[i],
            None => {
                groups.push(Group {
                    hint: rules.hint.clone(),
                    services,
                    comment: rules
                        .comment
                        .clone()
                        .unwrap_or_else(|| format!("imported from {}", rules.items[0].1)),
                    sources: Vec::new(),
                    from: Vec::new(),
                });
                groups.last_mut().expect("just pushed")
            }
        };
        group.sources.push(source.clone());
        for (_, label, line, ports) in &rules.items {
            let at = format!("{label}:{line}");
            if !uncovered.contains(ports) && !group.from.contains(&at) {
                group.from.push(at);
            }
        }
    }

    let mut used: Vec<String> = Vec::new();
    for group in groups {
        let base = account_name_from(&group.hint);
        let mut name = base.clone();
        let mut n = 2;
        while used.iter().any(|u| u.eq_ignore_ascii_case(&name)) {
            let suffix = format!("-{n}");
            let keep = base.len().min(AccountName::MAX_LEN - suffix.len());
            name = format!("{}{suffix}", &base[..keep]);
            n += 1;
        }
        used.push(name.clone());
        let (mut addresses, mut fqdns) = (Vec::new(), Vec::new());
        for source in group.sources {
            match source {
                Source::Net(n) => addresses.push(n),
                Source::Name(n) => fqdns.push(n),
            }
        }
        let planned = Planned {
            account: Account {
                name: AccountName::from_str(&name).expect("made valid"),
                addresses,
                fqdns,
                services: group.services,
                media: Vec::new(),
                comment: Some(group.comment),
                created: None,
                provider: None,
                expires: None,
            },
            from: group.from,
        };
        out.accounts.push(planned);
    }
    not_imported.sort_by_key(|(at, _)| *at);
    out.not_imported = not_imported.into_iter().map(|(_, why)| why).collect();
    out
}

/// A valid account name made from a hint (a comment, a file name, an address): characters
/// other than `A-Z a-z 0-9 . _ -` become `-`, runs of `-` collapse, and it starts with a
/// letter or digit; at most 64 characters. An empty result is `imported`.
pub fn account_name_from(hint: &str) -> String {
    let mut name = String::new();
    for c in hint.trim().chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            c
        } else {
            '-'
        };
        if c == '-' && name.ends_with('-') {
            continue;
        }
        name.push(c);
    }
    let name = name.trim_start_matches(['-', '.', '_']);
    let mut name: String = name.chars().take(AccountName::MAX_LEN).collect();
    while name.ends_with(['-', '.', '_']) {
        name.pop();
    }
    if name.is_empty() {
        "imported".to_owned()
    } else {
        name
    }
}

/// Merged, sorted intervals of ports.
fn merged(mut ranges: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    ranges.sort();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1 + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Whether `r` lies inside one of the merged intervals.
fn covered(intervals: &[(u32, u32)], r: PortRange) -> bool {
    intervals
        .iter()
        .any(|&(a, b)| a <= u32::from(r.first) && u32::from(r.last) <= b)
}

/// The ranges of one protocol among `ports`, merged.
fn union(ports: impl Iterator<Item = (L4Proto, PortRange)>, proto: L4Proto) -> Vec<(u32, u32)> {
    merged(
        ports
            .filter(|(p, _)| *p == proto)
            .map(|(_, r)| (u32::from(r.first), u32::from(r.last)))
            .collect(),
    )
}

/// The profiles a source's ports give it, in profile order, and the ports no chosen profile
/// covers. A profile is chosen when `ports` open every port it opens.
pub fn services_for(ports: &[Ports], profiles: &Profiles) -> (Vec<String>, Vec<Ports>) {
    if ports.contains(&Ports::All) {
        let all = profiles.ordered().into_iter().find(|p| p.is_all());
        return match all {
            Some(p) => (vec![p.name.clone()], Vec::new()),
            None => (
                Vec::new(),
                ports.iter().copied().filter(|p| *p == Ports::All).collect(),
            ),
        };
    }
    let ranges = || ports.iter().filter_map(|p| p.range());
    let opened = |proto| union(ranges(), proto);
    let (tcp, udp) = (opened(L4Proto::Tcp), opened(L4Proto::Udp));
    let of = |proto| if proto == L4Proto::Tcp { &tcp } else { &udp };
    let mut services = Vec::new();
    let mut given: Vec<(L4Proto, PortRange)> = Vec::new();
    for profile in profiles.ordered() {
        if profile.is_all() || profile.ports.is_empty() {
            continue;
        }
        let specs: Vec<(L4Proto, PortRange)> = profile
            .ports
            .iter()
            .filter_map(|s| match s {
                PortSpec::Port(p, r) => Some((*p, *r)),
                PortSpec::All => None,
            })
            .collect();
        if specs.iter().all(|(p, r)| covered(of(*p), *r)) {
            services.push(profile.name.clone());
            given.extend(specs);
        }
    }
    let uncovered = ports
        .iter()
        .copied()
        .filter(|p| match p.range() {
            Some((proto, r)) => !covered(&union(given.iter().copied(), proto), r),
            None => false,
        })
        .collect();
    (services, uncovered)
}

/// `; sip-udp opens udp/5060-5061, udp/5160-5161: ...` when `ports` are part of a profile
/// that opens more than the rule did.
fn partial_hint(ports: Ports, profiles: &Profiles) -> String {
    let Some((proto, r)) = ports.range() else {
        return String::new();
    };
    for profile in profiles.ordered() {
        let overlaps = profile.ports.iter().any(|s| match s {
            PortSpec::Port(p, q) => *p == proto && q.first <= r.last && r.first <= q.last,
            PortSpec::All => false,
        });
        if overlaps {
            let specs: Vec<String> = profile.ports.iter().map(ToString::to_string).collect();
            return format!(
                " exactly ({} opens {}: allow it by hand if that is meant, or write a local \
                 profile for these ports)",
                profile.name,
                specs.join(", ")
            );
        }
    }
    String::new()
}

#[cfg(test)]
mod tests;
