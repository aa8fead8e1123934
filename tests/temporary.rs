//! Temporary access: accounts with `--expires` close at the kernel's timeout with no command
//! run, and the next command removes their file; the TM4 recipe (whitelisting by telephone)
//! runs the exact command line README and pbxwall(8) show.

mod common;

use std::path::Path;
use std::process::Output;

use common::{Needs, Probe, Servers, TempConfig, Topology, assert_probes, show, stderr};

#[track_caller]
fn ok(out: Output, what: &str) -> Output {
    assert_eq!(out.status.code(), Some(0), "{what}:\n{}", show(&out));
    out
}

fn repo_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The command of the recipe's `System(...)` line in `text` (README or a man page).
fn recipe_command(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.contains("System(sudo -n /usr/sbin/add-ip"))
        .unwrap_or_else(|| panic!("no TM4 System line"));
    let inner = line.split_once("System(").unwrap().1;
    inner.strip_suffix(')').unwrap_or(inner).to_owned()
}

/// What Asterisk hands to `/bin/sh -c`: the recipe's command with the channel variables
/// filled in as the dialplan computes them (`Read` stops at `#` and leaves it out,
/// `STRREPLACE(DIGITS,*,.)`, the caller ID through `FILTER(0-9,...)`), and without
/// `sudo -n` (the test runs as root).
fn as_asterisk_runs_it(command: &str, keys: &str, caller_id: &str) -> String {
    let digits = keys.split('#').next().unwrap_or("");
    let addr = digits.replace('*', ".");
    let who: String = caller_id.chars().filter(char::is_ascii_digit).collect();
    let add_ip = common::bin("add-ip");
    command
        .replace("${ADDR}", &addr)
        .replace("${WHO}", &who)
        .replacen(
            "sudo -n /usr/sbin/add-ip",
            add_ip.to_str().expect("utf-8 path"),
            1,
        )
}

fn tm4_recipe_shows_one_command_everywhere() {
    let readme = recipe_command(&repo_file("README.md"));
    assert!(readme.contains("--expires 2h"), "{readme}");
    let man = repo_file("man/pbxwall.8")
        .replace("\\-", "-")
        .replace("\\(dq", "\"")
        .replace("\\e", "\\");
    assert_eq!(recipe_command(&man), readme, "pbxwall(8) and README differ");
}

fn tm4_recipe_command_grants_the_callers_address_for_two_hours() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[5060, 22], &[5060]);
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", "trusted = []\n");
    let command = recipe_command(&repo_file("README.md"));
    let sh = Path::new("/bin/sh");
    let run = |digits: &str, caller: &str| {
        let line = as_asterisk_runs_it(&command, digits, caller);
        let cmd = cfg.command(Some(topo.pbx_ns()), sh, ["-c", &line]);
        common::run_with_timeout(cmd, None, common::RUN_TIMEOUT).unwrap()
    };
    let before = chrono::Utc::now();
    ok(
        run("203*0*113*10#", "+1 (555) 0100"),
        "the recipe's command",
    );
    let text = cfg
        .read("accounts/tm4-15550100.toml")
        .expect("account written");
    assert!(text.contains("comment = \"TM4 by telephone\""), "{text}");
    let account = pbxwall::store::parse_account(
        Path::new("tm4-15550100.toml"),
        &text,
        &pbxwall::store::builtin_profiles(),
    )
    .unwrap();
    let left = account.expires.expect("expires") - before;
    assert!(
        (7190..=7260).contains(&left.num_seconds()),
        "expires in {left}: {text}"
    );
    assert_probes(
        &topo,
        &[
            Probe::udp("203.0.113.10", 5060, true),
            Probe::tcp("203.0.113.10", 5060, true),
            Probe::tcp("203.0.113.10", 22, false),
            Probe::udp("203.0.113.11", 5060, false),
        ],
    );
    // The same caller again, from elsewhere: the access moves.
    ok(run("203*0*113*11", "+1 (555) 0100"), "second call");
    assert_probes(
        &topo,
        &[
            Probe::udp("203.0.113.11", 5060, true),
            Probe::udp("203.0.113.10", 5060, false),
        ],
    );
    // Digits that are no address: refused, nothing changed.
    let snapshot = common::snapshot(cfg.config_dir());
    let out = run("999*1*1*1", "15550100");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stderr(&out).contains("invalid address \"999.1.1.1\""),
        "{}",
        show(&out)
    );
    assert_eq!(common::snapshot(cfg.config_dir()), snapshot);
}

common::test_main! {
    Needs::NOTHING => [
        tm4_recipe_shows_one_command_everywhere,
    ],
    Needs::ROOT => [
        tm4_recipe_command_grants_the_callers_address_for_two_hours,
    ],
}
