//! The readers on small files laid out as the real downloads are (headers included), the
//! selection and merging, and the gate.

use std::net::IpAddr;
use std::path::Path;

use super::*;
use crate::ruleset::{L4Proto, PortRange, Verdict};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cc(s: &str) -> Country {
    s.parse().unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// DB-IP lite: no header, IPv4 then IPv6 rows, `ZZ` for unassigned space.
const DBIP: &str = "\
0.0.0.0,0.255.255.255,ZZ
1.0.0.0,1.0.0.255,AU
1.0.1.0,1.0.3.255,CN
192.0.2.0,192.0.2.127,DE
192.0.2.128,192.0.2.255,DE
198.51.100.0,198.51.100.255,US
203.0.113.0,203.0.113.255,AT
2001:db8::,2001:db8:0:ffff:ffff:ffff:ffff:ffff,DE
2001:db8:1::,2001:db8:1:ffff:ffff:ffff:ffff:ffff,US
";

/// GeoLite2 Country CSV: the locations file (with a continent row and a quoted name) and
/// the two blocks files, headers as MaxMind ships them (is_anycast included).
const GEO_LOCATIONS: &str = "\
geoname_id,locale_code,continent_code,continent_name,country_iso_code,country_name,is_in_european_union
2921044,en,EU,Europe,DE,Germany,1
6252001,en,NA,\"North America\",US,\"United States\",0
2782113,en,EU,Europe,AT,Austria,1
6255148,en,EU,Europe,,,0
7626844,en,NA,\"North America\",BQ,\"Bonaire, Sint Eustatius, and Saba\",0
";
const GEO_V4: &str = "\
network,geoname_id,registered_country_geoname_id,represented_country_geoname_id,is_anonymous_proxy,is_satellite_provider,is_anycast
192.0.2.0/25,2921044,2921044,,0,0,
192.0.2.128/25,,2921044,,0,0,
198.51.100.0/24,6252001,6252001,,0,0,
203.0.113.0/24,2782113,2921044,,0,0,0
";
const GEO_V6: &str = "\
network,geoname_id,registered_country_geoname_id,represented_country_geoname_id,is_anonymous_proxy,is_satellite_provider,is_anycast
2001:db8::/48,2921044,2921044,,0,0,
2001:db8:1::/48,6252001,6252001,,0,0,
2001:db8:2::/48,6255148,6255148,,0,0,
";

/// IP2Location LITE DB1: quoted integers, `-` for unknown, names with commas.
const IP2L: &str = "\
\"0\",\"16777215\",\"-\",\"-\"
\"3221225984\",\"3221226111\",\"DE\",\"Germany\"
\"3221226112\",\"3221226239\",\"DE\",\"Germany\"
\"3325256704\",\"3325256959\",\"US\",\"United States of America\"
\"3405803776\",\"3405804031\",\"AT\",\"Austria\"
\"3405804032\",\"3405804287\",\"BQ\",\"Bonaire, Sint Eustatius and Saba\"
";

/// IP2Location LITE DB1 IPv6: IPv4 as ::ffff:a.b.c.d numbers.
const IP2L6: &str = "\
\"0\",\"281470681743359\",\"-\",\"-\"
\"281473902969344\",\"281473902969599\",\"DE\",\"Germany\"
\"281474007000064\",\"281474007000319\",\"US\",\"United States of America\"
\"42540766411282592856903984951653826560\",\"42540766411283801782723599580828532735\",\"DE\",\"Germany\"
";

fn allow(codes: &[&str]) -> GeoSettings {
    GeoSettings {
        database: None,
        allow: codes.iter().map(|c| cc(c)).collect(),
        deny: vec![],
    }
}

fn strings(v: &[impl Ranged]) -> Vec<String> {
    v.iter().map(|r| r.range().to_string()).collect()
}

#[test]
fn country_codes_are_iso_3166_alpha_2() {
    assert_eq!(ISO_3166_ALPHA2.split(' ').count(), 250);
    for good in ["DE", "US", "GB", "AT", "XK", "BQ"] {
        assert_eq!(cc(good).as_str(), good);
    }
    for bad in [
        "UK", "EU", "de", "D", "DEU", "", "ZZ", "AA", "1A", "D\u{e9}",
    ] {
        let e = bad.parse::<Country>().unwrap_err().to_string();
        assert!(e.contains("ISO 3166-1 alpha-2"), "{bad}: {e}");
    }
    assert_eq!(Country::from_db("de"), Some(cc("DE")));
    assert_eq!(
        Country::from_db("EU").map(|c| c.to_string()),
        Some("EU".into())
    );
    assert_eq!(Country::from_db("ZZ"), None);
    assert_eq!(Country::from_db("-"), None);
}

#[test]
fn dbip_lite_reads_both_families_and_merges_one_country() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "dbip-country-lite-2026-11.csv", DBIP);
    let db = Database::open(&p).unwrap();
    assert_eq!(db.format, Format::DbIp);
    let sel = select(&db, &allow(&["DE"])).unwrap();
    // The two adjacent DE rows are one range.
    assert_eq!(strings(&sel.v4), ["192.0.2.0/24"]);
    assert_eq!(strings(&sel.v6), ["2001:db8::/48"]);
    assert_eq!(sel.rows, 9);
    assert_eq!(sel.rows_of[&cc("DE")], 3);
    let sel = select(&db, &allow(&["DE", "US", "AT"])).unwrap();
    assert_eq!(
        strings(&sel.v4),
        ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"]
    );
    assert_eq!(strings(&sel.v6), ["2001:db8::/47"]);
    let (range, c) = db.lookup(ip("192.0.2.200")).unwrap().unwrap();
    assert_eq!(
        (range.to_string().as_str(), c),
        ("192.0.2.128/25", Some(cc("DE")))
    );
    assert_eq!(db.lookup(ip("0.1.2.3")).unwrap().unwrap().1, None);
    assert_eq!(
        db.lookup(ip("2001:db8:1::5")).unwrap().unwrap().1,
        Some(cc("US"))
    );
    assert_eq!(
        db.lookup(ip("::ffff:198.51.100.9")).unwrap().unwrap().1,
        Some(cc("US"))
    );
    assert!(db.lookup(ip("2001:db8:9::1")).unwrap().is_none());
}

