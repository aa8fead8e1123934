//! What the unit tests of the resolve parts share: short constructors and a name that
//! resolved at a known time.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Answer, CacheEntry, Fresh, NameState, Transient, classify};
use crate::model::Fqdn;
use crate::store::Paths;

pub(super) fn name(s: &str) -> Fqdn {
    s.parse().unwrap()
}

pub(super) fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

pub(super) fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub(super) fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

pub(super) const HOUR: Duration = Duration::from_secs(3600);
pub(super) const T0: &str = "2026-11-22T10:00:00Z";

pub(super) fn fresh(a: Answer<Ipv4Addr>, aaaa: Answer<Ipv6Addr>) -> Fresh {
    Fresh { v4: a, v6: aaaa }
}

pub(super) fn timeout<A>() -> Answer<A> {
    Answer::Failed(Transient::Timeout)
}

pub(super) fn servfail<A>() -> Answer<A> {
    Answer::Failed(Transient::ServFail)
}

/// The cache entry after `sip.example.test` resolved to both families at T0.
pub(super) fn resolved_at_t0() -> CacheEntry {
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

pub(super) fn paths(dir: &Path) -> Paths {
    Paths {
        config_dir: dir.join("etc"),
        state_dir: dir.join("state"),
        share_dir: dir.join("share"),
    }
}
