//! Validated domain types: account names, addresses, host names, services and profiles.
//!
//! Everything a user types or a file holds passes through one of the parsers here before it
//! reaches the compiler. Each error is one line that names the offending value and says what
//! would be valid.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ruleset::{L4Proto, PortRange};

/// A bad value, with what would have been valid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ModelError {
    /// An account name that is empty, too long, or could escape the accounts folder.
    #[error(
        "invalid account name {0:?}: use 1-64 characters of A-Z a-z 0-9 . _ -, not starting with . or -"
    )]
    AccountName(String),
    /// Not an IP address or CIDR.
    #[error(
        "invalid address {0:?}: expected an IPv4 or IPv6 address or CIDR such as 203.0.113.7, 198.51.100.0/24 or 2001:db8::/48"
    )]
    Address(String),
    /// A CIDR with bits set after the prefix.
    #[error("invalid network {value:?}: host bits are set after /{len}; the network is {network}")]
    HostBits {
        /// What was given.
        value: String,
        /// Its prefix length.
        len: u8,
        /// The network it lies in.
        network: IpNet,
    },
    /// No address at all.
    #[error(
        "no address given: name at least one IPv4 or IPv6 address or CIDR, e.g. 203.0.113.7 or 198.51.100.0/24"
    )]
    NoAddresses,
    /// No host name at all.
    #[error("no host name given: name at least one, e.g. joe.dyndns.example")]
    NoFqdns,
    /// An address that can never be the source of a packet from outside, or that never
    /// matches in a rule (an IPv4-mapped IPv6 address: the kernel sees such packets as IPv4).
    #[error("invalid address {value:?}: not a unicast source address ({kind}){hint}")]
    NotUnicast {
        /// What was given.
        value: String,
        /// Which special-purpose block it lies in.
        kind: SpecialPurpose,
        /// What to write instead, when there is something (`; write it as 203.0.113.8`).
        hint: String,
    },
    /// An address with a port (`203.0.113.7:5060`, `[2001:db8::7]:5060`): ports come from
    /// the services, never from the address.
    #[error(
        "invalid address {value:?}: write it without :{port}, as {address}; ports come from the services (--allow)"
    )]
    AddressWithPort {
        /// What was given.
        value: String,
        /// The address part.
        address: String,
        /// The port part.
        port: String,
    },
    /// A range so large it needs `--force`.
    #[error(
        "refusing to whitelist {0}: it is larger than /8 (IPv4) or /32 (IPv6); pass --force if you really mean it"
    )]
    TooLarge(IpNet),
    /// A media (RTP) port range that would open another service's port to its senders.
    #[error(
        "invalid rtp ports {range}: they cover udp {port} of service {service}, which the RTP rule would open to every media sender; choose a range clear of the service ports, e.g. 10000-20000"
    )]
    RtpCoversService {
        /// The RTP range.
        range: PortRange,
        /// The first service port inside it.
        port: PortRange,
        /// The profile that port belongs to.
        service: String,
    },
    /// A host name that is not valid.
    #[error("invalid host name {value:?}: {reason}")]
    Fqdn {
        /// What was given.
        value: String,
        /// Why it is invalid and what would be valid.
        reason: String,
    },
    /// A service that is neither a profile name nor a code.
    #[error("unknown service {value:?}: valid services are {valid}{hint}")]
    UnknownService {
        /// What was given.
        value: String,
        /// The known codes and names.
        valid: String,
        /// `; did you mean sip-udp?` when a name looks alike, else empty.
        hint: String,
    },
    /// An empty service list.
    #[error(
        "no services given: name at least one, e.g. --allow sip-udp,iax or --allow 1,3 ({valid})"
    )]
    NoServices {
        /// The known codes and names.
        valid: String,
    },
    /// A profile port entry that does not parse.
    #[error(
        "invalid port {0:?}: expected \"all\" or PROTO/PORT[-PORT] with PROTO tcp or udp, e.g. \"udp/5060-5061\""
    )]
    PortSpec(String),
    /// A profile name that is not usable.
    #[error("invalid profile name {0:?}: use 1-32 characters of a-z 0-9 -, starting with a letter")]
    ProfileName(String),
    /// An expiry that is neither a duration nor a time within a year.
    #[error(
        "invalid expiry {0:?}: expected a duration (90s, 10m, 2h, 7d, 1h30m) or a time in RFC 3339 form (e.g. 2026-12-24T18:00:00Z) within the next 365 days"
    )]
    Expires(String),
    /// An expiry time that has passed.
    #[error(
        "invalid expiry {value:?}: it is in the past (now {now}); give a later time or a duration such as 2h"
    )]
    ExpiresPast {
        /// What was given.
        value: String,
        /// The time now.
        now: String,
    },
    /// A network too large for a temporary account.
    #[error(
        "refusing {0} for a temporary account: --expires takes addresses and networks of at most 256 addresses (/24 for IPv4, /120 for IPv6); whitelist it without --expires"
    )]
    TemporaryNetwork(IpNet),
    /// A duration that does not parse or is out of range.
    #[error(
        "invalid duration {0:?}: expected a number and a unit s, m, h or d (e.g. 90s, 10m, 2h, 7d, 1h30m), from 1s to 365d"
    )]
    Duration(String),
    /// Not a packet rate.
    #[error(
        "invalid rate {0:?}: expected packets per unit, N/second, N/minute, N/hour or N/day with N from 1 to 1000000 (e.g. 10/minute)"
    )]
    Rate(String),
    /// A ban names a network.
    #[error(
        "invalid address {0:?}: a ban is for one address, not a network (ban each address, or add the network to trusted)"
    )]
    BanNetwork(String),
}

