//! `store::parse_account`: never panics; an accepted account renders to a file that parses
//! back to the same account.
#![no_main]

use std::path::Path;
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
    let path = Path::new("/etc/pbxwall/accounts/fuzz.toml");
    if let Ok(account) = store::parse_account(path, &text, profiles()) {
        let rendered = store::render_account(&account);
        let again = store::parse_account(path, &rendered, profiles())
            .unwrap_or_else(|e| panic!("accepted account does not round-trip: {e}\n{rendered}"));
        assert_eq!(account, again, "round trip changed the account");
    }
});
