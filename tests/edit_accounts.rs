//! Accounts edited in place, from the command line: `add-ip`/`add-fqdn --append`,
//! `del-acct NAME --address` and `pbxwall list [--json]`. No root needed: every change uses
//! `--no-restart` (tests/revocation.rs proves with packets that an appended address is
//! admitted and a removed one is dropped and its flow ended).

mod common;

use common::{Needs, TempConfig, show, stderr, stdout};

#[track_caller]
fn run_ok(cfg: &TempConfig, bin: &str, args: &[&str]) -> String {
    let out = cfg.run(None, bin, args);
    assert_eq!(out.status.code(), Some(0), "{bin} {args:?}\n{}", show(&out));
    stdout(&out)
}

/// Runs a command that must fail with `code`, one error line containing `error`, and no
/// change to the config folder.
#[track_caller]
fn refused(cfg: &TempConfig, bin: &str, args: &[&str], code: i32, error: &str) {
    let before = common::snapshot(cfg.config_dir());
    let out = cfg.run(None, bin, args);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{bin} {args:?}\n{}",
        show(&out)
    );
    let clap = err.starts_with("error: ");
    assert!(
        err.contains(error) && (clap || err.trim_end().lines().count() == 1),
        "{bin} {args:?}: want one line with {error:?}\n{}",
        show(&out)
    );
    assert_eq!(
        common::snapshot(cfg.config_dir()),
        before,
        "{bin} {args:?} changed the config folder"
    );
}

fn joe() -> TempConfig {
    let cfg = TempConfig::new();
    run_ok(
        &cfg,
        "add-ip",
        &[
            "joe",
            "203.0.113.7",
            "--allow",
            "sip-udp",
            "--comment",
            "Joe's office",
            "--no-restart",
        ],
    );
    cfg
}

fn created(text: &str) -> String {
    text.lines()
        .find(|l| l.starts_with("created = "))
        .unwrap_or_else(|| panic!("no created line in {text}"))
        .to_owned()
}

fn append_keeps_services_comment_and_created_time() {
    let cfg = joe();
    let before = cfg.read("accounts/joe.toml").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = run_ok(
        &cfg,
        "add-ip",
        &[
            "joe",
            "198.51.100.7,2001:db8::7",
            "--append",
            "--no-restart",
        ],
    );
    assert_eq!(
        out,
        "account joe: appended 198.51.100.7, 2001:db8::7\n\
         account joe saved: addresses 203.0.113.7, 198.51.100.7, 2001:db8::7; services \
         sip-udp; run restart to apply\n"
    );
    let out = run_ok(
        &cfg,
        "add-fqdn",
        &["joe", "joe.dyndns.example", "--append", "--no-restart"],
    );
    assert!(
        out.starts_with("account joe: appended joe.dyndns.example\n"),
        "{out}"
    );
    let text = cfg.read("accounts/joe.toml").unwrap();
    assert!(
        text.contains("addresses = [\"203.0.113.7\", \"198.51.100.7\", \"2001:db8::7\"]"),
        "{text}"
    );
    assert!(text.contains("fqdns = [\"joe.dyndns.example\"]"), "{text}");
    assert!(text.contains("services = [\"sip-udp\"]"), "{text}");
    assert!(text.contains("comment = \"Joe's office\""), "{text}");
    assert_eq!(created(&text), created(&before), "created time kept");
    let log = std::fs::read_to_string(cfg.state_dir().join("audit.log")).unwrap_or_default();
    assert!(
        log.contains("account joe appended 198.51.100.7, 2001:db8::7: now addresses"),
        "{log}"
    );
}

