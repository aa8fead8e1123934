//! Bad input across the commands: each gets one clear line naming the value and what would be
//! valid, the documented exit code, and changes nothing in the config folder. No root needed:
//! nothing here reaches the kernel (errors come before any apply; successes use
//! `--no-restart` or `--dry-run`).

mod common;

use common::{Case, Needs, TempConfig, case, show, stderr, stdout};

fn setup() -> TempConfig {
    let cfg = TempConfig::new();
    let out = cfg.run(
        None,
        "add-ip",
        [
            "joe-office",
            "203.0.113.7",
            "--allow",
            "sip-udp",
            "--no-restart",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    cfg
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    case(&["add-ip", "joe", "300.1.2.3", "--allow", "1"], 2, "invalid address \"300.1.2.3\": expected an IPv4 or IPv6 address or CIDR"),
    case(&["add-ip", "joe", "192.0.2.1/33", "--allow", "1"], 2, "invalid address \"192.0.2.1/33\""),
    case(&["add-ip", "joe", "2001:db8::g", "--allow", "1"], 2, "invalid address \"2001:db8::g\""),
    case(&["add-ip", "joe", "198.51.100.5/24", "--allow", "1"], 2, "invalid network \"198.51.100.5/24\": host bits are set after /24; the network is 198.51.100.0/24"),
    case(&["add-ip", "joe", "0.0.0.0/0", "--allow", "1"], 2, "refusing to whitelist 0.0.0.0/0: it is larger than /8 (IPv4) or /32 (IPv6); pass --force"),
    case(&["add-ip", "joe", "10.0.0.0/7", "--allow", "1"], 2, "refusing to whitelist 10.0.0.0/7"),
    case(&["add-ip", "joe", "2001::/16", "--allow", "1"], 2, "refusing to whitelist 2001::/16"),
    case(&["add-ip", "joe", "224.0.0.1", "--allow", "1"], 2, "not a unicast source address"),
    case(&["add-ip", "joe", "192.0.2.1,300.0.0.1", "--allow", "1"], 2, "invalid address \"300.0.0.1\""),
    case(&["add-ip", "../x", "192.0.2.1", "--allow", "1"], 2, "invalid account name \"../x\": use 1-64 characters of A-Z a-z 0-9 . _ -"),
    case(&["add-ip", "a/b", "192.0.2.1", "--allow", "1"], 2, "invalid account name \"a/b\""),
    case(&["add-ip", "", "192.0.2.1", "--allow", "1"], 2, "invalid account name \"\""),
    case(&["add-ip", "-rf", "192.0.2.1", "--allow", "1"], 2, "unexpected argument '-r'"),
    case(&["add-ip", ".hidden", "192.0.2.1", "--allow", "1"], 2, "invalid account name \".hidden\""),
    case(&["add-ip", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "192.0.2.1", "--allow", "1"], 2, "invalid account name"),
    case(&["add-ip", "joe", "192.0.2.1", "--allow", "telnet"], 2, "unknown service \"telnet\": valid services are 0=all, 1=sip-udp, 2=sip-tcp, 3=iax, 4=web, 5=webmin, 6=ftp, 7=tftp, 8=ssh, 9=fop"),
    case(&["add-ip", "joe", "192.0.2.1", "--allow", "12"], 2, "unknown service \"12\""),
    case(&["add-ip", "joe", "192.0.2.1", "--allow", ","], 2, "no services given"),
    case(&["add-ip", "joe-office", "192.0.2.1", "--allow", "1"], 1, "account joe-office exists already: pass --replace to overwrite it"),
    case(&["add-ip", "joe", "--allow", "1"], 2, "missing arguments"),
    case(&["add-ip", "joe", "192.0.2.1"], 2, "missing arguments"),
    case(&["add-ip"], 2, "missing arguments"),
    case(&["add-ip", "joe", "192.0.2.1", "--allow", "1", "--bogus"], 2, "unexpected argument '--bogus'"),
    case(&["add-fqdn", "m", "192.0.2.1", "--allow", "1"], 2, "invalid host name \"192.0.2.1\": it is an IP address; use add-ip for addresses"),
    case(&["add-fqdn", "m", "*.example.com", "--allow", "1"], 2, "wildcards cannot be resolved"),
    case(&["add-fqdn", "m", "a..example.com", "--allow", "1"], 2, "empty label"),
    case(&["add-fqdn", "m", "localhost", "--allow", "1"], 2, "give a fully qualified name"),
    case(&["add-fqdn", "m", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example", "--allow", "1"], 2, "longer than 63"),
    case(&["add-fqdn", "m", "bad_name!.example", "--allow", "1"], 2, "invalid host name \"bad_name!.example\""),
    case(&["add-fqdn", "m", "ok.example", "--allow", "99"], 2, "unknown service \"99\""),
    case(&["add-fqdn", "joe-office", "ok.example", "--allow", "1"], 1, "exists already"),
    case(&["del-acct", "joe-ofice"], 1, "no account named joe-ofice; did you mean joe-office?"),
    case(&["del-acct", "nobody"], 1, "no account named nobody"),
    case(&["del-acct", "../etc/passwd"], 2, "invalid account name \"../etc/passwd\""),
    case(&["del-acct", "joe-office", "nobody"], 1, "no account named nobody"),
    case(&["del-acct"], 2, "required"),
    case(&["restart", "--bogus"], 2, "unexpected argument '--bogus'"),
    // One rule for the exit status: a value on the command line that is not valid exits 2,
    // like clap's syntax errors; 1 is for what could not be done (exists, no such account).
    case(&["add-ip", "joe", "203.0.113.300", "--allow", "1"], 2, "invalid address \"203.0.113.300\""),
    case(&["add-ip", "joe", "192.0.2.1", "--allow", ""], 2, "no services given"),
    case(&["pbxwall", "add-ip", "joe", "0.0.0.0/0", "--allow", "1"], 2, "refusing to whitelist 0.0.0.0/0"),
    case(&["ipchecker", "--install-cron", "@hourly", "--cron-file", "/nonexistent/pbxwall-cron"], 2, "invalid cron schedule \"@hourly\""),
    case(&["ipchecker", "--record-only", "--force"], 2, "the argument '--record-only' cannot be used with '--force'"),
    case(&["del-acct", "a/b"], 2, "invalid account name \"a/b\""),
    case(&["pbxwall", "init", "--admin", "300.1.2.3"], 2, "invalid address \"300.1.2.3\""),
    // Hints for what newcomers get wrong: a port on the address, a forgotten account name,
    // a misspelt service, an empty item in del-acct's comma list.
    case(&["add-ip", "joe", "203.0.113.7:5060", "--allow", "1"], 2, "invalid address \"203.0.113.7:5060\": write it without :5060, as 203.0.113.7; ports come from the services (--allow)"),
    case(&["add-ip", "joe", "[2001:db8::7]:5060", "--allow", "1"], 2, "write it without :5060, as 2001:db8::7;"),
    case(&["add-ip", "203.0.113.7", "--allow", "1"], 2, "missing arguments: \"203.0.113.7\" looks like an address, not an account name: give the account name first, e.g. add-ip joe-office 203.0.113.7 --allow SERVICES"),
    case(&["add-fqdn", "joe.dyndns.example", "--allow", "1"], 2, "missing arguments: \"joe.dyndns.example\" looks like a host name, not an account name: give the account name first, e.g. add-fqdn joe-mobile joe.dyndns.example --allow SERVICES"),
    case(&["add-ip", "joe", "192.0.2.1", "--allow", "sipudp"], 2, "unknown service \"sipudp\": valid services are 0=all, 1=sip-udp, 2=sip-tcp, 3=iax, 4=web, 5=webmin, 6=ftp, 7=tftp, 8=ssh, 9=fop; did you mean sip-udp?"),
    case(&["add-ip", "joe", "192.0.2.1", "--allow", "sip-udp", "--allow", "iax webmni"], 2, "unknown service \"webmni\": valid services are 0=all, 1=sip-udp, 2=sip-tcp, 3=iax, 4=web, 5=webmin, 6=ftp, 7=tftp, 8=ssh, 9=fop; did you mean webmin?"),
    case(&["del-acct", "joe-office,,nobody"], 1, "no account named nobody"),
    case(&["del-acct", ","], 2, "no account name given: name at least one"),
    // Names that differ only in case are one account to a person reading them.
    case(&["add-ip", "Joe-Office", "192.0.2.1", "--allow", "1"], 1, "account joe-office exists already, and Joe-Office differs from it only in case: choose another name, or change joe-office with --replace"),
    case(&["add-fqdn", "JOE-OFFICE", "ok.example", "--allow", "1", "--replace"], 1, "account joe-office exists already, and JOE-OFFICE differs from it only in case"),
];

fn bad_input_is_refused_with_one_line_and_changes_nothing() {
    let cfg = setup();
    let before = common::snapshot(cfg.config_dir());
    let mut failures = Vec::new();
    for c in CASES {
        let (bin, args) = c.args.split_first().unwrap();
        let out = cfg.run(None, bin, args);
        let err = stderr(&out);
        let first_error_line = err.lines().find(|l| l.contains("error")).unwrap_or("");
        let code_ok = out.status.code() == Some(c.code);
        let text_ok = first_error_line.contains(c.error);
        // Our own errors are one line (exit 1 or 2); clap's usage errors add a usage block.
        let clap = err.starts_with("error: ");
        let one_line = (clap && c.code == 2) || err.trim_end().lines().count() == 1;
        if !(code_ok && text_ok && one_line) {
            failures.push(format!(
                "{:?}: want exit {} and {:?}\n{}",
                c.args,
                c.code,
                c.error,
                show(&out)
            ));
        }
        let after = common::snapshot(cfg.config_dir());
        if after != before {
            failures.push(format!(
                "{:?} changed the config dir: {before:?} -> {after:?}",
                c.args
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

fn corrupt_settings_stop_restart_with_file_and_line() {
    let cfg = setup();
    cfg.write(
        "pbxwall.toml",
        "trusted = []\n[rtp]\nports = \"20000-10000\"\n",
    );
    let out = cfg.run(None, "restart", ["--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("pbxwall.toml:3: invalid rtp ports \"20000-10000\""),
        "{}",
        show(&out)
    );
    assert!(
        stdout(&out).is_empty(),
        "nothing printed as ruleset: {}",
        show(&out)
    );
}

fn corrupt_account_file_is_skipped_the_rest_applies_exit_3() {
    let cfg = setup();
    cfg.write(
        "accounts/broken.toml",
        "services = [\"sip-udp\"]\naddresses = [\"192.0.2.300\"]\n",
    );
    let out = cfg.run(None, "restart", ["--dry-run"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        stderr(&out).contains("broken.toml:2: invalid address \"192.0.2.300\""),
        "{}",
        show(&out)
    );
    assert!(
        stdout(&out).contains("elements = { 203.0.113.7 : jump allow_"),
        "{}",
        show(&out)
    );
}

fn corrupt_local_profile_is_an_error() {
    let cfg = setup();
    cfg.write(
        "profiles/sip-udp.toml",
        "code = 1\nname = \"sip-udp\"\nports = [\"udp/99999\"]\n",
    );
    let out = cfg.run(None, "restart", ["--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("sip-udp.toml:3: invalid port \"udp/99999\""),
        "{}",
        show(&out)
    );
}

fn dry_run_prints_the_table_and_codes_work_as_names() {
    let cfg = setup();
    let out = cfg.run(
        None,
        "add-ip",
        [
            "backup-site",
            "198.51.100.0/28",
            "--allow",
            "0",
            "--no-restart",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = cfg.read("accounts/backup-site.toml").unwrap();
    assert!(text.contains("services = [\"all\"]"), "{text}");
    let out = cfg.run(None, "pbxwall", ["restart", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let s = stdout(&out);
    assert!(s.starts_with("table inet pbxwall {"), "{s}");
    assert!(s.contains("ip saddr vmap @hosts_v4"), "{s}");
    assert!(s.contains(" : jump allow_all"), "{s}");
    assert!(s.contains("chain allow_sip-udp"), "{s}");
    assert!(s.contains("\t\tudp dport 5060-5061 accept\n"), "{s}");
}

/// `--allow` lists may be given more than once and separated by spaces as well as commas;
/// `del-acct` takes comma-separated names like `add-ip` takes addresses.
fn lists_merge_and_split_on_spaces() {
    let cfg = setup();
    let out = cfg.run(
        None,
        "add-ip",
        [
            "ann",
            "192.0.2.7 192.0.2.8",
            "--allow",
            "sip-udp iax",
            "--allow",
            "ssh",
            "--no-restart",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = cfg.read("accounts/ann.toml").unwrap();
    assert!(
        text.contains("addresses = [\"192.0.2.7\", \"192.0.2.8\"]"),
        "{text}"
    );
    assert!(
        text.contains("services = [\"sip-udp\", \"iax\", \"ssh\"]"),
        "{text}"
    );
    let out = cfg.run(None, "del-acct", ["ann,joe-office", "--no-restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(cfg.read("accounts/ann.toml").is_none());
    assert!(cfg.read("accounts/joe-office.toml").is_none());
}

/// An address another account whitelists too is saved with a warning naming that account
/// (removing one of them would leave it open through the other).
fn an_address_in_two_accounts_is_warned() {
    let cfg = setup();
    let out = cfg.run(
        None,
        "add-ip",
        [
            "joe-home",
            "203.0.113.7,198.51.100.0/24",
            "--allow",
            "iax",
            "--no-restart",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        stderr(&out),
        "warning: 203.0.113.7 is also in account joe-office; removing one account leaves it open through the other\n"
    );
    let out = cfg.run(
        None,
        "add-ip",
        ["bob", "198.51.100.9", "--allow", "1", "--no-restart"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        stderr(&out),
        "warning: 198.51.100.9 overlaps 198.51.100.0/24 of account joe-home; removing one account leaves it open through the other\n"
    );
    // Replacing an account does not warn about its own addresses.
    let out = cfg.run(
        None,
        "add-ip",
        [
            "bob",
            "198.51.100.9",
            "--allow",
            "3",
            "--replace",
            "--no-restart",
        ],
    );
    assert!(
        !stderr(&out).contains("also in account bob"),
        "{}",
        show(&out)
    );
}

fn replace_overwrites_and_fqdn_names_are_normalised() {
    let cfg = setup();
    let out = cfg.run(
        None,
        "add-ip",
        [
            "joe-office",
            "192.0.2.7,2001:db8::7",
            "--allow",
            "iax",
            "--replace",
            "--no-restart",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = cfg.read("accounts/joe-office.toml").unwrap();
    assert!(
        text.contains("addresses = [\"192.0.2.7\", \"2001:db8::7\"]"),
        "{text}"
    );
    assert!(text.contains("services = [\"iax\"]"), "{text}");
    let out = cfg.run(
        None,
        "add-fqdn",
        [
            "joe-mobile",
            "Joe.DynDNS.Example.",
            "--allow",
            "1,3",
            "--no-restart",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = cfg.read("accounts/joe-mobile.toml").unwrap();
    assert!(text.contains("fqdns = [\"joe.dyndns.example\"]"), "{text}");
    assert!(text.contains("services = [\"sip-udp\", \"iax\"]"), "{text}");
}

fn audit_log_records_who_what_and_addresses() {
    let cfg = TempConfig::new();
    let env = [("SUDO_USER", "alice")];
    for args in [
        &[
            "add-ip",
            "joe",
            "203.0.113.7,2001:db8::/48",
            "--allow",
            "1,3",
            "--no-restart",
        ][..],
        &[
            "add-fqdn",
            "mobile",
            "joe.dyn.example",
            "--allow",
            "ssh",
            "--no-restart",
        ],
        &[
            "add-ip",
            "joe",
            "203.0.113.8",
            "--allow",
            "1",
            "--replace",
            "--no-restart",
        ],
        &["del-acct", "mobile", "--no-restart"],
    ] {
        let (bin, rest) = args.split_first().unwrap();
        let out = cfg.run_env(None, bin, rest, &env);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    }
    let log = std::fs::read_to_string(cfg.state_dir().join("audit.log")).unwrap();
    let entries: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let whats: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["command"].as_str().unwrap(), e["what"].as_str().unwrap()))
        .collect();
    assert_eq!(
        whats,
        [
            (
                "add-ip",
                "account joe added: addresses 203.0.113.7, 2001:db8::/48; services sip-udp, iax"
            ),
            (
                "add-fqdn",
                "account mobile added: names joe.dyn.example; services ssh"
            ),
            (
                "add-ip",
                "account joe replaced: addresses 203.0.113.8; services sip-udp"
            ),
            (
                "del-acct",
                "account mobile removed (had names joe.dyn.example; services ssh)"
            ),
        ]
    );
    assert!(
        entries
            .iter()
            .all(|e| e["user"] == "alice" && e["at"].is_string())
    );
}

fn json_results_have_the_documented_shape() {
    let cfg = TempConfig::new();
    let out = cfg.run(
        None,
        "add-ip",
        ["joe", "192.0.2.7", "--allow", "1", "--no-restart", "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["command"], "add-ip");
    assert_eq!(v["exit"], 0);
    assert_eq!(v["outcome"], "ok");
    assert!(v["error"].is_null());
    assert_eq!(v["messages"][0], "account joe saved; run restart to apply");
    assert!(v["applied"].is_null());

    let out = cfg.run(
        None,
        "pbxwall",
        ["--json", "add-ip", "eve", "192.0.2.300", "--allow", "1"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["outcome"], "error");
    assert_eq!(v["exit"], 2);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("invalid address \"192.0.2.300\""),
        "{v}"
    );
}

fn no_restart_says_what_was_saved_or_removed_and_that_nothing_was_applied() {
    let cfg = TempConfig::new();
    let out = cfg.run(
        None,
        "add-ip",
        ["joe", "192.0.2.7", "--allow", "sip-udp", "--no-restart"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(stdout(&out), "account joe saved; run restart to apply\n");
    let out = cfg.run(None, "del-acct", ["joe", "--no-restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        stdout(&out),
        "account joe removed (had addresses 192.0.2.7; services sip-udp); run restart to apply\n"
    );
}

fn on_a_terminal_add_ip_asks_with_a_numbered_menu() {
    // `script` (util-linux) gives the command a pseudo-terminal; stdin feeds the answers.
    let script = common::tool_path("script");
    let cfg = TempConfig::new();
    let cmd = format!("{} --no-restart", common::bin("add-ip").display());
    let c = cfg.command(None, &script, ["-qec", cmd.as_str(), "/dev/null"]);
    let answers = b"joe\n192.0.2.7\n1,3\nJoe's desk\n";
    let out =
        common::run_with_timeout(c, Some(answers), std::time::Duration::from_secs(20)).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let s = stdout(&out);
    assert!(
        s.contains("Account name:") && s.contains("IP address or CIDR (several"),
        "{s}"
    );
    assert!(s.contains("Comment (optional, Enter for none):"), "{s}");
    assert!(s.contains("   3  iax "), "numbered menu: {s}");
    let text = cfg.read("accounts/joe.toml").unwrap();
    assert!(text.contains("addresses = [\"192.0.2.7\"]"), "{text}");
    assert!(text.contains("services = [\"sip-udp\", \"iax\"]"), "{text}");
    assert!(text.contains("comment = \"Joe's desk\""), "{text}");
}

common::test_main! {
    Needs::NOTHING => [
        an_address_in_two_accounts_is_warned,
        audit_log_records_who_what_and_addresses,
        bad_input_is_refused_with_one_line_and_changes_nothing,
        corrupt_account_file_is_skipped_the_rest_applies_exit_3,
        corrupt_local_profile_is_an_error,
        corrupt_settings_stop_restart_with_file_and_line,
        dry_run_prints_the_table_and_codes_work_as_names,
        json_results_have_the_documented_shape,
        lists_merge_and_split_on_spaces,
        no_restart_says_what_was_saved_or_removed_and_that_nothing_was_applied,
        replace_overwrites_and_fqdn_names_are_normalised,
    ],
    // `script` (util-linux) gives the command a pseudo-terminal.
    Needs::tools(&["script"]) => [on_a_terminal_add_ip_asks_with_a_numbered_menu],
}
