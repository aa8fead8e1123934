//! Trusted SIP providers: `providers.toml`, parsed strictly, and the accounts made from it.
//!
//! The file ships as `SHARE_DIR/providers.toml` (from `providers.toml` at the repository
//! root, which documents the schema in its header). A copy is compiled in and used when
//! neither `--providers-file` nor the shipped file is given, as [`crate::store`] does for
//! profiles.
//!
//! ```toml
//! [[provider]]
//! id = "example"                        # a-z 0-9 -: the account is provider-example
//! name = "Example Telecom"
//! website = "https://example.com"       # optional
//! confidence = "high"                   # high | medium | low
//! stale = false                         # optional
//! checked = 2026-11-27                  # when the facts were last compared with the sources
//! services = ["sip-udp", "sip-tcp"]     # profile names, never "all"
//! signalling_v4 = ["198.51.100.0/24"]   # none wider than /8 (v4) or /32 (v6)
//! signalling_v6 = []
//! media_v4 = ["203.0.113.0/24"]         # RTP sources, used with [rtp] from = "whitelist"
//! media_v6 = []
//! hostnames = ["sip.example.com"]       # resolved like add-fqdn names
//! ports = { sip_udp = "5060", sip_tcp = "5060", sip_tls = "5061", iax = "4569", rtp = "10000-20000" }
//! notes = "free text"                   # optional
//! [provider.sources]                    # one list per fact given
//! signalling = ["https://example.com/ips"]
//! media = ["..."]
//! hostnames = ["..."]
//! ports = ["..."]
//! ```
//!
//! Every mistake is a [`StoreError::Invalid`] naming the file and line: unknown keys, an
//! address of the wrong family or wider than /8 (v4) or /32 (v6), a templated host name, a
//! fact without a source, a duplicate id, an entry that opens nothing.
//!
//! [`Provider::in_all`] decides what `enable-trusted-providers --all` enables: every entry
//! that is neither low confidence nor stale.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::model::{Account, AccountName, Fqdn, Profiles, parse_port_range, parse_source};
use crate::store::{Paths, StoreError, read_optional};

/// The shipped `providers.toml`, compiled in for when no file is installed.
pub const BUILTIN: &str = include_str!("../providers.toml");
/// How the built-in copy is named in messages.
pub const BUILTIN_ORIGIN: &str = "(built-in providers.toml)";
/// Provider accounts are named `provider-<id>`.
pub const ACCOUNT_PREFIX: &str = "provider-";
/// Longest id, so that `provider-<id>` is a valid account name.
pub const MAX_ID_LEN: usize = AccountName::MAX_LEN - ACCOUNT_PREFIX.len();
/// Keys of `ports`, in display order.
pub const PORT_KEYS: [&str; 5] = ["sip_udp", "sip_tcp", "sip_tls", "iax", "rtp"];

/// How well an entry is sourced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// One secondary source (a config, a script, a dump).
    Low,
    /// Several independent secondary sources, or a vendor partner's page.
    Medium,
    /// The vendor's own page or feed.
    High,
}

impl Confidence {
    /// `high`, `medium` or `low`.
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

impl fmt::Display for Confidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Where each fact of an entry comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Sources {
    /// Sources of the signalling addresses.
    pub signalling: Vec<String>,
    /// Sources of the media ranges.
    pub media: Vec<String>,
    /// Sources of the host names.
    pub hostnames: Vec<String>,
    /// Sources of the ports.
    pub ports: Vec<String>,
}

/// One validated `[[provider]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// `a-z 0-9 -`, at most [`MAX_ID_LEN`] characters.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Home page, if given.
    pub website: Option<String>,
    /// How well the entry is sourced.
    pub confidence: Confidence,
    /// Old data, or contradicted by a newer source.
    pub stale: bool,
    /// When the facts were last compared with the sources (`YYYY-MM-DD`).
    pub checked: String,
    /// Profile names the provider may reach, ordered by code.
    pub services: Vec<String>,
    /// Sources of its SIP traffic, IPv4 then IPv6.
    pub signalling: Vec<IpNet>,
    /// Sources of its RTP, IPv4 then IPv6.
    pub media: Vec<IpNet>,
    /// Names resolved like `add-fqdn` names.
    pub hostnames: Vec<Fqdn>,
    /// The provider's ports per its sources (information only), by [`PORT_KEYS`] key.
    pub ports: BTreeMap<String, String>,
    /// Where each fact comes from.
    pub sources: Sources,
    /// Free text.
    pub notes: Option<String>,
    /// Line of the entry in its file.
    pub line: usize,
}