#[test]
fn geolite2_from_its_folder_or_any_of_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("GeoLite2-Country-CSV_20261201");
    std::fs::create_dir(&d).unwrap();
    write(&d, "GeoLite2-Country-Locations-en.csv", GEO_LOCATIONS);
    write(&d, "GeoLite2-Country-Locations-de.csv", GEO_LOCATIONS);
    let v4 = write(&d, "GeoLite2-Country-Blocks-IPv4.csv", GEO_V4);
    write(&d, "GeoLite2-Country-Blocks-IPv6.csv", GEO_V6);
    for path in [d.clone(), v4] {
        let db = Database::open(&path).unwrap();
        assert_eq!(db.format, Format::GeoLite2);
        assert!(db.files[0].ends_with("GeoLite2-Country-Locations-en.csv"));
        let sel = select(&db, &allow(&["DE"])).unwrap();
        // 192.0.2.128/25 has no location: its registered country counts.
        assert_eq!(strings(&sel.v4), ["192.0.2.0/24"]);
        assert_eq!(strings(&sel.v6), ["2001:db8::/48"]);
        assert_eq!(sel.rows, 7);
    }
    let db = Database::open(&d).unwrap();
    // 203.0.113.0/24 is located in AT, registered in DE: the location counts.
    assert_eq!(
        db.lookup(ip("203.0.113.1")).unwrap().unwrap().1,
        Some(cc("AT"))
    );
    // A continent-only location has no country.
    assert_eq!(db.lookup(ip("2001:db8:2::1")).unwrap().unwrap().1, None);
}

#[test]
fn ip2location_db1_v4_and_v6() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "IP2LOCATION-LITE-DB1.CSV", IP2L);
    let db = Database::open(&p).unwrap();
    assert_eq!(db.format, Format::Ip2Location);
    let sel = select(&db, &allow(&["DE", "BQ"])).unwrap();
    assert_eq!(strings(&sel.v4), ["192.0.2.0/24", "203.0.114.0/24"]);
    assert!(sel.v6.is_empty());
    assert_eq!(
        db.lookup(ip("198.51.100.7")).unwrap().unwrap().1,
        Some(cc("US"))
    );

    let p = write(dir.path(), "IP2LOCATION-LITE-DB1.IPV6.CSV", IP2L6);
    let db = Database::open(&p).unwrap();
    let sel = select(&db, &allow(&["DE"])).unwrap();
    // ::ffff:192.0.2.0/120 is IPv4 192.0.2.0/24.
    assert_eq!(strings(&sel.v4), ["192.0.2.0/24"]);
    assert_eq!(strings(&sel.v6), ["2001:db8::/48"]);
    assert_eq!(
        db.lookup(ip("198.51.100.7")).unwrap().unwrap().1,
        Some(cc("US"))
    );
    assert_eq!(
        db.lookup(ip("2001:db8::1")).unwrap().unwrap().1,
        Some(cc("DE"))
    );
}