/// The name of an account: 1-64 characters of `A-Z a-z 0-9 . _ -`, not starting with `.` or
/// `-`, so it is always a plain file name inside the accounts folder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountName(String);

impl AccountName {
    /// Longest accepted name.
    pub const MAX_LEN: usize = 64;

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AccountName {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && !s.starts_with(['.', '-'])
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(AccountName(s.to_owned()))
        } else {
            Err(ModelError::AccountName(s.to_owned()))
        }
    }
}

impl TryFrom<String> for AccountName {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, ModelError> {
        s.parse()
    }
}

impl From<AccountName> for String {
    fn from(n: AccountName) -> String {
        n.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses one address or CIDR a user wants to whitelist.
///
/// Host bits after the prefix are an error (the message names the network), as is a network
/// that lies inside a special-purpose block ([`check_unicast`]). Ranges wider than /8 (IPv4)
/// or /32 (IPv6) need `force`.
pub fn parse_source(s: &str, force: bool) -> Result<IpNet, ModelError> {
    let t = s.trim();
    if let Some((address, port)) = address_with_port(t) {
        return Err(ModelError::AddressWithPort {
            value: s.to_owned(),
            address: address.to_owned(),
            port: port.to_owned(),
        });
    }
    let net = if t.contains('/') {
        let net: IpNet = t.parse().map_err(|_| ModelError::Address(s.to_owned()))?;
        if net.addr() != net.network() {
            return Err(ModelError::HostBits {
                value: s.to_owned(),
                len: net.prefix_len(),
                network: net.trunc(),
            });
        }
        net
    } else {
        let ip: IpAddr = t.parse().map_err(|_| ModelError::Address(s.to_owned()))?;
        IpNet::from(ip)
    };
    check_unicast(&net).map_err(|kind| ModelError::NotUnicast {
        value: s.to_owned(),
        kind,
        hint: ipv4_hint(&net, kind),
    })?;
    let addr = net.addr();
    let too_large = match addr {
        IpAddr::V4(_) => net.prefix_len() < 8,
        IpAddr::V6(_) => net.prefix_len() < 32,
    };
    if too_large && !force {
        return Err(ModelError::TooLarge(net));
    }
    Ok(net)
}

/// Parses one address to ban: a single IPv4 or IPv6 address that can be a packet's source
/// (as [`parse_source`] checks), not a network; IPv4-mapped IPv6 is refused there.
pub fn parse_ban_address(s: &str) -> Result<IpAddr, ModelError> {
    let net = parse_source(s, false).map_err(|e| match e {
        ModelError::TooLarge(_) => ModelError::BanNetwork(s.trim().to_owned()),
        e => e,
    })?;
    if net.prefix_len() != net.max_prefix_len() {
        return Err(ModelError::BanNetwork(s.trim().to_owned()));
    }
    Ok(net.addr())
}

/// The address and port of `203.0.113.7:5060` or `[2001:db8::7]:5060` (a port of 1-5
/// digits after an address that parses), as people copy them from SIP logs.
fn address_with_port(t: &str) -> Option<(&str, &str)> {
    let (address, port) = t.rsplit_once(':')?;
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bracketed = address.strip_prefix('[').and_then(|a| a.strip_suffix(']'));
    match bracketed {
        Some(v6) => v6
            .parse::<std::net::Ipv6Addr>()
            .is_ok()
            .then_some((v6, port)),
        None => address
            .parse::<std::net::Ipv4Addr>()
            .is_ok()
            .then_some((address, port)),
    }
}

/// Splits a command-line argument that may hold several values, separated by commas or
/// white space (`--allow 'sip-udp iax'` as well as `--allow sip-udp,iax`).
pub fn split_list(arg: &str) -> impl Iterator<Item = &str> {
    arg.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
}

/// A block of addresses that never is the source of a packet pbxwall should admit.
///
/// Addresses inside these blocks are refused on the command line and in files, and left out
/// (with a warning) when a DNS answer or a detected configuration brings them: whatever their
/// origin, every address goes through [`check_unicast`] before it reaches the ruleset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialPurpose {
    /// `0.0.0.0/8` ("this network", RFC 1122 §3.2.1.3) or `::` (RFC 4291 §2.5.2).
    Unspecified,
    /// `127.0.0.0/8` or `::1`: the host's own traffic arrives on `lo`, which is always
    /// accepted; from outside these are spoofed.
    Loopback,
    /// `169.254.0.0/16` (RFC 3927) or `fe80::/10` (RFC 4291 §2.5.6): valid on one link only.
    LinkLocal,
    /// `224.0.0.0/4` or `ff00::/8`: never a source.
    Multicast,
    /// `255.255.255.255`: never a source.
    Broadcast,
    /// `::ffff:0:0/96` (RFC 4291 §2.5.5.2): the kernel sees such packets as IPv4, so an
    /// IPv6 rule for them never matches.
    Ipv4Mapped,
    /// `::/96` (IPv4-compatible, deprecated by RFC 4291 §2.5.5.1), `::ffff:0:0:0/96`
    /// (IPv4-translated, RFC 2765), `64:ff9b::/96` and `64:ff9b:1::/48` (NAT64, RFC 6052 and
    /// RFC 8215): IPv4 addresses in IPv6 clothing, to be whitelisted as IPv4.
    Ipv4Embedded,
}

impl fmt::Display for SpecialPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpecialPurpose::Unspecified => "unspecified",
            SpecialPurpose::Loopback => "loopback",
            SpecialPurpose::LinkLocal => "link-local",
            SpecialPurpose::Multicast => "multicast",
            SpecialPurpose::Broadcast => "broadcast",
            SpecialPurpose::Ipv4Mapped => "IPv4-mapped IPv6",
            SpecialPurpose::Ipv4Embedded => "IPv4 embedded in IPv6",
        })
    }
}