impl Provider {
    /// `provider-<id>`.
    pub fn account_name(&self) -> AccountName {
        account_name(&self.id).expect("ids are validated as account names")
    }

    /// Whether `--all` enables this entry: not low confidence and not stale.
    pub fn in_all(&self) -> bool {
        self.confidence >= Confidence::Medium && !self.stale
    }

    /// The account this entry becomes. `created` is kept from an existing account.
    pub fn account(&self, created: Option<String>) -> Account {
        Account {
            name: self.account_name(),
            addresses: self.signalling.clone(),
            fqdns: self.hostnames.clone(),
            services: self.services.clone(),
            media: self.media.clone(),
            comment: Some(format!(
                "{} (trusted provider {}; data checked {}, confidence {}{})",
                self.name,
                self.id,
                self.checked,
                self.confidence,
                if self.stale { ", stale" } else { "" }
            )),
            created,
            provider: Some(self.id.clone()),
            expires: None,
        }
    }

    /// `sip-udp,sip-tcp from 8 ranges, 3 names; media 1 range`: what enabling opens.
    pub fn opens(&self) -> String {
        let mut from = nets_count(&self.signalling);
        if !self.hostnames.is_empty() {
            from.push(count(self.hostnames.len(), "name"));
        }
        let mut s = format!("{} from {}", self.services.join(","), from.join(", "));
        if !self.media.is_empty() {
            s.push_str(&format!("; media {}", nets_count(&self.media).join(", ")));
        }
        s
    }
}

/// `["2 networks", "3 addresses"]`.
fn nets_count(nets: &[IpNet]) -> Vec<String> {
    let single = nets
        .iter()
        .filter(|n| n.prefix_len() == n.max_prefix_len())
        .count();
    let mut out = Vec::new();
    if nets.len() > single {
        out.push(count(nets.len() - single, "network"));
    }
    if single > 0 {
        out.push(count(single, "address"));
    }
    out
}

fn count(n: usize, what: &str) -> String {
    match (n, what) {
        (1, _) => format!("1 {what}"),
        (_, "address") => format!("{n} addresses"),
        _ => format!("{n} {what}s"),
    }
}

/// `provider-<id>` as an account name, if the id makes a valid one.
pub fn account_name(id: &str) -> Option<AccountName> {
    format!("{ACCOUNT_PREFIX}{id}").parse().ok()
}

/// The providers of one file.
#[derive(Debug, Clone)]
pub struct ProviderList {
    /// Where they came from: a path, or [`BUILTIN_ORIGIN`].
    pub origin: String,
    /// Entries in file order.
    pub providers: Vec<Provider>,
}

impl ProviderList {
    /// The entry with this id.
    pub fn get(&self, id: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.id == id)
    }

    /// Every id, in file order.
    pub fn ids(&self) -> Vec<String> {
        self.providers.iter().map(|p| p.id.clone()).collect()
    }
}

/// Loads `file` if given (it must exist), else `SHARE_DIR/providers.toml` if it exists,
/// else the built-in copy.
pub fn load_providers(
    paths: &Paths,
    file: Option<&Path>,
    profiles: &Profiles,
) -> Result<ProviderList, StoreError> {
    let (path, text) = match file {
        Some(f) => {
            let text = std::fs::read_to_string(f).map_err(|source| StoreError::Io {
                path: f.to_owned(),
                source,
            })?;
            (f.to_owned(), text)
        }
        // The fleet bundle's list (`pbxwall sync`), when it has one, before the shipped one.
        None if let Some((origin, text)) = crate::fleet::stored_providers(paths) => (origin, text),
        None => {
            let shipped = paths.providers_file();
            match read_optional(&shipped)? {
                Some(text) => (shipped, text),
                None => {
                    return Ok(ProviderList {
                        origin: BUILTIN_ORIGIN.to_owned(),
                        providers: parse_providers(Path::new(BUILTIN_ORIGIN), BUILTIN, profiles)?,
                    });
                }
            }
        }
    };
    Ok(ProviderList {
        origin: path.display().to_string(),
        providers: parse_providers(&path, &text, profiles)?,
    })
}

