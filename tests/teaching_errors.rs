//! Errors that teach (issue 16): what a newcomer gets wrong on the first day, and the one line
//! that tells them what to do instead. Each test runs the real binaries; the lockout advice
//! is followed as written, in a namespace (root).

mod common;

use common::{Needs, TempConfig, Topology, show, stderr};

/// A client address of no account, and the server's SSH port.
const SSH_STRANGER: &str = "198.51.100.77 52314 192.0.2.1 22";

/// After `init` the `admin` account exists, so the lockout guard cannot advise
/// `add-ip admin ...` (it would fail: the account exists already). Its advice is a command
/// that works as written: run it, and the refused restart goes through.
fn lockout_advice_is_a_command_that_works() {
    let topo = Topology::new();
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", "trusted = []\n");
    let ns = Some(topo.pbx_ns());
    let out = cfg.run(
        ns,
        "add-ip",
        ["admin", "192.0.2.10", "--allow", "ssh,web,webmin"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let env = [("SSH_CONNECTION", SSH_STRANGER)];
    let out = cfg.run_env(ns, "restart", [] as [&str; 0], &env);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "refusing to apply: your SSH client 198.51.100.77 could no longer reach tcp port 22; \
             whitelist it first (add-ip admin-2 198.51.100.77 --allow ssh) or pass --force"
        ),
        "{}",
        show(&out)
    );
    let advice = err
        .split("whitelist it first (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("the advice");
    let words: Vec<&str> = advice.split_whitespace().collect();
    let out = cfg.run_env(ns, words[0], &words[1..], &env);
    assert_eq!(out.status.code(), Some(0), "{advice}: {}", show(&out));
    let out = cfg.run_env(ns, "restart", [] as [&str; 0], &env);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

common::test_main! {
    Needs::ROOT => [lockout_advice_is_a_command_that_works],
}
