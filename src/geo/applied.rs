//! The geo gate as last applied: its ranges and the database they came from, in the state
//! folder (`geo-applied.bin`, and the changes since in `geo-applied.journal`).
//!
//! The base record is what the kernel's base sets `geo_v4`/`geo_v6` hold; its journal's
//! last delta is what the small sets `geo_added_*`/`geo_removed_*` hold ([`super::Gate`]):
//! the gate's ranges are the base's without the removed and with the added.
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
//!   countries, and per family the ranges removed from the base and added to it (what the
//!   small sets now hold, whole: the last delta is the one that counts).
//!
//! A journal of another generation (the base was written again) is ignored; a journal with
//! anything that does not read back exactly (a torn append after a crash, a delta that does
//! not fit the base, an entry of the first layout, whose deltas were increments) makes the
//! record stale, as does a pending change: the next update applies in full and writes a new
//! base. Every full write of the base removes the journal; once it is a quarter of the
//! base's size, it is written again with the last delta alone ([`Applied::append_delta`]).

use std::io::{BufReader, Read, Write};
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
/// Journal entry: the kernel has the delta; it holds the small sets' ranges whole. (Kind 2
/// was the first layout's increment from the entry before: no longer read.)
pub const DELTA: u8 = 3;

/// The gate last applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// [`source_key`] of the database and settings the ranges came from.
    pub key: String,
    /// Rows the database had.
    pub rows: u64,
    /// Listed countries without ranges in it.
    pub missing: Vec<Country>,
    /// The base record's ranges (each family sorted, merged): what the kernel's base sets
    /// `geo_v4`/`geo_v6` hold.
    pub base: GateBase,
    /// The journal's last delta: the ranges `geo_removed_*` and `geo_added_*` hold.
    pub delta: Delta,
    /// Generation of the base record (a journal of another one is not this record's).
    pub generation: u64,
    /// Size of the base record and of its journal, bytes.
    pub sizes: (u64, u64),
}

/// How the gate differs from the base sets, per family: the addresses of the base it no
/// longer holds and those it holds beyond the base (each sorted and disjoint), which the
/// sets `geo_removed_*` and `geo_added_*` hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delta {
    /// IPv4 ranges removed from the base.
    pub v4_removed: Vec<AddrRange>,
    /// IPv4 ranges added to it.
    pub v4_added: Vec<AddrRange>,
    /// IPv6 ranges removed from the base.
    pub v6_removed: Vec<AddrRange>,
    /// IPv6 ranges added to it.
    pub v6_added: Vec<AddrRange>,
}

impl Delta {
    /// The ranges removed from the base of `family`.
    pub fn removed(&self, family: Family) -> &[AddrRange] {
        match family {
            Family::V4 => &self.v4_removed,
            Family::V6 => &self.v6_removed,
        }
    }

    /// The ranges added to the base of `family`.
    pub fn added(&self, family: Family) -> &[AddrRange] {
        match family {
            Family::V4 => &self.v4_added,
            Family::V6 => &self.v6_added,
        }
    }

    /// Ranges in all four lists.
    pub fn len(&self) -> usize {
        self.v4_removed.len() + self.v4_added.len() + self.v6_removed.len() + self.v6_added.len()
    }