// ---------------------------------------------------------------------------------------
// Parsing

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIn {
    #[serde(default)]
    provider: Vec<Spanned<ProviderIn>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderIn {
    id: Spanned<String>,
    name: Spanned<String>,
    website: Option<Spanned<String>>,
    confidence: Confidence,
    #[serde(default)]
    stale: bool,
    checked: Spanned<toml::value::Datetime>,
    services: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    signalling_v4: Vec<Spanned<String>>,
    #[serde(default)]
    signalling_v6: Vec<Spanned<String>>,
    #[serde(default)]
    media_v4: Vec<Spanned<String>>,
    #[serde(default)]
    media_v6: Vec<Spanned<String>>,
    #[serde(default)]
    hostnames: Vec<Spanned<String>>,
    #[serde(default)]
    ports: PortsIn,
    notes: Option<String>,
    sources: Spanned<SourcesIn>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortsIn {
    sip_udp: Option<Spanned<String>>,
    sip_tcp: Option<Spanned<String>>,
    sip_tls: Option<Spanned<String>>,
    iax: Option<Spanned<String>>,
    rtp: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourcesIn {
    #[serde(default)]
    signalling: Vec<Spanned<String>>,
    #[serde(default)]
    media: Vec<Spanned<String>>,
    #[serde(default)]
    hostnames: Vec<Spanned<String>>,
    #[serde(default)]
    ports: Vec<Spanned<String>>,
}

/// Builds file:line errors for one file.
struct Errs<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Errs<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn at(&self, offset: usize, message: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            path: self.path.to_owned(),
            line: self.line(offset),
            message: message.into(),
        }
    }

    fn toml(&self, e: toml::de::Error) -> StoreError {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        self.at(offset, e.message().trim().replace('\n', " "))
    }
}

/// Parses the text of a providers file. `path` names it in errors; `profiles` are the
/// services an entry may name.
pub fn parse_providers(
    path: &Path,
    text: &str,
    profiles: &Profiles,
) -> Result<Vec<Provider>, StoreError> {
    let errs = Errs { path, text };
    let raw: FileIn = toml::from_str(text).map_err(|e| errs.toml(e))?;
    let mut out: Vec<Provider> = Vec::new();
    for entry in raw.provider {
        let start = entry.span().start;
        let p = parse_entry(&errs, start, entry.into_inner(), profiles)?;
        if let Some(first) = out.iter().find(|q| q.id == p.id) {
            return Err(errs.at(
                start,
                format!(
                    "duplicate provider id {:?}: it is used already at line {}",
                    p.id, first.line
                ),
            ));
        }
        out.push(p);
    }
    Ok(out)
}

fn check_id(id: &str) -> Result<(), String> {
    let ok = (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid provider id {id:?}: use 1-{MAX_ID_LEN} characters of a-z 0-9 -, not starting or ending with - (the account is {ACCOUNT_PREFIX}ID)"
        ))
    }
}

