//! IP Country: the geo gate of the open paths.
//!
//! `[geo] allow = ["DE", "AT"]` (or `deny = [...]`) with `[geo] database` pointing at a
//! country database turns the ranges of the allowed countries into two interval sets,
//! `geo_v4` and `geo_v6`, and every *open path* of the input chain (a port open to sources
//! that are not whitelisted: RTP with `[rtp] from = "any"`) gets `ip saddr @geo_v4` /
//! `ip6 saddr @geo_v6` added, with the small sets `geo_added_*` and `geo_removed_*` that
//! `geo update` changes instead of the large ones ([`Gate`]). A packet pays a binary search
//! in the kernel, however many ranges the database has.
//!
//! What never depends on it: the loopback, established flows, ICMP, trusted networks and
//! whitelisted accounts (all accepted before the open paths), and the SSH lockout guard,
//! which judges the compiled ruleset, geo sets included.
//!
//! The pieces:
//! - [`Country`]: an ISO 3166-1 alpha-2 code, validated;
//! - [`GeoSettings`]: the `[geo]` table;
//! - [`read`]: the database readers (DB-IP lite CSV, GeoLite2 Country CSV, IP2Location LITE
//!   DB1 CSV, IPv4 and IPv6, streaming, row by row; MMDB with the `maxminddb` crate);
//! - [`select`]: the ranges of the allowed countries, merged per family ([`Selection`]);
//! - [`Gate`]: what the compiler adds: the sets, and [`Gate::gated`], which turns one
//!   open-path rule into its gated rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Serialize;

use crate::addrset::{AddrRange, Family};
use crate::ruleset::{Element, Match, Rule, Set};

pub mod applied;
pub mod read;
#[cfg(test)]
pub(crate) mod tests;

pub use applied::Applied;
pub use read::{Database, Format, GeoError};

/// Base name of the gate's sets: `geo_v4`, `geo_v6`.
pub const GEO_SET: &str = "geo";

/// The officially assigned ISO 3166-1 alpha-2 codes (249, as in the ISO 3166 Maintenance
/// Agency's list and tzdata's `iso3166.tab`), and `XK` (Kosovo), a user-assigned code that
/// GeoLite2, DB-IP and IP2Location use.
const ISO_3166_ALPHA2: &str = "\
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ \
BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM \
DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS \
GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN \
KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ \
MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM \
PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV \
SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI \
VN VU WF WS YE YT ZA ZM ZW XK";

/// A country: two ASCII capital letters.
///
/// In the settings only ISO 3166-1 alpha-2 codes are accepted ([`Country::from_str`]); in a
/// database any two letters are kept as they are (databases also use `EU`, `AP`), and the
/// markers of "unknown" (`ZZ`, `-`, empty) mean no country.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Country([u8; 2]);

impl Country {
    /// The code of a database row: two ASCII letters (any case), `None` for the markers of
    /// "unknown" and anything else that is not a code. Never fails: the caller decides
    /// whether an unusable code is an error.
    pub fn from_db(field: &str) -> Option<Country> {
        match field.as_bytes() {
            [a, b] => Country::from_letters(*a, *b),
            _ => None,
        }
    }

    /// [`Country::from_db`] of the two bytes of a field.
    pub fn from_letters(a: u8, b: u8) -> Option<Country> {
        if !(a.is_ascii_alphabetic() && b.is_ascii_alphabetic()) {
            return None;
        }
        let c = Country([a.to_ascii_uppercase(), b.to_ascii_uppercase()]);
        (c.0 != *b"ZZ").then_some(c)
    }