#[test]
fn unmapping_splits_at_the_mapped_block() {
    let r = AddrRange {
        family: Family::V6,
        start: 0,
        end: u128::MAX,
    };
    let parts: Vec<String> = read::unmap_v4(r).map(|r| r.to_string()).collect();
    assert_eq!(
        parts,
        [
            "::-::fffe:ffff:ffff",
            "0.0.0.0/0",
            "::1:0:0:0-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        ]
    );
}

#[test]
fn corrupt_rows_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, line, what) in [
        (
            "a.csv",
            "1.0.0.0,1.0.0.255,AU\n1.0.1.0,1.0.1.300,CN\n",
            2,
            "invalid address \"1.0.1.300\"",
        ),
        (
            "b.csv",
            "1.0.0.0,1.0.0.255,AU\n\n1.0.2.0,1.0.1.0,CN\n",
            3,
            "ends before it starts",
        ),
        (
            "c.csv",
            "1.0.0.0,1.0.0.255,AU\n1.0.1.0,2001:db8::,CN\n",
            2,
            "mixes IPv4 and IPv6",
        ),
        (
            "d.csv",
            "1.0.0.0,1.0.0.255,AUS\n",
            1,
            "invalid country code \"AUS\"",
        ),
        ("e.csv", "1.0.0.0,1.0.0.255\n", 1, "got 2 field(s)"),
        (
            "f.csv",
            "\"1\",\"2\",\"US\",\"x\"\n\"3\",\"x4\",\"US\",\"x\"\n",
            2,
            "invalid address number",
        ),
        (
            "g.csv",
            "\"1\",\"2\",\"US\",\"United\n",
            1,
            "unterminated quoted field",
        ),
    ] {
        let p = write(dir.path(), name, text);
        let db = Database::open(&p).unwrap();
        let e = select(&db, &allow(&["AU"])).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}:{line}: ", p.display())),
            "{name}: {e}"
        );
        assert!(e.contains(what), "{name}: {e}");
    }
    // GeoLite2: a network with host bits, an unknown geoname id, a missing header.
    let d = dir.path().join("geo");
    std::fs::create_dir(&d).unwrap();
    write(&d, "GeoLite2-Country-Locations-en.csv", GEO_LOCATIONS);
    let v4 = d.join("GeoLite2-Country-Blocks-IPv4.csv");
    for (text, line, what) in [
        (
            format!("{GEO_V4}192.0.2.1/24,2921044,2921044,,0,0,\n"),
            6,
            "host bits set",
        ),
        (
            format!("{GEO_V4}192.0.3.0/24,999,999,,0,0,\n"),
            6,
            "geoname_id 999 is not in the locations file",
        ),
        (
            "192.0.2.0/25,2921044,2921044,,0,0,\n".to_string(),
            1,
            "expected the GeoLite2 header",
        ),
    ] {
        std::fs::write(&v4, text).unwrap();
        let db = Database::open(&d).unwrap();
        let e = select(&db, &allow(&["DE"])).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:{line}: ", v4.display())), "{e}");
        assert!(e.contains(what), "{e}");
    }
}

#[test]
fn downloads_that_are_not_csv_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("dbip-country-lite-2026-11.csv.gz");
    std::fs::write(&gz, [0x1f, 0x8b, 8, 0, 0, 0]).unwrap();
    assert!(
        Database::open(&gz)
            .unwrap_err()
            .to_string()
            .contains("gunzip")
    );
    let zip = write(dir.path(), "GeoLite2-Country-CSV.zip", "PK\x03\x04rest");
    assert!(
        Database::open(&zip)
            .unwrap_err()
            .to_string()
            .contains("unzip")
    );
    let mmdb = write(dir.path(), "GeoLite2-Country.mmdb", "\u{ab}\u{cd}binary");
    let db = Database::open(&mmdb).unwrap();
    let e = select(&db, &allow(&["DE"])).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: not a valid MMDB database: ", mmdb.display())),
        "{e}"
    );
    let other = write(dir.path(), "notes.txt", "hello,world\n");
    assert!(
        Database::open(&other)
            .unwrap_err()
            .to_string()
            .contains("not a country database")
    );
    let missing = dir.path().join("nope.csv");
    assert!(
        Database::open(&missing)
            .unwrap_err()
            .to_string()
            .contains("cannot read")
    );
    let empty_dir = dir.path().join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    assert!(
        Database::open(&empty_dir)
            .unwrap_err()
            .to_string()
            .contains("Blocks-IPv4")
    );
}

#[test]
fn a_gate_empty_for_every_allowed_country_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "dbip.csv", DBIP);
    let db = Database::open(&p).unwrap();
    let e = select(&db, &allow(&["FR", "IT"])).unwrap_err().to_string();
    assert!(e.contains("no address range for FR, IT"), "{e}");
    // One country with ranges is enough; the other is reported as missing.
    let sel = select(&db, &allow(&["FR", "AT"])).unwrap();
    assert_eq!(sel.missing(), [cc("FR")]);
}

#[test]
fn deny_keeps_everything_but_the_denied_countries() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "dbip.csv", DBIP);
    let db = Database::open(&p).unwrap();
    let settings = GeoSettings {
        database: None,
        allow: vec![],
        deny: vec![cc("CN"), cc("US")],
    };
    let sel = select(&db, &settings).unwrap();
    assert_eq!(
        strings(&sel.v4),
        [
            "0.0.0.0-1.0.0.255",
            "1.0.4.0-198.51.99.255",
            "198.51.101.0-255.255.255.255"
        ]
    );
    assert_eq!(
        strings(&sel.v6),
        [
            "::-2001:db8:0:ffff:ffff:ffff:ffff:ffff",
            "2001:db8:2::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        ]
    );
    assert_eq!(settings.describe(), "all but CN, US");
    assert!(
        complement(Family::V4, &[] as &[AddrRange])
            .iter()
            .map(|r| r.to_string())
            .eq(["0.0.0.0/0"])
    );
}

