use super::*;

const SEC: i128 = 1_000_000_000;
/// When the reads of the cache under test began (and it was written).
const READ_AT: i128 = 1_800_000_000 * SEC;

fn account(name: &str) -> Account {
    Account {
        name: name.parse().unwrap(),
        addresses: vec![
            "192.0.2.7/32".parse().unwrap(),
            "2001:db8::/64".parse().unwrap(),
        ],
        fqdns: vec!["sip.example.com".parse().unwrap()],
        services: vec!["sip".into(), "ssh".into()],
        media: vec!["198.51.100.0/24".parse().unwrap()],
        comment: Some("front desk, ünïcode".into()),
        created: Some("2026-01-02T03:04:05Z".into()),
        provider: None,
        expires: chrono::DateTime::from_timestamp(1_900_000_000, 5),
    }
}

/// A stamp of a file last changed well before [`READ_AT`].
fn old_stamp() -> FileStamp {
    FileStamp {
        dev: 2049,
        ino: 1234,
        size: 120,
        mtime_ns: READ_AT - 60 * SEC + 123,
        ctime_ns: READ_AT - 60 * SEC + 456,
    }
}

fn cache_bytes(key: &str, stamp: FileStamp, a: &Account) -> Vec<u8> {
    encode(key, READ_AT, None, &[Entry::Parsed("joe.toml", stamp, a)])
}

fn decoded(bytes: Vec<u8>) -> Option<Cache> {
    Cache::decode(bytes, "k", READ_AT + SEC / 10, READ_AT + 5 * SEC)
}

fn hit(cache: &Cache, name: &str, stamp: &FileStamp) -> Option<Account> {
    cache.lookup(name, stamp).map(|(a, _)| a)
}