    /// The code, e.g. `DE`.
    pub fn as_str(&self) -> &str {
        // Two ASCII letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// Whether the code is an assigned ISO 3166-1 alpha-2 code (or `XK`).
    pub fn is_iso(&self) -> bool {
        ISO_3166_ALPHA2.split(' ').any(|c| c == self.as_str())
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Country {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Why a country code in the settings was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid country code {0:?}: expected an ISO 3166-1 alpha-2 code of two capital letters, e.g. \"DE\", \"US\", \"GB\""
)]
pub struct BadCountry(pub String);

impl FromStr for Country {
    type Err = BadCountry;

    /// An ISO 3166-1 alpha-2 code, upper case (`DE`, `GB`; `XK` too). `UK`, `EU`, `de` and
    /// unassigned codes are refused.
    fn from_str(s: &str) -> Result<Country, BadCountry> {
        match s.as_bytes() {
            [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => {
                let c = Country([*a, *b]);
                if c.is_iso() {
                    Ok(c)
                } else {
                    Err(BadCountry(s.to_owned()))
                }
            }
            _ => Err(BadCountry(s.to_owned())),
        }
    }
}

/// `[geo]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GeoSettings {
    /// The country database: a DB-IP lite or IP2Location LITE CSV file, GeoLite2 Country
    /// CSV (its folder, or one of its files), or an MMDB file. `None`: not set.
    pub database: Option<PathBuf>,
    /// Countries allowed on the open paths; empty with `deny` empty: no gate.
    pub allow: Vec<Country>,
    /// Countries refused on the open paths (everything else, unknown addresses included,
    /// stays open); only when `allow` is empty.
    pub deny: Vec<Country>,
}

impl GeoSettings {
    /// Whether the gate is configured (`allow` or `deny` given).
    pub fn enabled(&self) -> bool {
        !self.allow.is_empty() || !self.deny.is_empty()
    }

    /// What the gate passes, in one phrase: `DE, AT` or `all but CN, RU`.
    pub fn describe(&self) -> String {
        let list = |v: &[Country]| {
            v.iter()
                .map(Country::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.allow.is_empty() {
            format!("all but {}", list(&self.deny))
        } else {
            list(&self.allow)
        }
    }
}

/// The ranges the gate lets through, per family, merged; and what the database held.
///
/// The ranges are kept as the elements of the sets they go into: made so as the database
/// is read (on its reader threads), 300,000 of them are not copied once more, into fresh
/// memory, on the way to the kernel (BENCHMARKS.md §7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    /// IPv4 ranges, sorted and merged.
    pub v4: Vec<Element>,
    /// IPv6 ranges, sorted and merged.
    pub v6: Vec<Element>,
    /// Rows of the database read (every country).
    pub rows: usize,
    /// Per listed country (allow or deny list), its rows in the database.
    pub rows_of: BTreeMap<Country, usize>,
}

impl Selection {
    /// The listed countries the database has no range for.
    pub fn missing(&self) -> Vec<Country> {
        self.rows_of
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(c, _)| *c)
            .collect()
    }
}

/// Reads the database and selects the ranges of the gate: the allowed countries' ranges,
/// or, with `deny`, every address but the denied countries' ranges. Merged per family
/// (adjacent ranges of allowed countries become one).
///
/// Refused ([`GeoError::Empty`]): an allow list none of whose countries has a range in the
/// database (the gate would close the open paths to everyone, which is what an outdated or
/// wrong file does, not what was asked for).
pub fn select(db: &Database, settings: &GeoSettings) -> Result<Selection, GeoError> {
    let listed: BTreeSet<Country> = if settings.allow.is_empty() {
        settings.deny.iter().copied().collect()
    } else {
        settings.allow.iter().copied().collect()
    };
    // Sorted: a row's country is found by a binary search, its count kept by index.
    let listed: Vec<Country> = listed.into_iter().collect();
    // Both CPUs read half of a large CSV file each.
    let parts = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    type Part = (Vec<Element>, Vec<Element>, Vec<usize>);
    let (states, rows) = db.for_each_parts(
        parts,
        || -> Part { (Vec::new(), Vec::new(), vec![0; listed.len()]) },
        |(v4, v6, counts), range, country| {
            if let Some(i) = country.and_then(|c| listed.binary_search(&c).ok()) {
                counts[i] += 1;
                match range.family {
                    Family::V4 => v4.push(Element::address(range)),
                    Family::V6 => v6.push(Element::address(range)),
                }
            }
        },
    )?;
    let mut rows_of: BTreeMap<Country, usize> = listed.iter().map(|c| (*c, 0)).collect();
    // The first part's vectors grow by the others' ranges (no copy of the first).
    let mut parts = states.into_iter();
    let (mut v4, mut v6, first) = parts.next().unwrap_or_default();
    for (p4, p6, counts) in std::iter::once((Vec::new(), Vec::new(), first)).chain(parts) {
        v4.extend(p4);
        v6.extend(p6);
        for (c, n) in listed.iter().zip(counts) {
            *rows_of.entry(*c).or_default() += n;
        }
    }
    merge_in_place(&mut v4);
    merge_in_place(&mut v6);
    let mut sel = Selection {
        v4,
        v6,
        rows,
        rows_of,
    };
    if settings.allow.is_empty() {
        sel.v4 = elements(complement(Family::V4, &sel.v4));
        sel.v6 = elements(complement(Family::V6, &sel.v6));
    } else if sel.v4.is_empty() && sel.v6.is_empty() {
        return Err(GeoError::Empty {
            path: db.path.clone(),
            countries: settings.describe(),
        });
    }
    Ok(sel)
}

/// Sorts ranges of one family (or plain set elements) and joins overlapping and adjacent
/// ones, in place (as [`crate::addrset::merge`] does, without a second copy of a large
/// set).
pub fn merge_in_place<T: Ranged + Ord>(v: &mut Vec<T>) {
    v.sort_unstable();
    let mut w = 0;
    for i in 0..v.len() {
        let r = v[i].range();
        if w > 0 {
            let last = v[w - 1].range_mut();
            if last.end == r.family.max() || r.start <= last.end + 1 {
                last.end = last.end.max(r.end);
                continue;
            }
        }
        v.swap(w, i);
        w += 1;
    }
    v.truncate(w);
    v.shrink_to_fit();
}

/// Plain set elements of `ranges`.
pub fn elements(ranges: Vec<AddrRange>) -> Vec<Element> {
    ranges.into_iter().map(Element::address).collect()
}

/// The ranges of a family not covered by `ranges` (sorted, merged).
pub fn complement(family: Family, ranges: &[impl Ranged]) -> Vec<AddrRange> {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    let mut next: Option<u128> = Some(0);
    for r in ranges {
        let r = r.range();
        if let Some(n) = next
            && r.start > n
        {
            out.push(AddrRange {
                family,
                start: n,
                end: r.start - 1,
            });
        }
        next = (r.end < family.max()).then(|| r.end + 1);
    }
    if let Some(n) = next {
        out.push(AddrRange {
            family,
            start: n,
            end: family.max(),
        });
    }
    out
}

/// The geo gate as the compiler uses it: off, or the addresses it lets through.
///
/// In the kernel the gate is three sets per family: the base `geo_v4` (loaded in full by
/// `restart`), and `geo_added_v4` / `geo_removed_v4`, the ranges `geo update` added to or
/// took from it since (see [`Gate::gated`]). A changed database then costs the kernel only
/// the small sets: a change to an interval set makes the kernel (6.18) rebuild the lookup
/// array of the whole set, which for 300,000 ranges is most of an update's time
/// (BENCHMARKS.md §7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Gate {
    /// No `[geo] allow`/`deny`: open paths are open to every source.
    #[default]
    Off,
    /// Open paths only for the sources in these ranges.
    On {
        /// IPv4 ranges (sorted, merged), as set elements.
        v4: Vec<Element>,
        /// IPv6 ranges (sorted, merged), as set elements.
        v6: Vec<Element>,
        /// What the base sets hold when it is not `v4`/`v6` (updates were journaled since
        /// the base was loaded, [`Applied::base`]); `None`: the base is the gate itself.
        base: Option<Box<GateBase>>,
    },
}

/// The ranges of the base sets `geo_v4`/`geo_v6` (each sorted, merged).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GateBase {
    /// IPv4 ranges.
    pub v4: Vec<AddrRange>,
    /// IPv6 ranges.
    pub v6: Vec<AddrRange>,
}