    /// Whether the gate is the base.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every range removed lies in the base and no range added meets it.
    fn fits(&self, base: &GateBase) -> bool {
        [Family::V4, Family::V6].into_iter().all(|f| {
            let base = base.of(f);
            let within = |r: &AddrRange| {
                let i = base.partition_point(|b| b.end < r.start);
                base.get(i)
                    .is_some_and(|b| b.start <= r.start && r.end <= b.end)
            };
            let apart = |r: &AddrRange| {
                let i = base.partition_point(|b| b.end < r.start);
                base.get(i).is_none_or(|b| b.start > r.end)
            };
            self.removed(f).iter().all(within) && self.added(f).iter().all(apart)
        })
    }
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
    /// The record in the state folder with its journal's last delta; `None` when absent,
    /// unreadable, or stale (a change was under way when the last command stopped).
    pub fn load(paths: &Paths) -> Option<Applied> {
        // Read through a small buffer: the base is decoded as it comes, never held whole
        // (10 MiB at 300,000 ranges).
        let file = std::fs::File::open(base_path(paths)).ok()?;
        let size = file.metadata().ok()?.len();
        let mut a = decode(&mut BufReader::with_capacity(1 << 16, file))?;
        a.sizes.0 = size;
        match std::fs::read(journal_path(paths)) {
            Ok(j) => {
                a.sizes.1 = j.len() as u64;
                replay(a, &j)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(a),
            Err(_) => None,
        }
    }

    /// The gate's ranges: the base's without the delta's removed, with its added (each
    /// family sorted, merged).
    pub fn ranges(&self) -> GateBase {
        if self.delta.is_empty() {
            return self.base.clone();
        }
        let of = |f: Family| {
            let mut v = super::difference(self.base.of(f), self.delta.removed(f));
            v.extend_from_slice(self.delta.added(f));
            super::merge_in_place(&mut v);
            v
        };
        GateBase {
            v4: of(Family::V4),
            v6: of(Family::V6),
        }
    }

    /// How many ranges [`Applied::ranges`] gives, without a copy of the base when the
    /// delta is empty.
    pub fn ranges_len(&self) -> usize {
        let count = |g: &GateBase| g.v4.len() + g.v6.len();
        if self.delta.is_empty() {
            count(&self.base)
        } else {
            count(&self.ranges())
        }
    }

    /// The gate as the record has it: its ranges, and the base when the delta is not empty
    /// (when it is, the base's ranges are the gate's, moved rather than copied).
    pub fn into_gate(self) -> super::Gate {
        let (GateBase { v4, v6 }, base) = if self.delta.is_empty() {
            (self.base, None)
        } else {
            (self.ranges(), Some(Box::new(self.base)))
        };
        super::Gate::On {
            v4: super::elements(v4),
            v6: super::elements(v6),
            base,
        }
    }

    /// Writes the record atomically and durably (a new generation; the journal is removed):
    /// its base, the delta left out.
    pub fn save(&self, paths: &Paths) -> Result<(), StoreError> {
        Applied::save_ranges(
            paths,
            &self.key,
            self.rows,
            &self.missing,
            self.base.v4.iter().copied(),
            self.base.v6.iter().copied(),
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
                        key = text(&mut &payload[..])?;
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
        self.append(paths, &encode_entry(PENDING, &[]))
    }

    /// Appends what the kernel's small sets now hold to the journal, durably (`self` is
    /// left as it is: the next [`Applied::load`] reads the delta). A journal grown to a
    /// quarter of the base record ([`Applied::needs_compaction`]) is then written again,
    /// atomically, with this delta alone: the base record, like the kernel's base sets,
    /// stays as it is.
    pub fn append_delta(
        &mut self,
        paths: &Paths,
        key: &str,
        rows: u64,
        missing: &[Country],
        delta: &Delta,
    ) -> Result<(), StoreError> {
        let entry = encode_entry(DELTA, &encode_delta(key, rows, missing, delta));
        self.append(paths, &entry)?;
        if self.needs_compaction() {
            self.write_journal(paths, &entry)?;
        }
        Ok(())
    }

    /// Whether the journal is large enough (a quarter of the base record) to be written
    /// again with its last delta alone.
    fn needs_compaction(&self) -> bool {
        self.sizes.1 > (self.sizes.0 / 4).max(64 << 10)
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

    fn append(&mut self, paths: &Paths, entry: &[u8]) -> Result<(), StoreError> {
        let path = journal_path(paths);
        let io = |e: std::io::Error| StoreError::Io {
            path: path.clone(),
            source: e,
        };
        if self.sizes.1 == 0 {
            return self.write_journal(paths, entry);
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
        f.write_all(entry).map_err(io)?;
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
    let mut rest = j;
    if array::<8>(&mut rest) != Some(*JOURNAL_MAGIC) || u64_of(&mut rest) != Some(generation) {
        return None;
    }
    let mut failed = false;
    Some(std::iter::from_fn(move || {
        if rest.is_empty() || failed {
            return None;
        }
        let entry = (|| {
            let n = u32_of(&mut rest)? as usize;
            let (body, after) = rest.split_at_checked(n)?;
            rest = after;
            let sum = u64_of(&mut rest)?;
            let (&kind, payload) = body.split_first()?;
            (sum == fnv1a(&[&[kind], payload]) && (kind == PENDING || kind == DELTA))
                .then_some((kind, payload))
        })();
        failed = entry.is_none();
        Some(entry)
    }))
}

/// The base record with the journal's last delta; `None` when stale or not readable.
fn replay(mut a: Applied, j: &[u8]) -> Option<Applied> {
    let Some(list) = entries(j, a.generation) else {
        // Another generation's: appended to no more, replaced by the next append.
        a.sizes.1 = 0;
        return Some(a);
    };
    let mut pending = false;
    for entry in list {
        let (kind, payload) = entry?;
        pending = kind == PENDING;
        if kind == DELTA {
            let (key, rows, missing, delta) = decode_delta(payload)?;
            if !delta.fits(&a.base) {
                return None;
            }
            (a.key, a.rows, a.missing, a.delta) = (key, rows, missing, delta);
        }
    }
    (!pending).then_some(a)
}

fn decode_delta(payload: &[u8]) -> Option<(String, u64, Vec<Country>, Delta)> {
    let mut c = payload;
    let key = text(&mut c)?;
    let rows = u64_of(&mut c)?;
    let missing = missing_of(&text(&mut c)?)?;
    let delta = Delta {
        v4_removed: ranges(Family::V4, &mut c)?,
        v4_added: ranges(Family::V4, &mut c)?,
        v6_removed: ranges(Family::V6, &mut c)?,
        v6_added: ranges(Family::V6, &mut c)?,
    };
    c.is_empty().then_some((key, rows, missing, delta))
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn missing_of(text: &str) -> Option<Vec<Country>> {
    text.split(' ')
        .filter(|s| !s.is_empty())
        .map(Country::from_db)
        .collect()
}

/// The next `N` bytes of `r`.
fn array<const N: usize>(r: &mut impl Read) -> Option<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b).ok()?;
    Some(b)
}

fn u32_of(r: &mut impl Read) -> Option<u32> {
    array(r).map(u32::from_le_bytes)
}

fn u64_of(r: &mut impl Read) -> Option<u64> {
    array(r).map(u64::from_le_bytes)
}

/// A u32 length and that many bytes of UTF-8 text (at most 1 MiB: nothing pbxwall writes
/// is longer).
fn text(r: &mut impl Read) -> Option<String> {
    let n = u32_of(r)? as usize;
    if n > 1 << 20 {
        return None;
    }
    let mut b = vec![0u8; n];
    r.read_exact(&mut b).ok()?;
    String::from_utf8(b).ok()
}

/// A count and that many ranges of `family`, sorted and disjoint.
fn ranges(family: Family, r: &mut impl Read) -> Option<Vec<AddrRange>> {
    let n = u32_of(r)? as usize;
    let width = if family == Family::V4 { 8 } else { 32 };
    // Read in blocks of whole ranges; the vector grows as they come (a damaged count
    // allocates nothing it does not read).
    let mut block = [0u8; 32 * 512];
    let mut v: Vec<AddrRange> = Vec::with_capacity(n.min(1 << 20));
    let mut left = n;
    while left > 0 {
        let k = left.min(block.len() / width);
        let bytes = &mut block[..k * width];
        r.read_exact(bytes).ok()?;
        for b in bytes.chunks_exact(width) {
            let (start, end) = match family {
                Family::V4 => (
                    u128::from(u32::from_le_bytes(b[..4].try_into().ok()?)),
                    u128::from(u32::from_le_bytes(b[4..].try_into().ok()?)),
                ),
                Family::V6 => (
                    u128::from_le_bytes(b[..16].try_into().ok()?),
                    u128::from_le_bytes(b[16..].try_into().ok()?),
                ),
            };
            // Sorted and disjoint, as written; anything else is not our file.
            if start > end || v.last().is_some_and(|l| l.end >= start) {
                return None;
            }
            v.push(AddrRange { family, start, end });
        }
        left -= k;
    }
    Some(v)
}

/// The base record read from `r`, to its end.
fn decode(r: &mut impl Read) -> Option<Applied> {
    if &array::<8>(r)? != MAGIC {
        return None;
    }
    let generation = u64_of(r)?;
    let key = text(r)?;
    let rows = u64_of(r)?;
    let missing = missing_of(&text(r)?)?;
    let v4 = ranges(Family::V4, r)?;
    let v6 = ranges(Family::V6, r)?;
    // Nothing after the ranges.
    let at_end = matches!(r.read(&mut [0u8; 1]), Ok(0));
    at_end.then_some(Applied {
        key,
        rows,
        missing,
        base: GateBase { v4, v6 },
        delta: Delta::default(),
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
            base: GateBase {
                v4: vec![AddrRange::from_net("192.0.2.0/24".parse().unwrap())],
                v6: vec![v6("2001:db8::/48"), v6("2001:db8:2::/48")],
            },
            delta: Delta::default(),
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
            a.base.v4.iter().copied(),
            a.base.v6.iter().copied(),
        )
    }

    fn decoded(bytes: &[u8]) -> Option<Applied> {
        decode(&mut &bytes[..])
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
        assert_eq!(decoded(&bytes), Some(a.clone()));
        assert_eq!(decoded(&bytes[..bytes.len() - 1]), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decoded(&longer), None);
        assert_eq!(decoded(b"PBXWGEO0"), None);
        // The first layout (no generation) is not read: the next update applies in full.
        let mut old = bytes.clone();
        old[..8].copy_from_slice(b"PBXWGEO1");
        assert_eq!(decoded(&old), None);
        let mut unsorted = a.clone();
        unsorted.base.v6.reverse();
        assert_eq!(decoded(&encoded(&unsorted)), None);
        // A base larger than the reader's block is read whole.
        let mut big = a.clone();
        big.base.v6 = (0..5000u128)
            .map(|k| AddrRange {
                family: Family::V6,
                start: k << 80,
                end: (k << 80) + 7,
            })
            .collect();
        assert_eq!(decoded(&encoded(&big)), Some(big));
    }

    /// A delta: 2001:db8::/48 taken from the base, 2001:db8:1::/48 and :3:: added.
    fn delta() -> Delta {
        Delta {
            v6_removed: vec![v6("2001:db8::/48")],
            v6_added: vec![v6("2001:db8:1::/48"), v6("2001:db8:3::/48")],
            ..Delta::default()
        }
    }

    #[test]
    fn a_delta_fits_its_base_or_is_refused() {
        let base = sample().base;
        assert!(delta().fits(&base));
        // A part of a base range may be removed; a range added may touch the base.
        let part = Delta {
            v6_removed: vec![v6("2001:db8:0:1::/64")],
            v6_added: vec![v6("2001:db8:4::/48")],
            ..Delta::default()
        };
        assert!(part.fits(&base));
        for wrong in [
            // Removing what the base does not hold, or more than one of its ranges.
            Delta {
                v6_removed: vec![v6("2001:db8:9::/48")],
                ..Delta::default()
            },
            Delta {
                v6_removed: vec![v6("2001:db8::/46")],
                ..Delta::default()
            },
            // Adding what it holds already.
            Delta {
                v6_added: vec![v6("2001:db8:2:5::/64")],
                ..Delta::default()
            },
            Delta {
                v4_added: vec![AddrRange::from_net("192.0.0.0/16".parse().unwrap())],
                ..Delta::default()
            },
        ] {
            assert!(!wrong.fits(&base), "{wrong:?}");
        }
    }

    #[test]
    fn journal_round_trips_and_a_new_record_drops_it() {
        let (_dir, p) = paths();
        let a = sample();
        a.save(&p).unwrap();
        let mut rec = Applied::load(&p).unwrap();
        assert_eq!((rec.base.clone(), rec.sizes.1), (a.base.clone(), 0));
        assert_eq!(rec.ranges(), a.base);
        rec.append_pending(&p).unwrap();
        rec.append_delta(&p, "k2", 10, &[], &delta()).unwrap();
        let now = loaded(&p).unwrap();
        assert_eq!(now.key, "k2");
        assert_eq!((now.rows, now.missing.len()), (10, 0));
        // The base record's ranges are what the kernel's base sets hold; the delta what
        // the small sets hold; the gate is the one without and with the other (merged:
        // :1::, :2:: and :3:: are neighbours).
        assert_eq!((&now.base, &now.delta), (&a.base, &delta()));
        let mut joined = v6("2001:db8:1::/48");
        joined.end = v6("2001:db8:3::/48").end;
        assert_eq!(now.ranges().v6, vec![joined]);
        assert_eq!(now.ranges().v4, a.base.v4);
        assert_eq!(Applied::load_key(&p).as_deref(), Some("k2"));
        // A second change on top, read back from the file: the last delta is the one.
        let mut rec = Applied::load(&p).unwrap();
        rec.append_pending(&p).unwrap();
        rec.append_delta(&p, "k3", 9, &a.missing, &Delta::default())
            .unwrap();
        let back = loaded(&p).unwrap();
        assert_eq!((back.ranges(), back.key.as_str()), (a.base.clone(), "k3"));
        assert!(back.delta.is_empty());
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
    fn a_compacted_journal_holds_the_last_delta() {
        let (_dir, p) = paths();
        let a = sample();
        a.save(&p).unwrap();
        let mut rec = Applied::load(&p).unwrap();
        rec.append_pending(&p).unwrap();
        rec.append_delta(&p, "k2", 10, &[], &delta()).unwrap();
        let mut rec = Applied::load(&p).unwrap();
        let second = Delta {
            v6_removed: vec![v6("2001:db8::/48")],
            v6_added: vec![v6("2001:db8:1::/48"), v6("2001:db8:4::/48")],
            ..Delta::default()
        };
        rec.append_pending(&p).unwrap();
        rec.append_delta(&p, "k3", 11, &[], &second).unwrap();
        let before = loaded(&p).unwrap();
        assert_eq!(before.delta, second);
        let size = std::fs::metadata(journal_path(&p)).unwrap().len();
        let mut rec = Applied::load(&p).unwrap();
        let entry = encode_entry(DELTA, &encode_delta("k3", 11, &[], &second));
        rec.write_journal(&p, &entry).unwrap();
        assert!(std::fs::metadata(journal_path(&p)).unwrap().len() < size);
        let after = loaded(&p).unwrap();
        assert_eq!(after, before);
        assert_eq!(after.base, a.base);
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
        // An entry of the first layout (kind 2, an increment): stale, as is the key.
        let mut old = std::fs::read(journal_path(&p)).unwrap();
        old.truncate(16);
        let payload = encode_delta("k2", 9, &[], &delta());
        old.extend_from_slice(&encode_entry(2, &payload));
        std::fs::write(journal_path(&p), &old).unwrap();
        assert_eq!((Applied::load(&p), Applied::load_key(&p)), (None, None));
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