fn parse_entry(
    errs: &Errs<'_>,
    start: usize,
    raw: ProviderIn,
    profiles: &Profiles,
) -> Result<Provider, StoreError> {
    let id = raw.id.get_ref().clone();
    check_id(&id).map_err(|m| errs.at(raw.id.span().start, m))?;
    let name = raw.name.get_ref().trim().to_owned();
    if name.is_empty() {
        return Err(errs.at(raw.name.span().start, "the provider's name is empty"));
    }
    let website = match raw.website {
        Some(w) if !(w.get_ref().starts_with("https://") || w.get_ref().starts_with("http://")) => {
            return Err(errs.at(
                w.span().start,
                format!(
                    "invalid website {:?}: expected an http(s):// URL",
                    w.get_ref()
                ),
            ));
        }
        w => w.map(Spanned::into_inner),
    };
    let checked = {
        let d = raw.checked.get_ref();
        match (d.date, d.time, d.offset) {
            (Some(date), None, None) => date.to_string(),
            _ => {
                return Err(errs.at(
                    raw.checked.span().start,
                    format!(
                        "invalid checked {d}: expected a date such as 2026-11-27 (no time, no quotes)"
                    ),
                ));
            }
        }
    };
    let mut services: Vec<String> = Vec::new();
    for s in raw.services.get_ref() {
        let at = s.span().start;
        let profile = profiles
            .resolve(s.get_ref())
            .map_err(|e| errs.at(at, e.to_string()))?;
        if profile.is_all() {
            return Err(errs.at(
                at,
                format!(
                    "service {:?} opens everything: a provider may only name the services it needs, e.g. sip-udp",
                    s.get_ref()
                ),
            ));
        }
        if !services.contains(&profile.name) {
            services.push(profile.name.clone());
        }
    }
    if services.is_empty() {
        return Err(errs.at(
            raw.services.span().start,
            "no services given: name at least one, e.g. [\"sip-udp\"]",
        ));
    }
    services.sort_by_key(|n| {
        profiles
            .get(n)
            .map(|p| (p.code.unwrap_or(u8::MAX), p.name.clone()))
    });

    let mut signalling = nets(errs, "signalling_v4", false, &raw.signalling_v4)?;
    signalling.extend(nets(errs, "signalling_v6", true, &raw.signalling_v6)?);
    let mut media = nets(errs, "media_v4", false, &raw.media_v4)?;
    media.extend(nets(errs, "media_v6", true, &raw.media_v6)?);
    let mut hostnames: Vec<Fqdn> = Vec::new();
    for h in &raw.hostnames {
        let at = h.span().start;
        let v = h.get_ref();
        if v.contains(['{', '}']) {
            return Err(errs.at(
                at,
                format!(
                    "templated host name {v:?}: names that differ per customer cannot be resolved; describe them in notes"
                ),
            ));
        }
        let f: Fqdn = v
            .parse()
            .map_err(|e: crate::model::ModelError| errs.at(at, e.to_string()))?;
        if hostnames.contains(&f) {
            return Err(errs.at(at, format!("host name {f} is listed twice")));
        }
        hostnames.push(f);
    }
    if signalling.is_empty() && hostnames.is_empty() {
        return Err(errs.at(
            start,
            format!(
                "provider {id:?} opens nothing: give signalling_v4, signalling_v6 or hostnames"
            ),
        ));
    }

    let mut ports = BTreeMap::new();
    let p = &raw.ports;
    for (key, value) in PORT_KEYS
        .iter()
        .zip([&p.sip_udp, &p.sip_tcp, &p.sip_tls, &p.iax, &p.rtp])
    {
        if let Some(v) = value {
            ports.insert((*key).to_owned(), port_list(errs, key, v)?);
        }
    }

    let src = raw.sources.get_ref();
    let sources = Sources {
        signalling: source_list(errs, &src.signalling)?,
        media: source_list(errs, &src.media)?,
        hostnames: source_list(errs, &src.hostnames)?,
        ports: source_list(errs, &src.ports)?,
    };
    let at = raw.sources.span().start;
    for (fact, given, sourced) in [
        (
            "signalling_v4/_v6",
            !signalling.is_empty(),
            &sources.signalling,
        ),
        ("media_v4/_v6", !media.is_empty(), &sources.media),
        ("hostnames", !hostnames.is_empty(), &sources.hostnames),
        ("ports", !ports.is_empty(), &sources.ports),
    ] {
        if given && sourced.is_empty() {
            let key = fact.split('_').next().unwrap_or(fact);
            return Err(errs.at(
                at,
                format!(
                    "provider {id:?} gives {fact} without a source: add [provider.sources] {key} = [\"...\"]"
                ),
            ));
        }
    }

    Ok(Provider {
        id,
        name,
        website,
        confidence: raw.confidence,
        stale: raw.stale,
        checked,
        services,
        signalling,
        media,
        hostnames,
        ports,
        sources,
        notes: raw
            .notes
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty()),
        line: errs.line(start),
    })
}