#[test]
fn the_gate_adds_a_source_match_per_family() {
    let rtp = Rule {
        matches: vec![Match::Dport(
            L4Proto::Udp,
            PortRange {
                first: 10000,
                last: 20000,
            },
        )],
        verdict: Some(Verdict::Accept),
        ..Rule::default()
    };
    assert_eq!(Gate::Off.gated(rtp.clone()), std::slice::from_ref(&rtp));
    assert!(Gate::Off.sets().is_empty());
    let gate = Gate::On {
        v4: elements(vec![AddrRange::from_net("192.0.2.0/24".parse().unwrap())]),
        v6: elements(vec![]),
        base: None,
    };
    let rules: Vec<String> = gate.gated(rtp).iter().map(|r| r.to_string()).collect();
    assert_eq!(
        rules,
        [
            "udp dport 10000-20000 ip saddr @geo_v4 ip saddr != @geo_removed_v4 accept",
            "udp dport 10000-20000 ip saddr @geo_added_v4 accept",
            "udp dport 10000-20000 ip6 saddr @geo_v6 ip6 saddr != @geo_removed_v6 accept",
            "udp dport 10000-20000 ip6 saddr @geo_added_v6 accept",
        ]
    );
    let sets: Vec<String> = gate.sets().iter().map(|s| s.name.clone()).collect();
    assert_eq!(sets, Gate::set_names());
    assert_eq!(
        sets,
        [
            "geo_v4",
            "geo_v6",
            "geo_added_v4",
            "geo_added_v6",
            "geo_removed_v4",
            "geo_removed_v6"
        ]
    );
    assert!(gate.sets()[2..].iter().all(|s| s.elements.is_empty()));
    assert!(gate.admits(ip("192.0.2.9")));
    assert!(gate.admits(ip("::ffff:192.0.2.9")));
    assert!(!gate.admits(ip("198.51.100.1")));
    assert!(!gate.admits(ip("2001:db8::1")));
}

/// A gate whose base sets hold other ranges (updates since the full load): the sets of
/// ranges added and removed hold the difference, and the compiled rules admit exactly the
/// gate's ranges.
#[test]
fn a_gate_over_an_older_base_puts_the_difference_in_the_small_sets() {
    use crate::compile::tests::{shipped_profiles, trusting};
    use crate::compile::{Resolved, compile_gated};
    use crate::ruleset::L4Proto::Udp;
    let r = |net: &str| AddrRange::from_net(net.parse().unwrap());
    // Base: 192.0.2.0/24 and 198.51.100.0/24; now: 192.0.2.0/25 and 203.0.113.0/24.
    let gate = Gate::On {
        v4: elements(vec![r("192.0.2.0/25"), r("203.0.113.0/24")]),
        v6: elements(vec![r("2001:db8::/48")]),
        base: Some(Box::new(GateBase {
            v4: vec![r("192.0.2.0/24"), r("198.51.100.0/24")],
            v6: vec![r("2001:db8::/48")],
        })),
    };
    let sets = gate.sets();
    let ranges = |name: &str| -> Vec<AddrRange> {
        sets.iter()
            .find(|s| s.name == name)
            .unwrap()
            .elements
            .iter()
            .map(|e| e.range)
            .collect()
    };
    assert_eq!(ranges("geo_v4"), [r("192.0.2.0/24"), r("198.51.100.0/24")]);
    assert_eq!(ranges("geo_added_v4"), [r("203.0.113.0/24")]);
    assert_eq!(
        ranges("geo_removed_v4"),
        [r("192.0.2.128/25"), r("198.51.100.0/24")]
    );
    assert!(ranges("geo_added_v6").is_empty() && ranges("geo_removed_v6").is_empty());
    let rs = compile_gated(
        &trusting("2001:db8:ffff::/48"),
        &shipped_profiles(),
        &[],
        &Resolved::new(),
        gate.clone(),
    );
    for (addr, admitted) in [
        ("192.0.2.9", true),
        ("192.0.2.200", false),
        ("198.51.100.7", false),
        ("203.0.113.7", true),
        ("2001:db8::7", true),
        ("2001:db8:1::7", false),
    ] {
        assert_eq!(rs.accepts_new(ip(addr), Udp, 10000), admitted, "{addr}");
        assert_eq!(gate.admits(ip(addr)), admitted, "{addr}");
        assert_eq!(
            super::ruleset_admits(&rs, ip(addr)),
            Some(admitted),
            "{addr}"
        );
    }
}