/// The special-purpose blocks, most specific first where they nest (`::` and `::1` lie
/// inside `::/96`).
const SPECIAL_PURPOSE: [(&str, SpecialPurpose); 14] = [
    ("0.0.0.0/8", SpecialPurpose::Unspecified),
    ("127.0.0.0/8", SpecialPurpose::Loopback),
    ("169.254.0.0/16", SpecialPurpose::LinkLocal),
    ("224.0.0.0/4", SpecialPurpose::Multicast),
    ("255.255.255.255/32", SpecialPurpose::Broadcast),
    ("::/128", SpecialPurpose::Unspecified),
    ("::1/128", SpecialPurpose::Loopback),
    ("fe80::/10", SpecialPurpose::LinkLocal),
    ("ff00::/8", SpecialPurpose::Multicast),
    ("::ffff:0:0/96", SpecialPurpose::Ipv4Mapped),
    ("::/96", SpecialPurpose::Ipv4Embedded),
    ("::ffff:0:0:0/96", SpecialPurpose::Ipv4Embedded),
    ("64:ff9b::/96", SpecialPurpose::Ipv4Embedded),
    ("64:ff9b:1::/48", SpecialPurpose::Ipv4Embedded),
];

/// `Err` with the block when every address of `net` lies inside a special-purpose block
/// ([`SpecialPurpose`]). A network that only *contains* such a block (`0.0.0.0/0` with
/// `--force`) is fine: the kernel never sees packets from those addresses anyway.
pub fn check_unicast(net: &IpNet) -> Result<(), SpecialPurpose> {
    // Parsed once: this runs for every address of every account file and of a
    // `ban --stdin` list.
    static BLOCKS: std::sync::LazyLock<Vec<(IpNet, SpecialPurpose)>> =
        std::sync::LazyLock::new(|| {
            SPECIAL_PURPOSE
                .iter()
                .map(|(block, kind)| (block.parse().expect("valid constant"), *kind))
                .collect()
        });
    match BLOCKS.iter().find(|(block, _)| block.contains(net)) {
        Some((_, kind)) => Err(*kind),
        None => Ok(()),
    }
}

/// `; write it as 203.0.113.8` for a single IPv6 address that carries an IPv4 address in
/// its last 32 bits.
fn ipv4_hint(net: &IpNet, kind: SpecialPurpose) -> String {
    match (net, kind) {
        (IpNet::V6(n), SpecialPurpose::Ipv4Mapped | SpecialPurpose::Ipv4Embedded)
            if n.prefix_len() == 128 =>
        {
            let [.., a, b, c, d] = n.addr().octets();
            format!("; write it as {}", std::net::Ipv4Addr::new(a, b, c, d))
        }
        _ => String::new(),
    }
}

/// Splits command-line address arguments that may also be comma- or space-separated, then
/// parses each.
pub fn parse_sources<S: AsRef<str>>(args: &[S], force: bool) -> Result<Vec<IpNet>, ModelError> {
    let mut out = Vec::new();
    for arg in args {
        for part in split_list(arg.as_ref()) {
            let net = parse_source(part, force)?;
            if !out.contains(&net) {
                out.push(net);
            }
        }
    }
    if out.is_empty() {
        return Err(ModelError::NoAddresses);
    }
    Ok(out)
}

/// Splits command-line host-name arguments that may also be comma-separated, then parses
/// each (duplicates dropped). Not on spaces: `a b.example` is one bad name, said as such.
pub fn parse_fqdns<S: AsRef<str>>(args: &[S]) -> Result<Vec<Fqdn>, ModelError> {
    let mut out = Vec::new();
    for part in args
        .iter()
        .flat_map(|a| a.as_ref().split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let f: Fqdn = part.parse()?;
        if !out.contains(&f) {
            out.push(f);
        }
    }
    if out.is_empty() {
        return Err(ModelError::NoFqdns);
    }
    Ok(out)
}

/// A validated host name in its ASCII (punycode) form, lower case, without trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Fqdn(String);

impl Fqdn {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Fqdn {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        let err = |reason: &str| ModelError::Fqdn {
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        let t = s.trim();
        let t = t.strip_suffix('.').unwrap_or(t);
        if t.is_empty() {
            return Err(err("it is empty"));
        }
        if t.parse::<IpAddr>().is_ok() || t.parse::<IpNet>().is_ok() {
            return Err(err("it is an IP address; use add-ip for addresses"));
        }
        if t.contains('*') {
            return Err(err("wildcards cannot be resolved; name one host"));
        }
        let ascii = idna::domain_to_ascii(t)
            .map_err(|_| err("not a valid internationalised domain name"))?;
        if ascii.len() > 253 {
            return Err(err("longer than 253 characters"));
        }
        let labels: Vec<&str> = ascii.split('.').collect();
        if labels.len() < 2 {
            return Err(err(
                "give a fully qualified name with a domain, e.g. joe.dyndns.example",
            ));
        }
        for label in &labels {
            if label.is_empty() {
                return Err(err("it has an empty label (two dots in a row)"));
            }
            if label.len() > 63 {
                return Err(err("a label is longer than 63 characters"));
            }
            if !label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(err("use letters, digits and - between the dots"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(err("a label may not start or end with -"));
            }
        }
        if labels
            .last()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(err(
                "the last label is all digits; use add-ip for addresses",
            ));
        }
        Ok(Fqdn(ascii))
    }
}

impl TryFrom<String> for Fqdn {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, ModelError> {
        s.parse()
    }
}

impl From<Fqdn> for String {
    fn from(n: Fqdn) -> String {
        n.0
    }
}

impl fmt::Display for Fqdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one entry of a profile's `ports` opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortSpec {
    /// Every port of every protocol (the "all" service).
    All,
    /// One protocol and a port range.
    Port(L4Proto, PortRange),
}

