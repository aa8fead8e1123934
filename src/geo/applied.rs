//! The geo gate as last applied: its ranges and the database they came from, in the state
//! folder (`geo-applied.bin`).
//!
//! It stands in for the live elements of `geo_v4`/`geo_v6`, which are never read back (see
//! [`crate::nft::netlink::dumps_elements`]): `geo update` computes its delta against it, and
//! a database that cannot be used keeps these ranges. And it is a parse cache: while the
//! database's files and `[geo]` are what they were (path, size, modification time and inode
//! of every file, the country lists: [`source_key`]), the ranges are taken from here instead
//! of parsing the database again. A changed file never matches, so it is never trusted
//! over the file.
//!
//! Layout (little-endian): `PBXWGEO1`, the key (u32 length + bytes), the rows read (u64),
//! the listed countries without ranges (u32 length + bytes: codes separated by spaces), then
//! per family a u32 count and the ranges (IPv4: two u32; IPv6: two u128). Anything else is
//! ignored as if the file were absent.

use std::os::unix::fs::MetadataExt;

use super::{Country, Database, GeoSettings};
use crate::addrset::{AddrRange, Family};
use crate::store::{self, Paths, StoreError};

/// File name in the state folder.
pub const APPLIED_FILE: &str = "geo-applied.bin";
const MAGIC: &[u8; 8] = b"PBXWGEO1";

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

fn join(v: &[Country]) -> String {
    v.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

impl Applied {
    /// The record in the state folder, `None` when absent or unreadable.
    pub fn load(paths: &Paths) -> Option<Applied> {
        let bytes = std::fs::read(paths.state_dir.join(APPLIED_FILE)).ok()?;
        decode(&bytes)
    }

    /// Writes the record atomically (not synced: after a crash the kernel's sets are gone
    /// too, a reboot's restart writes it again, and an older or absent record only costs a
    /// parse or a full apply).
    pub fn save(&self, paths: &Paths) -> Result<(), StoreError> {
        store::write_state(&paths.state_dir.join(APPLIED_FILE), &self.encode())
    }

    /// Writes the record of ranges held elsewhere (a compiled ruleset's sets) atomically,
    /// without copying them first.
    pub fn save_ranges(
        paths: &Paths,
        key: &str,
        rows: u64,
        missing: &[Country],
        v4: impl ExactSizeIterator<Item = AddrRange>,
        v6: impl ExactSizeIterator<Item = AddrRange>,
    ) -> Result<(), StoreError> {
        let bytes = encode(key, rows, missing, v4, v6);
        store::write_state(&paths.state_dir.join(APPLIED_FILE), &bytes)
    }

    /// The key of the record in the state folder, without reading its ranges.
    pub fn load_key(paths: &Paths) -> Option<String> {
        use std::io::Read;
        let mut f = std::fs::File::open(paths.state_dir.join(APPLIED_FILE)).ok()?;
        let mut head = [0u8; 12];
        f.read_exact(&mut head).ok()?;
        if &head[..8] != MAGIC {
            return None;
        }
        let n = u32::from_le_bytes(head[8..12].try_into().ok()?) as usize;
        let mut key = vec![0u8; n.min(1 << 20)];
        f.read_exact(&mut key).ok()?;
        String::from_utf8(key).ok()
    }

    /// Removes the record (the gate is off).
    pub fn remove(paths: &Paths) -> Result<(), StoreError> {
        let path = paths.state_dir.join(APPLIED_FILE);
        if path.exists() {
            store::remove_durably(&path)?;
        }
        Ok(())
    }

    fn encode(&self) -> Vec<u8> {
        encode(
            &self.key,
            self.rows,
            &self.missing,
            self.v4.iter().copied(),
            self.v6.iter().copied(),
        )
    }
}

fn encode(
    key: &str,
    rows: u64,
    missing: &[Country],
    v4: impl ExactSizeIterator<Item = AddrRange>,
    v6: impl ExactSizeIterator<Item = AddrRange>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + key.len() + v4.len() * 8 + v6.len() * 32);
    out.extend_from_slice(MAGIC);
    put_bytes(&mut out, key.as_bytes());
    out.extend_from_slice(&rows.to_le_bytes());
    put_bytes(&mut out, join(missing).as_bytes());
    out.extend_from_slice(&(v4.len() as u32).to_le_bytes());
    for r in v4 {
        out.extend_from_slice(&(r.start as u32).to_le_bytes());
        out.extend_from_slice(&(r.end as u32).to_le_bytes());
    }
    out.extend_from_slice(&(v6.len() as u32).to_le_bytes());
    for r in v6 {
        out.extend_from_slice(&r.start.to_le_bytes());
        out.extend_from_slice(&r.end.to_le_bytes());
    }
    out
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

fn decode(bytes: &[u8]) -> Option<Applied> {
    let mut c = Cursor(bytes);
    if c.take(MAGIC.len())? != MAGIC {
        return None;
    }
    let key = c.text()?;
    let rows = c.u64()?;
    let missing = c
        .text()?
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(Country::from_db)
        .collect::<Option<Vec<_>>>()?;
    let ranges = |family: Family, c: &mut Cursor| -> Option<Vec<AddrRange>> {
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
    };
    let v4 = ranges(Family::V4, &mut c)?;
    let v6 = ranges(Family::V6, &mut c)?;
    c.0.is_empty().then_some(Applied {
        key,
        rows,
        missing,
        v4,
        v6,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_rejects_anything_else() {
        let a = Applied {
            key: "allow=DE;deny=\n/x\t1\t2.3\t4".into(),
            rows: 9,
            missing: vec!["FR".parse().unwrap()],
            v4: vec![AddrRange::from_net("192.0.2.0/24".parse().unwrap())],
            v6: vec![
                AddrRange::from_net("2001:db8::/48".parse().unwrap()),
                AddrRange::from_net("2001:db8:1::/48".parse().unwrap()),
            ],
        };
        let bytes = a.encode();
        assert_eq!(decode(&bytes), Some(a.clone()));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
        assert_eq!(decode(b"PBXWGEO0"), None);
        let mut unsorted = a.clone();
        unsorted.v6.reverse();
        assert_eq!(decode(&unsorted.encode()), None);
    }
}
