//! The parse cache of the account files (`STATE_DIR/accounts-cache.bin`) is never trusted
//! over a changed file: an account file edited in place between two restarts, with its size
//! and even its modification time kept, reaches the kernel's ruleset; so does one replaced
//! by a rename; a corrupt cache is ignored. Each test in its own namespace (`common::Netns`).
//!
//! An edit after the cache's reads began is caught twice over: its change time is too recent
//! to trust, and it differs from the recorded one (with inode, size, mtime). A cache that
//! compared size and mtime alone, without the racy-clean rule, fails the first test; the
//! unit tests in `src/account_cache/tests.rs` take each rule on its own.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{Needs, Netns, TempConfig, assert_exit, show};

const CACHE: &str = "accounts-cache.bin";
/// More than the cache's margin (2 s): files older than this before a restart's reads are
/// trusted when unchanged.
const OLDER_THAN_MARGIN: Duration = Duration::from_millis(2_500);

fn account(addr: &str) -> String {
    format!("addresses = [\"{addr}\"]\nservices = [\"ssh\"]\n")
}

/// A configuration with joe (192.0.2.10) and 30 other accounts, old enough to be trusted.
fn config() -> TempConfig {
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", "trusted = []\n");
    cfg.write("accounts/joe.toml", &account("192.0.2.10"));
    for i in 0..30 {
        cfg.write(
            &format!("accounts/other{i:02}.toml"),
            &account(&format!("198.51.100.{i}")),
        );
    }
    std::thread::sleep(OLDER_THAN_MARGIN);
    cfg
}

fn restart(cfg: &TempConfig, ns: &Netns, args: &[&str]) -> String {
    let out = cfg.run(Some(ns.name()), "restart", args);
    assert_exit(&out, 0, "restart");
    common::stdout(&out)
}

fn live(ns: &Netns) -> String {
    let out = common::ns_cmd(ns.name(), "nft", &["list", "table", "inet", "pbxwall"]);
    assert!(out.status.success(), "{}", show(&out));
    common::stdout(&out)
}

fn cache_mtime(cfg: &TempConfig) -> Option<SystemTime> {
    fs::metadata(cfg.state_dir().join(CACHE))
        .and_then(|m| m.modified())
        .ok()
}

/// Writes `text` into the existing file in place (same inode), then puts its modification
/// time back: an edit that keeps size and mtime.
fn edit_in_place_keeping_mtime(path: &Path, text: &str) {
    let before = fs::metadata(path).unwrap();
    assert_eq!(before.len(), text.len() as u64, "same size");
    let mtime = before.modified().unwrap();
    fs::write(path, text).unwrap();
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

fn a_same_size_edit_between_restarts_reaches_the_kernel() {
    let ns = Netns::new();
    let cfg = config();
    restart(&cfg, &ns, &[]);
    assert!(live(&ns).contains("192.0.2.10"));
    let written = cache_mtime(&cfg).expect("restart writes the cache");
    // Nothing changed: every account comes from the cache, which is not written again.
    restart(&cfg, &ns, &[]);
    assert_eq!(
        cache_mtime(&cfg),
        Some(written),
        "cache rewritten with nothing changed"
    );

    let joe = cfg.config_dir().join("accounts/joe.toml");
    edit_in_place_keeping_mtime(&joe, &account("192.0.2.11"));
    // A reader without the lock sees it too.
    let dry = restart(&cfg, &ns, &["--dry-run"]);
    assert!(
        dry.contains("192.0.2.11") && !dry.contains("192.0.2.10"),
        "{dry}"
    );
    restart(&cfg, &ns, &[]);
    let rs = live(&ns);
    assert!(
        rs.contains("192.0.2.11") && !rs.contains("192.0.2.10"),
        "{rs}"
    );

    // Replaced by a rename (another inode), same size, mtime put back.
    std::thread::sleep(OLDER_THAN_MARGIN);
    restart(&cfg, &ns, &[]);
    let mtime = fs::metadata(&joe).unwrap().modified().unwrap();
    let tmp = cfg.config_dir().join("accounts/.joe.new");
    fs::write(&tmp, account("192.0.2.12")).unwrap();
    fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    fs::rename(&tmp, &joe).unwrap();
    restart(&cfg, &ns, &[]);
    let rs = live(&ns);
    assert!(
        rs.contains("192.0.2.12") && !rs.contains("192.0.2.11"),
        "{rs}"
    );
    assert!(rs.contains("198.51.100.29"), "the others still there\n{rs}");
}

fn a_corrupt_cache_is_ignored_and_written_again() {
    let ns = Netns::new();
    let cfg = config();
    restart(&cfg, &ns, &[]);
    let cache = cfg.state_dir().join(CACHE);
    let mut bytes = fs::read(&cache).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&cache, &bytes).unwrap();
    let out = cfg.run(Some(ns.name()), "restart", [] as [&str; 0]);
    assert_exit(&out, 0, "restart with a corrupt cache");
    assert!(common::stderr(&out).is_empty(), "{}", show(&out));
    assert_ne!(fs::read(&cache).unwrap(), bytes, "written again");
    let rs = live(&ns);
    assert!(
        rs.contains("192.0.2.10") && rs.contains("198.51.100.29"),
        "{rs}"
    );
}

common::test_main! {
    Needs::ROOT => [
        a_same_size_edit_between_restarts_reaches_the_kernel,
        a_corrupt_cache_is_ignored_and_written_again,
    ],
}