impl GateBase {
    /// The ranges of `family`.
    pub fn of(&self, family: Family) -> &[AddrRange] {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }
}

/// Base name of the sets of ranges added to the base since it was loaded:
/// `geo_added_v4`, `geo_added_v6`.
pub const GEO_ADDED_SET: &str = "geo_added";
/// Base name of the sets of ranges taken from the base since it was loaded:
/// `geo_removed_v4`, `geo_removed_v6`.
pub const GEO_REMOVED_SET: &str = "geo_removed";

impl Gate {
    /// The gate of a selection.
    pub fn from_selection(sel: Selection) -> Gate {
        Gate::On {
            v4: sel.v4,
            v6: sel.v6,
            base: None,
        }
    }

    /// How many IPv4 and IPv6 ranges it lets through (none when off).
    pub fn ranges_len(&self) -> (usize, usize) {
        match self {
            Gate::Off => (0, 0),
            Gate::On { v4, v6, .. } => (v4.len(), v6.len()),
        }
    }

    /// Whether the gate is on.
    pub fn is_on(&self) -> bool {
        matches!(self, Gate::On { .. })
    }

    /// The base set's name of a family: `geo_v4`, `geo_v6`.
    pub fn set_name(family: Family) -> String {
        crate::compile::set_name(GEO_SET, family)
    }

