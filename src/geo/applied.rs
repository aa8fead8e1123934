//! The geo gate as last applied: its ranges and the database they came from, in the state
//! folder (`geo-applied.bin`, and the changes since in `geo-applied.journal`).
//!
//! The base record is what the kernel's base sets `geo_v4`/`geo_v6` hold; with its journal
//! applied it is the gate's ranges, whose difference from the base is in the small sets
//! `geo_added_*`/`geo_removed_*` ([`super::Gate`]).
//!
//! It stands in for the live elements of the gate's sets, which are never read back (see
//! [`crate::nft::netlink::dumps_elements`]): `geo update` computes its delta against it, and
//! a database that cannot be used keeps these ranges. And it is a parse cache: while the
//! database's files and `[geo]` are what they were (path, size, modification time and inode
//! of every file, the country lists: [`source_key`]), the ranges are taken from here instead
//! of parsing the database again. A changed file never matches, so it is never trusted
//! over the file.
//!
//! Base record (little-endian): `PBXWGEO2`, a generation (u64, new on every write), the key
//! (u32 length + bytes), the rows read (u64), the listed countries without ranges (u32
//! length + bytes: codes separated by spaces), then per family a u32 count and the ranges
//! (IPv4: two u32; IPv6: two u128). Anything else is ignored as if the file were absent.
//!
//! Journal: `geo update` does not write the whole record again for a delta of a few
//! thousand elements (9 MiB at 300,000 ranges): it appends to `geo-applied.journal`, which
//! starts with `PBXWGJ01` and the generation of the base record it follows, then entries
//! (u32 length, kind, payload, FNV-1a 64 of kind and payload), each made durable
//! (`fdatasync`) before the next step:
//! - [`PENDING`]: written before a delta goes to the kernel. Last in the journal, it means
//!   the live sets may or may not hold the delta: the record is stale, and the next
//!   `geo update` applies in full.
//! - [`DELTA`]: written once the kernel has the delta: the new key, rows and missing
//!   countries, and per family the ranges removed and added.
//!
//! A journal of another generation (the base was written again) is ignored; a journal with
//! anything that does not read back exactly (a torn append after a crash, a delta that does
//! not fit the ranges) makes the record stale, as does a pending change: the next update
//! applies in full and writes a new base. Every full write of the base removes the journal;
//! once it is a quarter of the base's size ([`Applied::needs_compaction`]), it is written
//! again as one delta from the base ([`Applied::compact_journal`]).

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

use super::{Country, Database, GateBase, GeoSettings};
use crate::addrset::{AddrRange, Family};
use crate::store::{self, Paths, StoreError};

/// File name in the state folder.
pub const APPLIED_FILE: &str = "geo-applied.bin";
/// File name of the journal of changes since the base record, in the state folder.
pub const JOURNAL_FILE: &str = "geo-applied.journal";
const MAGIC: &[u8; 8] = b"PBXWGEO2";
const JOURNAL_MAGIC: &[u8; 8] = b"PBXWGJ01";
/// Journal entry: a delta is about to go to the kernel.
pub const PENDING: u8 = 1;
/// Journal entry: the kernel has the delta.
pub const DELTA: u8 = 2;

/// The gate last applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// [`source_key`] of the database and settings the ranges came from.
    pub key: String,
    /// Rows the database had.
    pub rows: u64,
    /// Listed countries without ranges in it.
    pub missing: Vec<Country>,
    /// IPv4 ranges, sorted, merged.
    pub v4: Vec<AddrRange>,
    /// IPv6 ranges, sorted, merged.
    pub v6: Vec<AddrRange>,
    /// The base record's ranges when the journal changed them: what the kernel's base sets
    /// `geo_v4`/`geo_v6` hold, beside `geo_added_*`/`geo_removed_*` holding the difference
    /// ([`super::Gate`]). `None`: the base is `v4`/`v6`.
    pub base: Option<Box<GateBase>>,
    /// Generation of the base record (a journal of another one is not this record's).
    pub generation: u64,
    /// Size of the base record and of its journal, bytes.
    pub sizes: (u64, u64),
}

/// What changed in the gate's sets: the ranges removed and added, per family, each sorted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delta {
    /// IPv4 ranges removed.
    pub v4_removed: Vec<AddrRange>,
    /// IPv4 ranges added.
    pub v4_added: Vec<AddrRange>,
    /// IPv6 ranges removed.
    pub v6_removed: Vec<AddrRange>,
    /// IPv6 ranges added.
    pub v6_added: Vec<AddrRange>,
}

