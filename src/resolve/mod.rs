//! Name resolution: host names → addresses, keeping a name's last good addresses through
//! a passing DNS failure.
//!
//! A name that does not exist (NXDOMAIN) or has no address records loses its addresses at
//! once. A name whose DNS fails only for a while (timeout, SERVFAIL, REFUSED, a network
//! error, a resolver that cannot be set up) keeps the addresses it last resolved to for
//! `[resolver] stale_grace_s` and is reported as stale; after that it is left out. A name
//! without usable addresses never blocks the others: it is left out of the ruleset and
//! everything else is applied.
//!
//! [`resolve_all`] is the entry point, in three parts:
//!
//! - `dns`: asks the name servers for the A and AAAA records of every name, concurrently
//!   and bounded in time ([hickory-resolver]), and sorts each answer into addresses,
//!   NXDOMAIN, no records or a transient failure ([`Fresh`]).
//! - `policy`: judges each name's answers against what it last resolved to ([`classify`],
//!   pure: no I/O, no clock), giving its addresses in use and its [`NameState`].
//! - `cache`: the state file of the last results ([`Cache`], `STATE_DIR/dns-cache.json`),
//!   which the caller loads, lets [`resolve_all`] update and saves under the store lock.
//!
//! [`from_cache`] gives the same view from the cache alone, without asking DNS.
//!
//! [hickory-resolver]: https://docs.rs/hickory-resolver

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::model::{Fqdn, ResolverSettings};

mod cache;
mod dns;
mod policy;
#[cfg(test)]
mod test_support;

pub use cache::{CACHE_FILE, Cache, CacheEntry, FamilyEntry, LastError};
pub use dns::{MAX_QUERIES_IN_FLIGHT, QueryType, SYSTEM_RESOLV_CONF, SetupError};
pub use policy::{Answer, Fresh, NameResult, NameState, Transient, classify, from_cache, screen};

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
        self.names
            .values()
            .filter(|r| r.state != NameState::Ok || !r.notes.is_empty())
    }

    /// The names left out of the ruleset.
    pub fn left_out(&self) -> impl Iterator<Item = &NameResult> {
        self.names
            .values()
            .filter(|r| matches!(r.state, NameState::LeftOut { .. }))
    }
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
    // This run's answers, one per name in `list` order.
    let fresh = dns::ask(&list, settings, resolv_conf);
    // Each name judged against what the cache remembers, and the cache updated with it.
    let grace = Duration::from_secs(settings.stale_grace_s);
    let mut results = BTreeMap::new();
    for (name, mut fresh) in list.into_iter().zip(fresh) {
        let notes = screen(&mut fresh, settings.max_addresses);
        let (entry, mut result) = classify(name, &fresh, cache.get(name), now, grace);
        result.notes = notes;
        cache.insert(name.clone(), entry);
        results.insert(name.clone(), result);
    }
    Resolution {
        names: results,
        elapsed: start.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

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
}
