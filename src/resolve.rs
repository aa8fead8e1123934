//! Name resolution: host names → addresses, with the failure policy of DESIGN.md §1.
//!
//! # How names are asked
//!
//! [`resolve_all`] asks [hickory-resolver] for the A and the AAAA records of every name as
//! **two separate queries**. (`lookup_ip` would merge them and silently return one family when
//! the other fails, which for a firewall means dropping addresses on a mere timeout.) All
//! queries run concurrently, at most [`MAX_QUERIES_IN_FLIGHT`] at a time, so a slow name server
//! costs about one query's worst case for the whole run, not one per name.
//!
//! The resolver is set up for this job only: the name servers of `[resolver] nameservers`, or,
//! when that list is empty, the `nameserver` lines of the system's `/etc/resolv.conf` (its
//! options, search domains and `ndots` are ignored); each query waits `timeout_ms` per try and
//! is tried `attempts` times in all; no hosts file, no answer cache (`cache_size = 0`), `ndots
//! = 0`, and names are asked as absolute names (with the final dot), so no search domain is
//! ever appended. If the resolver cannot be set up (no readable resolv.conf, no name server
//! in it), every name gets that error as a transient failure: nothing panics and the last good
//! addresses are kept within the grace.
//!
//! # Policy (pure, in [`classify`])
//!
//! Each family of each name is judged on its own:
//!
//! | this run's answer for the family | addresses the family contributes |
//! |---|---|
//! | addresses | these (and they are remembered with the time and TTL) |
//! | NXDOMAIN, or no records of this type | none; remembered addresses are forgotten |
//! | SERVFAIL, timeout, REFUSED, network or setup error | the remembered addresses while less than `stale_grace_s` has passed since they last resolved; after that none (and they are forgotten) |
//!
//! NXDOMAIN says the *name* does not exist, whatever the type (RFC 8020), so an NXDOMAIN for
//! one family also stops the other family's remembered addresses from being kept; fresh
//! addresses of the other family (servers disagreeing) are still used.
//!
//! The name then gets a [`NameState`]: [`Stale`](NameState::Stale) when any of its addresses
//! are kept ones, [`Ok`](NameState::Ok) when it has addresses and none are kept, else
//! [`LeftOut`](NameState::LeftOut) with the reason ("does not resolve (NXDOMAIN)", "does not
//! resolve (no A/AAAA records)", or the DNS failure).
//!
//! # The cache
//!
//! [`Cache`] is `STATE_DIR/dns-cache.json`: per name, per family the addresses of the last
//! answer, when they resolved and their TTL, and the name's last error with its time. The
//! caller loads it, lets [`resolve_all`] update it, and saves it under the store lock. A
//! corrupt file is reported as a warning and treated as empty.
//!
//! [hickory-resolver]: https://docs.rs/hickory-resolver

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use futures::stream::{self, StreamExt};
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::{Resolver, TokioResolver};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::{Fqdn, ResolverSettings};
use crate::store::{Paths, StoreError, StoreLock, read_optional, write_atomic};

/// At most this many queries (an A or an AAAA query of one name) are in flight at once.
pub const MAX_QUERIES_IN_FLIGHT: usize = 256;
/// File name of the cache in the state folder.
pub const CACHE_FILE: &str = "dns-cache.json";
/// The resolver configuration read when `[resolver] nameservers` is empty.
pub const SYSTEM_RESOLV_CONF: &str = "/etc/resolv.conf";
/// Version of the cache file format.
const CACHE_VERSION: u32 = 1;

// ---------------------------------------------------------------------------------------
// Answers of one run

/// The record type a query asks for: A (IPv4 addresses) or AAAA (IPv6 addresses). Every
/// name gets one query of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QueryType {
    /// IPv4 addresses.
    A,
    /// IPv6 addresses.
    Aaaa,
}

impl QueryType {
    /// The record type as DNS writes it, `A` or `AAAA`.
    pub fn record_type(self) -> &'static str {
        match self {
            QueryType::A => "A",
            QueryType::Aaaa => "AAAA",
        }
    }
}

/// Why a query got no usable answer. Every one of these is treated as transient: the last
/// good addresses are kept within the grace.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Transient {
    /// No answer within `timeout_ms`, on every try.
    #[error("timed out")]
    Timeout,
    /// The server answered SERVFAIL.
    #[error("SERVFAIL")]
    ServFail,
    /// The server answered REFUSED.
    #[error("REFUSED")]
    Refused,
    /// Anything else: another response code, a network error, or a resolver that could not
    /// be set up (the text says which).
    #[error("{0}")]
    Other(String),
}

/// What this run's query for one family of one name found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<A> {
    /// Addresses, and the smallest TTL of the answer in seconds. An empty list counts as
    /// [`Answer::NoRecords`].
    Addrs(Vec<A>, u32),
    /// NXDOMAIN: the name does not exist.
    NxDomain,
    /// The name exists but has no record of this type (NOERROR with no answer).
    NoRecords,
    /// No usable answer.
    Failed(Transient),
}

/// This run's answers for one name, one per family: the input of [`classify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fresh {
    /// The A query.
    pub v4: Answer<Ipv4Addr>,
    /// The AAAA query.
    pub v6: Answer<Ipv6Addr>,
}

// ---------------------------------------------------------------------------------------
// Cache

/// What is remembered about one family of one name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyEntry<A> {
    /// The addresses of the last answer that had any, sorted. Emptied by NXDOMAIN or no
    /// records, and when a transient failure outlasts the grace.
    #[serde(default = "Vec::new")]
    pub addrs: Vec<A>,
    /// When this family last resolved to addresses (kept after they are emptied, for
    /// reports).
    #[serde(default, with = "time_opt")]
    pub resolved_at: Option<DateTime<Utc>>,
    /// The TTL of that answer, seconds (`None` when `addrs` is empty).
    #[serde(default)]
    pub ttl_s: Option<u32>,
}

impl<A> Default for FamilyEntry<A> {
    fn default() -> Self {
        FamilyEntry {
            addrs: Vec::new(),
            resolved_at: None,
            ttl_s: None,
        }
    }
}

/// The last problem a name had, and when. It stays after the name recovers (it is
/// history); [`NameResult::state`] says how the name is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// When it happened.
    #[serde(with = "time")]
    pub at: DateTime<Utc>,
    /// What happened, e.g. "A and AAAA: timed out" or "does not resolve (NXDOMAIN)".
    pub error: String,
}

/// What is remembered about one name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The A side.
    #[serde(default)]
    pub v4: FamilyEntry<Ipv4Addr>,
    /// The AAAA side.
    #[serde(default)]
    pub v6: FamilyEntry<Ipv6Addr>,
    /// The name's last problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
}

/// The resolution cache, `STATE_DIR/dns-cache.json`: what every name last resolved to, so a
/// transient DNS failure can keep the last good addresses for `stale_grace_s`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cache {
    version: u32,
    names: BTreeMap<Fqdn, CacheEntry>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            version: CACHE_VERSION,
            names: BTreeMap::new(),
        }
    }
}

