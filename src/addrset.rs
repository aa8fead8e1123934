//! Address ranges and their merging.
//!
//! The kernel refuses overlapping intervals in a set (`EEXIST`: merging is nft's userspace
//! work, its `auto-merge` flag never reaches the kernel), and accounts overlap all the time,
//! so every set is merged here first: sorted, overlapping and adjacent ranges joined. The
//! same merged form is what `nft list` prints back, so the renderer and the netlink encoder
//! both start from it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4 (`ip`, `ipv4_addr`).
    V4,
    /// IPv6 (`ip6`, `ipv6_addr`).
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Address width in bits.
    pub fn bits(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// Highest address as a number.
    pub fn max(self) -> u128 {
        match self {
            Family::V4 => u32::MAX as u128,
            Family::V6 => u128::MAX,
        }
    }

    /// Suffix used in set names (`v4`, `v6`).
    pub fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
}

/// An inclusive range of addresses of one family, stored as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddrRange {
    /// Family of both ends.
    pub family: Family,
    /// First address.
    pub start: u128,
    /// Last address (inclusive, `>= start`).
    pub end: u128,
}

fn to_num(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn to_ip(family: Family, n: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

impl AddrRange {
    /// The range a network covers.
    pub fn from_net(net: IpNet) -> AddrRange {
        AddrRange {
            family: Family::of(net.addr()),
            start: to_num(net.network()),
            end: to_num(net.broadcast()),
        }
    }

    /// A single address.
    pub fn from_addr(addr: IpAddr) -> AddrRange {
        let n = to_num(addr);
        AddrRange {
            family: Family::of(addr),
            start: n,
            end: n,
        }
    }

    /// First address.
    pub fn first(&self) -> IpAddr {
        to_ip(self.family, self.start)
    }

    /// Last address.
    pub fn last(&self) -> IpAddr {
        to_ip(self.family, self.end)
    }

    /// The address after the last one, or `None` at the top of the address space.
    /// This is the key of the interval END element on the wire.
    pub fn end_exclusive(&self) -> Option<IpAddr> {
        (self.end < self.family.max()).then(|| to_ip(self.family, self.end + 1))
    }

    /// Whether `addr` lies in the range.
    pub fn contains(&self, addr: IpAddr) -> bool {
        Family::of(addr) == self.family && (self.start..=self.end).contains(&to_num(addr))
    }

    /// Prefix length when the range is exactly one CIDR block.
    pub fn prefix_len(&self) -> Option<u8> {
        let size = self.end.wrapping_sub(self.start).wrapping_add(1);
        let bits = self.family.bits();
        if size == 0 {
            // The whole IPv6 space (wrapped around).
            return (self.start == 0).then_some(0);
        }
        if !size.is_power_of_two() || !self.start.is_multiple_of(size) {
            return None;
        }
        let host_bits = size.trailing_zeros();
        (host_bits <= bits).then(|| (bits - host_bits) as u8)
    }
}

/// Prints the range as nft lists interval set elements: `a`, `a/len` or `a-b`.
impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix_len() {
            Some(len) if len as u32 == self.family.bits() => write!(f, "{}", self.first()),
            Some(len) => write!(f, "{}/{}", self.first(), len),
            None => write!(f, "{}-{}", self.first(), self.last()),
        }
    }
}

/// Merges ranges of one family: sorts them and joins overlapping and adjacent ones.
///
/// Ranges of another family than `family` are ignored.
pub fn merge(family: Family, ranges: impl IntoIterator<Item = AddrRange>) -> Vec<AddrRange> {
    let mut v: Vec<AddrRange> = ranges.into_iter().filter(|r| r.family == family).collect();
    v.sort_unstable();
    let mut out: Vec<AddrRange> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(cur) if cur.end == family.max() || r.start <= cur.end + 1 => {
                cur.end = cur.end.max(r.end);
            }
            _ => out.push(r),
        }
    }
    out
}

/// Merges networks into ranges of one family.
pub fn merge_nets<'a>(family: Family, nets: impl IntoIterator<Item = &'a IpNet>) -> Vec<AddrRange> {
    merge(family, nets.into_iter().map(|n| AddrRange::from_net(*n)))
}

