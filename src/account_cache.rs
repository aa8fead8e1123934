//! The parse cache of the account files: `STATE_DIR/accounts-cache.bin`.
//!
//! Reading and parsing 10,000 small TOML files costs more than the kernel's work of loading
//! what they compile to, and a restart mostly reads files that did not change. So every
//! account parsed is recorded here with what identifies its file's contents without reading
//! it ([`FileStamp`]: device, inode, size, modification and change times in nanoseconds),
//! and the next load takes the account from here when the file's fresh metadata is exactly
//! the recorded one. The cache is never trusted over a file:
//!
//! - any difference of the stamp (or of the file's name) means the file is read again;
//! - a file whose modification or change time is not older than the moment the cache's
//!   reads began, minus [`RACY_MARGIN_NS`], is read again even when its stamp matches (an
//!   edit within the same tick of a coarse clock keeps size and times: git's "racily clean"
//!   entries, <https://git-scm.com/docs/racy-git>);
//! - a symbolic link is never taken from the cache (nor recorded): the file behind it is
//!   read and checked every time;
//! - the checks every account file gets (a regular file, owned by root or the user running
//!   pbxwall, not writable by group or others, at most
//!   [`MAX_CONFIG_FILE_BYTES`](crate::store::MAX_CONFIG_FILE_BYTES)) are made from the same
//!   fresh metadata on every load, hit or not;
//! - the cache belongs to one pbxwall version and one set of profiles (an account's services
//!   are checked against them); with any other it is ignored, as is a missing, unreadable,
//!   truncated or corrupt file (a SHA-256 digest covers it) or one written in the future of
//!   the clock. Ignored means rebuilt, never an error.
//!
//! Only accounts that parsed are recorded: a bad file is read (and reported) every time.
//! Readers use it without the lock; commands holding the lock write it (atomically, like
//! every state file, on a thread of its own while the ruleset is compiled and applied:
//! [`crate::store::BackgroundWrite`]) when what they loaded differs from it.
//!
//! Layout (little-endian): `PBXWACC1`, the key (u32 length + bytes), the time the reads
//! began (i128 ns since the epoch), the entry count (u32), per entry the file name (u32
//! length + bytes), the stamp (dev, ino, size as u64; mtime, ctime as i128 ns) and the
//! account (u32 length + bytes: see [`encode_account`]), then the SHA-256 of all before it.

use std::collections::HashMap;
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

use ipnet::IpNet;

use crate::model::{Account, Profiles};
use crate::store::Paths;

/// File name in the state folder.
pub const CACHE_FILE: &str = "accounts-cache.bin";
const MAGIC: &[u8; 8] = b"PBXWACC1";
const DIGEST_LEN: usize = 32;
/// How much older than the start of the cache's reads a file's times must be for its entry
/// to be trusted: covers the coarse clock of file times and a small clock step.
pub const RACY_MARGIN_NS: i128 = 2_000_000_000;

/// What identifies a file's contents without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i128,
    /// Change time (of the inode), ns since the epoch.
    pub ctime_ns: i128,
}

impl FileStamp {
    /// The stamp of a file's metadata.
    pub fn of(meta: &fs::Metadata) -> FileStamp {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

/// Nanoseconds since the epoch of `t` (negative before it).
pub fn ns_since_epoch(t: SystemTime) -> i128 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// The key a cache belongs to: this pbxwall's version and the profiles the accounts' services
/// were checked against.
pub fn cache_key(profiles: &Profiles) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{profiles:?}").as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("pbxwall {} profiles {hex}", env!("CARGO_PKG_VERSION"))
}

/// A cache as read from the state folder: entries by file name, each account still encoded
/// (decoded only when its file matches, and copied as they are when the cache is written
/// again).
#[derive(Debug)]
pub struct Cache {
    bytes: Vec<u8>,
    /// Entries are trusted only for files whose times are before this (ns since the epoch).
    trust_before_ns: i128,
    entries: HashMap<String, (FileStamp, std::ops::Range<usize>)>,
}

impl Cache {
    /// The cache of the state folder when it is there, intact and of `key`; `None`
    /// otherwise (it is then rebuilt).
    pub fn load(paths: &Paths, key: &str) -> Option<Cache> {
        let path = paths.state_dir.join(CACHE_FILE);
        let bytes = fs::read(&path).ok()?;
        let written_ns = fs::metadata(&path)
            .ok()
            .and_then(|m| m.modified().ok())
            .map(ns_since_epoch)?;
        Cache::decode(bytes, key, written_ns, ns_since_epoch(SystemTime::now()))
    }