/// Sorted, merged IPv4 ranges (as numbers) below about `top`, each up to `len` addresses
/// long, with gaps of 1 to 4 addresses between them.
pub(crate) fn random_ranges(
    rng: &mut crate::compile::tests::Rng,
    top: u128,
    len: u64,
) -> Vec<AddrRange> {
    let mut v = Vec::new();
    let mut at = u128::from(rng.below(4));
    while at < top {
        let end = at + u128::from(rng.below(len));
        v.push(AddrRange {
            family: Family::V4,
            start: at,
            end,
        });
        at = end + 2 + u128::from(rng.below(4));
    }
    v
}

#[test]
fn difference_of_sorted_ranges() {
    let r = |a: u128, b: u128| AddrRange {
        family: Family::V4,
        start: a,
        end: b,
    };
    assert_eq!(difference(&[r(0, 10)], &[] as &[AddrRange]), [r(0, 10)]);
    assert_eq!(difference(&[] as &[AddrRange], &[r(0, 10)]), []);
    assert_eq!(difference(&[r(0, 10)], &[r(0, 10)]), []);
    assert_eq!(difference(&[r(0, 10)], &[r(3, 4)]), [r(0, 2), r(5, 10)]);
    assert_eq!(difference(&[r(0, 10)], &[r(0, 4), r(8, 20)]), [r(5, 7)]);
    // One range of `b` across two of `a`, and ranges of `b` in the gaps.
    assert_eq!(
        difference(
            &[r(0, 10), r(20, 30), r(40, 50)],
            &[r(5, 25), r(32, 35), r(50, 60)]
        ),
        [r(0, 4), r(26, 30), r(40, 49)]
    );
    // The edges of the address space.
    let max = Family::V4.max();
    assert_eq!(
        difference(&[r(0, max)], &[r(0, 0), r(max, max)]),
        [r(1, max - 1)]
    );
    // Checked against a brute force over small random lists.
    let mut rng = crate::compile::tests::Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..500 {
        let (a, b) = (
            random_ranges(&mut rng, 60, 5),
            random_ranges(&mut rng, 60, 5),
        );
        let d = difference(&a, &b);
        for x in 0..80u128 {
            let inn = |v: &[AddrRange]| v.iter().any(|q| q.start <= x && x <= q.end);
            assert_eq!(inn(&d), inn(&a) && !inn(&b), "{a:?} - {b:?} at {x}");
        }
        assert!(d.windows(2).all(|w| w[0].end + 1 < w[1].start), "{d:?}");
    }
}

#[test]
fn only_the_open_paths_depend_on_the_gate() {
    use crate::compile::tests::{account, shipped_profiles, trusting};
    use crate::compile::{Resolved, compile_gated};
    use crate::ruleset::L4Proto::{Tcp, Udp};
    let gate = Gate::On {
        v4: elements(vec![AddrRange::from_net("192.0.2.0/25".parse().unwrap())]),
        v6: elements(vec![AddrRange::from_net("2001:db8::/48".parse().unwrap())]),
        base: None,
    };
    let settings = trusting("198.51.100.0/28");
    let mut provider = account("provider", &["198.51.100.64/28"], &[], &["sip-udp"]);
    provider.media = vec!["198.51.100.128/25".parse().unwrap()];
    let accounts = [
        account("joe", &["203.0.113.7/32"], &[], &["sip-udp"]),
        provider,
    ];
    let rs = compile_gated(
        &settings,
        &shipped_profiles(),
        &accounts,
        &Resolved::new(),
        gate.clone(),
    );
    assert!(rs.set("geo_v4").is_some() && rs.set("geo_v6").is_some());
    // RTP from any: only for the allowed country's addresses.
    assert!(rs.accepts_new(ip("192.0.2.9"), Udp, 10000));
    assert!(rs.accepts_new(ip("2001:db8::9"), Udp, 20000));
    assert!(!rs.accepts_new(ip("192.0.2.200"), Udp, 10000));
    assert!(!rs.accepts_new(ip("2001:db8:5::9"), Udp, 10000));
    // Whitelisted accounts (their media too), providers' media ranges and trusted
    // networks never depend on it.
    assert!(rs.accepts_new(ip("203.0.113.7"), Udp, 5060));
    assert!(rs.accepts_new(ip("203.0.113.7"), Udp, 15000));
    assert!(rs.accepts_new(ip("198.51.100.200"), Udp, 15000));
    assert!(!rs.accepts_new(ip("198.51.100.200"), Udp, 5060));
    assert!(rs.accepts_new(ip("198.51.100.3"), Tcp, 22));
    // Gated or not, nothing else opens.
    assert!(!rs.accepts_new(ip("192.0.2.9"), Udp, 5060));
    let input: Vec<String> = rs
        .chain("input")
        .unwrap()
        .rules
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert!(
        input.contains(
            &"udp dport 10000-20000 ip saddr @geo_v4 ip saddr != @geo_removed_v4 accept"
                .to_string()
        ) && input.contains(&"udp dport 10000-20000 ip saddr @geo_added_v4 accept".to_string()),
        "{input:?}"
    );
    assert!(
        !input.contains(&"udp dport 10000-20000 accept".to_string()),
        "{input:?}"
    );
    // Without a gate, the ruleset is what compile() gives.
    assert_eq!(
        compile_gated(
            &settings,
            &shipped_profiles(),
            &accounts,
            &Resolved::new(),
            Gate::Off
        ),
        crate::compile::compile(&settings, &shipped_profiles(), &accounts, &Resolved::new())
    );
}