fn append_with_allow_adds_services_for_the_whole_account() {
    let cfg = joe();
    let out = run_ok(
        &cfg,
        "add-ip",
        &[
            "joe",
            "198.51.100.7",
            "--append",
            "--allow",
            "iax,1",
            "--comment",
            "Joe, two sites",
            "--no-restart",
        ],
    );
    assert!(
        out.starts_with(
            "account joe: appended 198.51.100.7; added services iax (for all its addresses \
             and names); replaced the comment\n"
        ),
        "{out}"
    );
    let text = cfg.read("accounts/joe.toml").unwrap();
    assert!(text.contains("services = [\"sip-udp\", \"iax\"]"), "{text}");
    assert!(text.contains("comment = \"Joe, two sites\""), "{text}");
    // Only services: the address is there already.
    let out = run_ok(
        &cfg,
        "add-ip",
        &[
            "joe",
            "203.0.113.7",
            "--append",
            "--allow",
            "web",
            "--no-restart",
        ],
    );
    assert!(
        out.starts_with(
            "account joe has 203.0.113.7 already\naccount joe: added services web (for all"
        ),
        "{out}"
    );
}

fn append_of_what_the_account_has_changes_nothing() {
    let cfg = joe();
    let before = common::snapshot(cfg.config_dir());
    let out = run_ok(&cfg, "add-ip", &["joe", "203.0.113.7", "--append"]);
    assert_eq!(
        out,
        "account joe has 203.0.113.7 already; nothing to change\n"
    );
    assert_eq!(common::snapshot(cfg.config_dir()), before);
    // An address a network of the account holds is covered already.
    run_ok(
        &cfg,
        "add-ip",
        &["net", "198.51.100.0/24", "--allow", "1", "--no-restart"],
    );
    let out = run_ok(&cfg, "add-ip", &["net", "198.51.100.9", "--append"]);
    assert_eq!(
        out,
        "account net has 198.51.100.9 (in 198.51.100.0/24) already; nothing to change\n"
    );
}

fn append_refusals() {
    let cfg = joe();
    refused(
        &cfg,
        "add-ip",
        &["jo", "198.51.100.7", "--append"],
        1,
        "add-ip: error: no account named jo to append to (did you mean joe?); to create it, \
         run the command without --append (and with --allow SERVICES)",
    );
    refused(
        &cfg,
        "add-fqdn",
        &["nobody", "a.example", "--append", "--no-restart"],
        1,
        "no account named nobody to append to;",
    );
    refused(
        &cfg,
        "add-ip",
        &["joe", "198.51.100.300", "--append"],
        2,
        "invalid address \"198.51.100.300\"",
    );
    refused(
        &cfg,
        "add-ip",
        &["joe", "198.51.100.7", "--append", "--allow", "sipudp"],
        2,
        "did you mean sip-udp?",
    );
    refused(
        &cfg,
        "add-ip",
        &["joe", "198.51.100.7", "--append", "--replace"],
        2,
        "cannot be used with",
    );
    refused(
        &cfg,
        "add-ip",
        &["joe", "--append"],
        2,
        "missing arguments: give NAME, at least one IP address or CIDR (see --help)",
    );
}

fn del_address_keeps_the_rest() {
    let cfg = joe();
    run_ok(
        &cfg,
        "add-fqdn",
        &["joe", "joe.dyndns.example", "--append", "--no-restart"],
    );
    run_ok(
        &cfg,
        "add-ip",
        &["joe", "198.51.100.0/28", "--append", "--no-restart"],
    );
    let before = cfg.read("accounts/joe.toml").unwrap();
    let out = run_ok(
        &cfg,
        "del-acct",
        &[
            "joe",
            "--address",
            "203.0.113.7,JOE.dyndns.example.",
            "--no-restart",
        ],
    );
    assert_eq!(
        out,
        "account joe: removed 203.0.113.7, joe.dyndns.example\n\
         account joe saved: addresses 198.51.100.0/28; services sip-udp; run restart to apply\n"
    );
    let text = cfg.read("accounts/joe.toml").unwrap();
    assert!(text.contains("addresses = [\"198.51.100.0/28\"]"), "{text}");
    assert!(!text.contains("fqdns = [\""), "{text}");
    assert!(text.contains("comment = \"Joe's office\""), "{text}");
    assert_eq!(created(&text), created(&before));
    let log = std::fs::read_to_string(cfg.state_dir().join("audit.log")).unwrap_or_default();
    assert!(
        log.contains("account joe: removed 203.0.113.7, joe.dyndns.example; now addresses"),
        "{log}"
    );
}

