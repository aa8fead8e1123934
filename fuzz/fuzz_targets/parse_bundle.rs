//! `fleet::Bundle::parse` and `Bundle::check` (what `pbxwall sync` does with a download once
//! its signature verified): never panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pbxwall::{fleet, store};

fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = fleet::Bundle::parse(data) {
        let _ = bundle.check(Path::new("https://fleet.example/b"), &store::builtin_profiles());
    }
});