#[test]
fn settings_of_the_gate() {
    let f = Path::new("/etc/pbxwall/pbxwall.toml");
    let parse = |t: &str| crate::store::parse_settings(f, t);
    let s =
        parse("[geo]\ndatabase = \"geo/dbip.csv\"\nallow = [\"DE\", \"AT\", \"DE\"]\n").unwrap();
    assert_eq!(
        s.geo.database.as_deref(),
        Some(Path::new("/etc/pbxwall/geo/dbip.csv"))
    );
    assert_eq!(s.geo.allow, [cc("DE"), cc("AT")]);
    assert!(s.geo.enabled());
    let s = parse("[geo]\ndatabase = \"/srv/geo\"\ndeny = [\"CN\"]\n").unwrap();
    assert_eq!(s.geo.describe(), "all but CN");
    assert!(!parse("").unwrap().geo.enabled());
    for (text, line, what) in [
        (
            "[geo]\ndatabase = \"x.csv\"\nallow = [\n  \"DE\",\n  \"UK\"]\n",
            5,
            "invalid country code \"UK\"",
        ),
        ("[geo]\nallow = [\"DE\"]\n", 2, "needs [geo] database"),
        (
            "[geo]\ndatabase = \"x\"\nallow = [\"DE\"]\ndeny = [\"CN\"]\n",
            3,
            "exclude each other",
        ),
        ("[geo]\nallowed = [\"DE\"]\n", 2, "unknown field"),
    ] {
        let e = parse(text).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("/etc/pbxwall/pbxwall.toml:{line}: ")),
            "{e}"
        );
        assert!(e.contains(what), "{e}");
    }
}

/// tests/data/test-country.mmdb, written by scripts/make-test-mmdb.py with mmdb-writer (and
/// read back by MaxMind's own Python reader when it was made).
fn test_mmdb() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/test-country.mmdb")
}