    /// The name of the set of ranges added since the base: `geo_added_v4`.
    pub fn added_set_name(family: Family) -> String {
        crate::compile::set_name(GEO_ADDED_SET, family)
    }

    /// The name of the set of ranges removed since the base: `geo_removed_v4`.
    pub fn removed_set_name(family: Family) -> String {
        crate::compile::set_name(GEO_REMOVED_SET, family)
    }

    /// The names of the gate's six sets: per family the base, added and removed.
    pub fn set_names() -> Vec<String> {
        [Gate::set_name, Gate::added_set_name, Gate::removed_set_name]
            .into_iter()
            .flat_map(|name| [Family::V4, Family::V6].map(name))
            .collect()
    }

    /// The alternatives a gated rule of `family` carries, one rule each: in the base and
    /// not removed since (`ip saddr @geo_v4 ip saddr != @geo_removed_v4`), or added since
    /// (`ip saddr @geo_added_v4`). The base comes first: a source outside it (most of the
    /// world, with an allow list) costs two lookups, not three (BENCHMARKS.md §7).
    pub fn source_matches(family: Family) -> [Vec<Match>; 2] {
        [
            vec![
                Match::SaddrInSet(family, Gate::set_name(family)),
                Match::SaddrNotInSet(family, Gate::removed_set_name(family)),
            ],
            vec![Match::SaddrInSet(family, Gate::added_set_name(family))],
        ]
    }

    /// The gate's alternatives for sources of `family` ([`Gate::source_matches`]) when on,
    /// for open-path rules that are per family already (the knock's first step, SIP
    /// admission): each becomes one rule. A single alternative with no match when off.
    pub fn family_matches(&self, family: Family) -> Vec<Vec<Match>> {
        match self {
            Gate::Off => vec![Vec::new()],
            Gate::On { .. } => Gate::source_matches(family).into(),
        }
    }

    /// The sets when on, none when off: per family the base (`geo_v4`), the ranges added
    /// since (`geo_added_v4`) and removed since (`geo_removed_v4`), always all six, even
    /// when empty.
    pub fn sets(&self) -> Vec<Set> {
        self.clone().into_sets()
    }