    /// Decodes `bytes` of a cache file written at `written_ns` (its modification time),
    /// looked at `now_ns`.
    pub fn decode(bytes: Vec<u8>, key: &str, written_ns: i128, now_ns: i128) -> Option<Cache> {
        let body_len = bytes.len().checked_sub(DIGEST_LEN)?;
        let (body, digest) = bytes.split_at(body_len);
        if ring::digest::digest(&ring::digest::SHA256, body).as_ref() != digest {
            return None;
        }
        let mut c = Cursor { bytes: body, at: 0 };
        if c.take(MAGIC.len())? != MAGIC || c.text()? != key {
            return None;
        }
        let read_at_ns = c.i128()?;
        // Written in the future of the clock (it was set back): times prove nothing.
        if read_at_ns > now_ns || written_ns > now_ns {
            return None;
        }
        let n = c.u32()? as usize;
        let mut entries = HashMap::with_capacity(n.min(body.len() / 64));
        for _ in 0..n {
            let name = c.text()?.to_owned();
            let stamp = FileStamp {
                dev: c.u64()?,
                ino: c.u64()?,
                size: c.u64()?,
                mtime_ns: c.i128()?,
                ctime_ns: c.i128()?,
            };
            let len = c.u32()? as usize;
            let start = c.at;
            c.take(len)?;
            entries.insert(name, (stamp, start..start + len));
        }
        if c.at != body.len() {
            return None;
        }
        Some(Cache {
            trust_before_ns: read_at_ns.min(written_ns) - RACY_MARGIN_NS,
            bytes,
            entries,
        })
    }