#[test]
fn mmdb_networks_and_lookups() {
    let db = Database::open(&test_mmdb()).unwrap();
    assert_eq!(db.format, Format::Mmdb);
    let sel = select(&db, &allow(&["DE"])).unwrap();
    // 192.0.2.128/25 has no location: its registered country counts, and the two halves
    // merge; 203.0.113.0/24 is located in FR (registered in DE): not DE.
    assert_eq!(strings(&sel.v4), ["192.0.2.0/24"]);
    assert_eq!(strings(&sel.v6), ["2001:db8::/48"]);
    assert_eq!(sel.rows, 7);
    let sel = select(&db, &allow(&["US", "FR"])).unwrap();
    assert_eq!(strings(&sel.v4), ["198.51.100.0/24", "203.0.113.0/24"]);
    assert_eq!(strings(&sel.v6), ["2001:db8:1::/48"]);
    let (range, c) = db.lookup(ip("192.0.2.200")).unwrap().unwrap();
    assert_eq!(
        (range.to_string().as_str(), c),
        ("192.0.2.128/25", Some(cc("DE")))
    );
    assert_eq!(
        db.lookup(ip("203.0.113.9")).unwrap().unwrap().1,
        Some(cc("FR"))
    );
    assert_eq!(
        db.lookup(ip("::ffff:198.51.100.9")).unwrap().unwrap().1,
        Some(cc("US"))
    );
    assert_eq!(db.lookup(ip("2001:db8:2::1")).unwrap().unwrap().1, None);
    assert!(db.lookup(ip("192.0.3.1")).unwrap().is_none());
    // Cut short: refused, naming the file.
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(test_mmdb()).unwrap();
    let cut = dir.path().join("cut.mmdb");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = select(&Database::open(&cut).unwrap(), &allow(&["DE"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cut.mmdb: not a valid MMDB database"), "{e}");
}

#[test]
fn fast_address_parsing_agrees_with_std() {
    let cases = [
        "0.0.0.0",
        "1.2.3.4",
        "255.255.255.255",
        "256.1.1.1",
        "1.2.3",
        "1.2.3.4.5",
        "01.2.3.4",
        "1..3.4",
        "1.2.3.4 ",
        "::",
        "::1",
        "1::",
        "2001:db8::",
        "2001:db8:0:ffff:ffff:ffff:ffff:ffff",
        "2001:db8::1:2:3:4:5",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8:9",
        "1:2:3:4:5:6:7::8",
        "::ffff:192.0.2.1",
        "2001:db8:::1",
        "2001:db8::1::2",
        "12345::",
        "g::",
        ":1::",
        "1:",
        "::ffff",
        "FFFF::abcd",
        "",
        ":",
        ":::",
        "1:2:3:4:5:6:7:8::",
        "::1:2:3:4:5:6:7",
        "::1:2:3:4:5:6:7:8",
        "1::2:3:4:5:6:7",
        "1:2:3:4:5:6::7:8",
        "0000:0000::",
        "00000::",
        "abcd:ef01:2345:6789:abcd:ef01:2345:6789",
        "1::2:",
        "1:::2",
    ];
    for c in cases {
        assert_eq!(read::tests_parse_ip(c), c.parse::<IpAddr>().ok(), "{c:?}");
    }
    let mut rng = 0x1234_5678_9abc_def0_u64;
    for _ in 0..20_000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let v6 = std::net::Ipv6Addr::from(
            u128::from(rng) << 64 | u128::from(rng.rotate_left(17) & 0xffff_0000_ffff),
        );
        let s = v6.to_string();
        assert_eq!(read::tests_parse_ip(&s), Some(IpAddr::V6(v6)), "{s}");
        let v4 = std::net::Ipv4Addr::from(rng as u32);
        assert_eq!(read::tests_parse_ip(&v4.to_string()), Some(IpAddr::V4(v4)));
    }
}

#[test]
fn element_changes_of_sorted_sets_agree_with_set_differences() {
    use crate::ruleset::{Element, element_changes};
    use std::collections::BTreeSet;
    let mut rng = 7u64;
    for _ in 0..300 {
        let mut pick = || {
            let mut v: Vec<Element> = (0..40)
                .filter_map(|k| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng.is_multiple_of(3).then(|| {
                        Element::address(AddrRange {
                            family: Family::V4,
                            start: k * 4,
                            end: k * 4 + (rng % 2) as u128,
                        })
                    })
                })
                .collect();
            v.sort();
            v
        };
        let (want, have) = (pick(), pick());
        let (ws, hs): (BTreeSet<_>, BTreeSet<_>) = (want.iter().collect(), have.iter().collect());
        let add: Vec<Element> = ws.difference(&hs).map(|e| (*e).clone()).collect();
        let remove: Vec<Element> = hs.difference(&ws).map(|e| (*e).clone()).collect();
        assert_eq!(element_changes(&want, &have), (add, remove));
    }
}

#[test]
fn sip_admission_open_mode_and_the_first_knock_are_behind_the_gate() {
    use crate::compile::tests::{shipped_profiles, trusting};
    use crate::compile::{Resolved, compile_gated};
    let gate = Gate::On {
        v4: elements(vec![AddrRange::from_net("192.0.2.0/25".parse().unwrap())]),
        v6: elements(vec![]),
        base: None,
    };
    let mut settings = trusting("198.51.100.0/28");
    settings.sip.open = true;
    settings.sip.register_domains = vec!["xq356jq.dyndns.example".parse().unwrap()];
    settings.knock = crate::knock::KnockSettings {
        sequence: vec![7000, 8000, 9000],
        ..crate::knock::KnockSettings::default()
    };
    let rs = compile_gated(&settings, &shipped_profiles(), &[], &Resolved::new(), gate);
    let text = |chain: &str| -> Vec<String> {
        rs.chain(chain)
            .unwrap()
            .rules
            .iter()
            .map(|r| r.to_string())
            .collect()
    };
    let guard = text(crate::compile::SIP_GUARD_CHAIN);
    // Open mode accepts only the gate's sources; a REGISTER admits only them.
    assert!(
        guard
            .iter()
            .any(|r| r == "ip saddr @geo_v4 ip saddr != @geo_removed_v4 accept"),
        "{guard:#?}"
    );
    assert!(!guard.iter().any(|r| r == "accept"), "{guard:#?}");
    let admits: Vec<&String> = guard
        .iter()
        .filter(|r| r.contains("@admitted_v4 {"))
        .collect();
    assert!(!admits.is_empty(), "{guard:#?}");
    // Two rules each: in the base and not removed since, or added since.
    let base = "ip saddr @geo_v4 ip saddr != @geo_removed_v4 update";
    let added = "ip saddr @geo_added_v4 update";
    assert!(
        admits
            .chunks(2)
            .all(|w| w.len() == 2 && w[0].contains(base) && w[1].contains(added)),
        "{admits:#?}"
    );
    // The first knock (the one rule adding to stage 1) carries the gate; the later steps
    // need a source already staged.
    let input = text("input");
    let first: Vec<&String> = input
        .iter()
        .filter(|r| r.contains("dport 7000") && r.contains("add @knock_1_v"))
        .collect();
    assert_eq!(first.len(), 4, "{input:#?}");
    assert!(first[0].contains("ip saddr @geo_v4"), "{first:#?}");
    assert!(first[1].contains("ip saddr @geo_added_v4"), "{first:#?}");
    assert!(first[2].contains("ip6 saddr @geo_v6"), "{first:#?}");
    assert!(first[3].contains("ip6 saddr @geo_added_v6"), "{first:#?}");
}

#[test]
fn large_files_are_read_in_parts_with_the_same_result_and_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    // 40,000 rows (> 1 MiB): every even one DE, in 2001:db8::/32.
    let mut text = String::from("ip_start,ip_end,country\n");
    for i in 0..40_000u128 {
        let a = u128::from("2001:db8::".parse::<std::net::Ipv6Addr>().unwrap()) + i * 16;
        let (s, e) = (
            std::net::Ipv6Addr::from(a),
            std::net::Ipv6Addr::from(a + 15),
        );
        text.push_str(&format!(
            "{s},{e},{}\n",
            if i % 2 == 0 { "DE" } else { "FR" }
        ));
    }
    assert!(text.len() > 1 << 20);
    let p = write(dir.path(), "big.csv", &text);
    let db = Database::open(&p).unwrap();
    let sel = select(&db, &allow(&["DE"])).unwrap();
    assert_eq!(
        (sel.rows, sel.v6.len(), sel.rows_of[&cc("DE")]),
        (40_000, 20_000, 20_000)
    );
    // The same as one reader's.
    let mut one = Vec::new();
    db.for_each(|r, c| {
        if c == Some(cc("DE")) {
            one.push(Element::address(r));
        }
    })
    .unwrap();
    merge_in_place(&mut one);
    assert_eq!(one, sel.v6);
    // A bad row in the last part: its line counted from the file's start.
    let mut lines: Vec<&str> = text.lines().collect();
    lines[39_000] = "2001:db8::1,zzz,DE";
    let p = write(dir.path(), "bad.csv", &(lines.join("\n") + "\n"));
    let e = select(&Database::open(&p).unwrap(), &allow(&["DE"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}:39001: invalid address \"zzz\"", p.display())
    );
}