    /// [`Gate::sets`], the base's ranges moved into them.
    pub fn into_sets(self) -> Vec<Set> {
        let Gate::On { v4, v6, base } = self else {
            return Vec::new();
        };
        let (added, removed) = match &base {
            None => Default::default(),
            Some(b) => (
                [difference(&v4, &b.v4), difference(&v6, &b.v6)],
                [difference(&b.v4, &v4), difference(&b.v6, &v6)],
            ),
        };
        let (base_v4, base_v6) = match base {
            None => (v4, v6),
            Some(b) => (elements(b.v4), elements(b.v6)),
        };
        let [added_v4, added_v6] = added;
        let [removed_v4, removed_v6] = removed;
        vec![
            Set::address_elements(&Gate::set_name(Family::V4), Family::V4, base_v4),
            Set::address_elements(&Gate::set_name(Family::V6), Family::V6, base_v6),
            Set::addresses(&Gate::added_set_name(Family::V4), Family::V4, added_v4),
            Set::addresses(&Gate::added_set_name(Family::V6), Family::V6, added_v6),
            Set::addresses(&Gate::removed_set_name(Family::V4), Family::V4, removed_v4),
            Set::addresses(&Gate::removed_set_name(Family::V6), Family::V6, removed_v6),
        ]
    }

    /// An open-path rule as the input chain gets it: the rule itself when the gate is off;
    /// when on, per family one copy per alternative of [`Gate::source_matches`], its
    /// matches appended (`udp dport 10000-20000 ip saddr != @geo_removed_v4 ip saddr
    /// @geo_v4 accept`, `udp dport 10000-20000 ip saddr @geo_added_v4 accept`, then the
    /// `ip6` ones). Everything gated is the first packet of a flow (established flows are
    /// accepted before), so the extra lookups of small sets cost little.
    pub fn gated(&self, rule: Rule) -> Vec<Rule> {
        match self {
            Gate::Off => vec![rule],
            Gate::On { .. } => [Family::V4, Family::V6]
                .into_iter()
                .flat_map(Gate::source_matches)
                .map(|matches| {
                    let mut r = rule.clone();
                    r.matches.extend(matches);
                    r
                })
                .collect(),
        }
    }

    /// Whether the gate lets `addr` through (always when off).
    pub fn admits(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        match self {
            Gate::Off => true,
            Gate::On { v4, v6, .. } => {
                let ranges = match addr {
                    IpAddr::V4(_) => v4,
                    IpAddr::V6(_) => v6,
                };
                ranges_contain(ranges, addr)
            }
        }
    }
}

/// Whether the gate compiled into `ruleset` lets `addr` through: in the base set and not
/// removed since, or added since; `None` when the ruleset has no gate.
pub fn ruleset_admits(ruleset: &crate::ruleset::Ruleset, addr: IpAddr) -> Option<bool> {
    let addr = addr.to_canonical();
    let family = Family::of(addr);
    let holds = |name: String| {
        ruleset
            .set(&name)
            .is_some_and(|s| s.element_of(addr).is_some())
    };
    ruleset.set(&Gate::set_name(family))?;
    Some(
        (holds(Gate::set_name(family)) && !holds(Gate::removed_set_name(family)))
            || holds(Gate::added_set_name(family)),
    )
}

/// Whether sorted, disjoint `ranges` hold `addr` (a binary search).
pub fn ranges_contain(ranges: &[impl Ranged], addr: IpAddr) -> bool {
    let key = AddrRange::from_addr(addr.to_canonical());
    let i = ranges.partition_point(|r| r.range().end < key.start);
    ranges.get(i).is_some_and(|r| r.range().contains(addr))
}

/// Something that stands for a range of addresses: the range itself, or a set's element.
pub trait Ranged {
    /// The range.
    fn range(&self) -> AddrRange;
    /// The range, to change.
    fn range_mut(&mut self) -> &mut AddrRange;
}