impl FromStr for PortSpec {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        let err = || ModelError::PortSpec(s.to_owned());
        if s == "all" {
            return Ok(PortSpec::All);
        }
        let (proto, ports) = s.split_once('/').ok_or_else(err)?;
        let proto = match proto {
            "tcp" => L4Proto::Tcp,
            "udp" => L4Proto::Udp,
            _ => return Err(err()),
        };
        let range = parse_port_range(ports).ok_or_else(err)?;
        Ok(PortSpec::Port(proto, range))
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::All => f.write_str("all"),
            PortSpec::Port(p, r) => write!(f, "{}/{}", p.keyword(), r),
        }
    }
}

/// Parses `PORT` or `FIRST-LAST` (1-65535, first ≤ last).
pub fn parse_port_range(s: &str) -> Option<PortRange> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let first: u16 = a.trim().parse().ok()?;
    let last: u16 = b.trim().parse().ok()?;
    (first >= 1 && first <= last).then_some(PortRange { first, last })
}

/// Refuses an RTP range that overlaps a UDP port of any profile (other than "all").
///
/// The RTP rule opens its range to every media sender (or to every whitelisted source),
/// whatever services they have, so a range from rtp.conf such as `rtpstart=1`
/// `rtpend=65535` (FreePBX writes that file from its web interface) would open SIP, IAX and
/// TFTP to everybody.
pub fn check_rtp_ports(range: PortRange, profiles: &Profiles) -> Result<(), ModelError> {
    for profile in profiles.ordered() {
        for spec in &profile.ports {
            if let PortSpec::Port(L4Proto::Udp, port) = spec
                && port.first <= range.last
                && range.first <= port.last
            {
                return Err(ModelError::RtpCoversService {
                    range,
                    port: *port,
                    service: profile.name.clone(),
                });
            }
        }
    }
    Ok(())
}

/// A service profile: which ports a service name (or TM3 code) opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Name used in `--allow` and account files, e.g. `sip-udp`.
    pub name: String,
    /// TM3 code 0-9, if the profile has one.
    pub code: Option<u8>,
    /// One line saying what it is for.
    pub description: String,
    /// What it opens.
    pub ports: Vec<PortSpec>,
}

impl Profile {
    /// Whether this profile opens everything (code 0, "all").
    pub fn is_all(&self) -> bool {
        self.ports.contains(&PortSpec::All)
    }
}

/// Checks a profile name: 1-32 characters of `a-z 0-9 -`, starting with a letter.
pub fn check_profile_name(s: &str) -> Result<(), ModelError> {
    let ok = (1..=32).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ModelError::ProfileName(s.to_owned()))
    }
}

/// All known profiles, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profiles {
    by_name: BTreeMap<String, Profile>,
}

impl Profiles {
    /// Builds the set; a later profile with the same name or code replaces an earlier one.
    pub fn new(profiles: impl IntoIterator<Item = Profile>) -> Profiles {
        let mut by_name: BTreeMap<String, Profile> = BTreeMap::new();
        for p in profiles {
            if let Some(code) = p.code {
                by_name.retain(|_, q| q.code != Some(code) || q.name == p.name);
            }
            by_name.insert(p.name.clone(), p);
        }
        Profiles { by_name }
    }