fn del_address_refusals() {
    let cfg = joe();
    run_ok(
        &cfg,
        "add-ip",
        &["ann", "192.0.2.7", "--allow", "1", "--no-restart"],
    );
    refused(
        &cfg,
        "del-acct",
        &["joe", "--address", "198.51.100.7"],
        1,
        "del-acct: error: account joe has no 198.51.100.7 (it has 203.0.113.7); nothing changed",
    );
    refused(
        &cfg,
        "del-acct",
        &["joe", "--address", "203.0.113.7"],
        1,
        "refusing to remove every address and name of account joe: delete the account \
         instead (del-acct joe)",
    );
    refused(
        &cfg,
        "del-acct",
        &["joe", "ann", "--address", "203.0.113.7"],
        2,
        "--address removes addresses of one account, and 2 were named: name one account",
    );
    refused(
        &cfg,
        "del-acct",
        &["joe", "--address", "203.0.113.7:5060"],
        2,
        "write it without :5060",
    );
    refused(
        &cfg,
        "del-acct",
        &["joe", "--address", "not_a_name"],
        2,
        "invalid address or host name \"not_a_name\": expected an IPv4 or IPv6 address, a \
         CIDR or a host name of the account",
    );
    refused(
        &cfg,
        "del-acct",
        &["jo", "--address", "203.0.113.7"],
        1,
        "no account named jo; did you mean joe?",
    );
}

