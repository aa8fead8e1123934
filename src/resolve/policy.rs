//! The failure policy: this run's answers and what a name last resolved to → the addresses
//! it contributes now and how it stands. Pure (no I/O, no clock), in [`classify`].
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
//! [`from_cache`] reads the same states back from the cache alone, for `status`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use thiserror::Error;

use super::Resolution;
use super::cache::{Cache, CacheEntry, FamilyEntry, LastError, time, time_opt};
use crate::model::Fqdn;

// ---------------------------------------------------------------------------------------
// Answers of one run

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

impl Fresh {
    /// Both families failed with `error`.
    pub(super) fn failed(error: Transient) -> Fresh {
        Fresh {
            v4: Answer::Failed(error.clone()),
            v6: Answer::Failed(error),
        }
    }
}

// ---------------------------------------------------------------------------------------
// How a name stands

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

/// Takes out of `fresh` what no answer may bring into the ruleset, whatever the server
/// says, and returns one note per thing taken: special-purpose addresses
/// ([`crate::model::check_unicast`]: loopback, link-local, multicast, IPv4-mapped, ...), and
/// addresses beyond `max` (IPv4 first, each family sorted, so the same answer always keeps
/// the same addresses). A family left with no address counts as having no records.
pub fn screen(fresh: &mut Fresh, max: usize) -> Vec<String> {
    let mut notes = Vec::new();
    let v4 = screen_family(&mut fresh.v4, &mut notes);
    let v6 = screen_family(&mut fresh.v6, &mut notes);
    if v4 + v6 > max {
        notes.push(format!(
            "answered {} addresses, more than [resolver] max_addresses = {max}; only the first {max} are used",
            v4 + v6
        ));
        truncate_family(&mut fresh.v4, max);
        truncate_family(&mut fresh.v6, max.saturating_sub(v4));
    }
    notes
}

/// Drops the special-purpose addresses of one family's answer, sorted and deduplicated;
/// returns how many addresses are left.
fn screen_family<A: Copy + Ord + Into<IpAddr>>(
    answer: &mut Answer<A>,
    notes: &mut Vec<String>,
) -> usize {
    let Answer::Addrs(addrs, _) = answer else {
        return 0;
    };
    addrs.sort();
    addrs.dedup();
    addrs.retain(|a| {
        let ip: IpAddr = (*a).into();
        match crate::model::check_unicast(&ipnet::IpNet::from(ip)) {
            Ok(()) => true,
            Err(kind) => {
                notes.push(format!(
                    "ignored {ip} from DNS: not a unicast source address ({kind})"
                ));
                false
            }
        }
    });
    if addrs.is_empty() {
        *answer = Answer::NoRecords;
        return 0;
    }
    addrs.len()
}