/// Disjoint ranges of one family, each labelled with the set of labels of every input range
/// covering it: what [`partition`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Partition {
    /// Sorted, non-overlapping ranges, each with an index into `label_sets`. Adjacent
    /// ranges have different label sets (equal ones are joined).
    pub ranges: Vec<(AddrRange, usize)>,
    /// The distinct label sets, each sorted, in order of first appearance.
    pub label_sets: Vec<Vec<u32>>,
}

/// Splits labelled ranges of one family into disjoint ranges labelled with the union of the
/// labels covering them (a sweep over the range boundaries: O(n log n) for n ranges).
///
/// Where `a` with label 1 overlaps `b` with label 2, the overlap gets `[1, 2]` and the rest
/// of each keeps its own label. Ranges of another family are ignored.
pub fn partition(
    family: Family,
    labelled: impl IntoIterator<Item = (AddrRange, u32)>,
) -> Partition {
    // (position, +1 at a start / -1 one past an end, label); an end at the top of the
    // address space needs no event.
    let mut events: Vec<(u128, i8, u32)> = Vec::new();
    for (r, label) in labelled {
        if r.family != family {
            continue;
        }
        events.push((r.start, 1, label));
        if r.end < family.max() {
            events.push((r.end + 1, -1, label));
        }
    }
    events.sort_unstable();
    let mut active: BTreeMap<u32, u32> = BTreeMap::new();
    let mut ids: HashMap<Vec<u32>, usize> = HashMap::new();
    let mut out = Partition::default();
    let mut scratch: Vec<u32> = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let pos = events[i].0;
        while let Some(&(p, delta, label)) = events.get(i)
            && p == pos
        {
            if delta > 0 {
                *active.entry(label).or_default() += 1;
            } else if let Some(n) = active.get_mut(&label) {
                *n -= 1;
                if *n == 0 {
                    active.remove(&label);
                }
            }
            i += 1;
        }
        if active.is_empty() {
            continue;
        }
        let end = events.get(i).map_or(family.max(), |e| e.0 - 1);
        scratch.clear();
        scratch.extend(active.keys().copied());
        let id = match ids.get(&scratch) {
            Some(&id) => id,
            None => {
                out.label_sets.push(scratch.clone());
                ids.insert(scratch.clone(), out.label_sets.len() - 1);
                out.label_sets.len() - 1
            }
        };
        match out.ranges.last_mut() {
            Some((last, last_id)) if *last_id == id && last.end + 1 == pos => last.end = end,
            _ => out.ranges.push((
                AddrRange {
                    family,
                    start: pos,
                    end,
                },
                id,
            )),
        }
    }
    out
}

/// An address in its plain forms (a dotted quad; IPv6 groups of hex digits with at most
/// one `::` and no IPv4 tail), read without std's parser, which tries IPv4 first and so
/// costs every IPv6 address a failed IPv4 parse (a third of the time of reading a country
/// database or a block list). `None` for anything else, which std then decides; never an
/// address std would not give.
pub fn parse_plain(b: &[u8]) -> Option<IpAddr> {
    // An IPv6 address has a ':' among its first five bytes (at most four digits come
    // first).
    if b.iter().take(5).any(|c| *c == b':') {
        parse_plain_v6(b).map(|n| IpAddr::V6(n.into()))
    } else {
        parse_plain_v4(b).map(|n| IpAddr::V4(n.into()))
    }
}