/// What identifies the ranges of `[geo]`: the country lists, and the path, size,
/// modification time (ns) and inode of every file of the database. `None` when a file
/// cannot be looked at.
pub fn source_key(db: &Database, settings: &GeoSettings) -> Option<String> {
    let mut key = format!("allow={};deny=", join(&settings.allow));
    key.push_str(&join(&settings.deny));
    for f in &db.files {
        let m = std::fs::metadata(f).ok()?;
        key.push_str(&format!(
            "\n{}\t{}\t{}.{}\t{}",
            f.display(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ino()
        ));
    }
    Some(key)
}

/// [`source_key`] of the database `[geo]` names; `None` when it cannot be opened.
pub fn source_key_of(settings: &GeoSettings) -> Option<String> {
    let path = settings.database.as_deref()?;
    source_key(&Database::open(path).ok()?, settings)
}

fn join(v: &[Country]) -> String {
    v.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn base_path(paths: &Paths) -> PathBuf {
    paths.state_dir.join(APPLIED_FILE)
}

fn journal_path(paths: &Paths) -> PathBuf {
    paths.state_dir.join(JOURNAL_FILE)
}

/// A generation different from any before, in practice: the clock's nanoseconds and the
/// process, mixed with std's random hash keys.
fn new_generation() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(nanos);
    h.write_u32(std::process::id());
    h.finish() | 1
}

impl Applied {
    /// The record in the state folder with its journal applied; `None` when absent,
    /// unreadable, or stale (a change was under way when the last command stopped).
    pub fn load(paths: &Paths) -> Option<Applied> {
        let bytes = std::fs::read(base_path(paths)).ok()?;
        let mut a = decode(&bytes)?;
        a.sizes.0 = bytes.len() as u64;
        drop(bytes);
        match std::fs::read(journal_path(paths)) {
            Ok(j) => {
                a.sizes.1 = j.len() as u64;
                replay(a, &j)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(a),
            Err(_) => None,
        }
    }

    /// Writes the record atomically and durably (a new generation; the journal is removed).
    pub fn save(&self, paths: &Paths) -> Result<(), StoreError> {
        Applied::save_ranges(
            paths,
            &self.key,
            self.rows,
            &self.missing,
            self.v4.iter().copied(),
            self.v6.iter().copied(),
        )
    }

    /// Writes the record of ranges held elsewhere (a compiled ruleset's sets) atomically,
    /// without copying them first; the journal of the previous record is removed after.
    pub fn save_ranges(
        paths: &Paths,
        key: &str,
        rows: u64,
        missing: &[Country],
        v4: impl ExactSizeIterator<Item = AddrRange>,
        v6: impl ExactSizeIterator<Item = AddrRange>,
    ) -> Result<(), StoreError> {
        let bytes = encode(new_generation(), key, rows, missing, v4, v6);
        store::write_state(&base_path(paths), &bytes)?;
        // A journal left now has another generation: ignored until it is gone.
        store::remove_durably(&journal_path(paths))
    }

    /// The key of the record in the state folder (the journal's last delta, else the base
    /// record's), without reading the base record's ranges; `None` as for [`Applied::load`].
    pub fn load_key(paths: &Paths) -> Option<String> {
        let mut f = std::fs::File::open(base_path(paths)).ok()?;
        let mut head = [0u8; 20];
        f.read_exact(&mut head).ok()?;
        if &head[..8] != MAGIC {
            return None;
        }
        let generation = u64::from_le_bytes(head[8..16].try_into().ok()?);
        let n = u32::from_le_bytes(head[16..20].try_into().ok()?) as usize;
        let mut key = vec![0u8; n.min(1 << 20)];
        f.read_exact(&mut key).ok()?;
        let mut key = String::from_utf8(key).ok()?;
        match std::fs::read(journal_path(paths)) {
            Ok(j) => {
                let Some(list) = entries(&j, generation) else {
                    return Some(key);
                };
                let mut pending = false;
                for entry in list {
                    let (kind, payload) = entry?;
                    pending = kind == PENDING;
                    if kind == DELTA {
                        key = Cursor(payload).text()?;
                    }
                }
                (!pending).then_some(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(key),
            Err(_) => None,
        }
    }

    /// Removes the record and its journal (the gate is off). The base record goes first:
    /// stopped in between, a journal without its base is no record, whereas a base without
    /// its journal would be an older, wrong one.
    pub fn remove(paths: &Paths) -> Result<(), StoreError> {
        store::remove_durably(&base_path(paths))?;
        store::remove_durably(&journal_path(paths))
    }

    /// Appends a pending change to the journal of this record (loaded by
    /// [`Applied::load`]), durably: until [`Applied::append_delta`] follows it, the record
    /// is stale.
    pub fn append_pending(&mut self, paths: &Paths) -> Result<(), StoreError> {
        self.append(paths, PENDING, &[])
    }

    /// Appends what the kernel now has to the journal, durably (the ranges of `self` are
    /// left as they are: the next [`Applied::load`] applies the delta).
    pub fn append_delta(
        &mut self,
        paths: &Paths,
        key: &str,
        rows: u64,
        missing: &[Country],
        delta: &Delta,
    ) -> Result<(), StoreError> {
        let payload = encode_delta(key, rows, missing, delta);
        self.append(paths, DELTA, &payload)
    }

    /// Whether the journal is large enough (a quarter of the base record) to be written
    /// again as one delta ([`Applied::compact_journal`]).
    pub fn needs_compaction(&self) -> bool {
        self.sizes.1 > (self.sizes.0 / 4).max(64 << 10)
    }

    /// Replaces the journal, atomically, with one delta from the base record to the ranges
    /// the kernel has now (`delta`: the base's ranges removed and the ranges added, each an
    /// exact range of its side). The base record, and so the kernel's base sets, stay as
    /// they are; only the deltas one after another are folded into their sum.
    pub fn compact_journal(
        &mut self,
        paths: &Paths,
        key: &str,
        rows: u64,
        missing: &[Country],
        delta: &Delta,
    ) -> Result<(), StoreError> {
        let entry = encode_entry(DELTA, &encode_delta(key, rows, missing, delta));
        self.write_journal(paths, &entry)
    }

    /// Writes a journal of this record holding `entry` alone, aside and renamed, as every
    /// state file.
    fn write_journal(&mut self, paths: &Paths, entry: &[u8]) -> Result<(), StoreError> {
        let mut bytes = Vec::with_capacity(16 + entry.len());
        bytes.extend_from_slice(JOURNAL_MAGIC);
        bytes.extend_from_slice(&self.generation.to_le_bytes());
        bytes.extend_from_slice(entry);
        store::write_state(&journal_path(paths), &bytes)?;
        self.sizes.1 = bytes.len() as u64;
        Ok(())
    }

    fn append(&mut self, paths: &Paths, kind: u8, payload: &[u8]) -> Result<(), StoreError> {
        let path = journal_path(paths);
        let entry = encode_entry(kind, payload);
        let io = |e: std::io::Error| StoreError::Io {
            path: path.clone(),
            source: e,
        };
        if self.sizes.1 == 0 {
            return self.write_journal(paths, &entry);
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io)?;
        // Only what was read back and checked is extended: anything else is a stale
        // record, which would have been loaded as none.
        if f.metadata().map_err(io)?.len() != self.sizes.1 {
            return Err(io(std::io::Error::other(
                "the journal changed since it was read",
            )));
        }
        f.write_all(&entry).map_err(io)?;
        f.sync_data().map_err(io)?;
        self.sizes.1 += entry.len() as u64;
        Ok(())
    }
}

fn encode(
    generation: u64,
    key: &str,
    rows: u64,
    missing: &[Country],
    v4: impl ExactSizeIterator<Item = AddrRange>,
    v6: impl ExactSizeIterator<Item = AddrRange>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + key.len() + v4.len() * 8 + v6.len() * 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&generation.to_le_bytes());
    put_bytes(&mut out, key.as_bytes());
    out.extend_from_slice(&rows.to_le_bytes());
    put_bytes(&mut out, join(missing).as_bytes());
    put_ranges(&mut out, Family::V4, v4);
    put_ranges(&mut out, Family::V6, v6);
    out
}

fn put_ranges(out: &mut Vec<u8>, family: Family, v: impl ExactSizeIterator<Item = AddrRange>) {
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    for r in v {
        match family {
            Family::V4 => {
                out.extend_from_slice(&(r.start as u32).to_le_bytes());
                out.extend_from_slice(&(r.end as u32).to_le_bytes());
            }
            Family::V6 => {
                out.extend_from_slice(&r.start.to_le_bytes());
                out.extend_from_slice(&r.end.to_le_bytes());
            }
        }
    }
}

fn encode_delta(key: &str, rows: u64, missing: &[Country], d: &Delta) -> Vec<u8> {
    let n = d.v4_removed.len() + d.v4_added.len() + d.v6_removed.len() + d.v6_added.len();
    let mut out = Vec::with_capacity(64 + key.len() + n * 32);
    put_bytes(&mut out, key.as_bytes());
    out.extend_from_slice(&rows.to_le_bytes());
    put_bytes(&mut out, join(missing).as_bytes());
    put_ranges(&mut out, Family::V4, d.v4_removed.iter().copied());
    put_ranges(&mut out, Family::V4, d.v4_added.iter().copied());
    put_ranges(&mut out, Family::V6, d.v6_removed.iter().copied());
    put_ranges(&mut out, Family::V6, d.v6_added.iter().copied());
    out
}

/// FNV-1a, 64 bits: catches a torn or damaged entry (not an adversary: the state folder
/// is root's).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn encode_entry(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 13);
    out.extend_from_slice(&(payload.len() as u32 + 1).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    out.extend_from_slice(&fnv1a(&[&[kind], payload]).to_le_bytes());
    out
}

/// The entries of a journal following the base record of `generation`: `None` when the
/// journal is of another generation (it is to be ignored), an item `None` for anything that
/// does not read back exactly (the end).
fn entries(j: &[u8], generation: u64) -> Option<impl Iterator<Item = Option<(u8, &[u8])>>> {
    let mut c = Cursor(j);
    if c.take(8) != Some(JOURNAL_MAGIC.as_slice()) || c.u64() != Some(generation) {
        return None;
    }
    let mut rest = c.0;
    let mut failed = false;
    Some(std::iter::from_fn(move || {
        if rest.is_empty() || failed {
            return None;
        }
        let mut c = Cursor(rest);
        let entry = (|| {
            let n = c.u32()? as usize;
            let body = c.take(n)?;
            let sum = c.u64()?;
            let (&kind, payload) = body.split_first()?;
            (sum == fnv1a(&[&[kind], payload]) && (kind == PENDING || kind == DELTA))
                .then_some((kind, payload))
        })();
        failed = entry.is_none();
        rest = c.0;
        Some(entry)
    }))
}

/// The base record with the journal's entries applied; `None` when stale or not readable.
fn replay(mut a: Applied, j: &[u8]) -> Option<Applied> {
    let Some(list) = entries(j, a.generation) else {
        // Another generation's: appended to no more, replaced by the next append.
        a.sizes.1 = 0;
        return Some(a);
    };
    let mut pending = false;
    // Spare buffers the deltas are applied into, swapped with the ranges (no allocation
    // per entry: fresh pages are what costs most here). After the first delta they hold
    // the base record's ranges, which are kept.
    let mut spare = (Vec::new(), Vec::new());
    let mut base = None;
    for entry in list {
        let (kind, payload) = entry?;
        pending = kind == PENDING;
        if kind == DELTA {
            replay_entry(&mut a, payload, &mut spare)?;
            if base.is_none() {
                base = Some(GateBase {
                    v4: std::mem::take(&mut spare.0),
                    v6: std::mem::take(&mut spare.1),
                });
            }
        }
    }
    a.base = base.filter(|b| b.v4 != a.v4 || b.v6 != a.v6).map(Box::new);
    (!pending).then_some(a)
}

fn replay_entry(
    a: &mut Applied,
    payload: &[u8],
    spare: &mut (Vec<AddrRange>, Vec<AddrRange>),
) -> Option<()> {
    let mut c = Cursor(payload);
    let key = c.text()?;
    let rows = c.u64()?;
    let missing = missing_of(&c.text()?)?;
    let v4_removed = ranges(Family::V4, &mut c)?;
    let v4_added = ranges(Family::V4, &mut c)?;
    let v6_removed = ranges(Family::V6, &mut c)?;
    let v6_added = ranges(Family::V6, &mut c)?;
    if !c.0.is_empty() {
        return None;
    }
    apply_delta(&a.v4, &v4_removed, &v4_added, &mut spare.0)?;
    apply_delta(&a.v6, &v6_removed, &v6_added, &mut spare.1)?;
    std::mem::swap(&mut a.v4, &mut spare.0);
    std::mem::swap(&mut a.v6, &mut spare.1);
    (a.key, a.rows, a.missing) = (key, rows, missing);
    Some(())
}

/// Puts into `out` the ranges of `have` without `removed` (each of which must be in it)
/// and with `added`, sorted and disjoint; `None` when that does not hold.
pub fn apply_delta(
    have: &[AddrRange],
    removed: &[AddrRange],
    added: &[AddrRange],
    out: &mut Vec<AddrRange>,
) -> Option<()> {
    out.clear();
    out.reserve(have.len() + added.len());
    let (mut r, mut a) = (0, 0);
    for h in have {
        if removed.get(r) == Some(h) {
            r += 1;
            continue;
        }
        while let Some(x) = added.get(a).filter(|x| x.start < h.start) {
            out.push(*x);
            a += 1;
        }
        out.push(*h);
    }
    out.extend_from_slice(&added[a..]);
    let disjoint = out.windows(2).all(|w| w[0].end < w[1].start);
    (r == removed.len() && disjoint).then_some(())
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// A cursor over the record's bytes.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u128(&mut self) -> Option<u128> {
        Some(u128::from_le_bytes(self.take(16)?.try_into().ok()?))
    }
    fn text(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

fn missing_of(text: &str) -> Option<Vec<Country>> {
    text.split(' ')
        .filter(|s| !s.is_empty())
        .map(Country::from_db)
        .collect()
}

/// A count and that many ranges of `family`, sorted and disjoint.
fn ranges(family: Family, c: &mut Cursor) -> Option<Vec<AddrRange>> {
    let n = c.u32()? as usize;
    let width = if family == Family::V4 { 8 } else { 32 };
    if c.0.len() < n.checked_mul(width)? {
        return None;
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let (start, end) = match family {
            Family::V4 => (c.u32()? as u128, c.u32()? as u128),
            Family::V6 => (c.u128()?, c.u128()?),
        };
        // Sorted and disjoint, as written; anything else is not our file.
        if start > end || v.last().is_some_and(|l: &AddrRange| l.end >= start) {
            return None;
        }
        v.push(AddrRange { family, start, end });
    }
    Some(v)
}

fn decode(bytes: &[u8]) -> Option<Applied> {
    let mut c = Cursor(bytes);
    if c.take(MAGIC.len())? != MAGIC {
        return None;
    }
    let generation = c.u64()?;
    let key = c.text()?;
    let rows = c.u64()?;
    let missing = missing_of(&c.text()?)?;
    let v4 = ranges(Family::V4, &mut c)?;
    let v6 = ranges(Family::V6, &mut c)?;
    c.0.is_empty().then_some(Applied {
        key,
        rows,
        missing,
        v4,
        v6,
        base: None,
        generation,
        sizes: (0, 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(net: &str) -> AddrRange {
        AddrRange::from_net(net.parse().unwrap())
    }

    fn sample() -> Applied {
        Applied {
            key: "allow=DE;deny=\n/x\t1\t2.3\t4".into(),
            rows: 9,
            missing: vec!["FR".parse().unwrap()],
            v4: vec![AddrRange::from_net("192.0.2.0/24".parse().unwrap())],
            v6: vec![v6("2001:db8::/48"), v6("2001:db8:2::/48")],
            base: None,
            generation: 7,
            sizes: (0, 0),
        }
    }

    fn encoded(a: &Applied) -> Vec<u8> {
        encode(
            a.generation,
            &a.key,
            a.rows,
            &a.missing,
            a.v4.iter().copied(),
            a.v6.iter().copied(),
        )
    }

    fn paths() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let p = Paths {
            config_dir: dir.path().join("config"),
            state_dir: dir.path().join("state"),
            share_dir: dir.path().join("share"),
        };
        (dir, p)
    }

    /// What the record holds, without the sizes (which say where it came from).
    fn loaded(p: &Paths) -> Option<Applied> {
        Applied::load(p).map(|a| Applied { sizes: (0, 0), ..a })
    }

    #[test]
    fn record_round_trips_and_rejects_anything_else() {
        let a = sample();
        let bytes = encoded(&a);
        assert_eq!(decode(&bytes), Some(a.clone()));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
        assert_eq!(decode(b"PBXWGEO0"), None);
        // The first layout (no generation) is not read: the next update applies in full.
        let mut old = bytes.clone();
        old[..8].copy_from_slice(b"PBXWGEO1");
        assert_eq!(decode(&old), None);
        let mut unsorted = a.clone();
        unsorted.v6.reverse();
        assert_eq!(decode(&encoded(&unsorted)), None);
    }

    #[test]
    fn delta_applies_and_refuses_what_does_not_fit() {
        let have = vec![v6("2001:db8::/48"), v6("2001:db8:2::/48")];
        let mut out = Vec::new();
        apply_delta(&have, &[have[0]], &[v6("2001:db8:1::/48")], &mut out).unwrap();
        assert_eq!(out, vec![v6("2001:db8:1::/48"), v6("2001:db8:2::/48")]);
        apply_delta(&have, &[], &[v6("2001:db8:3::/48")], &mut out).unwrap();
        assert_eq!(out.len(), 3);
        // Removing what is not there, adding what overlaps: not this record's delta.
        assert_eq!(
            apply_delta(&have, &[v6("2001:db8:9::/48")], &[], &mut out),
            None
        );
        assert_eq!(
            apply_delta(&have, &[], &[v6("2001:db8::/32")], &mut out),
            None
        );
    }

    fn delta() -> Delta {
        Delta {
            v6_removed: vec![v6("2001:db8::/48")],
            v6_added: vec![v6("2001:db8:1::/48"), v6("2001:db8:3::/48")],
            ..Delta::default()
        }
    }

    #[test]
    fn journal_round_trips_and_a_new_record_drops_it() {
        let (_dir, p) = paths();
        let a = sample();
        a.save(&p).unwrap();
        let mut rec = Applied::load(&p).unwrap();
        assert_eq!((rec.v6.clone(), rec.sizes.1), (a.v6.clone(), 0));
        rec.append_pending(&p).unwrap();
        rec.append_delta(&p, "k2", 10, &[], &delta()).unwrap();
        let now = loaded(&p).unwrap();
        assert_eq!(now.key, "k2");
        assert_eq!((now.rows, now.missing.len()), (10, 0));
        assert_eq!(
            now.v6,
            vec![
                v6("2001:db8:1::/48"),
                v6("2001:db8:2::/48"),
                v6("2001:db8:3::/48")
            ]
        );
        assert_eq!(now.v4, a.v4);
        // The base record's ranges are what the kernel's base sets hold.
        assert_eq!(
            now.base.as_deref(),
            Some(&GateBase {
                v4: a.v4.clone(),
                v6: a.v6.clone()
            })
        );
        assert_eq!(Applied::load_key(&p).as_deref(), Some("k2"));
        // A second change on top, read back from the file: the same as applied in memory.
        let mut rec = Applied::load(&p).unwrap();
        rec.append_pending(&p).unwrap();
        let undo = Delta {
            v6_removed: delta().v6_added,
            v6_added: delta().v6_removed,
            ..Delta::default()
        };
        rec.append_delta(&p, "k3", 9, &a.missing, &undo).unwrap();
        let back = loaded(&p).unwrap();
        assert_eq!((back.v6, back.key.as_str()), (a.v6.clone(), "k3"));
        // Back where the base is: no difference from it.
        assert_eq!(back.base, None);
        // A full write: a new generation, the journal gone.
        let j = std::fs::read(journal_path(&p)).unwrap();
        a.save(&p).unwrap();
        assert!(!journal_path(&p).exists());
        assert_eq!(loaded(&p).unwrap().key, a.key);
        // The old journal back in place (a crash before its removal): ignored.
        std::fs::write(journal_path(&p), &j).unwrap();
        let again = Applied::load(&p).unwrap();
        assert_eq!((again.key.as_str(), again.sizes.1), (a.key.as_str(), 0));
        assert_eq!(Applied::load_key(&p).as_deref(), Some(a.key.as_str()));
        // ... and replaced, not appended to, by the next change.
        let mut rec = again;
        rec.append_pending(&p).unwrap();
        rec.append_delta(&p, "k4", 9, &[], &delta()).unwrap();
        assert_eq!(loaded(&p).unwrap().key, "k4");
        // Stopped while removing: the base is gone first, and a journal alone is nothing.
        let j = std::fs::read(journal_path(&p)).unwrap();
        Applied::remove(&p).unwrap();
        assert_eq!(Applied::load(&p), None);
        std::fs::write(journal_path(&p), &j).unwrap();
        assert_eq!((Applied::load(&p), Applied::load_key(&p)), (None, None));
    }

    #[test]
    fn a_compacted_journal_is_the_sum_of_its_deltas() {
        let (_dir, p) = paths();
        let a = sample();
        a.save(&p).unwrap();
        let mut rec = Applied::load(&p).unwrap();
        rec.append_pending(&p).unwrap();
        rec.append_delta(&p, "k2", 10, &[], &delta()).unwrap();
        let mut rec = Applied::load(&p).unwrap();
        let second = Delta {
            v6_removed: vec![v6("2001:db8:3::/48")],
            v6_added: vec![v6("2001:db8:4::/48")],
            ..Delta::default()
        };
        rec.append_pending(&p).unwrap();
        rec.append_delta(&p, "k3", 11, &[], &second).unwrap();
        let before = loaded(&p).unwrap();
        let size = std::fs::metadata(journal_path(&p)).unwrap().len();
        // The sum from the base: 2001:db8::/48 removed, :1:: and :4:: added.
        let sum = Delta {
            v6_removed: vec![v6("2001:db8::/48")],
            v6_added: vec![v6("2001:db8:1::/48"), v6("2001:db8:4::/48")],
            ..Delta::default()
        };
        let mut rec = Applied::load(&p).unwrap();
        rec.compact_journal(&p, "k3", 11, &[], &sum).unwrap();
        assert!(std::fs::metadata(journal_path(&p)).unwrap().len() < size);
        let after = loaded(&p).unwrap();
        assert_eq!(after, before);
        assert_eq!(after.base.unwrap().v6, a.v6);
        // And it is appended to as before.
        let mut rec = Applied::load(&p).unwrap();
        rec.append_pending(&p).unwrap();
        rec.append_delta(&p, "k4", 11, &[], &Delta::default())
            .unwrap();
        assert_eq!(loaded(&p).unwrap().key, "k4");
    }

    #[test]
    fn a_change_not_journaled_to_its_end_makes_the_record_stale() {
        let (_dir, p) = paths();
        sample().save(&p).unwrap();
        let mut rec = Applied::load(&p).unwrap();
        // Stopped between the kernel's commit and the journal's delta: stale.
        rec.append_pending(&p).unwrap();
        assert_eq!(Applied::load(&p), None);
        assert_eq!(Applied::load_key(&p), None);
        rec.append_delta(&p, "k2", 9, &[], &delta()).unwrap();
        let full = std::fs::read(journal_path(&p)).unwrap();
        assert!(Applied::load(&p).is_some());
        // Torn anywhere in the delta (a crash while appending it): stale.
        for cut in [full.len() - 1, full.len() - 9, 16 + 13 + 5] {
            std::fs::write(journal_path(&p), &full[..cut]).unwrap();
            assert_eq!(Applied::load(&p), None, "cut at {cut}");
            assert_eq!(Applied::load_key(&p), None, "cut at {cut}");
        }
        // A damaged byte anywhere after the header: stale.
        for at in [16, 16 + 5, full.len() / 2, full.len() - 1] {
            let mut bad = full.clone();
            bad[at] ^= 0x40;
            std::fs::write(journal_path(&p), &bad).unwrap();
            assert_eq!(Applied::load(&p), None, "byte {at}");
        }
        // A delta that does not fit the base (checksum right): stale.
        let mut rec = Applied::load(&p);
        assert_eq!(rec, None);
        std::fs::remove_file(journal_path(&p)).unwrap();
        rec = Applied::load(&p);
        let mut rec = rec.unwrap();
        let wrong = Delta {
            v6_removed: vec![v6("2001:db8:9::/48")],
            ..Delta::default()
        };
        rec.append_delta(&p, "k2", 9, &[], &wrong).unwrap();
        assert_eq!(Applied::load(&p), None);
        // A journal changed behind the loaded record's back is not appended to.
        let (_dir2, q) = paths();
        sample().save(&q).unwrap();
        let mut r1 = Applied::load(&q).unwrap();
        r1.append_pending(&q).unwrap();
        let mut r2 = r1.clone();
        r1.append_delta(&q, "k2", 9, &[], &delta()).unwrap();
        assert!(r2.append_delta(&q, "k3", 9, &[], &delta()).is_err());
        // A base cut short: no record at all, journal or not.
        let base = std::fs::read(base_path(&q)).unwrap();
        std::fs::write(base_path(&q), &base[..base.len() - 1]).unwrap();
        assert_eq!(Applied::load(&q), None);
    }
}