/// A change of a stamp, named.
type Change = (&'static str, fn(&mut FileStamp));

#[test]
fn accounts_round_trip_through_their_encoding() {
    let mut a = account("joe");
    let mut bytes = Vec::new();
    encode_account(&mut bytes, &a);
    assert_eq!(decode_account(&bytes, "joe"), Some(a.clone()));
    // Every optional field empty.
    a.fqdns.clear();
    a.media.clear();
    a.comment = None;
    a.created = None;
    a.provider = Some("voipms".into());
    a.expires = None;
    bytes.clear();
    encode_account(&mut bytes, &a);
    assert_eq!(decode_account(&bytes, "joe"), Some(a));
    // Cut anywhere, or with a byte too many: not an account.
    for n in 0..bytes.len() {
        assert_eq!(decode_account(&bytes[..n], "joe"), None, "cut at {n}");
    }
    bytes.push(0);
    assert_eq!(decode_account(&bytes, "joe"), None);
}

#[test]
fn an_unchanged_old_file_is_taken_from_the_cache() {
    let a = account("joe");
    let cache = decoded(cache_bytes("k", old_stamp(), &a)).expect("intact cache");
    assert_eq!(cache.len(), 1);
    assert_eq!(hit(&cache, "joe.toml", &old_stamp()), Some(a));
}

#[test]
fn any_change_of_the_stamp_or_name_means_reading_the_file() {
    let cache = decoded(cache_bytes("k", old_stamp(), &account("joe"))).unwrap();
    let changed: [Change; 6] = [
        ("size", |s| s.size += 1),
        ("mtime", |s| s.mtime_ns += 1),
        ("ctime (same size and mtime)", |s| s.ctime_ns += 1),
        ("inode (same size and mtime)", |s| s.ino += 1),
        ("device", |s| s.dev += 1),
        ("mtime back in time", |s| s.mtime_ns -= SEC),
    ];
    for (what, change) in changed {
        let mut s = old_stamp();
        change(&mut s);
        assert!(hit(&cache, "joe.toml", &s).is_none(), "changed {what}");
    }
    assert!(
        hit(&cache, "jim.toml", &old_stamp()).is_none(),
        "other name"
    );
}

#[test]
fn racily_clean_entries_are_not_trusted() {
    // Changed less than the margin before the reads began (or after): an edit within the
    // same clock tick would keep size and times, so the file is read again.
    for (mtime, ctime) in [
        (READ_AT - SEC, READ_AT - 60 * SEC),
        (READ_AT - 60 * SEC, READ_AT - SEC),
        (READ_AT, READ_AT),
        (READ_AT + SEC, READ_AT + SEC),
        (READ_AT - RACY_MARGIN_NS, READ_AT - 60 * SEC),
    ] {
        let s = FileStamp {
            mtime_ns: mtime,
            ctime_ns: ctime,
            ..old_stamp()
        };
        let cache = decoded(cache_bytes("k", s, &account("joe"))).unwrap();
        assert!(
            hit(&cache, "joe.toml", &s).is_none(),
            "mtime {mtime} ctime {ctime}"
        );
    }
    // Just old enough.
    let s = FileStamp {
        mtime_ns: READ_AT - RACY_MARGIN_NS - 1,
        ctime_ns: READ_AT - RACY_MARGIN_NS - 1,
        ..old_stamp()
    };
    let cache = decoded(cache_bytes("k", s, &account("joe"))).unwrap();
    assert!(hit(&cache, "joe.toml", &s).is_some());
    // The cache file's own time counts when it is older than the recorded start.
    let c = Cache::decode(
        cache_bytes("k", s, &account("joe")),
        "k",
        READ_AT - 10 * SEC,
        READ_AT + 5 * SEC,
    )
    .unwrap();
    assert!(hit(&c, "joe.toml", &s).is_none());
}

#[test]
fn corrupt_foreign_or_future_caches_are_ignored() {
    let good = cache_bytes("k", old_stamp(), &account("joe"));
    assert!(decoded(good.clone()).is_some());
    // Every single flipped byte and every truncation is caught.
    for i in 0..good.len() {
        let mut b = good.clone();
        b[i] ^= 0x20;
        assert!(decoded(b).is_none(), "byte {i} flipped");
    }
    for n in 0..good.len() {
        assert!(decoded(good[..n].to_vec()).is_none(), "cut at {n}");
    }
    assert!(decoded(Vec::new()).is_none());
    assert!(decoded(b"not a cache at all, just some text of some length".to_vec()).is_none());
    // Another key (pbxwall version or profiles).
    assert!(decoded(cache_bytes("other", old_stamp(), &account("joe"))).is_none());
    // Written after "now": the clock was set back, times prove nothing.
    assert!(Cache::decode(good.clone(), "k", READ_AT, READ_AT - SEC).is_none());
    assert!(Cache::decode(good, "k", READ_AT + 10 * SEC, READ_AT + SEC).is_none());
}

#[test]
fn entries_kept_from_a_cache_are_copied_as_they_were() {
    let a = account("joe");
    let old = decoded(cache_bytes("k", old_stamp(), &a)).unwrap();
    let (_, range) = old.lookup("joe.toml", &old_stamp()).expect("hit");
    let b = account("amy");
    let bytes = encode(
        "k",
        READ_AT,
        Some(&old),
        &[
            Entry::Kept("joe.toml", old_stamp(), range),
            Entry::Parsed("amy.toml", old_stamp(), &b),
        ],
    );
    let new = decoded(bytes).unwrap();
    assert_eq!(new.len(), 2);
    assert_eq!(hit(&new, "joe.toml", &old_stamp()), Some(a));
    assert_eq!(hit(&new, "amy.toml", &old_stamp()), Some(b));
}

#[test]
fn the_key_changes_with_the_profiles() {
    let builtin = crate::store::builtin_profiles();
    assert_eq!(cache_key(&builtin), cache_key(&builtin.clone()));
    assert_ne!(cache_key(&builtin), cache_key(&Profiles::default()));
}