fn list_shows_one_account_a_line() {
    let cfg = joe();
    run_ok(
        &cfg,
        "add-fqdn",
        &["ann", "ann.example", "--allow", "1,3", "--no-restart"],
    );
    let out = run_ok(&cfg, "pbxwall", &["list"]);
    assert_eq!(
        out,
        "NAME  SERVICES     ADDRESSES    NAMES        EXPIRES  ORIGIN  COMMENT\n\
         ann   sip-udp,iax  -            ann.example  -        -       -\n\
         joe   sip-udp      203.0.113.7  -            -        -       Joe's office\n"
    );
    let out = run_ok(&cfg, "pbxwall", &["list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let joe = &v["accounts"][1];
    assert_eq!(joe["name"], "joe");
    assert_eq!(joe["services"], serde_json::json!(["sip-udp"]));
    assert_eq!(joe["addresses"], serde_json::json!(["203.0.113.7"]));
    assert_eq!(joe["fqdns"], serde_json::json!([]));
    assert_eq!(joe["comment"], "Joe's office");
    assert!(joe["created"].as_str().is_some_and(|c| c.ends_with('Z')));
    assert!(joe["expires"].is_null() && joe["origin"].is_null());
    assert_eq!(v["skipped"], serde_json::json!([]));

    // A broken file is skipped with file and line; the rest is listed (exit 3).
    cfg.write(
        "accounts/bad.toml",
        "addresses = [\"300.1.1.1\"]\nservices = [1]\n",
    );
    let out = cfg.run(None, "pbxwall", ["list"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(stdout(&out).contains("\njoe "), "{}", show(&out));
    assert!(
        stderr(&out).contains("warning: skipped account file ")
            && stderr(&out).contains("bad.toml:1:"),
        "{}",
        show(&out)
    );
    // No accounts: nothing on stdout.
    let empty = TempConfig::new();
    let out = empty.run(None, "pbxwall", ["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(stdout(&out), "");
}

/// Runs `bin ARGS` on a pseudo-terminal (`script`, util-linux) with `answers` typed in; the
/// output holds the questions, the echoed answers and the command's own lines.
fn on_a_terminal(cfg: &TempConfig, bin: &str, args: &str, answers: &[u8]) -> std::process::Output {
    let script = common::tool_path("script");
    let cmd = format!("{} {args}", common::bin(bin).display());
    let c = cfg.command(None, &script, ["-qec", cmd.as_str(), "/dev/null"]);
    common::run_with_timeout(c, Some(answers), std::time::Duration::from_secs(20)).unwrap()
}

fn the_menu_checks_each_answer_and_asks_for_a_comment() {
    let cfg = joe();
    let out = on_a_terminal(
        &cfg,
        "add-ip",
        "--no-restart",
        b"joe\nann\n203.0.113.7:5060\n203.0.113.8\nsipudp\n1,3\nAnn's phone\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let s = stdout(&out);
    for line in [
        "account joe exists already: choose another name (or run the command with --append \
         to add to it, or --replace); try again (2 tries left)",
        "invalid address \"203.0.113.7:5060\": write it without :5060, as 203.0.113.7; ports \
         come from the services (--allow); try again (2 tries left)",
        "did you mean sip-udp?; try again (2 tries left)",
        "Comment (optional, Enter for none): ",
        "account ann saved; run restart to apply",
    ] {
        assert!(s.contains(line), "want {line:?} in:\n{s}");
    }
    let text = cfg.read("accounts/ann.toml").unwrap();
    assert!(text.contains("addresses = [\"203.0.113.8\"]"), "{text}");
    assert!(text.contains("services = [\"sip-udp\", \"iax\"]"), "{text}");
    assert!(text.contains("comment = \"Ann's phone\""), "{text}");

    // --append asks only for what to append: the account keeps services and comment.
    let out = on_a_terminal(
        &cfg,
        "add-ip",
        "--append --no-restart",
        b"nobody\njoe\n198.51.100.7\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let s = stdout(&out);
    assert!(
        s.contains("no account named nobody to append to; try again"),
        "{s}"
    );
    assert!(!s.contains("Services") && !s.contains("Comment"), "{s}");
    let text = cfg.read("accounts/joe.toml").unwrap();
    assert!(
        text.contains("addresses = [\"203.0.113.7\", \"198.51.100.7\"]")
            && text.contains("comment = \"Joe's office\""),
        "{text}"
    );
}

fn the_menu_ends_cleanly_at_end_of_input_or_after_three_wrong_answers() {
    let cfg = joe();
    let before = common::snapshot(cfg.config_dir());
    // Ctrl-D (end of input) at the services question.
    let out = on_a_terminal(&cfg, "add-fqdn", "--no-restart", b"ann\nann.example\n");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stdout(&out).contains(
            "add-fqdn: error: no answer to \"Services (numbers or names, comma-separated)\" \
             (end of input); nothing changed"
        ),
        "{}",
        show(&out)
    );
    // Three wrong names: the command gives up.
    let out = on_a_terminal(&cfg, "add-ip", "--no-restart", b"a/b\n\n../x\nann\n");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stdout(&out).contains(
            "add-ip: error: invalid account name \"../x\": use 1-64 characters of A-Z a-z 0-9 \
             . _ -, not starting with . or -; gave up after 3 answers to \"Account name\", \
             nothing changed"
        ),
        "{}",
        show(&out)
    );
    assert_eq!(common::snapshot(cfg.config_dir()), before);
}

common::test_main! {
    Needs::NOTHING => [
        append_keeps_services_comment_and_created_time,
        append_with_allow_adds_services_for_the_whole_account,
        append_of_what_the_account_has_changes_nothing,
        append_refusals,
        del_address_keeps_the_rest,
        del_address_refusals,
        list_shows_one_account_a_line,
    ],
    // `script` (util-linux) gives the command a pseudo-terminal.
    Needs::tools(&["script"]) => [
        the_menu_checks_each_answer_and_asks_for_a_comment,
        the_menu_ends_cleanly_at_end_of_input_or_after_three_wrong_answers,
    ],
}