/// A dotted quad as std reads it (1-3 digits a part, no leading zero, at most 255), as a
/// number; `None` for anything else.
pub fn parse_plain_v4(b: &[u8]) -> Option<u32> {
    let mut n: u32 = 0;
    let mut parts = 0;
    for part in b.split(|c| *c == b'.') {
        // 1-3 digits, no leading zero (as std), at most 255.
        if part.is_empty() || part.len() > 3 || (part.len() > 1 && part[0] == b'0') {
            return None;
        }
        let mut v: u32 = 0;
        for c in part {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        if v > 255 {
            return None;
        }
        n = n << 8 | v;
        parts += 1;
    }
    (parts == 4).then_some(n)
}

/// The value of a hex digit, 255 for any other byte (a table: the digits of addresses are
/// random, which makes a branch per digit class mispredicted half of the time).
static HEX: [u8; 256] = {
    let mut t = [255u8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// An IPv6 address of groups of 1-4 hex digits and at most one `::`, as a number; `None`
/// for anything else (an embedded IPv4 part, a zone), which std then decides.
pub fn parse_plain_v6(b: &[u8]) -> Option<u128> {
    // One pass: groups of 1-4 hex digits separated by ':', at most one "::"; anything else
    // (an embedded IPv4 part, a zone) is left to std. The groups are gathered as 16-bit
    // values and put together once (shifting a 128-bit value per digit cost a quarter of
    // reading a database).
    let n = b.len();
    let mut groups = [0u16; 8];
    let mut count = 0;
    // Where "::" stands: the number of groups before it.
    let mut gap: Option<usize> = None;
    let mut i = 0;
    if b.starts_with(b"::") {
        gap = Some(0);
        i = 2;
        if i == n {
            return Some(0);
        }
    }
    loop {
        let first = i;
        let mut v: u16 = 0;
        while i < n && i - first < 4 {
            let x = HEX[usize::from(b[i])];
            if x > 15 {
                break;
            }
            v = v << 4 | u16::from(x);
            i += 1;
        }
        // No digit, a fifth one, or a ninth group.
        if i == first || (i < n && HEX[usize::from(b[i])] <= 15) || count == 8 {
            return None;
        }
        groups[count] = v;
        count += 1;
        if i == n {
            break;
        }
        if b[i] != b':' || i + 1 == n {
            return None;
        }
        i += 1;
        if b[i] == b':' {
            if gap.is_some() {
                return None;
            }
            gap = Some(count);
            i += 1;
            if i == n {
                break;
            }
        }
    }
    let join = |g: &[u16]| g.iter().fold(0u128, |a, &x| a << 16 | u128::from(x));
    match gap {
        None if count == 8 => Some(join(&groups)),
        None => None,
        Some(_) if count > 7 => None,
        Some(0) => Some(join(&groups[..count])),
        Some(at) => Some(join(&groups[..at]) << (16 * (8 - at)) | join(&groups[at..count])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_parsing_agrees_with_the_standard_parser() {
        let plain = [
            "192.0.2.1",
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.10",
            "2001:db8::1",
            "::",
            "::1",
            "1::",
            "2001:db8:5ca1::1:741d",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "fe80::a:B:c",
            "ABCD:ef01::",
        ];
        for t in plain {
            assert_eq!(parse_plain(t.as_bytes()), Some(t.parse().unwrap()), "{t}");
        }
        // Whatever the plain parser gives, the standard one gives too; over every string
        // of up to 5 characters of a small alphabet and a run of longer ones.
        let alphabet = b"0129af:.G ";
        let check = |t: &str| {
            if let Some(a) = parse_plain(t.as_bytes()) {
                assert_eq!(t.parse::<IpAddr>().ok(), Some(a), "{t:?}");
            }
        };
        let mut s = Vec::new();
        fn all(s: &mut Vec<u8>, alphabet: &[u8], left: usize, check: &dyn Fn(&str)) {
            check(std::str::from_utf8(s).unwrap());
            if left == 0 {
                return;
            }
            for &c in alphabet {
                s.push(c);
                all(s, alphabet, left - 1, check);
                s.pop();
            }
        }
        all(&mut s, alphabet, 5, &check);
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..200_000 {
            let mut t = String::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 42) as usize;
            let mut y = x;
            for _ in 0..len {
                y = y.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                t.push(b"0123456789abcdef:::..1"[(y >> 59) as usize % 22] as char);
            }
            check(&t);
        }
        for bad in [
            "1:2:3:4:5:6::7:8",
            "1:2:3:4:5:6:7:8:9",
            ":1::",
            "1:::2",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "256.0.0.1",
            "::ffff:1.2.3.4",
            "12345::",
            "g::",
        ] {
            assert_eq!(parse_plain(bad.as_bytes()), None, "{bad}");
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn merged(family: Family, nets: &[&str]) -> Vec<String> {
        let nets: Vec<IpNet> = nets.iter().map(|s| net(s)).collect();
        merge_nets(family, &nets)
            .iter()
            .map(|r| r.to_string())
            .collect()
    }

    #[test]
    fn overlapping_ranges_merge() {
        assert_eq!(
            merged(Family::V4, &["10.0.0.0/8", "10.1.2.3/32", "192.0.2.7/32"]),
            ["10.0.0.0/8", "192.0.2.7"]
        );
    }

    #[test]
    fn adjacent_ranges_merge_into_prefix_or_range() {
        assert_eq!(
            merged(Family::V4, &["192.0.2.0/25", "192.0.2.128/25"]),
            ["192.0.2.0/24"]
        );
        assert_eq!(
            merged(Family::V4, &["198.51.100.1/32", "198.51.100.2/32"]),
            ["198.51.100.1-198.51.100.2"]
        );
        assert_eq!(
            merged(Family::V4, &["192.0.2.0/25", "192.0.2.128/26"]),
            ["192.0.2.0-192.0.2.191"]
        );
    }

    #[test]
    fn families_are_kept_apart() {
        let nets = ["192.0.2.1/32", "2001:db8::/48", "2001:db8:0:1::/64"];
        assert_eq!(merged(Family::V4, &nets), ["192.0.2.1"]);
        assert_eq!(merged(Family::V6, &nets), ["2001:db8::/48"]);
    }

    #[test]
    fn top_of_address_space() {
        let r = merge_nets(Family::V4, &[net("240.0.0.0/4"), net("255.255.255.255/32")]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].to_string(), "240.0.0.0/4");
        assert_eq!(r[0].end_exclusive(), None);
        let all6 = merge_nets(Family::V6, &[net("::/0"), net("2001:db8::1/128")]);
        assert_eq!(all6[0].to_string(), "::/0");
        assert_eq!(merged(Family::V4, &["0.0.0.0/0"]), ["0.0.0.0/0"]);
    }

    #[test]
    fn end_exclusive_is_last_plus_one() {
        let r = AddrRange::from_net(net("10.0.0.0/8"));
        assert_eq!(r.end_exclusive(), Some("11.0.0.0".parse().unwrap()));
        assert!(r.contains("10.255.255.255".parse().unwrap()));
        assert!(!r.contains("11.0.0.0".parse().unwrap()));
        assert!(!r.contains("::1".parse().unwrap()));
    }

    #[test]
    fn merge_is_idempotent_and_unordered() {
        let a = merged(
            Family::V6,
            &["2001:db8::2/128", "2001:db8::1/128", "2001:db8::3/128"],
        );
        assert_eq!(a, ["2001:db8::1-2001:db8::3"]);
        let b = merged(
            Family::V6,
            &["2001:db8::3/128", "2001:db8::2/127", "2001:db8::1/128"],
        );
        assert_eq!(a, b);
    }

    fn parts(family: Family, items: &[(&str, u32)]) -> Vec<String> {
        let p = partition(
            family,
            items.iter().map(|(n, l)| (AddrRange::from_net(net(n)), *l)),
        );
        p.ranges
            .iter()
            .map(|(r, id)| format!("{r} {:?}", p.label_sets[*id]))
            .collect()
    }

    #[test]
    fn partition_splits_overlaps_into_unions() {
        assert_eq!(
            parts(
                Family::V4,
                &[
                    ("192.0.2.0/24", 1),
                    ("192.0.2.16/28", 2),
                    ("192.0.2.20/32", 1)
                ]
            ),
            [
                "192.0.2.0/28 [1]",
                "192.0.2.16/28 [1, 2]",
                "192.0.2.32-192.0.2.255 [1]"
            ]
        );
    }

    #[test]
    fn partition_joins_adjacent_ranges_with_equal_labels_only() {
        assert_eq!(
            parts(
                Family::V4,
                &[
                    ("192.0.2.0/25", 1),
                    ("192.0.2.128/25", 1),
                    ("198.51.100.0/31", 1),
                    ("198.51.100.2/31", 2)
                ]
            ),
            [
                "192.0.2.0/24 [1]",
                "198.51.100.0/31 [1]",
                "198.51.100.2/31 [2]"
            ]
        );
        // Gaps stay gaps.
        assert_eq!(
            parts(
                Family::V6,
                &[("2001:db8::1/128", 3), ("2001:db8::3/128", 3)]
            ),
            ["2001:db8::1 [3]", "2001:db8::3 [3]"]
        );
    }

    #[test]
    fn partition_reaches_the_top_of_the_address_space() {
        assert_eq!(
            parts(
                Family::V4,
                &[
                    ("0.0.0.0/0", 1),
                    ("255.255.255.255/32", 2),
                    ("0.0.0.0/32", 2)
                ]
            ),
            [
                "0.0.0.0 [1, 2]",
                "0.0.0.1-255.255.255.254 [1]",
                "255.255.255.255 [1, 2]"
            ]
        );
        assert_eq!(
            parts(Family::V6, &[("::/0", 1), ("192.0.2.1/32", 2)]),
            ["::/0 [1]"]
        );
    }
}