/// Parses one address list: the right family, no range wider than /8 (v4) or /32 (v6), no
/// duplicates.
fn nets(
    errs: &Errs<'_>,
    key: &str,
    v6: bool,
    entries: &[Spanned<String>],
) -> Result<Vec<IpNet>, StoreError> {
    let mut out: Vec<IpNet> = Vec::new();
    for e in entries {
        let at = e.span().start;
        let net = parse_source(e.get_ref(), true).map_err(|err| errs.at(at, err.to_string()))?;
        let is_v6 = matches!(net.addr(), IpAddr::V6(_));
        if is_v6 != v6 {
            let (this, other) = if v6 { ("IPv4", "_v4") } else { ("IPv6", "_v6") };
            let base = key.trim_end_matches("_v4").trim_end_matches("_v6");
            return Err(errs.at(
                at,
                format!(
                    "{} is an {this} network in {key}: put it in {base}{other}",
                    e.get_ref()
                ),
            ));
        }
        let too_large = match net {
            IpNet::V4(n) => n.prefix_len() < 8,
            IpNet::V6(n) => n.prefix_len() < 32,
        };
        if too_large {
            return Err(errs.at(
                at,
                format!(
                    "refusing {net} in {key}: provider ranges may not be larger than /8 (IPv4) or /32 (IPv6)"
                ),
            ));
        }
        if out.contains(&net) {
            return Err(errs.at(at, format!("{net} is listed twice in {key}")));
        }
        out.push(net);
    }
    Ok(out)
}

/// `"5060"`, `"5060,5160"`, `"10000-60000"`: normalised (`, ` separated).
fn port_list(errs: &Errs<'_>, key: &str, v: &Spanned<String>) -> Result<String, StoreError> {
    let parts: Vec<&str> = v.get_ref().split(',').map(str::trim).collect();
    let mut out = Vec::new();
    for part in parts {
        let r = parse_port_range(part).ok_or_else(|| {
            errs.at(
                v.span().start,
                format!(
                    "invalid ports {key} = {:?}: expected PORT or FIRST-LAST within 1-65535, comma-separated, e.g. \"5060,5160\"",
                    v.get_ref()
                ),
            )
        })?;
        out.push(r.to_string());
    }
    Ok(out.join(","))
}