    /// The profile called `name`.
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.by_name.get(name)
    }

    /// Profiles in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        self.by_name.values()
    }

    /// Profiles ordered by code first (0-9), then the rest by name: the order of menus and sets.
    pub fn ordered(&self) -> Vec<&Profile> {
        let mut v: Vec<&Profile> = self.by_name.values().collect();
        v.sort_by_key(|p| (p.code.unwrap_or(u8::MAX), p.name.clone()));
        v
    }

    /// Resolves a service given as a name or a TM3 code to its profile name.
    pub fn resolve(&self, s: &str) -> Result<&Profile, ModelError> {
        let t = s.trim();
        let found = match t.parse::<u8>() {
            Ok(code) => self.by_name.values().find(|p| p.code == Some(code)),
            Err(_) => self.by_name.get(&t.to_ascii_lowercase()),
        };
        found.ok_or_else(|| {
            let names: Vec<String> = self.by_name.keys().cloned().collect();
            let close = if t.parse::<u8>().is_ok() {
                Vec::new()
            } else {
                crate::store::close_names(t, &names)
            };
            ModelError::UnknownService {
                value: s.to_owned(),
                valid: self.describe(),
                hint: if close.is_empty() {
                    String::new()
                } else {
                    format!("; did you mean {}?", close.join(" or "))
                },
            }
        })
    }

    /// Parses `--allow` lists, each comma- or space-separated (names or codes; `0`/`all`
    /// absorbs the rest).
    pub fn parse_services<S: AsRef<str>>(&self, args: &[S]) -> Result<Vec<String>, ModelError> {
        let mut out: Vec<String> = Vec::new();
        for arg in args {
            for part in split_list(arg.as_ref()) {
                let name = self.resolve(part)?.name.clone();
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        if out.is_empty() {
            return Err(ModelError::NoServices {
                valid: self.describe(),
            });
        }
        out.sort_by_key(|n| {
            self.get(n)
                .map(|p| (p.code.unwrap_or(u8::MAX), p.name.clone()))
        });
        Ok(out)
    }

    /// `0=all, 1=sip-udp, ...` for error messages.
    pub fn describe(&self) -> String {
        self.ordered()
            .iter()
            .map(|p| match p.code {
                Some(c) => format!("{c}={}", p.name),
                None => p.name.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One permission file: who may reach which services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account name (and file name without `.toml`).
    pub name: AccountName,
    /// Source addresses and networks.
    pub addresses: Vec<IpNet>,
    /// Host names resolved at every restart and by ipchecker.
    pub fqdns: Vec<Fqdn>,
    /// Profile names, ordered by code.
    pub services: Vec<String>,
    /// Media source ranges (opened to RTP only when `[rtp] from = "whitelist"`).
    pub media: Vec<IpNet>,
    /// Free text.
    pub comment: Option<String>,
    /// When the account was created (RFC 3339), if known.
    pub created: Option<String>,
    /// Set on accounts made by `enable-trusted-providers`: the provider's id.
    pub provider: Option<String>,
    /// When a temporary account (`--expires`) ends: the kernel drops its addresses then,
    /// and the next command removes its file.
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
}

impl Account {
    /// One line for logs and messages: addresses, names, services.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.addresses.is_empty() {
            let a: Vec<String> = self.addresses.iter().map(display_net).collect();
            parts.push(format!("addresses {}", a.join(", ")));
        }
        if !self.fqdns.is_empty() {
            let f: Vec<&str> = self.fqdns.iter().map(Fqdn::as_str).collect();
            parts.push(format!("names {}", f.join(", ")));
        }
        parts.push(format!("services {}", self.services.join(", ")));
        if let Some(t) = self.expires {
            parts.push(format!("expires {}", format_time(t)));
        }
        parts.join("; ")
    }
}

/// `text` safe to print on a terminal: control characters (newlines, escape sequences) and
/// the Unicode controls that reorder text are shown escaped (`\n`, `\u{1b}`), so a comment
/// or a user name from a file can neither add a line nor redraw the screen.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A network as users write it: single addresses without `/32` or `/128`.
pub fn display_net(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// A span of time as users write it: `90s`, `10m`, `2h`, `7d`, or parts joined (`1h30m`),
/// from one second to 365 days. Kernel set timeouts (bans, admissions, knock grants,
/// temporary accounts) and settings such as `[guard] ban_for` use it. Serialized as its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    secs: u64,
}

impl Duration {
    /// The longest duration accepted: 365 days.
    pub const MAX_SECS: u64 = 365 * 86_400;

    /// A duration of `secs` seconds, if within 1 s to 365 d.
    pub fn from_secs(secs: u64) -> Option<Duration> {
        (1..=Self::MAX_SECS)
            .contains(&secs)
            .then_some(Duration { secs })
    }

    /// Whole seconds.
    pub fn as_secs(self) -> u64 {
        self.secs
    }

    /// As a `std::time::Duration`.
    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.secs)
    }
}

