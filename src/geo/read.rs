//! Country databases, read row by row.
//!
//! Formats, told apart by their content (and GeoLite2 by its file names):
//!
//! | format | files | a row |
//! |---|---|---|
//! | DB-IP IP to Country Lite (CSV) | `dbip-country-lite-YYYY-MM.csv` (IPv4 and IPv6, no header) | `1.0.0.0,1.0.0.255,AU` |
//! | GeoLite2 Country (CSV) | `GeoLite2-Country-Blocks-IPv4.csv`, `...-Blocks-IPv6.csv`, `...-Locations-en.csv` in one folder (headers) | `1.0.0.0/24,2077456,2077456,,0,0,` |
//! | IP2Location LITE DB1 (CSV) | `IP2LOCATION-LITE-DB1.CSV`, or `IP2LOCATION-LITE-DB1.IPV6.CSV` (IPv6 numbers, IPv4 as `::ffff:a.b.c.d`) | `"16777216","16777471","US","United States of America"` |
//! | MaxMind DB | `*.mmdb` (GeoLite2/GeoIP2 Country or City, DB-IP lite MMDB), read with the `maxminddb` crate | a network with `country.iso_code` |
//!
//! CSV files are streamed: memory does not grow with the size of the database, only with
//! what the caller keeps (an MMDB file is read into memory whole: GeoLite2 Country is a few
//! MiB). Anything that does not parse stops the reading with the file and line
//! ([`GeoError::Corrupt`]; an MMDB file: with the file, [`GeoError::Format`]): a half-read
//! database is never used. Compressed downloads (`.gz`, `.zip`) are recognised and refused
//! with what to do instead.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ipnet::IpNet;

use super::Country;
use crate::addrset::{AddrRange, Family, parse_plain_v4, parse_plain_v6};

/// Why a database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The file or folder could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A row that does not parse.
    #[error("{path}:{line}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// Not a database pbxwall reads.
    #[error("{path}: {why}")]
    Format {
        /// The file or folder.
        path: PathBuf,
        /// What it is and what to do.
        why: String,
    },
    /// None of the allowed countries has a range in the database.
    #[error(
        "{path} has no address range for {countries}: the geo gate would close the open paths to everyone; check [geo] allow and the database"
    )]
    Empty {
        /// The database.
        path: PathBuf,
        /// The allowed countries.
        countries: String,
    },
}

/// The kinds of database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// DB-IP IP to Country Lite CSV: `start,end,country`.
    DbIp,
    /// GeoLite2 (or GeoIP2) Country CSV: blocks files and a locations file.
    GeoLite2,
    /// IP2Location LITE DB1 CSV: `"from","to","CC","Country"` with integer addresses.
    Ip2Location,
    /// MaxMind DB (`.mmdb`): GeoLite2/GeoIP2 Country or City, DB-IP lite MMDB, or any
    /// database whose records have `country.iso_code` (or `registered_country.iso_code`).
    Mmdb,
}

impl Format {
    /// Its name, as status prints it.
    pub fn name(self) -> &'static str {
        match self {
            Format::DbIp => "DB-IP lite CSV",
            Format::GeoLite2 => "GeoLite2 Country CSV",
            Format::Ip2Location => "IP2Location LITE DB1 CSV",
            Format::Mmdb => "MaxMind DB (MMDB)",
        }
    }
}

/// A country database, its format recognised and its files found.
#[derive(Debug, Clone)]
pub struct Database {
    /// The path as configured.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// The files read, in order (GeoLite2: the locations file first, then the blocks).
    pub files: Vec<PathBuf>,
}

/// Lines of a GeoLite2 blocks file are at most this long; longer ones are corrupt.
const MAX_LINE: usize = 4096;
/// Bytes read at a time from a CSV file (many lines; more than [`MAX_LINE`]).
const BLOCK: usize = 1 << 18;