impl Cache {
    /// The cache file in the state folder.
    pub fn path(paths: &Paths) -> PathBuf {
        paths.state_dir.join(CACHE_FILE)
    }

    /// Loads the cache. A missing file is an empty cache; an unreadable or corrupt one is an
    /// empty cache plus a warning to show (never an error: the cache only refines the
    /// result).
    pub fn load(paths: &Paths) -> (Cache, Option<String>) {
        let path = Cache::path(paths);
        let consequence = "starting with an empty DNS cache: names that fail to resolve now \
                           have no earlier addresses to keep";
        match read_optional(&path) {
            Ok(None) => (Cache::default(), None),
            Ok(Some(text)) => match Cache::parse(&text) {
                Ok(cache) => (cache, None),
                Err(e) => (
                    Cache::default(),
                    Some(format!("{}: {e}; {consequence}", path.display())),
                ),
            },
            Err(e) => (
                Cache::default(),
                Some(format!("{}; {consequence}", crate::error_chain(&e))),
            ),
        }
    }

    fn parse(text: &str) -> Result<Cache, String> {
        let cache: Cache =
            serde_json::from_str(text).map_err(|e| format!("corrupt DNS cache ({e})"))?;
        if cache.version != CACHE_VERSION {
            return Err(format!(
                "DNS cache version {} is not the supported {CACHE_VERSION}",
                cache.version
            ));
        }
        Ok(cache)
    }

    /// The JSON text of the file.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("the cache serialises");
        s.push('\n');
        s
    }

    /// Writes the cache atomically ([`write_atomic`]). The caller holds the [`StoreLock`].
    pub fn save(&self, paths: &Paths, _lock: &StoreLock) -> Result<(), StoreError> {
        write_atomic(&Cache::path(paths), self.to_json().as_bytes(), 0o644)
    }

    /// Forgets every name not in `names` (names no account uses any more).
    pub fn retain_names(&mut self, names: &BTreeSet<Fqdn>) {
        self.names.retain(|name, _| names.contains(name));
    }

    /// What is remembered about `name`.
    pub fn get(&self, name: &Fqdn) -> Option<&CacheEntry> {
        self.names.get(name)
    }

    /// Remembers `entry` for `name`, replacing what was there.
    pub fn insert(&mut self, name: Fqdn, entry: CacheEntry) {
        self.names.insert(name, entry);
    }

    /// Every remembered name, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&Fqdn, &CacheEntry)> {
        self.names.iter()
    }

    /// How many names are remembered.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no name is remembered.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

// ---------------------------------------------------------------------------------------
// Results

/// How a name stands after a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NameState {
    /// Every address in use resolved in this run.
    Ok,
    /// Some addresses in use are kept from an earlier run because DNS failed transiently.
    Stale {
        /// When the kept addresses last resolved (the older one if both families are
        /// kept); they are dropped once `stale_grace_s` has passed since then.
        #[serde(serialize_with = "time::serialize")]
        since: DateTime<Utc>,
        /// What failed, e.g. "A: SERVFAIL" or "A and AAAA: timed out".
        error: String,
    },
    /// The name has no usable address and is left out of the ruleset.
    LeftOut {
        /// Why, e.g. "does not resolve (NXDOMAIN)".
        reason: String,
    },
}

impl fmt::Display for NameState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameState::Ok => f.write_str("ok"),
            NameState::Stale { since, error } => {
                write!(f, "stale since {} ({error})", human_time(*since))
            }
            NameState::LeftOut { reason } => write!(f, "left out: {reason}"),
        }
    }
}

/// The outcome for one name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameResult {
    /// The name.
    pub name: Fqdn,
    /// IPv4 addresses in use now (fresh or kept), sorted.
    pub v4: Vec<Ipv4Addr>,
    /// IPv6 addresses in use now (fresh or kept), sorted.
    pub v6: Vec<Ipv6Addr>,
    /// Ok, stale or left out.
    #[serde(flatten)]
    pub state: NameState,
    /// When the name last resolved to addresses (this run's time when it did now; `None` if
    /// it never has).
    #[serde(serialize_with = "time_opt::serialize")]
    pub resolved_at: Option<DateTime<Utc>>,
}

impl NameResult {
    /// Every address in use, IPv4 first.
    pub fn addrs(&self) -> Vec<IpAddr> {
        self.v4
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(self.v6.iter().map(|a| IpAddr::V6(*a)))
            .collect()
    }
}

/// The outcome of [`resolve_all`].
#[derive(Debug, Clone)]
pub struct Resolution {
    /// Every name asked, with its addresses and state.
    pub names: BTreeMap<Fqdn, NameResult>,
    /// How long resolving took.
    pub elapsed: Duration,
}

impl Resolution {
    /// The addresses usable in the ruleset (fresh and kept within the grace), for
    /// `compile::Resolved`; names without addresses are absent.
    pub fn usable(&self) -> BTreeMap<Fqdn, Vec<IpAddr>> {
        self.names
            .iter()
            .filter_map(|(name, r)| {
                let addrs = r.addrs();
                (!addrs.is_empty()).then(|| (name.clone(), addrs))
            })
            .collect()
    }

    /// The names that are stale or left out.
    pub fn degraded(&self) -> impl Iterator<Item = &NameResult> {
        self.names.values().filter(|r| r.state != NameState::Ok)
    }

    /// The names left out of the ruleset.
    pub fn left_out(&self) -> impl Iterator<Item = &NameResult> {
        self.names
            .values()
            .filter(|r| matches!(r.state, NameState::LeftOut { .. }))
    }
}

// ---------------------------------------------------------------------------------------
// Policy

/// The outcome of the policy for one family of one name: what it contributes to the
/// ruleset, and why.
enum FamilyOutcome<A> {
    /// Addresses from this run.
    Fresh(Vec<A>),
    /// NXDOMAIN or no records: nothing.
    Negative,
    /// A transient failure, the remembered addresses kept.
    Kept {
        addrs: Vec<A>,
        since: DateTime<Utc>,
        error: Transient,
    },
    /// A transient failure and nothing to keep; `dropped` is when the addresses dropped now
    /// (grace over) had resolved.
    Lost {
        error: Transient,
        dropped: Option<DateTime<Utc>>,
    },
}

impl<A: Clone> FamilyOutcome<A> {
    fn addrs(&self) -> Vec<A> {
        match self {
            FamilyOutcome::Fresh(a) | FamilyOutcome::Kept { addrs: a, .. } => a.clone(),
            FamilyOutcome::Negative | FamilyOutcome::Lost { .. } => Vec::new(),
        }
    }

    fn failure(&self) -> Option<&Transient> {
        match self {
            FamilyOutcome::Kept { error, .. } | FamilyOutcome::Lost { error, .. } => Some(error),
            _ => None,
        }
    }

