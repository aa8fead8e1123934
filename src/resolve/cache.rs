//! The cache: the state file of the last results, so that a transient DNS failure can keep a
//! name's last good addresses for `stale_grace_s`.
//!
//! [`Cache`] is `STATE_DIR/dns-cache.json`: per name, per family the addresses of the last
//! answer, when they resolved and their TTL, and the name's last error with its time. The
//! caller loads it, lets [`resolve_all`](super::resolve_all) update it, and saves it under
//! the store lock. A corrupt file is reported as a warning and treated as empty.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::Fqdn;
use crate::store::{self, Paths, StoreError, StoreLock, read_optional};

/// File name of the cache in the state folder.
pub const CACHE_FILE: &str = "dns-cache.json";
/// Version of the cache file format.
const CACHE_VERSION: u32 = 1;

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
/// history); [`NameResult::state`](super::NameResult::state) says how the name is now.
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
    /// The kind of problem `ipchecker` last reported for this name
    /// ([`NameResult::problem_kind`](super::NameResult::problem_kind)); `None` when it last
    /// found the name fine. ipchecker runs from cron, which mails whatever it prints: a name
    /// that stays broken is reported when it breaks (or its problem changes kind) and when
    /// it recovers, not at every run. Kept as it is by every other command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<String>,
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

    /// Writes the cache atomically ([`store::write_atomic_unless_same`]: not when it holds
    /// this already). The caller holds the [`StoreLock`].
    pub fn save(&self, paths: &Paths, _lock: &StoreLock) -> Result<(), StoreError> {
        store::write_atomic_unless_same(&Cache::path(paths), self.to_json().as_bytes(), 0o644)
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
// Time stamps as RFC 3339 text (chrono's serde feature is not enabled).

pub(super) mod time {
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

pub(super) mod time_opt {
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
    use super::super::test_support::*;
    use super::super::{Answer, classify};
    use super::*;
    use crate::store::StoreLock;

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
}