/// The plain DB-IP rows read from the bytes give what the general reader gives, and every
/// other line is left to it (which accepts or refuses it with its message).
#[test]
fn plain_dbip_rows_read_from_bytes_as_the_general_reader_reads_them() {
    use super::read::tests_dbip_both;
    let plain = [
        "192.0.2.0,192.0.2.255,DE",
        "0.0.0.0,0.0.0.0,us",
        "255.255.255.255,255.255.255.255,ZZ",
        "2001:db8::,2001:db8::ffff,FR",
        "::,::ffff,de",
        "2001:db8:0:1::,2001:db8:0:1:ffff:ffff:ffff:ffff,AT",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff,ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff,CH",
    ];
    for line in plain {
        let (fast, general) = tests_dbip_both(line);
        assert_eq!(fast, Some(general.clone().unwrap()), "{line}");
    }
    let others = [
        "ip_start,ip_end,country",
        "192.0.2.0, 192.0.2.255,DE",
        "\"192.0.2.0\",\"192.0.2.255\",\"DE\"",
        "192.0.2.0,192.0.2.255,DE,extra",
        "192.0.2.0,192.0.2.255,-",
        "192.0.2.0,192.0.2.255,",
        "192.0.2.0,192.0.2.255,D1",
        "192.0.2.9,192.0.2.0,DE",
        "192.0.2.0,2001:db8::,DE",
        "2001:db8::,192.0.2.0,DE",
        "::ffff:192.0.2.0,::ffff:192.0.2.255,DE",
        "192.0.2.0,192.0.2.256,DE",
        "192.0.2.00,192.0.2.1,DE",
        "2001:db8:::1,2001:db8::2,DE",
        "192.0.2.0,192.0.2.255",
        "192.0.2.0",
    ];
    for line in others {
        assert_eq!(tests_dbip_both(line).0, None, "{line}");
    }
    // Random rows of both families, as DB-IP writes them.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..20_000 {
        let line = if i % 2 == 0 {
            let a = next() as u32;
            let b = a.saturating_add((next() % 4096) as u32);
            format!(
                "{},{},DE",
                std::net::Ipv4Addr::from(a),
                std::net::Ipv4Addr::from(b)
            )
        } else {
            let a = u128::from(next()) << 64 | u128::from(next());
            let a = if i % 3 == 0 { a & !0xffff_ffff } else { a };
            let b = a.saturating_add(u128::from(next() % 65536));
            format!(
                "{},{},nl",
                std::net::Ipv6Addr::from(a),
                std::net::Ipv6Addr::from(b)
            )
        };
        let (fast, general) = tests_dbip_both(&line);
        match fast {
            Some(row) => assert_eq!(Ok(row), general, "{line}"),
            // Only an embedded IPv4 part (std's form of some addresses) is left over.
            None => assert!(line.contains('.') && line.contains(':'), "{line}"),
        }
    }
}