fn truncate_family<A>(answer: &mut Answer<A>, keep: usize) {
    if let Answer::Addrs(addrs, _) = answer {
        addrs.truncate(keep);
        if addrs.is_empty() {
            *answer = Answer::NoRecords;
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
    /// What this run's answer held that was not used ([`screen`]): special-purpose
    /// addresses, addresses beyond `[resolver] max_addresses`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl NameResult {
    /// The kind of problem the name has now, `None` when it has none: "stale", "left out:
    /// does not resolve (NXDOMAIN)", "left out: does not resolve (no A/AAAA records)" or
    /// "left out: DNS failing", then the notes of what its answer held that was not used.
    /// The same for the same kind of trouble from run to run (no times, no detail of which
    /// transient failure it was), so a change of kind can be told from more of the same.
    pub fn problem_kind(&self) -> Option<String> {
        let state = match &self.state {
            NameState::Ok => None,
            NameState::Stale { .. } => Some("stale".to_owned()),
            NameState::LeftOut { reason } if reason.starts_with("does not resolve") => {
                Some(format!("left out: {reason}"))
            }
            NameState::LeftOut { .. } => Some("left out: DNS failing".to_owned()),
        };
        if self.notes.is_empty() {
            return state;
        }
        let notes = self.notes.join("; ");
        Some(match state {
            Some(s) => format!("{s}; {notes}"),
            None => notes,
        })
    }

    /// Every address in use, IPv4 first.
    pub fn addrs(&self) -> Vec<IpAddr> {
        self.v4
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(self.v6.iter().map(|a| IpAddr::V6(*a)))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// The policy

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
        Answer::Addrs(..) | Answer::NoRecords | Answer::NxDomain => {
            (forget(), FamilyOutcome::Negative)
        }
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
        reported: cached.reported.clone(),
    };
    let result = NameResult {
        notes: Vec::new(),
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
                notes: Vec::new(),
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

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn problem_kind_is_the_same_for_more_of_the_same_trouble() {
        let gone = name("gone.example.test");
        let kind = |fresh: Fresh, cached: Option<&CacheEntry>, now: &str| {
            let (entry, r) = classify(&gone, &fresh, cached, t(now), HOUR);
            (entry, r.problem_kind())
        };
        let (entry, nx) = kind(fresh(Answer::NxDomain, Answer::NxDomain), None, T0);
        assert_eq!(nx.as_deref(), Some("left out: does not resolve (NXDOMAIN)"));
        let (_, again) = kind(
            fresh(Answer::NxDomain, Answer::NxDomain),
            Some(&entry),
            "2026-11-22T10:05:00Z",
        );
        assert_eq!(again, nx, "a later run, the same kind");
        // Whichever transient failure it is, left out is one kind.
        let (_, a) = kind(fresh(servfail(), servfail()), None, T0);
        let (_, b) = kind(fresh(timeout(), servfail()), None, T0);
        assert_eq!(a.as_deref(), Some("left out: DNS failing"));
        assert_eq!(a, b);
        // Stale, whatever the time; fine is none; `reported` is carried over.
        let mut cached = resolved_at_t0();
        cached.reported = Some("stale".into());
        let sip = name("sip.example.test");
        let (entry, r) = classify(
            &sip,
            &fresh(servfail(), servfail()),
            Some(&cached),
            t("2026-11-22T10:10:00Z"),
            HOUR,
        );
        assert_eq!(r.problem_kind().as_deref(), Some("stale"));
        assert_eq!(entry.reported.as_deref(), Some("stale"));
        let (_, r) = classify(
            &sip,
            &fresh(Answer::Addrs(vec![v4("192.0.2.10")], 60), Answer::NoRecords),
            Some(&cached),
            t("2026-11-22T10:20:00Z"),
            HOUR,
        );
        assert_eq!(r.problem_kind(), None);
    }

    /// [`classify`] of `sip.example.test`.
    fn classify_sip(
        fresh: &Fresh,
        cached: Option<&CacheEntry>,
        now: DateTime<Utc>,
        grace: Duration,
    ) -> (CacheEntry, NameResult) {
        classify(&name("sip.example.test"), fresh, cached, now, grace)
    }

    /// [`classify_sip`] when the name resolved to both families at T0.
    fn classify_sip_after_t0(
        fresh: &Fresh,
        now: DateTime<Utc>,
        grace: Duration,
    ) -> (CacheEntry, NameResult) {
        classify_sip(fresh, Some(&resolved_at_t0()), now, grace)
    }

    #[test]
    fn screen_drops_special_purpose_addresses_and_caps_the_rest() {
        let mut f = fresh(
            Answer::Addrs(
                vec![
                    v4("192.0.2.9"),
                    v4("127.0.0.1"),
                    v4("0.0.0.0"),
                    v4("224.0.0.1"),
                    v4("255.255.255.255"),
                    v4("169.254.1.1"),
                ],
                60,
            ),
            Answer::Addrs(
                vec![
                    v6("::1"),
                    v6("fe80::1"),
                    v6("ff02::1"),
                    v6("::ffff:192.0.2.8"),
                    v6("::"),
                ],
                60,
            ),
        );
        let notes = screen(&mut f, 16);
        assert_eq!(f.v4, Answer::Addrs(vec![v4("192.0.2.9")], 60));
        assert_eq!(f.v6, Answer::NoRecords, "nothing usable left");
        assert_eq!(notes.len(), 10, "{notes:?}");
        assert!(notes.contains(&"ignored ::ffff:192.0.2.8 from DNS: not a unicast source address (IPv4-mapped IPv6)".to_owned()), "{notes:?}");

        // 3,000 A records: the first 16 in order, IPv4 before IPv6.
        let many: Vec<Ipv4Addr> = (0..3000u32)
            .map(|i| Ipv4Addr::from(u32::from(v4("192.0.2.0")) + i))
            .rev()
            .collect();
        let mut f = fresh(
            Answer::Addrs(many, 60),
            Answer::Addrs(vec![v6("2001:db8::1")], 60),
        );
        let notes = screen(&mut f, 16);
        let Answer::Addrs(kept, _) = &f.v4 else {
            panic!("{f:?}")
        };
        assert_eq!(kept.len(), 16);
        assert_eq!((kept[0], kept[15]), (v4("192.0.2.0"), v4("192.0.2.15")));
        assert_eq!(f.v6, Answer::NoRecords);
        assert_eq!(
            notes,
            [
                "answered 3001 addresses, more than [resolver] max_addresses = 16; only the first 16 are used"
            ]
        );
        let mut f = fresh(
            Answer::Addrs(vec![v4("192.0.2.1")], 60),
            Answer::Addrs(vec![v6("2001:db8::2"), v6("2001:db8::1")], 60),
        );
        assert_eq!(screen(&mut f, 2).len(), 1);
        assert_eq!(f.v6, Answer::Addrs(vec![v6("2001:db8::1")], 60));
        assert!(screen(&mut fresh(Answer::NxDomain, timeout()), 16).is_empty());
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
        let (entry, r) = classify_sip(
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
        let (_, r) = classify_sip(
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
        let (entry, r) = classify_sip(&fresh(timeout(), timeout()), Some(&cached), now, HOUR);
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
        let (entry, r) = classify_sip(&fresh(servfail(), servfail()), Some(&cached), now, HOUR);
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
        let (_, r) = classify_sip(
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
        let (_, r) = classify_sip_after_t0(&fresh(timeout(), timeout()), t(T0), Duration::ZERO);
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
        let (entry, r) = classify_sip(
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
        let (_, r) = classify_sip(
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
        let (entry, r) = classify_sip(
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
        let (_, r) = classify_sip(
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
        let (entry, r) = classify_sip(
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
        let (entry, r) = classify_sip_after_t0(
            &fresh(Answer::NxDomain, timeout()),
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
        let (_, r) = classify_sip(
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
        let (entry, r) = classify_sip(&fresh(timeout(), timeout()), Some(&cached), now, HOUR);
        assert_eq!(r.v4, [v4("192.0.2.10")]);
        assert_eq!(entry.v4.resolved_at, Some(now));
        let (_, r) = classify_sip(
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
        let (entry, _) = classify_sip_after_t0(
            &fresh(timeout(), timeout()),
            t("2026-11-22T10:01:00Z"),
            HOUR,
        );
        let (entry, r) = classify_sip(
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
    fn name_result_json() {
        let (_, r) = classify_sip_after_t0(
            &fresh(timeout(), timeout()),
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
