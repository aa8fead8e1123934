//! `STATE_DIR/dynamic-sets.json`: the elements of the dynamic sets (bans, admissions,
//! grants) with their absolute expiry, so they survive a table created from nothing.
//!
//! The elements of a dynamic set are kernel state: `pbxwall ban`, fail2ban, the guard's
//! rules and REGISTER admissions add them with timeouts, and a full apply keeps them (the
//! set is neither flushed nor re-created, see [`crate::ruleset::Dynamic`]). What the kernel
//! cannot keep is a table that is gone: a reboot, or someone deleting it. So every command
//! that builds under the lock ([`sync`]: restart, ipchecker, every change) reads the live
//! elements of every persisted dynamic set, merges them into this record (the later expiry
//! wins; expired entries go) and writes it atomically; the elements recorded but not live
//! are handed to the apply as [`crate::ruleset::Dynamic::restore`], each with the time it
//! has left, and added in the same transaction as the rest of the table (re-adding a live
//! element changes nothing). `pbxwall unban` and its kind remove entries here and in the
//! kernel under the same lock ([`DynamicState::remove`]).
//!
//! A missing or corrupt file means "nothing recorded" (with a warning), never an error.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ruleset::{Ruleset, TimedElement};
use crate::store::{Paths, StoreError, StoreLock};

/// File name of the record in the state folder.
pub const DYNAMIC_FILE: &str = "dynamic-sets.json";

/// Every persisted dynamic set's elements, by set name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamicState {
    /// Set name → its elements, sorted by address.
    #[serde(default)]
    pub sets: BTreeMap<String, Vec<Recorded>>,
}

/// One recorded element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// The address.
    pub addr: IpAddr,
    /// When it expires (RFC 3339, UTC, milliseconds); `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Its comment (`manual: ...`, `f2b:sshd`, `guard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl Recorded {
    /// The expiry as a time; `None` for "never" (an unreadable time counts as expired).
    fn expiry(&self) -> Option<Result<DateTime<Utc>, ()>> {
        self.expires.as_ref().map(|t| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ())
        })
    }

    /// Time left at `now`: `Some(None)` for never, `None` when expired.
    fn left(&self, now: DateTime<Utc>) -> Option<Option<Duration>> {
        match self.expiry() {
            None => Some(None),
            Some(Err(())) => None,
            Some(Ok(t)) => (t - now).to_std().ok().filter(|d| !d.is_zero()).map(Some),
        }
    }
}