    /// The account of file `name`, and the range of its encoding (to write it again), when
    /// its fresh stamp is the recorded one and old enough to trust; `None` (read the file)
    /// when it is not recorded, recorded with another stamp, or too recent to trust.
    pub fn lookup(
        &self,
        name: &str,
        stamp: &FileStamp,
    ) -> Option<(Account, std::ops::Range<usize>)> {
        let (recorded, range) = self.entries.get(name)?;
        if recorded != stamp
            || stamp.mtime_ns >= self.trust_before_ns
            || stamp.ctime_ns >= self.trust_before_ns
        {
            return None;
        }
        let stem = name.strip_suffix(".toml").unwrap_or(name);
        let account = decode_account(&self.bytes[range.clone()], stem)?;
        Some((account, range.clone()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One entry to write: a file's name and stamp, and its account (encoded already when it
/// came from the cache).
#[derive(Debug)]
pub enum Entry<'a> {
    /// Taken from the cache: the range of its encoding in [`Cache`]'s bytes.
    Kept(&'a str, FileStamp, std::ops::Range<usize>),
    /// Read from the file now.
    Parsed(&'a str, FileStamp, &'a Account),
}

/// The bytes of a cache file of `entries`, whose reads began at `read_at_ns`.
pub fn encode(key: &str, read_at_ns: i128, old: Option<&Cache>, entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + entries.len() * 160);
    out.extend_from_slice(MAGIC);
    put_bytes(&mut out, key.as_bytes());
    out.extend_from_slice(&read_at_ns.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    let mut scratch = Vec::new();
    for e in entries {
        let (name, stamp) = match e {
            Entry::Kept(n, s, _) | Entry::Parsed(n, s, _) => (n, s),
        };
        put_bytes(&mut out, name.as_bytes());
        out.extend_from_slice(&stamp.dev.to_le_bytes());
        out.extend_from_slice(&stamp.ino.to_le_bytes());
        out.extend_from_slice(&stamp.size.to_le_bytes());
        out.extend_from_slice(&stamp.mtime_ns.to_le_bytes());
        out.extend_from_slice(&stamp.ctime_ns.to_le_bytes());
        match e {
            Entry::Kept(_, _, range) => {
                let bytes = old.map_or(&[][..], |c| &c.bytes[range.clone()]);
                put_bytes(&mut out, bytes);
            }
            Entry::Parsed(_, _, account) => {
                scratch.clear();
                encode_account(&mut scratch, account);
                put_bytes(&mut out, &scratch);
            }
        }
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &out);
    out.extend_from_slice(digest.as_ref());
    out
}

/// An account's encoding: addresses and media (u32 count; per network its family 4 or 6,
/// prefix length and address bytes), fqdns and services (u32 count of texts), comment,
/// created and provider (0, or 1 and a text), expires (0, or 1, i64 seconds and u32 ns).
/// The name is the file's.
pub fn encode_account(out: &mut Vec<u8>, a: &Account) {
    let nets = |out: &mut Vec<u8>, nets: &[IpNet]| {
        out.extend_from_slice(&(nets.len() as u32).to_le_bytes());
        for n in nets {
            match n.addr() {
                IpAddr::V4(ip) => {
                    out.push(4);
                    out.push(n.prefix_len());
                    out.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    out.push(6);
                    out.push(n.prefix_len());
                    out.extend_from_slice(&ip.octets());
                }
            }
        }
    };
    fn texts<'t>(out: &mut Vec<u8>, texts: impl ExactSizeIterator<Item = &'t str>) {
        out.extend_from_slice(&(texts.len() as u32).to_le_bytes());
        for t in texts {
            put_bytes(out, t.as_bytes());
        }
    }
    let opt = |out: &mut Vec<u8>, t: &Option<String>| match t {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            put_bytes(out, t.as_bytes());
        }
    };
    // Every field named: a field added to `Account` fails to compile here until the
    // encoding (and MAGIC's version) covers it.
    let Account {
        name: _,
        addresses,
        fqdns,
        services,
        media,
        comment,
        created,
        provider,
        expires,
    } = a;
    nets(out, addresses);
    texts(out, fqdns.iter().map(|f| f.as_str()));
    texts(out, services.iter().map(String::as_str));
    nets(out, media);
    opt(out, comment);
    opt(out, created);
    opt(out, provider);
    match expires {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            out.extend_from_slice(&t.timestamp().to_le_bytes());
            out.extend_from_slice(&t.timestamp_subsec_nanos().to_le_bytes());
        }
    }
}

/// The account of `stem`'s file from its encoding; `None` for anything that is not one.
pub fn decode_account(bytes: &[u8], stem: &str) -> Option<Account> {
    let mut c = Cursor { bytes, at: 0 };
    let nets = |c: &mut Cursor| -> Option<Vec<IpNet>> {
        let n = c.u32()? as usize;
        let mut v = Vec::with_capacity(n.min(bytes.len() / 6));
        for _ in 0..n {
            let family = c.u8()?;
            let prefix = c.u8()?;
            let addr: IpAddr = match family {
                4 => <[u8; 4]>::try_from(c.take(4)?).ok()?.into(),
                6 => <[u8; 16]>::try_from(c.take(16)?).ok()?.into(),
                _ => return None,
            };
            v.push(IpNet::new(addr, prefix).ok()?);
        }
        Some(v)
    };
    let texts = |c: &mut Cursor| -> Option<Vec<String>> {
        let n = c.u32()? as usize;
        let mut v = Vec::with_capacity(n.min(bytes.len() / 4));
        for _ in 0..n {
            v.push(c.text()?.to_owned());
        }
        Some(v)
    };
    let opt = |c: &mut Cursor| -> Option<Option<String>> {
        match c.u8()? {
            0 => Some(None),
            1 => Some(Some(c.text()?.to_owned())),
            _ => None,
        }
    };
    let name = stem.parse().ok()?;
    let addresses = nets(&mut c)?;
    let fqdns = texts(&mut c)?
        .iter()
        .map(|f| f.parse().ok())
        .collect::<Option<Vec<_>>>()?;
    let services = texts(&mut c)?;
    let media = nets(&mut c)?;
    let comment = opt(&mut c)?;
    let created = opt(&mut c)?;
    let provider = opt(&mut c)?;
    let expires = match c.u8()? {
        0 => None,
        1 => {
            let secs = i64::from_le_bytes(c.take(8)?.try_into().ok()?);
            let nanos = u32::from_le_bytes(c.take(4)?.try_into().ok()?);
            Some(chrono::DateTime::from_timestamp(secs, nanos)?)
        }
        _ => return None,
    };
    (c.at == bytes.len()).then_some(Account {
        name,
        addresses,
        fqdns,
        services,
        media,
        comment,
        created,
        provider,
        expires,
    })
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// A cursor over a cache's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let b = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(b)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i128(&mut self) -> Option<i128> {
        Some(i128::from_le_bytes(self.take(16)?.try_into().ok()?))
    }
    fn text(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
}

/// The name an account file's entry is recorded under: its file name (`NAME.toml`).
pub fn file_name(path: &Path) -> Option<&str> {
    path.file_name()?.to_str()
}

#[cfg(test)]
mod tests;
