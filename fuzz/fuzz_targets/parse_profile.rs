//! `store::parse_profile`: never panics; an accepted profile opens something.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pbxwall::store;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(profile) = store::parse_profile(Path::new("/etc/pbxwall/profiles/fuzz.toml"), &text) {
        assert!(
            !profile.ports.is_empty(),
            "accepted a profile without ports"
        );
        assert!(
            profile.code.is_none_or(|c| c <= 9),
            "accepted code {:?}",
            profile.code
        );
    }
});