    fn kept_since(&self) -> Option<DateTime<Utc>> {
        match self {
            FamilyOutcome::Kept { since, .. } => Some(*since),
            _ => None,
        }
    }

    fn dropped(&self) -> Option<DateTime<Utc>> {
        match self {
            FamilyOutcome::Lost { dropped, .. } => *dropped,
            _ => None,
        }
    }
}

/// The policy for one family: this run's answer and what was remembered → what to remember
/// and what the family contributes. `name_gone`: the other family said NXDOMAIN.
fn judge_family<A: Clone + Ord>(
    answer: &Answer<A>,
    cached: &FamilyEntry<A>,
    name_gone: bool,
    now: DateTime<Utc>,
    grace: TimeDelta,
) -> (FamilyEntry<A>, FamilyOutcome<A>) {
    let forget = || FamilyEntry {
        addrs: Vec::new(),
        resolved_at: cached.resolved_at,
        ttl_s: None,
    };
    match answer {
        Answer::Addrs(addrs, ttl) if !addrs.is_empty() => {
            let mut addrs = addrs.clone();
            addrs.sort();
            addrs.dedup();
            let entry = FamilyEntry {
                addrs: addrs.clone(),
                resolved_at: Some(now),
                ttl_s: Some(*ttl),
            };
            (entry, FamilyOutcome::Fresh(addrs))
        }
        Answer::Addrs(..) | Answer::NoRecords | Answer::NxDomain => (forget(), FamilyOutcome::Negative),
        Answer::Failed(error) => {
            let mut entry = cached.clone();
            // A time in the future means the clock was set back since: count the grace
            // from now rather than keep the addresses until the clock catches up.
            if entry.resolved_at.is_some_and(|t| t > now) {
                entry.resolved_at = Some(now);
            }
            match entry.resolved_at {
                Some(since) if !entry.addrs.is_empty() && !name_gone && now - since < grace => {
                    let addrs = entry.addrs.clone();
                    let error = error.clone();
                    (
                        entry,
                        FamilyOutcome::Kept {
                            addrs,
                            since,
                            error,
                        },
                    )
                }
                _ => {
                    let dropped = if entry.addrs.is_empty() {
                        None
                    } else {
                        entry.resolved_at
                    };
                    entry.addrs.clear();
                    entry.ttl_s = None;
                    let error = error.clone();
                    (entry, FamilyOutcome::Lost { error, dropped })
                }
            }
        }
    }
}

/// "A: SERVFAIL", "A and AAAA: timed out", "A: SERVFAIL; AAAA: timed out".
fn describe_failures(v4: Option<&Transient>, v6: Option<&Transient>) -> String {
    match (v4, v6) {
        (Some(a), Some(b)) if a == b => format!("A and AAAA: {a}"),
        (Some(a), Some(b)) => format!("A: {a}; AAAA: {b}"),
        (Some(a), None) => format!("A: {a}"),
        (None, Some(b)) => format!("AAAA: {b}"),
        (None, None) => String::new(),
    }
}

fn human_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The whole policy for one name, without I/O: this run's answers, what the cache remembers
/// (`None` for a name never seen), the time of the run and the grace → the entry to remember
/// and the result. See the module documentation for the rules.
pub fn classify(
    name: &Fqdn,
    fresh: &Fresh,
    cached: Option<&CacheEntry>,
    now: DateTime<Utc>,
    grace: Duration,
) -> (CacheEntry, NameResult) {
    let empty = CacheEntry::default();
    let cached = cached.unwrap_or(&empty);
    let grace = TimeDelta::from_std(grace).unwrap_or(TimeDelta::MAX);
    let name_gone = fresh.v4 == Answer::NxDomain || fresh.v6 == Answer::NxDomain;
    let (e4, j4) = judge_family(&fresh.v4, &cached.v4, name_gone, now, grace);
    let (e6, j6) = judge_family(&fresh.v6, &cached.v6, name_gone, now, grace);
    let (v4, v6) = (j4.addrs(), j6.addrs());
    let failures = describe_failures(j4.failure(), j6.failure());
    let kept_since = j4.kept_since().into_iter().chain(j6.kept_since()).min();

    let state = if let Some(since) = kept_since {
        NameState::Stale {
            since,
            error: failures.clone(),
        }
    } else if !v4.is_empty() || !v6.is_empty() {
        NameState::Ok
    } else if name_gone {
        NameState::LeftOut {
            reason: "does not resolve (NXDOMAIN)".into(),
        }
    } else if failures.is_empty() {
        debug_assert!(matches!(j4, FamilyOutcome::Negative));
        NameState::LeftOut {
            reason: "does not resolve (no A/AAAA records)".into(),
        }
    } else {
        let dropped = j4.dropped().into_iter().chain(j6.dropped()).max();
        let reason = match dropped {
            Some(t) => format!(
                "DNS failing ({failures}); the addresses that resolved at {} were dropped \
                 after the {} s grace",
                human_time(t),
                grace.num_seconds()
            ),
            None if e4.resolved_at.is_none() && e6.resolved_at.is_none() => {
                format!("DNS failing ({failures}); it has never resolved")
            }
            None => format!("DNS failing ({failures}); no earlier addresses to keep"),
        };
        NameState::LeftOut { reason }
    };

    let problem = match &state {
        NameState::Ok => (!failures.is_empty()).then_some(failures),
        NameState::Stale { error, .. } => Some(error.clone()),
        NameState::LeftOut { reason } => Some(reason.clone()),
    };
    let resolved_at = e4.resolved_at.max(e6.resolved_at);
    let entry = CacheEntry {
        v4: e4,
        v6: e6,
        last_error: problem
            .map(|error| LastError { at: now, error })
            .or_else(|| cached.last_error.clone()),
    };
    let result = NameResult {
        name: name.clone(),
        v4,
        v6,
        state,
        resolved_at,
    };
    (entry, result)
}

/// What the cache says about `names`, without asking DNS: the addresses the last run left in
/// use and the state it left them in. `status` compares this view with the kernel.
pub fn from_cache(names: &BTreeSet<Fqdn>, cache: &Cache) -> Resolution {
    let mut out = BTreeMap::new();
    for name in names {
        let entry = cache.get(name).cloned().unwrap_or_default();
        let resolved_at = entry.v4.resolved_at.max(entry.v6.resolved_at);
        let has_addrs = !entry.v4.addrs.is_empty() || !entry.v6.addrs.is_empty();
        let failing = entry
            .last_error
            .as_ref()
            .filter(|e| resolved_at.is_none_or(|r| e.at > r));
        let state = match (has_addrs, failing) {
            (true, None) => NameState::Ok,
            (true, Some(e)) => NameState::Stale {
                since: resolved_at.unwrap_or(e.at),
                error: e.error.clone(),
            },
            (false, Some(e)) => NameState::LeftOut {
                reason: e.error.clone(),
            },
            (false, None) => NameState::LeftOut {
                reason: "not resolved yet (run restart or ipchecker)".into(),
            },
        };
        out.insert(
            name.clone(),
            NameResult {
                name: name.clone(),
                v4: entry.v4.addrs.clone(),
                v6: entry.v6.addrs.clone(),
                state,
                resolved_at,
            },
        );
    }
    Resolution {
        names: out,
        elapsed: Duration::ZERO,
    }
}

