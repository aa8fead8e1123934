//! `Fqdn::from_str`: never panics; an accepted name is ASCII, at most 253 characters, and
//! parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbxwall::model::Fqdn;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(name) = text.parse::<Fqdn>() {
        let s = name.as_str();
        assert!(s.is_ascii() && s.len() <= 253, "accepted {s:?}");
        let again: Fqdn = s
            .parse()
            .unwrap_or_else(|e| panic!("accepted {s:?} does not re-parse: {e}"));
        assert_eq!(name, again);
    }
});