impl Ranged for AddrRange {
    fn range(&self) -> AddrRange {
        *self
    }
    fn range_mut(&mut self) -> &mut AddrRange {
        self
    }
}

impl Ranged for Element {
    fn range(&self) -> AddrRange {
        self.range
    }
    fn range_mut(&mut self) -> &mut AddrRange {
        &mut self.range
    }
}

/// The addresses of `a` that are not in `b` (both sorted and disjoint, of one family), as
/// sorted, disjoint ranges; merged when `a` is.
pub fn difference(a: &[impl Ranged], b: &[impl Ranged]) -> Vec<AddrRange> {
    let mut out = Vec::new();
    let mut j = 0;
    for r in a {
        let r = r.range();
        let mut start = r.start;
        // The ranges of `b` that end before this one starts are behind every later one too.
        while j < b.len() && b[j].range().end < start {
            j += 1;
        }
        let mut k = j;
        let mut rest = true;
        while k < b.len() && b[k].range().start <= r.end {
            let bk = b[k].range();
            if bk.start > start {
                out.push(AddrRange {
                    family: r.family,
                    start,
                    end: bk.start - 1,
                });
            }
            if bk.end >= r.end {
                rest = false;
                break;
            }
            start = bk.end + 1;
            k += 1;
        }
        if rest {
            out.push(AddrRange {
                family: r.family,
                start,
                end: r.end,
            });
        }
    }
    out
}

/// What a build knows about its geo gate: `status` prints it, `geo update` reports it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GeoInfo {
    /// `[geo] database`, as configured (absolute).
    pub database: Option<PathBuf>,
    /// Its format's name.
    pub format: Option<&'static str>,
    /// Its files' newest modification time, RFC 3339.
    pub modified: Option<String>,
    /// Rows read from it.
    pub rows: usize,
    /// What the gate passes: `DE, AT` or `all but CN`.
    pub countries: String,
    /// IPv4 ranges in `geo_v4`.
    pub ranges_v4: usize,
    /// IPv6 ranges in `geo_v6`.
    pub ranges_v6: usize,
    /// Listed countries the database has no range for.
    pub missing: Vec<Country>,
    /// The database could not be used; the gate holds what was live before.
    pub problem: Option<String>,
    /// The ranges came from the record of the last apply (the database is unchanged), not
    /// from parsing it.
    pub cached: bool,
    /// [`applied::source_key`] of the database and settings (`None` when the database was
    /// not usable).
    #[serde(skip)]
    pub key: Option<String>,
}

/// Reads `[geo] database` and builds the gate: [`Gate::Off`] without `allow`/`deny`.
/// When `cached` was made from the same database files and settings (its key matches), its
/// ranges are used and the database is not parsed again.
pub fn load(settings: &GeoSettings, cached: Option<Applied>) -> Result<(Gate, GeoInfo), GeoError> {
    let Some(path) = settings.database.as_deref().filter(|_| settings.enabled()) else {
        return Ok((Gate::Off, GeoInfo::default()));
    };
    let db = Database::open(path)?;
    let key = applied::source_key(&db, settings);
    let mut info = GeoInfo {
        database: Some(path.to_owned()),
        format: Some(db.format.name()),
        modified: db.modified().map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        }),
        countries: settings.describe(),
        key: key.clone(),
        ..GeoInfo::default()
    };
    let gate = match cached.filter(|c| key.as_ref() == Some(&c.key)) {
        Some(c) => {
            info.cached = true;
            info.missing = c.missing.clone();
            info.rows = c.rows as usize;
            // The kernel's base sets as recorded, so a restart loads what `geo update` left.
            c.into_gate()
        }
        None => {
            let sel = select(&db, settings)?;
            info.missing = sel.missing();
            info.rows = sel.rows;
            Gate::from_selection(sel)
        }
    };
    (info.ranges_v4, info.ranges_v6) = gate.ranges_len();
    Ok((gate, info))
}