impl FromStr for Duration {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Duration, ModelError> {
        let bad = || ModelError::Duration(s.to_string());
        let text = s.trim();
        if text.is_empty() {
            return Err(bad());
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        let mut last_unit = u64::MAX;
        for c in text.chars() {
            if c.is_ascii_digit() {
                if digits.len() >= 12 {
                    return Err(bad());
                }
                digits.push(c);
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => return Err(bad()),
            };
            // Each unit once, largest first (`1h30m`, not `30m1h` or `1m1m`).
            if digits.is_empty() || unit >= last_unit {
                return Err(bad());
            }
            last_unit = unit;
            let n: u64 = digits.parse().map_err(|_| bad())?;
            digits.clear();
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(bad)?;
        }
        if !digits.is_empty() {
            return Err(bad());
        }
        Duration::from_secs(total).ok_or_else(bad)
    }
}

impl fmt::Display for Duration {
    /// The shortest form that reads back to the same value: `1d2h`, `90s` → `1m30s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.secs;
        for (unit, suffix) in [(86_400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
            if rest >= unit {
                write!(f, "{}{suffix}", rest / unit)?;
                rest %= unit;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A time as pbxwall prints and records it: RFC 3339 in UTC, whole seconds
/// (`2026-12-24T18:00:00Z`).
pub fn format_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parses `--expires`: a [`Duration`] from `now` (`2h`), or a time in RFC 3339 form with its
/// offset (`2026-12-24T18:00:00Z`, `2026-12-24T19:00:00+01:00`), later than `now` and at
/// most 365 days after it. Whole seconds (a fraction is dropped).
pub fn parse_expires(
    s: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, ModelError> {
    use chrono::{DurationRound, TimeDelta};
    let text = s.trim();
    let bad = || ModelError::Expires(s.to_owned());
    let at = match text.parse::<Duration>() {
        Ok(d) => now + TimeDelta::seconds(d.as_secs() as i64),
        Err(_) => chrono::DateTime::parse_from_rfc3339(text)
            .map_err(|_| bad())?
            .with_timezone(&chrono::Utc),
    };
    let at = at
        .duration_trunc(TimeDelta::seconds(1))
        .map_err(|_| bad())?;
    if at <= now {
        return Err(ModelError::ExpiresPast {
            value: s.to_owned(),
            now: format_time(now),
        });
    }
    if at - now > TimeDelta::seconds(Duration::MAX_SECS as i64) {
        return Err(bad());
    }
    Ok(at)
}

/// Checks the addresses of a temporary account: each address becomes one kernel element
/// with the account's timeout, so a network may hold at most 256 addresses.
pub fn check_temporary(addresses: &[IpNet]) -> Result<(), ModelError> {
    match addresses
        .iter()
        .find(|n| n.max_prefix_len() - n.prefix_len() > 8)
    {
        Some(n) => Err(ModelError::TemporaryNetwork(*n)),
        None => Ok(()),
    }
}

/// A packet rate, `N/UNIT`: `10/minute`, `5/second`, `100/hour`, `1000/day`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Packets per unit, 1 to 1,000,000.
    pub packets: u32,
    /// Seconds per unit: 1, 60, 3600 or 86400.
    pub unit_secs: u64,
}

impl FromStr for Rate {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Rate, ModelError> {
        let bad = || ModelError::Rate(s.to_owned());
        let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let packets: u32 = n.trim().parse().map_err(|_| bad())?;
        if !(1..=1_000_000).contains(&packets) {
            return Err(bad());
        }
        let unit_secs = match unit.trim() {
            "second" | "s" => 1,
            "minute" | "m" => 60,
            "hour" | "h" => 3600,
            "day" | "d" => 86_400,
            _ => return Err(bad()),
        };
        Ok(Rate { packets, unit_secs })
    }
}

/// The name of a rate's unit of `unit_secs` seconds (1, 60, 3600, else a day), as nft and
/// the settings write it.
pub fn rate_unit(unit_secs: u64) -> &'static str {
    match unit_secs {
        1 => "second",
        60 => "minute",
        3600 => "hour",
        _ => "day",
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.packets, rate_unit(self.unit_secs))
    }
}

/// `[sip]` settings: the SIP layer for sources that are not whitelisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipSettings {
    /// TM3's obscure-domain trick: a REGISTER whose request line starts
    /// `REGISTER sip:<name>` admits its source's SIP for `admit_for`. Empty: off.
    pub register_domains: Vec<Fqdn>,
    /// How long a matching REGISTER admits its source (renewed by each).
    pub admit_for: Duration,
    /// Responsive mode: SIP signalling from anyone, each source under the guard.
    pub open: bool,
}

impl Default for SipSettings {
    fn default() -> Self {
        SipSettings {
            register_domains: Vec::new(),
            admit_for: Duration { secs: 3600 },
            open: false,
        }
    }
}

impl SipSettings {
    /// Whether the SIP layer is on (a register domain or open mode).
    pub fn enabled(&self) -> bool {
        self.open || !self.register_domains.is_empty()
    }
}

/// `[guard]` settings: per-source meters on the SIP packets of sources that are not
/// whitelisted, and the duration of bans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardSettings {
    /// Packets per source allowed on average.
    pub limit: Rate,
    /// Packets per source allowed above the rate in a burst.
    pub burst: u32,
    /// How long a source over the limit is banned; also `pbxwall ban`'s default.
    pub ban_for: Duration,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            limit: Rate {
                packets: 10,
                unit_secs: 60,
            },
            burst: 20,
            ban_for: Duration { secs: 3600 },
        }
    }
}

/// Where RTP (media) may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RtpFrom {
    /// From anywhere: providers send media from other addresses than signalling, and
    /// Asterisk's strictrtp protects the streams. The default, as in FreePBX.
    #[default]
    Any,
    /// Only from whitelisted sources (accounts' addresses and providers' media ranges).
    Whitelist,
}

/// `[resolver]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    /// Name servers to ask; empty means the system's resolv.conf.
    pub nameservers: Vec<std::net::SocketAddr>,
    /// Timeout of one query attempt, in milliseconds.
    pub timeout_ms: u64,
    /// Attempts per query (at least 1).
    pub attempts: u32,
    /// How long the last good addresses of a name are kept while its DNS fails transiently.
    pub stale_grace_s: u64,
    /// Most addresses one host name contributes (IPv4 and IPv6 together); more are cut.
    pub max_addresses: usize,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        ResolverSettings {
            nameservers: Vec::new(),
            timeout_ms: 2000,
            attempts: 2,
            stale_grace_s: 3600,
            max_addresses: 16,
        }
    }
}

/// `[rtp]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpSettings {
    /// UDP port range of media.
    pub ports: PortRange,
    /// Who may send to it.
    pub from: RtpFrom,
}

impl Default for RtpSettings {
    fn default() -> Self {
        RtpSettings {
            ports: PortRange {
                first: 10000,
                last: 20000,
            },
            from: RtpFrom::Any,
        }
    }
}

/// The LAN ranges trusted with full access when the settings do not say otherwise.
pub const DEFAULT_TRUSTED: [&str; 4] =
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"];