// ---------------------------------------------------------------------------------------
// Resolver

/// Why the resolver could not be set up. Every name then fails with this text as a
/// transient error.
#[derive(Debug, Error)]
pub enum SetupError {
    /// The system resolver configuration could not be read.
    #[error("cannot read {path}")]
    ReadResolvConf {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The system resolver configuration names no usable name server.
    #[error("{path}: {message}")]
    ResolvConf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The async runtime could not start.
    #[error("cannot start the DNS resolver")]
    Runtime(#[source] io::Error),
    /// hickory refused the configuration.
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
}

/// The name servers of a resolv.conf file (only its `nameserver` lines matter).
fn system_nameservers(path: &Path) -> Result<Vec<NameServerConfig>, SetupError> {
    let data = std::fs::read(path).map_err(|source| SetupError::ReadResolvConf {
        path: path.to_owned(),
        source,
    })?;
    let (config, _opts) = hickory_resolver::system_conf::parse_resolv_conf(data).map_err(|e| {
        SetupError::ResolvConf {
            path: path.to_owned(),
            message: e.to_string(),
        }
    })?;
    let servers = config.name_servers().to_vec();
    if servers.is_empty() {
        return Err(SetupError::ResolvConf {
            path: path.to_owned(),
            message: "no nameserver line".into(),
        });
    }
    Ok(servers)
}

/// A configured name server: UDP, and TCP for truncated answers, on its port.
fn nameserver(addr: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

/// The hickory options for `settings` and `servers` name servers. `attempts` counts every
/// try, hickory's counts the retries after the first. Up to three servers are asked at once
/// (resolv.conf has at most three): hickory gives all servers of one try `timeout` together,
/// so with its default of two at a time a third server would never be reached when the first
/// two are down.
fn resolver_opts(settings: &ResolverSettings, servers: usize) -> ResolverOpts {
    let mut opts = ResolverOpts::default();
    opts.timeout = per_try_timeout(settings);
    opts.attempts = settings.attempts.max(1) as usize - 1;
    opts.num_concurrent_reqs = servers.clamp(2, 3);
    opts.use_hosts_file = ResolveHosts::Never;
    opts.ndots = 0;
    opts.cache_size = 0;
    opts
}

fn per_try_timeout(settings: &ResolverSettings) -> Duration {
    Duration::from_millis(settings.timeout_ms.max(1))
}

fn build_resolver(
    settings: &ResolverSettings,
    resolv_conf: &Path,
) -> Result<TokioResolver, SetupError> {
    let servers = if settings.nameservers.is_empty() {
        system_nameservers(resolv_conf)?
    } else {
        settings
            .nameservers
            .iter()
            .copied()
            .map(nameserver)
            .collect()
    };
    let opts = resolver_opts(settings, servers.len());
    Resolver::builder_with_config(
        ResolverConfig::from_name_servers(servers),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .build()
    .map_err(|e| SetupError::Resolver(e.to_string()))
}

/// The failure class of a hickory error. NXDOMAIN is a kind of "no records found", so it is
/// tested first.
fn answer_of_error<A>(e: &NetError) -> Answer<A> {
    if e.is_nx_domain() {
        return Answer::NxDomain;
    }
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr))
            if nr.response_code == ResponseCode::NoError =>
        {
            Answer::NoRecords
        }
        NetError::Timeout => Answer::Failed(Transient::Timeout),
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => {
            Answer::Failed(Transient::ServFail)
        }
        NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => {
            Answer::Failed(Transient::Refused)
        }
        NetError::Dns(DnsError::NoRecordsFound(nr)) => Answer::Failed(Transient::Other(format!(
            "{} with no records",
            nr.response_code
        ))),
        other => Answer::Failed(Transient::Other(other.to_string())),
    }
}

/// The addresses of one family in a lookup (CNAMEs followed by the server), with the
/// smallest TTL of the answer.
fn answer_of_lookup<A>(lookup: &Lookup, pick: impl Fn(&RData) -> Option<A>) -> Answer<A> {
    let addrs: Vec<A> = lookup
        .answers()
        .iter()
        .filter_map(|r| pick(&r.data))
        .collect();
    if addrs.is_empty() {
        return Answer::NoRecords;
    }
    let ttl = lookup.answers().iter().map(|r| r.ttl).min().unwrap_or(0);
    Answer::Addrs(addrs, ttl)
}

/// What one query returned, before it is judged per family.
enum Raw {
    Lookup(Lookup),
    Error(NetError),
    Failed(Transient),
}

impl Raw {
    fn answer<A>(&self, pick: impl Fn(&RData) -> Option<A>) -> Answer<A> {
        match self {
            Raw::Lookup(l) => answer_of_lookup(l, pick),
            Raw::Error(e) => answer_of_error(e),
            Raw::Failed(t) => Answer::Failed(t.clone()),
        }
    }
}

impl Fresh {
    /// Both families failed with `error`.
    fn failed(error: Transient) -> Fresh {
        Fresh {
            v4: Answer::Failed(error.clone()),
            v6: Answer::Failed(error),
        }
    }
}

/// Runs every query, at most [`MAX_QUERIES_IN_FLIGHT`] at once, each bounded in time, and
/// all of them together bounded by the same budget: a query not answered by then (queued
/// behind a dead name server) counts as a timeout, so its name keeps its last addresses
/// within the stale grace and the run ends in about one timeout × attempts however many
/// names wait on a silent server (BENCHMARKS.md, scenario 3).
async fn query_all(
    resolver: &TokioResolver,
    names: &[&Fqdn],
    settings: &ResolverSettings,
) -> Vec<Fresh> {
    // hickory itself gives up after timeout × attempts; this is the net over that.
    let budget = per_try_timeout(settings) * (settings.attempts.max(1) + 1);
    let deadline = tokio::time::sleep(budget);
    let jobs = names
        .iter()
        .enumerate()
        .flat_map(|(i, n)| [(i, *n, QueryType::A), (i, *n, QueryType::Aaaa)]);
    let raws: Vec<(usize, QueryType, Raw)> = stream::iter(jobs)
        .map(|(i, name, qtype)| async move {
            let raw = match Name::from_ascii(format!("{name}.")) {
                Err(e) => Raw::Failed(Transient::Other(format!("invalid name: {e}"))),
                Ok(absolute) => {
                    let query = async {
                        match qtype {
                            QueryType::A => resolver.ipv4_lookup(absolute).await,
                            QueryType::Aaaa => resolver.ipv6_lookup(absolute).await,
                        }
                    };
                    match tokio::time::timeout(budget, query).await {
                        Ok(Ok(lookup)) => Raw::Lookup(lookup),
                        Ok(Err(e)) => Raw::Error(e),
                        Err(_) => Raw::Failed(Transient::Timeout),
                    }
                }
            };
            (i, qtype, raw)
        })
        .buffer_unordered(MAX_QUERIES_IN_FLIGHT)
        .take_until(deadline)
        .collect()
        .await;

    let mut fresh = vec![Fresh::failed(Transient::Timeout); names.len()];
    for (i, qtype, raw) in raws {
        match qtype {
            QueryType::A => {
                fresh[i].v4 = raw.answer(|d| match d {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
            }
            QueryType::Aaaa => {
                fresh[i].v6 = raw.answer(|d| match d {
                    RData::AAAA(a) => Some(a.0),
                    _ => None,
                })
            }
        }
    }
    fresh
}

/// Asks DNS for every name; when the resolver cannot be set up every name gets that error.
fn fresh_answers(names: &[&Fqdn], settings: &ResolverSettings, resolv_conf: &Path) -> Vec<Fresh> {
    let all_failed =
        |e: SetupError| vec![Fresh::failed(Transient::Other(crate::error_chain(&e))); names.len()];
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return all_failed(SetupError::Runtime(e)),
    };
    runtime.block_on(async {
        match build_resolver(settings, resolv_conf) {
            Ok(resolver) => query_all(&resolver, names, settings).await,
            Err(e) => all_failed(e),
        }
    })
}

/// Resolves every name (blocking: it runs its own single-threaded tokio runtime, on a
/// helper thread when called from inside another runtime), updates `cache` with what was
/// learnt and classifies each name at `now` ([`classify`]). Names in `cache` but not in
/// `names` are left alone (see [`Cache::retain_names`]).
pub fn resolve_all(
    names: &BTreeSet<Fqdn>,
    settings: &ResolverSettings,
    cache: &mut Cache,
    now: DateTime<Utc>,
) -> Resolution {
    resolve_all_with(names, settings, Path::new(SYSTEM_RESOLV_CONF), cache, now)
}

/// [`resolve_all`], reading the system resolver configuration from `resolv_conf` instead of
/// [`SYSTEM_RESOLV_CONF`] when `settings.nameservers` is empty.
pub fn resolve_all_with(
    names: &BTreeSet<Fqdn>,
    settings: &ResolverSettings,
    resolv_conf: &Path,
    cache: &mut Cache,
    now: DateTime<Utc>,
) -> Resolution {
    let start = Instant::now();
    let list: Vec<&Fqdn> = names.iter().collect();
    let fresh = if list.is_empty() {
        Vec::new()
    } else if tokio::runtime::Handle::try_current().is_ok() {
        // block_on inside a runtime would panic: resolve on a thread of our own.
        std::thread::scope(|s| {
            s.spawn(|| fresh_answers(&list, settings, resolv_conf))
                .join()
                .unwrap_or_else(|_| {
                    vec![Fresh::failed(Transient::Other("the resolver crashed".into())); list.len()]
                })
        })
    } else {
        fresh_answers(&list, settings, resolv_conf)
    };
    let grace = Duration::from_secs(settings.stale_grace_s);
    let mut results = BTreeMap::new();
    for (name, fresh) in list.into_iter().zip(fresh) {
        let (entry, result) = classify(name, &fresh, cache.get(name), now, grace);
        cache.insert(name.clone(), entry);
        results.insert(name.clone(), result);
    }
    Resolution {
        names: results,
        elapsed: start.elapsed(),
    }
}

// ---------------------------------------------------------------------------------------
// Time stamps as RFC 3339 text (chrono's serde feature is not enabled).

mod time {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| serde::de::Error::custom(format!("invalid time {s:?}: {e}")))
    }
}