fn source_list(errs: &Errs<'_>, entries: &[Spanned<String>]) -> Result<Vec<String>, StoreError> {
    entries
        .iter()
        .map(|s| {
            let t = s.get_ref().trim();
            if t.is_empty() {
                Err(errs.at(s.span().start, "empty source: name a URL or document"))
            } else {
                Ok(t.to_owned())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::tests::shipped_profiles as profiles;

    fn parse(text: &str) -> Result<Vec<Provider>, StoreError> {
        parse_providers(Path::new("/x/providers.toml"), text, &profiles())
    }

    const GOOD: &str = r#"
[[provider]]
id = "doc-sip"
name = "Documentation SIP"
website = "https://example.com"
confidence = "high"
checked = 2026-11-27
services = ["sip-tcp", "1"]
signalling_v4 = ["198.51.100.0/24", "192.0.2.7"]
signalling_v6 = ["2001:db8::/48"]
media_v4 = ["203.0.113.0/24"]
hostnames = ["SIP.Example.com."]
ports = { sip_udp = "5060, 5160", rtp = "10000-20000" }
notes = "  hello  "
[provider.sources]
signalling = ["https://example.com/ips"]
media = ["https://example.com/media"]
hostnames = ["https://example.com/names"]
ports = ["https://example.com/ports"]

[[provider]]
id = "old"
name = "Old"
confidence = "medium"
stale = true
checked = 2020-01-01
services = ["sip-udp"]
signalling_v4 = ["192.0.2.128/25"]
[provider.sources]
signalling = ["a dump"]
"#;

    #[test]
    fn a_good_file_parses_and_normalises() {
        let ps = parse(GOOD).unwrap();
        assert_eq!(ps.len(), 2);
        let p = &ps[0];
        assert_eq!(p.id, "doc-sip");
        assert_eq!(p.line, 2);
        assert_eq!(p.checked, "2026-11-27");
        assert_eq!(p.services, ["sip-udp", "sip-tcp"]);
        assert_eq!(
            p.signalling
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
            ["198.51.100.0/24", "192.0.2.7/32", "2001:db8::/48"]
        );
        assert_eq!(p.hostnames[0].as_str(), "sip.example.com");
        assert_eq!(p.ports["sip_udp"], "5060,5160");
        assert_eq!(p.notes.as_deref(), Some("hello"));
        assert!(p.in_all());
        assert_eq!(
            p.opens(),
            "sip-udp,sip-tcp from 2 networks, 1 address, 1 name; media 1 network"
        );
        assert_eq!(ps[1].line, 21);
        assert!(!ps[1].in_all(), "stale entries are not in --all");

        let a = p.account(Some("2026-11-27T10:00:00Z".into()));
        assert_eq!(a.name.as_str(), "provider-doc-sip");
        assert_eq!(a.provider.as_deref(), Some("doc-sip"));
        assert_eq!(a.addresses, p.signalling);
        assert_eq!(a.fqdns, p.hostnames);
        assert_eq!(a.media, p.media);
        assert_eq!(a.services, p.services);
        // The account round-trips through the store's parser.
        let text = crate::store::render_account(&a);
        let back = crate::store::parse_account(
            Path::new("/etc/pbxwall/accounts/provider-doc-sip.toml"),
            &text,
            &profiles(),
        )
        .unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn bad_entries_are_refused_with_file_and_line() {
        let head = "[[provider]]\nid = \"x\"\nname = \"X\"\nconfidence = \"high\"\nchecked = 2026-11-27\nservices = [\"sip-udp\"]\n";
        let src = "[provider.sources]\nsignalling = [\"s\"]\n";
        let cases: Vec<(String, &str)> = vec![
            (
                format!("{head}signalling_v4 = [\"198.51.100.5/24\"]\n{src}"),
                "providers.toml:7: invalid network \"198.51.100.5/24\": host bits are set after /24",
            ),
            (
                format!("{head}signalling_v4 = [\"10.0.0.0/7\"]\n{src}"),
                "providers.toml:7: refusing 10.0.0.0/7 in signalling_v4: provider ranges may not be larger than /8",
            ),
            (
                format!("{head}signalling_v6 = [\"2001::/16\"]\n{src}"),
                "providers.toml:7: refusing 2001::/16 in signalling_v6",
            ),
            (
                format!("{head}signalling_v4 = [\"0.0.0.0/0\"]\n{src}"),
                "providers.toml:7: refusing 0.0.0.0/0",
            ),
            (
                format!("{head}signalling_v4 = [\"2001:db8::1\"]\n{src}"),
                "providers.toml:7: 2001:db8::1 is an IPv6 network in signalling_v4: put it in signalling_v6",
            ),
            (
                format!("{head}signalling_v4 = [\"300.1.2.3\"]\n{src}"),
                "providers.toml:7: invalid address \"300.1.2.3\"",
            ),
            (
                format!("{head}signalling_v4 = [\"192.0.2.1\", \"192.0.2.1/32\"]\n{src}"),
                "providers.toml:7: 192.0.2.1/32 is listed twice in signalling_v4",
            ),
            (
                format!("{head}signalling_v4 = [\"192.0.2.1\"]\nsignaling_v4 = []\n{src}"),
                "providers.toml:8: unknown field `signaling_v4`",
            ),
            (
                format!(
                    "{head}hostnames = [\"{{trunk}}.pstn.example.com\"]\n[provider.sources]\nhostnames = [\"s\"]\n"
                ),
                "providers.toml:7: templated host name \"{trunk}.pstn.example.com\"",
            ),
            (
                format!(
                    "{head}hostnames = [\"192.0.2.1\"]\n[provider.sources]\nhostnames = [\"s\"]\n"
                ),
                "providers.toml:7: invalid host name \"192.0.2.1\"",
            ),
            (
                format!("{head}{src}"),
                "providers.toml:1: provider \"x\" opens nothing",
            ),
            (
                format!(
                    "{head}signalling_v4 = [\"192.0.2.1\"]\n[provider.sources]\nmedia = [\"s\"]\n"
                ),
                "providers.toml:8: provider \"x\" gives signalling_v4/_v6 without a source: add [provider.sources] signalling = [\"...\"]",
            ),
            (
                format!(
                    "{head}signalling_v4 = [\"192.0.2.1\"]\nmedia_v4 = [\"192.0.2.0/24\"]\n{src}"
                ),
                "providers.toml:9: provider \"x\" gives media_v4/_v6 without a source",
            ),
            (
                format!(
                    "{head}signalling_v4 = [\"192.0.2.1\"]\nports = {{ sip_udp = \"5060\" }}\n{src}"
                ),
                "gives ports without a source",
            ),
            (
                format!(
                    "{head}signalling_v4 = [\"192.0.2.1\"]\nports = {{ sip_udp = \"0\" }}\n{src}"
                ),
                "providers.toml:8: invalid ports sip_udp = \"0\"",
            ),
            (
                format!(
                    "{head}signalling_v4 = [\"192.0.2.1\"]\nports = {{ sip = \"5060\" }}\n{src}"
                ),
                "providers.toml:8: unknown field `sip`",
            ),
            (
                format!(
                    "{head}signalling_v4 = [\"192.0.2.1\"]\n[provider.sources]\nsignalling = [\" \"]\n"
                ),
                "providers.toml:9: empty source",
            ),
            (
                format!("{head}signalling_v4 = [\"192.0.2.1\"]\n{src}notes = \"after sources\"\n"),
                "providers.toml:10: unknown field `notes`",
            ),
            (
                format!("{head}signalling_v4 = [\"192.0.2.1\"]\n"),
                "missing field `sources`",
            ),
            (
                head.replace("id = \"x\"", "id = \"Bad_Id\"")
                    + "signalling_v4 = [\"192.0.2.1\"]\n"
                    + src,
                "providers.toml:2: invalid provider id \"Bad_Id\"",
            ),
            (
                head.replace("id = \"x\"", &format!("id = \"{}\"", "a".repeat(56)))
                    + "signalling_v4 = [\"192.0.2.1\"]\n"
                    + src,
                "providers.toml:2: invalid provider id",
            ),
            (
                head.replace("\"high\"", "\"certain\"") + "signalling_v4 = [\"192.0.2.1\"]\n" + src,
                "providers.toml:4: unknown variant `certain`, expected one of `low`, `medium`, `high`",
            ),
            (
                head.replace("2026-11-27", "\"2026-11-27\"")
                    + "signalling_v4 = [\"192.0.2.1\"]\n"
                    + src,
                "providers.toml:5:",
            ),
            (
                head.replace("2026-11-27", "2026-11-27T10:00:00Z")
                    + "signalling_v4 = [\"192.0.2.1\"]\n"
                    + src,
                "providers.toml:5: invalid checked 2026-11-27T10:00:00Z: expected a date",
            ),
            (
                head.replace("[\"sip-udp\"]", "[\"telnet\"]")
                    + "signalling_v4 = [\"192.0.2.1\"]\n"
                    + src,
                "providers.toml:6: unknown service \"telnet\"",
            ),
            (
                head.replace("[\"sip-udp\"]", "[\"sip-udp\", \"all\"]")
                    + "signalling_v4 = [\"192.0.2.1\"]\n"
                    + src,
                "providers.toml:6: service \"all\" opens everything",
            ),
            (
                head.replace("[\"sip-udp\"]", "[]") + "signalling_v4 = [\"192.0.2.1\"]\n" + src,
                "providers.toml:6: no services given",
            ),
            (
                head.replace("name = \"X\"", "name = \" \"")
                    + "signalling_v4 = [\"192.0.2.1\"]\n"
                    + src,
                "providers.toml:3: the provider's name is empty",
            ),
            (
                head.replace("name = \"X\"", "name = \"X\"\nwebsite = \"example.com\"")
                    + "signalling_v4 = [\"192.0.2.1\"]\n"
                    + src,
                "providers.toml:4: invalid website \"example.com\"",
            ),
            (
                format!(
                    "{head}signalling_v4 = [\"192.0.2.1\"]\n{src}{head}signalling_v4 = [\"192.0.2.2\"]\n{src}"
                ),
                "providers.toml:10: duplicate provider id \"x\": it is used already at line 1",
            ),
            ("[[provider]\n".to_owned(), "providers.toml:1:"),
            (
                "providers = []\n".to_owned(),
                "providers.toml:1: unknown field `providers`",
            ),
        ];
        let mut failures = Vec::new();
        for (text, want) in &cases {
            match parse(text) {
                Ok(_) => failures.push(format!("accepted:\n{text}")),
                Err(e) => {
                    let e = e.to_string();
                    if !e.contains(want) || e.lines().count() != 1 {
                        failures.push(format!("want {want:?}\n got {e:?}\n in:\n{text}"));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }

    #[test]
    fn the_shipped_file_parses_and_all_enables_exactly_the_well_sourced_entries() {
        let ps = parse_providers(Path::new("providers.toml"), BUILTIN, &profiles()).unwrap();
        assert!(ps.len() >= 20, "{} providers", ps.len());
        for p in &ps {
            let expect = match p.confidence {
                Confidence::High | Confidence::Medium => !p.stale,
                Confidence::Low => false,
            };
            assert_eq!(p.in_all(), expect, "{}", p.id);
            assert!(account_name(&p.id).is_some(), "{}", p.id);
            assert!(!p.services.iter().any(|s| s == "all"), "{}", p.id);
        }
        let high: Vec<&str> = ps
            .iter()
            .filter(|p| p.confidence == Confidence::High && !p.stale)
            .map(|p| p.id.as_str())
            .collect();
        for id in ["twilio", "telnyx", "didww", "signalwire"] {
            assert!(high.contains(&id), "{id} should be high confidence");
        }
        for p in ps.iter().filter(|p| p.confidence == Confidence::High) {
            assert_eq!(p.in_all(), !p.stale, "{}", p.id);
        }
        let excluded: Vec<&str> = ps
            .iter()
            .filter(|p| !p.in_all())
            .map(|p| p.id.as_str())
            .collect();
        for id in ["zadarma", "voipms", "voxbone", "skyetel", "aaisp"] {
            assert!(excluded.contains(&id), "{id} should not be in --all");
        }
        // No documentation, private or otherwise special addresses slipped into real data.
        for p in &ps {
            for net in p.signalling.iter().chain(&p.media) {
                let special: [IpNet; 7] = [
                    "192.0.2.0/24".parse().unwrap(),
                    "198.51.100.0/24".parse().unwrap(),
                    "203.0.113.0/24".parse().unwrap(),
                    "10.0.0.0/8".parse().unwrap(),
                    "172.16.0.0/12".parse().unwrap(),
                    "192.168.0.0/16".parse().unwrap(),
                    "2001:db8::/32".parse().unwrap(),
                ];
                assert!(
                    !special.iter().any(|s| s.contains(net) || net.contains(s)),
                    "{}: {net}",
                    p.id
                );
            }
        }
    }

    #[test]
    fn builtin_is_used_when_no_file_is_installed_and_an_explicit_file_must_exist() {
        let t = tempfile::tempdir().unwrap();
        let paths = Paths {
            config_dir: t.path().join("etc"),
            state_dir: t.path().join("state"),
            share_dir: t.path().join("share"),
        };
        let ps = profiles();
        let l = load_providers(&paths, None, &ps).unwrap();
        assert_eq!(l.origin, BUILTIN_ORIGIN);
        assert!(l.get("telnyx").is_some());
        std::fs::create_dir_all(&paths.share_dir).unwrap();
        std::fs::write(paths.providers_file(), GOOD).unwrap();
        let l = load_providers(&paths, None, &ps).unwrap();
        assert_eq!(l.ids(), ["doc-sip", "old"]);
        assert!(l.origin.ends_with("share/providers.toml"));
        let missing = t.path().join("nope.toml");
        let e = load_providers(&paths, Some(&missing), &ps)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.toml"), "{e}");
    }
}