/// Validated `pbxwall.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Networks with full access (the LAN).
    pub trusted: Vec<IpNet>,
    /// Name resolution.
    pub resolver: ResolverSettings,
    /// Media ports.
    pub rtp: RtpSettings,
    /// Log dropped packets (rate-limited) to the kernel log.
    pub log_drops: bool,
    /// `[knock]`: port knocking (off while its sequence is empty).
    pub knock: crate::knock::KnockSettings,
    /// The SIP layer (`[sip]`).
    pub sip: SipSettings,
    /// The guard and bans (`[guard]`).
    pub guard: GuardSettings,
    /// `[geo]`: the country gate of the open paths.
    pub geo: crate::geo::GeoSettings,
    /// `[sync]`: the fleet bundle this PBX pulls.
    pub sync: crate::fleet::SyncSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            trusted: DEFAULT_TRUSTED
                .iter()
                .map(|s| s.parse().expect("valid constant"))
                .collect(),
            resolver: ResolverSettings::default(),
            rtp: RtpSettings::default(),
            log_drops: true,
            sip: SipSettings::default(),
            guard: GuardSettings::default(),
            geo: crate::geo::GeoSettings::default(),
            sync: crate::fleet::SyncSettings::default(),
            knock: crate::knock::KnockSettings::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_are_durations_or_future_times() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-03T06:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let t = |s: &str| parse_expires(s, now).map(format_time);
        assert_eq!(t("2h").unwrap(), "2026-12-03T08:00:00Z");
        assert_eq!(t("1h30m").unwrap(), "2026-12-03T07:30:00Z");
        assert_eq!(t("2026-12-24T18:00:00Z").unwrap(), "2026-12-24T18:00:00Z");
        assert_eq!(
            t("2026-12-24T19:00:00+01:00").unwrap(),
            "2026-12-24T18:00:00Z"
        );
        assert_eq!(t("2026-12-03T06:00:01.9Z").unwrap(), "2026-12-03T06:00:01Z");
        assert_eq!(
            t("2026-12-01T00:00:00Z").unwrap_err().to_string(),
            "invalid expiry \"2026-12-01T00:00:00Z\": it is in the past (now 2026-12-03T06:00:00Z); give a later time or a duration such as 2h"
        );
        assert!(matches!(
            t("2026-12-03T06:00:00Z"),
            Err(ModelError::ExpiresPast { .. })
        ));
        for bad in [
            "",
            "0s",
            "tomorrow",
            "2h ago",
            "2028-01-01T00:00:00Z",
            "2026-12-24 18:00",
            "366d",
        ] {
            let e = t(bad).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("invalid expiry {bad:?}: expected a duration")),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn durations_parse_and_print_back() {
        for (text, secs, shown) in [
            ("90s", 90, "1m30s"),
            ("10m", 600, "10m"),
            ("2h", 7200, "2h"),
            ("7d", 604_800, "7d"),
            ("1h30m", 5400, "1h30m"),
            ("1s", 1, "1s"),
            ("365d", 365 * 86_400, "365d"),
        ] {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.as_secs(), secs, "{text}");
            assert_eq!(d.to_string(), shown);
            assert_eq!(shown.parse::<Duration>().unwrap(), d);
        }
        for bad in [
            "",
            "0s",
            "10",
            "h",
            "1x",
            "-1h",
            "1.5h",
            "366d",
            "30m1h",
            "1m1m",
            "99999999999999d",
            "1 h",
        ] {
            let e = bad.parse::<Duration>().unwrap_err();
            assert!(
                e.to_string().contains("e.g. 90s, 10m, 2h, 7d"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn an_address_with_a_port_says_to_drop_the_port() {
        for (given, address) in [
            ("203.0.113.7:5060", "203.0.113.7"),
            ("[2001:db8::7]:5060", "2001:db8::7"),
        ] {
            match parse_source(given, false) {
                Err(ModelError::AddressWithPort {
                    address: a, port, ..
                }) => {
                    assert_eq!((a.as_str(), port.as_str()), (address, "5060"))
                }
                other => panic!("{given}: {other:?}"),
            }
        }
        // IPv6 without brackets is an address, not an address with a port.
        assert!(parse_source("2001:db8::7:5060", false).is_ok());
        assert!(matches!(
            parse_source("::ffff:1.2.3.4", false),
            Err(ModelError::NotUnicast { .. })
        ));
    }

    #[test]
    fn account_names() {
        for ok in ["joe-office", "a", "A.b_c-1", &"x".repeat(64)] {
            assert!(ok.parse::<AccountName>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "-flag",
            "joe office",
            "é",
            &"x".repeat(65),
        ] {
            let e = bad.parse::<AccountName>().unwrap_err();
            assert!(e.to_string().contains("1-64 characters"), "{e}");
        }
    }

    #[test]
    fn sources() {
        assert_eq!(
            parse_source("203.0.113.7", false).unwrap().to_string(),
            "203.0.113.7/32"
        );
        assert_eq!(
            parse_source("2001:db8::/48", false).unwrap().to_string(),
            "2001:db8::/48"
        );
        let e = parse_source("198.51.100.5/24", false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid network \"198.51.100.5/24\": host bits are set after /24; the network is 198.51.100.0/24"
        );
        for bad in [
            "300.1.2.3",
            "1.2.3",
            "192.0.2.0/33",
            "abc",
            "",
            "2001:db8::/129",
        ] {
            assert!(
                matches!(parse_source(bad, false), Err(ModelError::Address(_))),
                "{bad}"
            );
        }
        for huge in ["0.0.0.0/0", "10.0.0.0/7", "2001::/16", "::/0"] {
            assert!(
                matches!(parse_source(huge, false), Err(ModelError::TooLarge(_))),
                "{huge}"
            );
            assert!(parse_source(huge, true).is_ok(), "{huge}");
        }
        for bad in [
            "0.0.0.0",
            "0.0.0.0/8",
            "0.1.2.3",
            "127.0.0.1",
            "127.0.0.0/8",
            "169.254.1.1",
            "224.0.0.1",
            "239.0.0.0/8",
            "255.255.255.255",
            "ff02::1",
            "::",
            "::1",
            "fe80::1",
            "fe80::/64",
            "::ffff:203.0.113.8",
            "::ffff:0:0/96",
            "::ffff:203.0.113.0/120",
            "::/96",
            "::203.0.113.8",
            "::ffff:0:203.0.113.8",
            "64:ff9b::/96",
            "64:ff9b::203.0.113.8",
            "64:ff9b:1::/48",
        ] {
            assert!(
                matches!(parse_source(bad, true), Err(ModelError::NotUnicast { .. })),
                "{bad}"
            );
        }
        // Wider networks that only contain such blocks, and their neighbours, are fine.
        for ok in [
            "0.0.0.0/0",
            "::/0",
            "1.0.0.0/8",
            "64:ff9b:2::/48",
            "2001:db8::1",
        ] {
            assert!(parse_source(ok, true).is_ok(), "{ok}");
        }
        assert_eq!(
            parse_source("::ffff:203.0.113.8", false)
                .unwrap_err()
                .to_string(),
            "invalid address \"::ffff:203.0.113.8\": not a unicast source address \
             (IPv4-mapped IPv6); write it as 203.0.113.8"
        );
        assert_eq!(
            parse_source("fe80::1", false).unwrap_err().to_string(),
            "invalid address \"fe80::1\": not a unicast source address (link-local)"
        );
        assert_eq!(
            parse_sources(&["192.0.2.1,192.0.2.2", "192.0.2.1"], false)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn fqdns() {
        assert_eq!(
            "Joe.DynDNS.example.".parse::<Fqdn>().unwrap().as_str(),
            "joe.dyndns.example"
        );
        assert_eq!(
            "bücher.example".parse::<Fqdn>().unwrap().as_str(),
            "xn--bcher-kva.example"
        );
        for bad in [
            "",
            "192.0.2.1",
            "2001:db8::1",
            "*.example.com",
            "a..example",
            "-a.example",
            "localhost",
            &format!("{}.example", "a".repeat(64)),
            &format!("{}.example", ["abcdefghi"; 30].join(".")),
            "a b.example",
            "1.2.3.4.5",
        ] {
            assert!(bad.parse::<Fqdn>().is_err(), "{bad:?} should be refused");
        }
        let e = "192.0.2.1".parse::<Fqdn>().unwrap_err().to_string();
        assert!(e.contains("use add-ip"), "{e}");
    }

    #[test]
    fn rtp_ports_clear_of_the_services() {
        let profiles = crate::store::builtin_profiles();
        let ok = |first, last| check_rtp_ports(PortRange { first, last }, &profiles);
        assert!(ok(10000, 20000).is_ok());
        assert!(ok(5062, 5159).is_ok());
        assert_eq!(
            ok(1, 65535).unwrap_err().to_string(),
            "invalid rtp ports 1-65535: they cover udp 5060-5061 of service sip-udp, which the \
             RTP rule would open to every media sender; choose a range clear of the service \
             ports, e.g. 10000-20000"
        );
        assert!(ok(5161, 5161).is_err());
        assert!(ok(60, 70).is_err(), "tftp");
        assert!(ok(4569, 4569).is_err(), "iax");
    }

    #[test]
    fn printable_escapes_what_could_draw_on_a_terminal() {
        assert_eq!(printable("Joe's office"), "Joe's office");
        assert_eq!(printable("née ☎"), "née ☎");
        assert_eq!(
            printable("x\n\u{1b}[2Ain sync\r\u{202e}"),
            "x\\n\\u{1b}[2Ain sync\\r\\u{202e}"
        );
    }

    #[test]
    fn port_specs() {
        assert_eq!(
            "udp/5060-5061".parse::<PortSpec>().unwrap().to_string(),
            "udp/5060-5061"
        );
        assert_eq!("tcp/22".parse::<PortSpec>().unwrap().to_string(), "tcp/22");
        assert_eq!("all".parse::<PortSpec>().unwrap(), PortSpec::All);
        for bad in [
            "udp/0",
            "sctp/5060",
            "tcp/5061-5060",
            "tcp/70000",
            "tcp",
            "tcp/",
        ] {
            assert!(bad.parse::<PortSpec>().is_err(), "{bad}");
        }
    }

    fn profiles() -> Profiles {
        let p = |code, name: &str, ports: &[&str]| Profile {
            name: name.into(),
            code,
            description: String::new(),
            ports: ports.iter().map(|s| s.parse().unwrap()).collect(),
        };
        Profiles::new([
            p(Some(0), "all", &["all"]),
            p(Some(1), "sip-udp", &["udp/5060-5061"]),
            p(Some(3), "iax", &["udp/4569"]),
            p(None, "ucp", &["tcp/81"]),
        ])
    }

    #[test]
    fn services_by_name_or_code() {
        let ps = profiles();
        assert_eq!(
            ps.parse_services(&["iax,1", "sip-udp"]).unwrap(),
            ["sip-udp", "iax"]
        );
        assert_eq!(ps.parse_services(&["ucp", "0"]).unwrap(), ["all", "ucp"]);
        let e = ps
            .parse_services(&["sip-udp,telnet"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "unknown service \"telnet\": valid services are 0=all, 1=sip-udp, 3=iax, ucp"
        );
        assert!(ps.parse_services(&["12"]).is_err());
        assert!(matches!(
            ps.parse_services(&[" , "]),
            Err(ModelError::NoServices { .. })
        ));
    }

    #[test]
    fn local_profile_replaces_shipped_by_name_or_code() {
        let mut ps: Vec<Profile> = profiles().iter().cloned().collect();
        ps.push(Profile {
            name: "sip-udp".into(),
            code: Some(1),
            description: "moved".into(),
            ports: vec!["udp/5070".parse().unwrap()],
        });
        ps.push(Profile {
            name: "iax2".into(),
            code: Some(3),
            description: String::new(),
            ports: vec!["udp/4570".parse().unwrap()],
        });
        let ps = Profiles::new(ps);
        assert_eq!(ps.resolve("1").unwrap().description, "moved");
        assert_eq!(ps.resolve("3").unwrap().name, "iax2");
        assert!(ps.get("iax").is_none());
    }
}