mod time_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::time::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::time")] DateTime<Utc>);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::net::NoRecords;
    use hickory_resolver::proto::op::Query;
    use hickory_resolver::proto::rr::RecordType;

    fn name(s: &str) -> Fqdn {
        s.parse().unwrap()
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    const HOUR: Duration = Duration::from_secs(3600);
    const T0: &str = "2026-11-22T10:00:00Z";

    fn fresh(a: Answer<Ipv4Addr>, aaaa: Answer<Ipv6Addr>) -> Fresh {
        Fresh { v4: a, v6: aaaa }
    }

    fn timeout<A>() -> Answer<A> {
        Answer::Failed(Transient::Timeout)
    }

    fn servfail<A>() -> Answer<A> {
        Answer::Failed(Transient::ServFail)
    }

    /// The cache entry after `sip.example.test` resolved to both families at T0.
    fn resolved_at_t0() -> CacheEntry {
        let (entry, r) = classify(
            &name("sip.example.test"),
            &fresh(
                Answer::Addrs(vec![v4("192.0.2.10")], 60),
                Answer::Addrs(vec![v6("2001:db8::10")], 30),
            ),
            None,
            t(T0),
            HOUR,
        );
        assert_eq!(r.state, NameState::Ok);
        entry
    }

    #[test]
    fn fresh_addresses_are_ok_sorted_and_remembered() {
        let (entry, r) = classify(
            &name("sip.example.test"),
            &fresh(
                Answer::Addrs(
                    vec![v4("198.51.100.9"), v4("192.0.2.10"), v4("192.0.2.10")],
                    60,
                ),
                Answer::Addrs(vec![v6("2001:db8::10")], 30),
            ),
            None,
            t(T0),
            HOUR,
        );
        assert_eq!(r.state, NameState::Ok);
        assert_eq!(r.v4, [v4("192.0.2.10"), v4("198.51.100.9")]);
        assert_eq!(r.v6, [v6("2001:db8::10")]);
        assert_eq!(r.resolved_at, Some(t(T0)));
        assert_eq!(entry.v4.addrs, r.v4);
        assert_eq!(entry.v4.ttl_s, Some(60));
        assert_eq!(entry.v6.ttl_s, Some(30));
        assert_eq!(entry.v4.resolved_at, Some(t(T0)));
        assert_eq!(entry.last_error, None);
    }

    #[test]
    fn aaaa_no_records_with_a_ok_is_ok() {
        let (entry, r) = classify(
            &name("v4only.example.test"),
            &fresh(Answer::Addrs(vec![v4("192.0.2.20")], 60), Answer::NoRecords),
            None,
            t(T0),
            HOUR,
        );
        assert_eq!(r.state, NameState::Ok);
        assert_eq!(r.v4, [v4("192.0.2.20")]);
        assert!(r.v6.is_empty());
        assert!(entry.v6.addrs.is_empty());
        assert_eq!(entry.last_error, None, "no AAAA record is not a problem");
    }

    #[test]
    fn nxdomain_removes_the_remembered_addresses() {
        let cached = resolved_at_t0();
        let now = t("2026-11-22T10:05:00Z");
        let (entry, r) = classify(
            &name("sip.example.test"),
            &fresh(Answer::NxDomain, Answer::NxDomain),
            Some(&cached),
            now,
            HOUR,
        );
        assert_eq!(
            r.state,
            NameState::LeftOut {
                reason: "does not resolve (NXDOMAIN)".into()
            }
        );
        assert!(r.addrs().is_empty());
        assert!(entry.v4.addrs.is_empty() && entry.v6.addrs.is_empty());
        assert_eq!(entry.v4.ttl_s, None);
        assert_eq!(r.resolved_at, Some(t(T0)), "history: when it last resolved");
        assert_eq!(
            entry.last_error,
            Some(LastError {
                at: now,
                error: "does not resolve (NXDOMAIN)".into()
            })
        );
        // A timeout afterwards does not bring the forgotten addresses back.
        let (_, r) = classify(
            &name("sip.example.test"),
            &fresh(timeout(), timeout()),
            Some(&entry),
            now + TimeDelta::seconds(60),
            HOUR,
        );
        assert!(
            matches!(r.state, NameState::LeftOut { .. }),
            "{:?}",
            r.state
        );
        assert!(r.addrs().is_empty());
    }

    #[test]
    fn no_records_in_both_families_is_left_out() {
        let (_, r) = classify(
            &name("mail.example.test"),
            &fresh(Answer::NoRecords, Answer::NoRecords),
            Some(&resolved_at_t0()),
            t("2026-11-22T10:05:00Z"),
            HOUR,
        );
        assert_eq!(
            r.state,
            NameState::LeftOut {
                reason: "does not resolve (no A/AAAA records)".into()
            }
        );
        assert!(r.addrs().is_empty());
        // An answer with no address (e.g. only a CNAME) counts as no records.
        let (_, r) = classify(
            &name("mail.example.test"),
            &fresh(Answer::Addrs(vec![], 60), Answer::NoRecords),
            None,
            t(T0),
            HOUR,
        );
        assert!(matches!(r.state, NameState::LeftOut { .. }));
    }

    #[test]
    fn timeout_keeps_addresses_within_the_grace() {
        let cached = resolved_at_t0();
        let now = t("2026-11-22T10:59:59Z");
        let (entry, r) = classify(
            &name("sip.example.test"),
            &fresh(timeout(), timeout()),
            Some(&cached),
            now,
            HOUR,
        );
        assert_eq!(
            r.state,
            NameState::Stale {
                since: t(T0),
                error: "A and AAAA: timed out".into()
            }
        );
        assert_eq!(r.v4, [v4("192.0.2.10")]);
        assert_eq!(r.v6, [v6("2001:db8::10")]);
        assert_eq!(r.resolved_at, Some(t(T0)));
        assert_eq!(
            entry.v4, cached.v4,
            "kept addresses keep their time and TTL"
        );
        assert_eq!(entry.v6, cached.v6);
        assert_eq!(entry.last_error.unwrap().error, "A and AAAA: timed out");
        assert_eq!(
            r.state.to_string(),
            "stale since 2026-11-22 10:00:00 UTC (A and AAAA: timed out)"
        );
    }

    #[test]
    fn timeout_drops_addresses_once_the_grace_has_passed() {
        let cached = resolved_at_t0();
        let now = t("2026-11-22T11:00:00Z"); // exactly one grace later
        let (entry, r) = classify(
            &name("sip.example.test"),
            &fresh(servfail(), servfail()),
            Some(&cached),
            now,
            HOUR,
        );
        assert!(r.addrs().is_empty());
        assert_eq!(
            r.state,
            NameState::LeftOut {
                reason: "DNS failing (A and AAAA: SERVFAIL); the addresses that resolved at \
                         2026-11-22 10:00:00 UTC were dropped after the 3600 s grace"
                    .into()
            }
        );
        assert!(entry.v4.addrs.is_empty() && entry.v6.addrs.is_empty());
        assert_eq!(entry.v4.resolved_at, Some(t(T0)));
        // And the next failure does not resurrect them.
        let (_, r) = classify(
            &name("sip.example.test"),
            &fresh(servfail(), servfail()),
            Some(&entry),
            now + TimeDelta::seconds(1),
            HOUR,
        );
        assert_eq!(
            r.state,
            NameState::LeftOut {
                reason: "DNS failing (A and AAAA: SERVFAIL); no earlier addresses to keep".into()
            }
        );
    }

    #[test]
    fn zero_grace_never_keeps() {
        let (_, r) = classify(
            &name("sip.example.test"),
            &fresh(timeout(), timeout()),
            Some(&resolved_at_t0()),
            t(T0),
            Duration::ZERO,
        );
        assert!(r.addrs().is_empty());
        assert!(matches!(r.state, NameState::LeftOut { .. }));
    }

    #[test]
    fn never_resolved_contributes_nothing() {
        let (entry, r) = classify(
            &name("new.example.test"),
            &fresh(timeout(), Answer::Failed(Transient::Refused)),
            None,
            t(T0),
            HOUR,
        );
        assert!(r.addrs().is_empty());
        assert_eq!(r.resolved_at, None);
        assert_eq!(
            r.state,
            NameState::LeftOut {
                reason: "DNS failing (A: timed out; AAAA: REFUSED); it has never resolved".into()
            }
        );
        assert_eq!(entry.v4, FamilyEntry::default());
    }

    #[test]
    fn one_family_failing_keeps_that_family_only() {
        let cached = resolved_at_t0();
        let now = t("2026-11-22T10:30:00Z");
        let (entry, r) = classify(
            &name("sip.example.test"),
            &fresh(servfail(), Answer::Addrs(vec![v6("2001:db8::11")], 30)),
            Some(&cached),
            now,
            HOUR,
        );
        assert_eq!(
            r.state,
            NameState::Stale {
                since: t(T0),
                error: "A: SERVFAIL".into()
            }
        );
        assert_eq!(r.v4, [v4("192.0.2.10")], "kept");
        assert_eq!(r.v6, [v6("2001:db8::11")], "fresh");
        assert_eq!(r.resolved_at, Some(now));
        assert_eq!(entry.v4.resolved_at, Some(t(T0)));
        assert_eq!(entry.v6.resolved_at, Some(now));

        // The failing family with a negative other family: stale on its own.
        let (_, r) = classify(
            &name("sip.example.test"),
            &fresh(servfail(), Answer::NoRecords),
            Some(&cached),
            now,
            HOUR,
        );
        assert_eq!(r.v4, [v4("192.0.2.10")]);
        assert!(r.v6.is_empty(), "AAAA said no records: its addresses go");
        assert!(matches!(r.state, NameState::Stale { .. }));
    }

    #[test]
    fn failing_family_without_history_next_to_a_fresh_one_is_ok() {
        let (entry, r) = classify(
            &name("sip.example.test"),
            &fresh(Answer::Addrs(vec![v4("192.0.2.10")], 60), servfail()),
            None,
            t(T0),
            HOUR,
        );
        assert_eq!(r.state, NameState::Ok);
        assert_eq!(r.addrs(), [IpAddr::V4(v4("192.0.2.10"))]);
        assert_eq!(entry.last_error.unwrap().error, "AAAA: SERVFAIL");
    }

    #[test]
    fn stale_since_is_the_older_family() {
        let mut cached = resolved_at_t0();
        cached.v6.resolved_at = Some(t("2026-11-22T09:30:00Z"));
        let (_, r) = classify(
            &name("sip.example.test"),
            &fresh(timeout(), servfail()),
            Some(&cached),
            t("2026-11-22T10:10:00Z"),
            HOUR,
        );
        assert_eq!(
            r.state,
            NameState::Stale {
                since: t("2026-11-22T09:30:00Z"),
                error: "A: timed out; AAAA: SERVFAIL".into()
            }
        );
        // Twenty-one minutes later the AAAA side is past the grace, the A side is not.
        let (entry, r) = classify(
            &name("sip.example.test"),
            &fresh(timeout(), servfail()),
            Some(&cached),
            t("2026-11-22T10:31:00Z"),
            HOUR,
        );
        assert_eq!(r.v4, [v4("192.0.2.10")]);
        assert!(r.v6.is_empty());
        assert!(entry.v6.addrs.is_empty());
        assert_eq!(
            r.state,
            NameState::Stale {
                since: t(T0),
                error: "A: timed out; AAAA: SERVFAIL".into()
            }
        );
    }

    #[test]
    fn nxdomain_in_one_family_means_the_name_is_gone() {
        let (entry, r) = classify(
            &name("sip.example.test"),
            &fresh(Answer::NxDomain, timeout()),
            Some(&resolved_at_t0()),
            t("2026-11-22T10:01:00Z"),
            HOUR,
        );
        assert!(
            r.addrs().is_empty(),
            "stale AAAA is not kept for a name that is gone"
        );
        assert!(entry.v6.addrs.is_empty());
        assert_eq!(
            r.state,
            NameState::LeftOut {
                reason: "does not resolve (NXDOMAIN)".into()
            }
        );
        // Servers disagreeing: fresh addresses of the other family are still used.
        let (_, r) = classify(
            &name("sip.example.test"),
            &fresh(Answer::NxDomain, Answer::Addrs(vec![v6("2001:db8::12")], 5)),
            None,
            t(T0),
            HOUR,
        );
        assert_eq!(r.state, NameState::Ok);
        assert_eq!(r.v6, [v6("2001:db8::12")]);
    }

    #[test]
    fn a_clock_set_back_counts_the_grace_from_now() {
        let cached = resolved_at_t0();
        let now = t("2026-11-22T08:00:00Z"); // two hours before the last resolution
        let (entry, r) = classify(
            &name("sip.example.test"),
            &fresh(timeout(), timeout()),
            Some(&cached),
            now,
            HOUR,
        );
        assert_eq!(r.v4, [v4("192.0.2.10")]);
        assert_eq!(entry.v4.resolved_at, Some(now));
        let (_, r) = classify(
            &name("sip.example.test"),
            &fresh(timeout(), timeout()),
            Some(&entry),
            now + TimeDelta::seconds(3600),
            HOUR,
        );
        assert!(
            r.addrs().is_empty(),
            "dropped one grace after the clock went back"
        );
    }

    #[test]
    fn last_error_is_history() {
        let (entry, _) = classify(
            &name("sip.example.test"),
            &fresh(timeout(), timeout()),
            Some(&resolved_at_t0()),
            t("2026-11-22T10:01:00Z"),
            HOUR,
        );
        let (entry, r) = classify(
            &name("sip.example.test"),
            &fresh(Answer::Addrs(vec![v4("192.0.2.10")], 60), Answer::NoRecords),
            Some(&entry),
            t("2026-11-22T10:02:00Z"),
            HOUR,
        );
        assert_eq!(r.state, NameState::Ok);
        assert_eq!(
            entry.last_error,
            Some(LastError {
                at: t("2026-11-22T10:01:00Z"),
                error: "A and AAAA: timed out".into()
            })
        );
    }

    #[test]
    fn error_classes() {
        let q = || Query::query(Name::from_ascii("x.example.test.").unwrap(), RecordType::A);
        let nx = NetError::from(DnsError::NoRecordsFound(NoRecords::new(
            q(),
            ResponseCode::NXDomain,
        )));
        assert!(
            nx.is_no_records_found(),
            "why NXDOMAIN must be tested first"
        );
        assert_eq!(answer_of_error::<Ipv4Addr>(&nx), Answer::NxDomain);
        let nodata = NetError::from(DnsError::NoRecordsFound(NoRecords::new(
            q(),
            ResponseCode::NoError,
        )));
        assert_eq!(answer_of_error::<Ipv4Addr>(&nodata), Answer::NoRecords);
        assert_eq!(answer_of_error::<Ipv4Addr>(&NetError::Timeout), timeout());
        let sf = NetError::from(DnsError::ResponseCode(ResponseCode::ServFail));
        assert_eq!(answer_of_error::<Ipv4Addr>(&sf), servfail());
        let refused = NetError::from(DnsError::ResponseCode(ResponseCode::Refused));
        assert_eq!(
            answer_of_error::<Ipv4Addr>(&refused),
            Answer::Failed(Transient::Refused)
        );
        let io = NetError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(matches!(
            answer_of_error::<Ipv4Addr>(&io),
            Answer::Failed(Transient::Other(_))
        ));
    }

    #[test]
    fn resolver_options() {
        let mut s = ResolverSettings {
            timeout_ms: 750,
            attempts: 1,
            ..ResolverSettings::default()
        };
        let o = resolver_opts(&s, 1);
        assert_eq!(
            o.attempts, 0,
            "hickory counts retries; 1 attempt = no retry"
        );
        assert_eq!(o.timeout, Duration::from_millis(750));
        assert_eq!(o.cache_size, 0);
        assert_eq!(o.ndots, 0);
        assert!(matches!(o.use_hosts_file, ResolveHosts::Never));
        s.attempts = 3;
        assert_eq!(resolver_opts(&s, 1).attempts, 2);
        s.attempts = 0;
        assert_eq!(resolver_opts(&s, 1).attempts, 0);
        assert_eq!(resolver_opts(&s, 3).num_concurrent_reqs, 3);
        assert_eq!(resolver_opts(&s, 5).num_concurrent_reqs, 3);
        let ns = nameserver("192.0.2.53:5353".parse().unwrap());
        assert_eq!(ns.ip, "192.0.2.53".parse::<IpAddr>().unwrap());
        assert!(ns.connections.iter().all(|c| c.port == 5353));
    }

    #[test]
    fn resolv_conf_reading() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.conf");
        let e = system_nameservers(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot read ") && e.contains("missing.conf"),
            "{e}"
        );
        let empty = dir.path().join("empty.conf");
        std::fs::write(&empty, "search example.test\noptions ndots:5\n").unwrap();
        let e = system_nameservers(&empty).unwrap_err().to_string();
        assert!(e.contains("empty.conf: "), "{e}");
        let good = dir.path().join("resolv.conf");
        std::fs::write(
            &good,
            "# comment\nsearch example.test\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n",
        )
        .unwrap();
        let servers = system_nameservers(&good).unwrap();
        let ips: Vec<String> = servers.iter().map(|s| s.ip.to_string()).collect();
        assert_eq!(ips, ["192.0.2.53", "2001:db8::53"]);
    }

    #[test]
    fn unreadable_resolv_conf_is_a_transient_error_for_every_name() {
        let dir = tempfile::tempdir().unwrap();
        let names: BTreeSet<Fqdn> = [name("sip.example.test"), name("new.example.test")].into();
        let mut cache = Cache::default();
        cache.insert(name("sip.example.test"), resolved_at_t0());
        let settings = ResolverSettings::default();
        let now = t("2026-11-22T10:10:00Z");
        let res = resolve_all_with(
            &names,
            &settings,
            &dir.path().join("resolv.conf"),
            &mut cache,
            now,
        );
        assert!(res.elapsed < Duration::from_secs(1));
        let sip = &res.names[&name("sip.example.test")];
        match &sip.state {
            NameState::Stale { since, error } => {
                assert_eq!(*since, t(T0));
                assert!(error.starts_with("A and AAAA: cannot read "), "{error}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(sip.v4, [v4("192.0.2.10")]);
        let new = &res.names[&name("new.example.test")];
        assert!(
            matches!(&new.state, NameState::LeftOut { reason } if reason.contains("never resolved"))
        );
        assert_eq!(res.degraded().count(), 2);
        assert_eq!(res.left_out().count(), 1);
        let usable = res.usable();
        assert_eq!(usable.len(), 1);
        assert_eq!(
            usable[&name("sip.example.test")],
            [IpAddr::V4(v4("192.0.2.10")), IpAddr::V6(v6("2001:db8::10"))]
        );
        assert!(cache.get(&name("new.example.test")).is_some());
    }

    #[test]
    fn resolve_all_inside_a_runtime_does_not_panic() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let names: BTreeSet<Fqdn> = [name("sip.example.test")].into();
        let res = rt.block_on(async {
            resolve_all_with(
                &names,
                &ResolverSettings::default(),
                &dir.path().join("nothing"),
                &mut Cache::default(),
                t(T0),
            )
        });
        assert!(matches!(
            res.names[&name("sip.example.test")].state,
            NameState::LeftOut { .. }
        ));
        let empty = resolve_all(
            &BTreeSet::new(),
            &ResolverSettings::default(),
            &mut Cache::default(),
            t(T0),
        );
        assert!(empty.names.is_empty());
    }

    fn paths(dir: &Path) -> Paths {
        Paths {
            config_dir: dir.join("etc"),
            state_dir: dir.join("state"),
            share_dir: dir.join("share"),
        }
    }

    #[test]
    fn cache_round_trip_and_retain() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let (cache, warning) = Cache::load(&p);
        assert!(
            cache.is_empty() && warning.is_none(),
            "missing file = empty cache"
        );
        let mut cache = Cache::default();
        cache.insert(name("sip.example.test"), resolved_at_t0());
        let (gone, _) = classify(
            &name("gone.example.test"),
            &fresh(Answer::NxDomain, Answer::NxDomain),
            None,
            t("2026-11-22T10:00:00.123456789Z"),
            HOUR,
        );
        cache.insert(name("gone.example.test"), gone);
        let lock = StoreLock::acquire(&p, |_| {}).unwrap();
        cache.save(&p, &lock).unwrap();
        let (loaded, warning) = Cache::load(&p);
        assert_eq!(warning, None);
        assert_eq!(loaded, cache);
        let text = std::fs::read_to_string(Cache::path(&p)).unwrap();
        assert!(
            text.contains("\"resolved_at\": \"2026-11-22T10:00:00Z\""),
            "{text}"
        );
        assert!(text.contains("\"192.0.2.10\""), "{text}");

        let mut retained = loaded;
        retained.retain_names(&[name("sip.example.test")].into());
        assert_eq!(retained.len(), 1);
        assert!(retained.get(&name("gone.example.test")).is_none());
    }

    #[test]
    fn corrupt_cache_is_empty_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        std::fs::create_dir_all(&p.state_dir).unwrap();
        for (text, want) in [
            ("{\"version\": 1, \"names\": {", "corrupt DNS cache"),
            ("[]", "corrupt DNS cache"),
            (
                "{\"version\": 1, \"names\": {\"not a name\": {}}}",
                "corrupt DNS cache",
            ),
            ("{\"version\": 99, \"names\": {}}", "version 99"),
            (
                "{\"version\": 1, \"names\": {\"a.example\": {\"v4\": {\"addrs\": [\"x\"]}}}}",
                "corrupt DNS cache",
            ),
        ] {
            std::fs::write(Cache::path(&p), text).unwrap();
            let (cache, warning) = Cache::load(&p);
            assert!(cache.is_empty());
            let warning = warning.unwrap();
            assert!(
                warning.contains("dns-cache.json: ") && warning.contains(want),
                "{text}: {warning}"
            );
            assert!(
                warning.contains("starting with an empty DNS cache"),
                "{warning}"
            );
        }
        // A minimal hand-written entry loads, with defaults for what is missing.
        std::fs::write(
            Cache::path(&p),
            "{\"version\": 1, \"names\": {\"a.example\": {\"v4\": {\"addrs\": [\"192.0.2.1\"]}}}}",
        )
        .unwrap();
        let (cache, warning) = Cache::load(&p);
        assert_eq!(warning, None);
        let e = cache.get(&name("a.example")).unwrap();
        assert_eq!(e.v4.addrs, [v4("192.0.2.1")]);
        assert_eq!(e.v4.resolved_at, None);
    }

    #[test]
    fn name_result_json() {
        let (_, r) = classify(
            &name("sip.example.test"),
            &fresh(timeout(), timeout()),
            Some(&resolved_at_t0()),
            t("2026-11-22T10:01:00Z"),
            HOUR,
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            "{\"name\":\"sip.example.test\",\"v4\":[\"192.0.2.10\"],\"v6\":[\"2001:db8::10\"],\
             \"state\":\"stale\",\"since\":\"2026-11-22T10:00:00Z\",\"error\":\"A and AAAA: timed out\",\
             \"resolved_at\":\"2026-11-22T10:00:00Z\"}"
        );
        let (_, r) = classify(
            &name("new.example.test"),
            &fresh(Answer::NxDomain, Answer::NxDomain),
            None,
            t(T0),
            HOUR,
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            "{\"name\":\"new.example.test\",\"v4\":[],\"v6\":[],\"state\":\"left_out\",\
             \"reason\":\"does not resolve (NXDOMAIN)\",\"resolved_at\":null}"
        );
        assert_eq!(r.state.to_string(), "left out: does not resolve (NXDOMAIN)");
    }
}