/// An absolute expiry `left` after `now`, as recorded.
fn expiry_text(now: DateTime<Utc>, left: Duration) -> String {
    let t = now + chrono::Duration::from_std(left).unwrap_or(chrono::Duration::MAX);
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

impl DynamicState {
    /// Loads the record; a missing file is empty, a corrupt one empty with a warning.
    pub fn load(paths: &Paths) -> (DynamicState, Option<String>) {
        crate::state::load_json(paths, DYNAMIC_FILE)
    }

    /// Writes the record atomically, unless the file holds it already; the caller holds the
    /// lock. Compact JSON, not pretty-printed: with 100,000 bans the pretty file was 13 MB,
    /// written and fsynced by every ban.
    pub fn save(&self, paths: &Paths, _lock: &StoreLock) -> Result<(), StoreError> {
        let path = paths.state_dir.join(DYNAMIC_FILE);
        let text = serde_json::to_vec(self).map_err(|e| StoreError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        crate::store::write_state_unless_same(&path, &text)
    }

    /// [`DynamicState::save`] in two steps: the record written to a temporary file beside
    /// it and synced now, put in place by [`crate::store::Staged::commit`] (a bulk ban
    /// writes it while the kernel works through the batch, and commits once it is live).
    pub fn stage(&self, paths: &Paths) -> Result<crate::store::Staged, StoreError> {
        let path = paths.state_dir.join(DYNAMIC_FILE);
        let mut staged = crate::store::Staged::create(&path)?;
        serde_json::to_writer(staged.writer(), self).map_err(|e| StoreError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        staged.sync()?;
        Ok(staged)
    }

    /// Merges what set `set` holds live at `now` into the record: a live element's expiry
    /// is the later of the two (a REGISTER renews an admission in the kernel), its comment
    /// the live one when it has one; recorded elements not live stay until they expire.
    /// Expired entries are dropped.
    pub fn merge_live(&mut self, set: &str, live: &[TimedElement], now: DateTime<Utc>) {
        let entries = self.sets.entry(set.to_owned()).or_default();
        let mut by_addr: BTreeMap<IpAddr, Recorded> = entries
            .drain(..)
            .filter(|r| r.left(now).is_some())
            .map(|r| (r.addr, r))
            .collect();
        for e in live {
            let addr = e.addr.to_canonical();
            let live_rec = Recorded {
                addr,
                expires: e.expires.map(|left| expiry_text(now, left)),
                comment: e.comment.clone(),
            };
            match by_addr.get_mut(&addr) {
                None => {
                    by_addr.insert(addr, live_rec);
                }
                Some(old) => {
                    let later = match (old.left(now), live_rec.left(now)) {
                        (Some(None), _) | (_, Some(None)) => None,
                        (Some(Some(a)), Some(Some(b))) => Some(a.max(b)),
                        (_, Some(Some(b))) => Some(b),
                        (Some(Some(a)), None) => Some(a),
                        (None, None) => Some(Duration::ZERO),
                    };
                    old.expires = later.map(|l| expiry_text(now, l));
                    if live_rec.comment.is_some() {
                        old.comment = live_rec.comment;
                    }
                }
            }
        }
        *entries = by_addr.into_values().collect();
        if entries.is_empty() {
            self.sets.remove(set);
        }
    }

    /// Records elements just added to `set` at `now` (a ban): they replace any entry of
    /// the same address.
    pub fn record(&mut self, set: &str, added: &[TimedElement], now: DateTime<Utc>) {
        self.record_each(
            set,
            added
                .iter()
                .map(|e| (e.addr, e.timeout, e.comment.as_deref())),
            now,
        );
    }

    /// [`DynamicState::record`] of `addrs`, all with the same timeout and comment (a bulk
    /// ban).
    pub fn record_all(
        &mut self,
        set: &str,
        addrs: &[IpAddr],
        timeout: Option<Duration>,
        comment: Option<&str>,
        now: DateTime<Utc>,
    ) {
        self.record_each(set, addrs.iter().map(|a| (*a, timeout, comment)), now);
    }

    /// [`DynamicState::record`] of `(address, timeout, comment)`s.
    fn record_each<'c>(
        &mut self,
        set: &str,
        added: impl Iterator<Item = (IpAddr, Option<Duration>, Option<&'c str>)>,
        now: DateTime<Utc>,
    ) {
        let entries = self.sets.entry(set.to_owned()).or_default();
        // One pass and one sort, not one search per element: a bulk ban of 100,000
        // addresses went through a tree map here, a third of the time the kernel takes
        // to insert them.
        let mut fresh: Vec<Recorded> = Vec::with_capacity(added.size_hint().0);
        // A bulk ban gives every element the same timeout: its expiry is formatted once.
        let mut last: Option<(Duration, String)> = None;
        for (addr, timeout, comment) in added {
            let addr = addr.to_canonical();
            let expires = timeout.map(|t| match &last {
                Some((l, text)) if *l == t => text.clone(),
                _ => {
                    let text = expiry_text(now, t);
                    last = Some((t, text.clone()));
                    text
                }
            });
            fresh.push(Recorded {
                addr,
                expires,
                comment: comment.map(str::to_owned),
            });
        }
        // Stable: of two elements of one address, the later one is kept.
        fresh.sort_by_key(|r| r.addr);
        let mut kept: Vec<Recorded> = Vec::with_capacity(fresh.len());
        for r in fresh {
            match kept.last_mut() {
                Some(prev) if prev.addr == r.addr => *prev = r,
                _ => kept.push(r),
            }
        }
        if entries.is_empty() {
            *entries = kept;
            return;
        }
        entries.retain(|r| kept.binary_search_by_key(&r.addr, |k| k.addr).is_err());
        entries.extend(kept);
        entries.sort_by_key(|r| r.addr);
    }

    /// Forgets `addrs` in `set` (unban, revoke).
    pub fn remove(&mut self, set: &str, addrs: &[IpAddr]) {
        if let Some(entries) = self.sets.get_mut(set) {
            let gone: std::collections::BTreeSet<&IpAddr> = addrs.iter().collect();
            entries.retain(|r| !gone.contains(&r.addr));
            if entries.is_empty() {
                self.sets.remove(set);
            }
        }
    }

    /// The elements of `set` to restore at `now`, each with the time it has left as its
    /// timeout; expired entries are left out.
    pub fn restore_list(&self, set: &str, now: DateTime<Utc>) -> Vec<TimedElement> {
        self.sets
            .get(set)
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let left = r.left(now)?;
                Some(TimedElement::new(r.addr, left, r.comment.clone()))
            })
            .collect()
    }
}

/// Records what the kernel's persisted dynamic sets ([`crate::compile::PERSISTED_SETS`])
/// hold now, without reading the configuration: `ipchecker --record-only`, which the boot
/// unit runs at shutdown so that bans, admissions and grants the kernel made since the last
/// command survive a reboot. Returns how many live elements were read. A set that cannot
/// be read is an error, and then nothing is written.
pub fn record_live(paths: &Paths, lock: &StoreLock) -> anyhow::Result<usize> {
    use anyhow::Context as _;
    let (mut state, _) = DynamicState::load(paths);
    let now = Utc::now();
    let mut count = 0;
    for base in crate::compile::PERSISTED_SETS {
        for family in [crate::addrset::Family::V4, crate::addrset::Family::V6] {
            let name = crate::compile::set_name(base, family);
            let live = crate::nft::netlink::list_timed_elements(&name)
                .with_context(|| format!("cannot read set {name}"))?
                .unwrap_or_default();
            count += live.len();
            state.merge_live(&name, &live, now);
        }
    }
    state
        .save(paths, lock)
        .context("cannot record the dynamic sets' elements")?;
    Ok(count)
}

/// Reads the live elements of every persisted dynamic set of `ruleset`, merges them into
/// the record, saves it, and fills each set's [`crate::ruleset::Dynamic::restore`] with
/// the recorded elements (time left as timeout). Returns warnings (a set that could not be
/// read, a record that could not be written): never an error, since bans must not stop an
/// apply that removes access or restores a missing table.
pub fn sync(paths: &Paths, lock: &StoreLock, ruleset: &mut Ruleset) -> Vec<String> {
    let mut warnings = Vec::new();
    let (mut state, warning) = DynamicState::load(paths);
    warnings.extend(warning);
    let now = Utc::now();
    let mut read_all = true;
    for set in &ruleset.sets {
        if !set.dynamic.as_ref().is_some_and(|d| d.persist) {
            continue;
        }
        match crate::nft::netlink::list_timed_elements(&set.name) {
            Ok(Some(live)) => state.merge_live(&set.name, &live, now),
            Ok(None) => state.merge_live(&set.name, &[], now),
            Err(e) => {
                read_all = false;
                warnings.push(format!(
                    "could not read the elements of set {}: {}",
                    set.name,
                    crate::error_chain(&e)
                ));
            }
        }
    }
    if read_all && let Err(e) = state.save(paths, lock) {
        warnings.push(format!(
            "could not record the dynamic sets' elements: {}",
            crate::error_chain(&e)
        ));
    }
    for set in &mut ruleset.sets {
        if let Some(d) = set.dynamic.as_mut().filter(|d| d.persist) {
            d.restore = state.restore_list(&set.name, now);
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (address, timeout in seconds, comment) of each element, for comparisons.
    fn rows(list: &[TimedElement]) -> Vec<(String, Option<u64>, Option<String>)> {
        list.iter()
            .map(|e| {
                (
                    e.addr.to_string(),
                    e.timeout.map(|d| d.as_secs()),
                    e.comment.clone(),
                )
            })
            .collect()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn recording_replaces_by_address_and_keeps_the_last_of_a_repeat() {
        let now = at("2026-01-01T00:00:00Z");
        let mut s = DynamicState::default();
        s.record(
            "ban_v4",
            &[
                el("192.0.2.9", Some(60), Some("old")),
                el("192.0.2.1", None, None),
            ],
            now,
        );
        // A hand-edited record may hold an address twice: both stay unless banned again.
        s.sets.get_mut("ban_v4").unwrap().push(Recorded {
            addr: "192.0.2.1".parse().unwrap(),
            expires: None,
            comment: Some("twice".into()),
        });
        let addrs: Vec<IpAddr> = ["192.0.2.9", "192.0.2.5", "192.0.2.9"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        s.record_all(
            "ban_v4",
            &addrs,
            Some(Duration::from_secs(3600)),
            Some("new"),
            now,
        );
        s.record("ban_v4", &[el("192.0.2.5", Some(10), Some("last"))], now);
        let got: Vec<(String, Option<String>, Option<String>)> = s.sets["ban_v4"]
            .iter()
            .map(|r| (r.addr.to_string(), r.expires.clone(), r.comment.clone()))
            .collect();
        let t = |s: &str| Some(s.to_owned());
        assert_eq!(
            got,
            [
                ("192.0.2.1".into(), None, None),
                ("192.0.2.1".into(), None, t("twice")),
                ("192.0.2.5".into(), t("2026-01-01T00:00:10.000Z"), t("last")),
                ("192.0.2.9".into(), t("2026-01-01T01:00:00.000Z"), t("new")),
            ]
        );
    }

    fn el(addr: &str, left_s: Option<u64>, comment: Option<&str>) -> TimedElement {
        TimedElement {
            addr: addr.parse().unwrap(),
            timeout: left_s.map(Duration::from_secs),
            expires: left_s.map(Duration::from_secs),
            comment: comment.map(str::to_owned),
        }
    }

    #[test]
    fn merge_keeps_the_later_expiry_and_drops_expired_entries() {
        let t0 = at("2026-12-03T06:00:00Z");
        let mut s = DynamicState::default();
        s.record(
            "ban_v4",
            &[
                el("192.0.2.1", Some(600), Some("manual")),
                el("192.0.2.2", Some(10), None),
            ],
            t0,
        );
        let t1 = at("2026-12-03T06:01:00Z");
        // 192.0.2.1 live with 60 s left (older than recorded), 192.0.2.3 new from the guard;
        // 192.0.2.2 expired in the record.
        s.merge_live(
            "ban_v4",
            &[
                el("192.0.2.1", Some(60), None),
                el("192.0.2.3", Some(3600), Some("guard")),
            ],
            t1,
        );
        let got = rows(&s.restore_list("ban_v4", t1));
        assert_eq!(
            got,
            [
                ("192.0.2.1".into(), Some(540), Some("manual".into())),
                ("192.0.2.3".into(), Some(3600), Some("guard".into())),
            ]
        );
        s.remove("ban_v4", &["192.0.2.1".parse().unwrap()]);
        assert_eq!(s.restore_list("ban_v4", t1).len(), 1);
        assert!(
            s.restore_list("ban_v4", at("2026-12-03T08:00:00Z"))
                .is_empty()
        );
    }

    #[test]
    fn record_replaces_the_same_address_and_keeps_the_others() {
        let t0 = at("2026-12-03T06:00:00Z");
        let mut s = DynamicState::default();
        s.record(
            "ban_v6",
            &[
                el("2001:db8::2", Some(60), None),
                el("2001:db8::1", Some(60), Some("first")),
            ],
            t0,
        );
        // A bulk ban: one address again (the later one in the list wins), one new.
        s.record(
            "ban_v6",
            &[
                el("2001:db8::1", Some(600), Some("again")),
                el("2001:db8::3", Some(60), None),
                el("2001:db8::1", Some(900), Some("last")),
            ],
            t0,
        );
        let got = rows(&s.restore_list("ban_v6", t0));
        assert_eq!(
            got,
            [
                ("2001:db8::1".into(), Some(900), Some("last".into())),
                ("2001:db8::2".into(), Some(60), None),
                ("2001:db8::3".into(), Some(60), None),
            ]
        );
        s.remove(
            "ban_v6",
            &[
                "2001:db8::1".parse().unwrap(),
                "2001:db8::3".parse().unwrap(),
            ],
        );
        assert_eq!(s.restore_list("ban_v6", t0).len(), 1);
    }

    #[test]
    fn round_trip_and_corrupt_file() {
        let t = tempfile::tempdir().unwrap();
        let paths = Paths {
            config_dir: t.path().join("etc"),
            state_dir: t.path().join("state"),
            share_dir: t.path().join("share"),
        };
        let lock = StoreLock::acquire(&paths, |_| {}).unwrap();
        let mut s = DynamicState::default();
        s.record("ban_v6", &[el("2001:db8::1", Some(5), None)], Utc::now());
        s.save(&paths, &lock).unwrap();
        assert_eq!(DynamicState::load(&paths).0, s);
        // Staged: the old record stays until the commit; dropped, nothing changes.
        let mut s2 = s.clone();
        s2.record("ban_v4", &[el("192.0.2.1", Some(5), None)], Utc::now());
        drop(s2.stage(&paths).unwrap());
        assert_eq!(DynamicState::load(&paths).0, s);
        let staged = s2.stage(&paths).unwrap();
        assert_eq!(DynamicState::load(&paths).0, s);
        staged.commit().unwrap();
        assert_eq!(DynamicState::load(&paths).0, s2);
        let left: Vec<_> = std::fs::read_dir(&paths.state_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".tmp."))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        std::fs::write(paths.state_dir.join(DYNAMIC_FILE), "[").unwrap();
        let (empty, warning) = DynamicState::load(&paths);
        assert_eq!(empty, DynamicState::default());
        assert!(warning.unwrap().contains("starting afresh"));
    }
}
