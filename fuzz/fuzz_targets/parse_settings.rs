//! `store::parse_settings`: never panics.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pbxwall::store;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = store::parse_settings(Path::new("/etc/pbxwall/pbxwall.toml"), &text);
});