impl Database {
    /// Recognises the database at `path`: a DB-IP or IP2Location CSV file, or GeoLite2
    /// Country CSV given as its folder or any of its files.
    pub fn open(path: &Path) -> Result<Database, GeoError> {
        let io_err = |source| GeoError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io_err)?;
        let geolite_dir = if meta.is_dir() {
            Some(path.to_owned())
        } else if file_name(path).contains("-Blocks-IPv") || file_name(path).contains("-Locations-")
        {
            path.parent().map(Path::to_owned)
        } else {
            None
        };
        if let Some(dir) = geolite_dir {
            return Database::geolite(path, &dir);
        }
        let mut head = [0u8; 512];
        let n = read_head(path, &mut head).map_err(io_err)?;
        let head = &head[..n];
        let refuse = |why: &str| GeoError::Format {
            path: path.to_owned(),
            why: why.to_owned(),
        };
        if head.starts_with(&[0x1f, 0x8b]) {
            return Err(refuse(
                "gzip-compressed: unpack it first (gunzip), then point [geo] database at the .csv",
            ));
        }
        if head.starts_with(b"PK\x03\x04") {
            return Err(refuse(
                "a zip archive: unpack it first (unzip), then point [geo] database at the .csv (GeoLite2: at the unpacked folder)",
            ));
        }
        if file_name(path).to_ascii_lowercase().ends_with(".mmdb") {
            return Ok(Database {
                path: path.to_owned(),
                format: Format::Mmdb,
                files: vec![path.to_owned()],
            });
        }
        let text = String::from_utf8_lossy(head);
        let first = text
            .trim_start_matches('\u{feff}')
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let mut fields = Vec::new();
        let _ = split_csv(first, &mut fields);
        let f0 = fields.first().map(|s| s.trim()).unwrap_or("");
        let format = if f0 == "network" {
            return Database::geolite(path, path.parent().unwrap_or(Path::new(".")));
        } else if !f0.is_empty() && f0.bytes().all(|b| b.is_ascii_digit()) {
            Format::Ip2Location
        } else if f0.parse::<IpAddr>().is_ok() || f0.contains("start") {
            Format::DbIp
        } else {
            return Err(refuse(
                "not a country database pbxwall reads: expected DB-IP lite CSV (start,end,country), IP2Location LITE DB1 CSV, the GeoLite2 Country CSV folder, or an .mmdb file",
            ));
        };
        Ok(Database {
            path: path.to_owned(),
            format,
            files: vec![path.to_owned()],
        })
    }

    fn geolite(path: &Path, dir: &Path) -> Result<Database, GeoError> {
        let entries = std::fs::read_dir(dir).map_err(|source| GeoError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let find = |suffix: &str| names.iter().find(|n| n.ends_with(suffix)).cloned();
        let locations = find("-Country-Locations-en.csv").or_else(|| {
            names
                .iter()
                .find(|n| n.contains("-Country-Locations-") && n.ends_with(".csv"))
                .cloned()
        });
        let blocks: Vec<String> = ["-Country-Blocks-IPv4.csv", "-Country-Blocks-IPv6.csv"]
            .iter()
            .filter_map(|s| find(s))
            .collect();
        let (Some(locations), false) = (locations, blocks.is_empty()) else {
            return Err(GeoError::Format {
                path: path.to_owned(),
                why: format!(
                    "GeoLite2 Country CSV needs *-Country-Blocks-IPv4.csv and/or *-Country-Blocks-IPv6.csv and *-Country-Locations-en.csv in {}",
                    dir.display()
                ),
            });
        };
        let mut files = vec![dir.join(locations)];
        files.extend(blocks.iter().map(|b| dir.join(b)));
        Ok(Database {
            path: path.to_owned(),
            format: Format::GeoLite2,
            files,
        })
    }

    /// The newest modification time of its files.
    pub fn modified(&self) -> Option<SystemTime> {
        self.files
            .iter()
            .filter_map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
            .max()
    }

    /// Calls `f` with every row's range and country (`None`: unknown), in file order;
    /// returns the number of rows. Ranges of IPv4 addresses written as IPv6
    /// (`::ffff:a.b.c.d`, IP2Location's IPv6 file) come as IPv4.
    pub fn for_each(
        &self,
        mut f: impl FnMut(AddrRange, Option<Country>),
    ) -> Result<usize, GeoError> {
        self.scan(|r, c| {
            f(r, c);
            ControlFlow::Continue(())
        })
    }

    /// The country of `addr` and the range of its row; `None` when no row holds it.
    /// Stops reading at the row.
    pub fn lookup(&self, addr: IpAddr) -> Result<Option<(AddrRange, Option<Country>)>, GeoError> {
        let addr = addr.to_canonical();
        if self.format == Format::Mmdb {
            let reader = open_mmdb(&self.files[0])?;
            let bad = |e| mmdb_error(&self.files[0], e);
            let found = reader.lookup(addr).map_err(bad)?;
            if !found.has_data() {
                return Ok(None);
            }
            return mmdb_row(&found).map(Some).map_err(bad);
        }
        let mut found = None;
        self.scan(|r, c| {
            if r.contains(addr) {
                found = Some((r, c));
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(found)
    }

    fn scan(
        &self,
        mut f: impl FnMut(AddrRange, Option<Country>) -> ControlFlow<()>,
    ) -> Result<usize, GeoError> {
        let mut rows = 0;
        match self.format {
            Format::Mmdb => {
                let reader = open_mmdb(&self.files[0])?;
                let bad = |e: maxminddb::MaxMindDbError| mmdb_error(&self.files[0], e);
                for item in reader.networks(Default::default()).map_err(bad)? {
                    let item = item.map_err(bad)?;
                    let (range, country) = mmdb_row(&item).map_err(bad)?;
                    rows += 1;
                    if f(range, country).is_break() {
                        break;
                    }
                }
            }
            Format::DbIp | Format::Ip2Location => {
                rows = self.csv_part(0, u64::MAX, &mut f)?.0;
            }
            Format::GeoLite2 => {
                let countries = geolite_locations(&self.files[0])?;
                for file in &self.files[1..] {
                    let mut stopped = false;
                    read_rows(file, |at, fields| {
                        if at.line == 1 {
                            if fields.first().map(|s| s.trim()) != Some("network") {
                                return Err(at.corrupt(
                                    "expected the GeoLite2 header \"network,geoname_id,registered_country_geoname_id,...\"".into(),
                                ));
                            }
                            return Ok(ControlFlow::Continue(()));
                        }
                        let (range, country) =
                            geolite_block(fields, &countries).map_err(|m| at.corrupt(m))?;
                        rows += 1;
                        let flow = f(range, country);
                        stopped = flow.is_break();
                        Ok(flow)
                    })?;
                    if stopped {
                        break;
                    }
                }
            }
        }
        Ok(rows)
    }
}

impl Database {
    /// The rows of a one-file CSV database (DB-IP, IP2Location) in the bytes `start..end`
    /// (`start` at a line's start): `(rows, lines)`; line numbers in errors count from
    /// `start`.
    fn csv_part(
        &self,
        start: u64,
        end: u64,
        f: &mut impl FnMut(AddrRange, Option<Country>) -> ControlFlow<()>,
    ) -> Result<(usize, usize), GeoError> {
        let mut rows = 0;
        let path = &self.files[0];
        let lines = if self.format == Format::DbIp {
            read_lines_in(path, start, end, |at, line| {
                // The plain rows DB-IP writes are read straight from the bytes; any other
                // line goes the general way, which also says what is wrong with it.
                let (range, country) = match dbip_plain_row(line) {
                    Some(row) => row,
                    None => {
                        let mut fields = Vec::with_capacity(4);
                        fields_of(at, line, &mut fields)?;
                        if at.line == 1
                            && at.file_start
                            && fields.first().is_some_and(|f| f.contains("start"))
                        {
                            return Ok(ControlFlow::Continue(())); // a header
                        }
                        dbip_row(&fields).map_err(|m| at.corrupt(m))?
                    }
                };
                rows += 1;
                Ok(f(range, country))
            })?
        } else {
            let v6_numbers = file_name(path).to_ascii_uppercase().contains("IPV6");
            read_rows_in(path, start, end, |at, fields| {
                let (range, country) =
                    ip2location_row(fields, v6_numbers).map_err(|m| at.corrupt(m))?;
                rows += 1;
                for r in unmap_v4(range) {
                    if f(r, country).is_break() {
                        return Ok(ControlFlow::Break(()));
                    }
                }
                Ok(ControlFlow::Continue(()))
            })?
        };
        Ok((rows, lines))
    }

    /// [`Database::for_each`] on `parts` threads, each with its own state (from `init`),
    /// for the one-file CSV formats; the others, or a small file, are read by one. The
    /// file is cut at line starts; an error names its file and line as one reader would
    /// (the earliest part's error, its line counted from the file's start). Returns the
    /// states in file order and the number of rows.
    pub fn for_each_parts<S: Send>(
        &self,
        parts: usize,
        init: impl Fn() -> S + Sync,
        f: impl Fn(&mut S, AddrRange, Option<Country>) + Sync,
    ) -> Result<(Vec<S>, usize), GeoError> {
        let size = std::fs::metadata(&self.files[0])
            .map(|m| m.len())
            .unwrap_or(0);
        if !matches!(self.format, Format::DbIp | Format::Ip2Location)
            || parts < 2
            || size < (1 << 20)
        {
            let mut state = init();
            let rows = self.for_each(|r, c| f(&mut state, r, c))?;
            return Ok((vec![state], rows));
        }
        // Part boundaries: just after the first newline at or past each even cut.
        let mut cuts = vec![0u64];
        {
            let io_err = |source| GeoError::Io {
                path: self.files[0].clone(),
                source,
            };
            let mut file = File::open(&self.files[0]).map_err(io_err)?;
            for k in 1..parts {
                let at = size * k as u64 / parts as u64;
                std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(at)).map_err(io_err)?;
                let mut skipped = Vec::new();
                let n = BufReader::new((&mut file).take(MAX_LINE as u64 + 1))
                    .read_until(b'\n', &mut skipped)
                    .map_err(io_err)?;
                let cut = (at + n as u64).min(size);
                if cut > *cuts.last().unwrap_or(&0) {
                    cuts.push(cut);
                }
            }
        }
        cuts.push(size);
        cuts.dedup();
        let results: Vec<Result<(S, usize, usize), GeoError>> = std::thread::scope(|sc| {
            let handles: Vec<_> = cuts
                .windows(2)
                .map(|w| {
                    let (start, end) = (w[0], w[1]);
                    let (init, f) = (&init, &f);
                    sc.spawn(move || {
                        let mut state = init();
                        let (rows, lines) = self.csv_part(start, end, &mut |r, c| {
                            f(&mut state, r, c);
                            ControlFlow::Continue(())
                        })?;
                        Ok((state, rows, lines))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(GeoError::Format {
                            path: self.files[0].clone(),
                            why: "a reader thread failed".into(),
                        })
                    })
                })
                .collect()
        });
        let (mut states, mut rows, mut lines_before) = (Vec::new(), 0, 0);
        for r in results {
            match r {
                Ok((state, n, lines)) => {
                    states.push(state);
                    rows += n;
                    lines_before += lines;
                }
                Err(GeoError::Corrupt {
                    path,
                    line,
                    message,
                }) => {
                    return Err(GeoError::Corrupt {
                        path,
                        line: line + lines_before,
                        message,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok((states, rows))
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_head(path: &Path, buf: &mut [u8]) -> io::Result<usize> {
    let mut f = File::open(path)?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Where a row is, for errors.
struct At<'a> {
    path: &'a Path,
    line: usize,
    /// Reading from the file's first byte (a header or byte-order mark may come first).
    file_start: bool,
}

impl At<'_> {
    fn corrupt(&self, message: String) -> GeoError {
        GeoError::Corrupt {
            path: self.path.to_owned(),
            line: self.line,
            message,
        }
    }
}

/// Streams the non-empty lines of a CSV file, split into fields, to `row`.
fn read_rows(
    path: &Path,
    row: impl FnMut(&At, &[&str]) -> Result<ControlFlow<()>, GeoError>,
) -> Result<(), GeoError> {
    read_rows_in(path, 0, u64::MAX, row).map(|_| ())
}

/// [`read_rows`] over the bytes `start..end` of the file (`start` at a line's start); line
/// numbers count from `start`. Returns the number of lines read.
fn read_rows_in(
    path: &Path,
    start: u64,
    end: u64,
    mut row: impl FnMut(&At, &[&str]) -> Result<ControlFlow<()>, GeoError>,
) -> Result<usize, GeoError> {
    // The fields' storage, kept from line to line (emptied, so it borrows nothing).
    let mut spare: Vec<&'static str> = Vec::with_capacity(16);
    read_lines_in(path, start, end, |at, line| {
        let mut fields: Vec<&str> = std::mem::take(&mut spare);
        let flow = fields_of(at, line, &mut fields).and_then(|()| row(at, &fields));
        fields.clear();
        // Same size and alignment: the allocation is reused, nothing is copied.
        spare = fields.into_iter().map(|_| "").collect();
        flow
    })
}

/// The CSV fields of a line into `fields`; an error for a line that is not UTF-8 text or
/// not CSV.
fn fields_of<'a>(at: &At, line: &'a [u8], fields: &mut Vec<&'a str>) -> Result<(), GeoError> {
    let Ok(text) = std::str::from_utf8(line) else {
        return Err(at.corrupt("not UTF-8 text".into()));
    };
    split_csv(text, fields).map_err(|m| at.corrupt(m.into()))
}

/// The lines of the bytes `start..end` of the file (`start` at a line's start), without
/// their line ends (and the first line without a UTF-8 byte order mark), blank lines
/// skipped; line numbers count from `start`. Returns the number of lines read.
fn read_lines_in(
    path: &Path,
    start: u64,
    end: u64,
    mut each: impl FnMut(&At, &[u8]) -> Result<ControlFlow<()>, GeoError>,
) -> Result<usize, GeoError> {
    let io_err = |source| GeoError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start)).map_err(io_err)?;
    let mut at = At {
        path,
        line: 0,
        file_start: start == 0,
    };
    // Read in blocks; the lines are cut out of the block (no copy of each line).
    let mut left = end.saturating_sub(start);
    let mut buf = vec![0u8; BLOCK];
    let mut have = 0;
    loop {
        while left > 0 && have < buf.len() {
            let want = (buf.len() - have).min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = file
                .read(&mut buf[have..have + want])
                .map_err(|source| GeoError::Io {
                    path: path.to_owned(),
                    source,
                })?;
            if n == 0 {
                left = 0;
            }
            have += n;
            left -= n as u64;
        }
        let mut pos = 0;
        while pos < have {
            let (line_end, next) = match memchr::memchr(b'\n', &buf[pos..have]) {
                Some(k) => (pos + k, pos + k + 1),
                // The last line, without a newline, once the whole part is read.
                None if left == 0 => (have, have),
                None => break,
            };
            at.line += 1;
            if next - pos > MAX_LINE {
                return Err(at.corrupt(format!("line longer than {MAX_LINE} bytes")));
            }
            let mut line: &[u8] = &buf[pos..line_end];
            pos = next;
            while let [rest @ .., b'\n' | b'\r'] = line {
                line = rest;
            }
            if at.line == 1 && at.file_start && line.starts_with(b"\xef\xbb\xbf") {
                line = &line[3..];
            }
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            if each(&at, line)?.is_break() {
                return Ok(at.line);
            }
        }
        if left == 0 && pos >= have {
            return Ok(at.line);
        }
        if pos == 0 && have == buf.len() {
            at.line += 1;
            return Err(at.corrupt(format!("line longer than {MAX_LINE} bytes")));
        }
        buf.copy_within(pos..have, 0);
        have -= pos;
    }
}

/// Splits a CSV line into fields; double quotes around a field are removed (a doubled
/// quote inside stays as it is: no field pbxwall uses has one).
fn split_csv<'a>(line: &'a str, out: &mut Vec<&'a str>) -> Result<(), &'static str> {
    out.clear();
    let bytes = line.as_bytes();
    let mut i = 0;
    loop {
        if bytes.get(i) == Some(&b'"') {
            let start = i + 1;
            let mut j = start;
            loop {
                match bytes.get(j) {
                    None => return Err("unterminated quoted field"),
                    Some(b'"') if bytes.get(j + 1) == Some(&b'"') => j += 2,
                    Some(b'"') => break,
                    Some(_) => j += 1,
                }
            }
            out.push(&line[start..j]);
            i = j + 1;
            match bytes.get(i) {
                None => return Ok(()),
                Some(b',') => i += 1,
                Some(_) => return Err("text after a quoted field"),
            }
        } else {
            match memchr::memchr(b',', &bytes[i..]) {
                Some(k) => {
                    out.push(&line[i..i + k]);
                    i += k + 1;
                }
                None => {
                    out.push(&line[i..]);
                    return Ok(());
                }
            }
        }
    }
}

/// A country field: two letters, or a marker of "unknown" (`ZZ`, `-`, empty).
fn country_field(s: &str) -> Result<Option<Country>, String> {
    let s = s.trim();
    if s.is_empty() || s == "-" {
        return Ok(None);
    }
    match Country::from_db(s) {
        Some(c) => Ok(Some(c)),
        None if s.eq_ignore_ascii_case("ZZ") => Ok(None),
        None => Err(format!("invalid country code {s:?}: expected two letters")),
    }
}

fn range_of(start: IpAddr, end: IpAddr) -> Result<AddrRange, String> {
    let (a, b) = (AddrRange::from_addr(start), AddrRange::from_addr(end));
    if a.family != b.family {
        return Err(format!("range {start} to {end} mixes IPv4 and IPv6"));
    }
    if a.start > b.start {
        return Err(format!("range {start} to {end} ends before it starts"));
    }
    Ok(AddrRange {
        family: a.family,
        start: a.start,
        end: b.start,
    })
}

/// `start,end,country` (DB-IP).
fn dbip_row(fields: &[&str]) -> Result<(AddrRange, Option<Country>), String> {
    let [start, end, country, ..] = fields else {
        return Err(format!(
            "expected start,end,country (DB-IP lite), got {} field(s)",
            fields.len()
        ));
    };
    let ip = |s: &str| parse_ip(s.trim()).ok_or_else(|| format!("invalid address {:?}", s.trim()));
    Ok((range_of(ip(start)?, ip(end)?)?, country_field(country)?))
}

/// A DB-IP row as DB-IP writes it, `2001:db8::,2001:db8::ffff,DE`: two addresses of one
/// family in the forms the fast parsers take, the first not above the second, and two
/// letters; read from the bytes, with the result [`dbip_row`] gives. `None` for anything
/// else (quotes, spaces, other fields, an unknown-country marker, an error): such a line is
/// left to [`dbip_row`].
fn dbip_plain_row(line: &[u8]) -> Option<(AddrRange, Option<Country>)> {
    let c1 = memchr::memchr(b',', line)?;
    let c2 = c1 + 1 + memchr::memchr(b',', &line[c1 + 1..])?;
    let (a, b) = (&line[..c1], &line[c1 + 1..c2]);
    let &[x, y] = &line[c2 + 1..] else {
        return None;
    };
    if !(x.is_ascii_alphabetic() && y.is_ascii_alphabetic()) {
        return None;
    }
    let country = Country::from_letters(x, y);
    let v6 = a.iter().take(5).any(|c| *c == b':');
    let (family, start, end) = if v6 {
        (Family::V6, parse_plain_v6(a)?, parse_plain_v6(b)?)
    } else {
        (
            Family::V4,
            u128::from(parse_plain_v4(a)?),
            u128::from(parse_plain_v4(b)?),
        )
    };
    (start <= end).then_some((AddrRange { family, start, end }, country))
}

/// `"from","to","CC","Country"` (IP2Location, addresses as decimal integers).
fn ip2location_row(
    fields: &[&str],
    v6_numbers: bool,
) -> Result<(AddrRange, Option<Country>), String> {
    let [from, to, country, ..] = fields else {
        return Err(format!(
            "expected \"from\",\"to\",\"country code\",\"country\" (IP2Location LITE DB1), got {} field(s)",
            fields.len()
        ));
    };
    let num = |s: &str| {
        s.trim()
            .parse::<u128>()
            .map_err(|_| format!("invalid address number {:?}", s.trim()))
    };
    let (start, end) = (num(from)?, num(to)?);
    if start > end {
        return Err(format!("range {start} to {end} ends before it starts"));
    }
    let family = if v6_numbers || end > u128::from(u32::MAX) {
        Family::V6
    } else {
        Family::V4
    };
    Ok((AddrRange { family, start, end }, country_field(country)?))
}

/// First and last number of `::ffff:0.0.0.0/96`.
const MAPPED_FIRST: u128 = 0xffff_0000_0000;
const MAPPED_LAST: u128 = 0xffff_ffff_ffff;

/// An IPv6 range split at the IPv4-mapped block: the part inside comes back as IPv4.
pub(super) fn unmap_v4(r: AddrRange) -> impl Iterator<Item = AddrRange> {
    let mut out: [Option<AddrRange>; 3] = [None; 3];
    if r.family == Family::V4 || r.end < MAPPED_FIRST || r.start > MAPPED_LAST {
        out[0] = Some(r);
    } else {
        if r.start < MAPPED_FIRST {
            out[0] = Some(AddrRange {
                end: MAPPED_FIRST - 1,
                ..r
            });
        }
        out[1] = Some(AddrRange {
            family: Family::V4,
            start: r.start.max(MAPPED_FIRST) - MAPPED_FIRST,
            end: r.end.min(MAPPED_LAST) - MAPPED_FIRST,
        });
        if r.end > MAPPED_LAST {
            out[2] = Some(AddrRange {
                start: MAPPED_LAST + 1,
                ..r
            });
        }
    }
    out.into_iter().flatten()
}

/// The GeoLite2 locations file: geoname id → country (`None` for continents).
fn geolite_locations(path: &Path) -> Result<HashMap<u64, Option<Country>>, GeoError> {
    let mut map = HashMap::new();
    let mut cols: Option<(usize, usize)> = None;
    read_rows(path, |at, fields| {
        let Some((id_col, cc_col)) = cols else {
            let pos = |name: &str| fields.iter().position(|f| f.trim() == name);
            match (pos("geoname_id"), pos("country_iso_code")) {
                (Some(a), Some(b)) => cols = Some((a, b)),
                _ => {
                    return Err(at.corrupt(
                        "expected the GeoLite2 locations header with geoname_id and country_iso_code".into(),
                    ));
                }
            }
            return Ok(ControlFlow::Continue(()));
        };
        let (Some(id), Some(cc)) = (fields.get(id_col), fields.get(cc_col)) else {
            return Err(at.corrupt(format!(
                "expected at least {} fields",
                cc_col.max(id_col) + 1
            )));
        };
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| at.corrupt(format!("invalid geoname_id {:?}", id.trim())))?;
        map.insert(id, country_field(cc).map_err(|m| at.corrupt(m))?);
        Ok(ControlFlow::Continue(()))
    })?;
    if cols.is_none() {
        return Err(GeoError::Corrupt {
            path: path.to_owned(),
            line: 1,
            message: "empty locations file".into(),
        });
    }
    Ok(map)
}

/// `network,geoname_id,registered_country_geoname_id,...`: the country of the location,
/// or of the registration when the location is empty (as MaxMind documents).
fn geolite_block(
    fields: &[&str],
    countries: &HashMap<u64, Option<Country>>,
) -> Result<(AddrRange, Option<Country>), String> {
    let [network, geoname, registered, ..] = fields else {
        return Err(format!(
            "expected network,geoname_id,registered_country_geoname_id,... (GeoLite2), got {} field(s)",
            fields.len()
        ));
    };
    let net: IpNet = network
        .trim()
        .parse()
        .map_err(|_| format!("invalid network {:?}", network.trim()))?;
    if net.trunc() != net {
        return Err(format!(
            "invalid network {net}: host bits set (the network is {})",
            net.trunc()
        ));
    }
    let id = [geoname, registered]
        .into_iter()
        .map(|s| s.trim())
        .find(|s| !s.is_empty());
    let country = match id {
        None => None,
        Some(id) => {
            let n: u64 = id
                .parse()
                .map_err(|_| format!("invalid geoname_id {id:?}"))?;
            *countries
                .get(&n)
                .ok_or_else(|| format!("geoname_id {n} is not in the locations file"))?
        }
    };
    Ok((AddrRange::from_net(net), country))
}

fn open_mmdb(path: &Path) -> Result<maxminddb::Reader<Vec<u8>>, GeoError> {
    let bytes = std::fs::read(path).map_err(|source| GeoError::Io {
        path: path.to_owned(),
        source,
    })?;
    maxminddb::Reader::from_source(bytes).map_err(|e| mmdb_error(path, e))
}

fn mmdb_error(path: &Path, e: maxminddb::MaxMindDbError) -> GeoError {
    GeoError::Format {
        path: path.to_owned(),
        why: format!("not a valid MMDB database: {e}"),
    }
}

/// A network of an MMDB file and its country: `country.iso_code`, or
/// `registered_country.iso_code` when the record has no location (as in the CSV).
fn mmdb_row<S: AsRef<[u8]>>(
    item: &maxminddb::LookupResult<'_, S>,
) -> Result<(AddrRange, Option<Country>), maxminddb::MaxMindDbError> {
    use maxminddb::PathElement::Key;
    let net = item.network()?;
    // An IpNetwork's prefix is never longer than its address, so IpNet::new cannot fail;
    // the single address stands in should it ever.
    let net = IpNet::new(net.ip(), net.prefix()).unwrap_or_else(|_| IpNet::from(net.ip()));
    let mut country = None;
    for key in ["country", "registered_country"] {
        if let Some(code) = item.decode_path::<&str>(&[Key(key), Key("iso_code")])? {
            country = Country::from_db(code);
            break;
        }
    }
    Ok((AddrRange::from_net(net.trunc()), country))
}

/// [`parse_ip`], for the tests.
#[cfg(test)]
pub(super) fn tests_parse_ip(s: &str) -> Option<IpAddr> {
    parse_ip(s)
}

/// A row: its range and country.
#[cfg(test)]
pub(super) type Row = (AddrRange, Option<Country>);

/// A DB-IP line read both ways, for the tests: [`dbip_plain_row`], and the general
/// [`split_csv`] + [`dbip_row`] (`Err` for a line it refuses).
#[cfg(test)]
pub(super) fn tests_dbip_both(line: &str) -> (Option<Row>, Result<Row, String>) {
    let mut fields = Vec::new();
    let general = split_csv(line, &mut fields)
        .map_err(str::to_owned)
        .and_then(|()| dbip_row(&fields));
    (dbip_plain_row(line.as_bytes()), general)
}

/// An address as std parses it, the plain forms a database holds read by
/// [`crate::addrset::parse_plain`], anything else by std.
fn parse_ip(s: &str) -> Option<IpAddr> {
    crate::addrset::parse_plain(s.as_bytes()).or_else(|| s.parse().ok())
}
