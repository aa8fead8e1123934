//! `Profiles::parse_services`: never panics; what it accepts are known profile names, and
//! their comma-joined list parses back to the same list.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pbxwall::model::Profiles;
use pbxwall::store;

/// The built-in profiles.
fn profiles() -> &'static Profiles {
    static PROFILES: OnceLock<Profiles> = OnceLock::new();
    PROFILES.get_or_init(store::builtin_profiles)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let profiles = profiles();
    if let Ok(names) = profiles.parse_services(&[text.as_ref()]) {
        assert!(!names.is_empty());
        assert!(names.iter().all(|n| profiles.get(n).is_some()), "{names:?}");
        let again = profiles
            .parse_services(&[names.join(",")])
            .unwrap_or_else(|e| panic!("{names:?} does not re-parse: {e}"));
        assert_eq!(names, again);
    }
});
