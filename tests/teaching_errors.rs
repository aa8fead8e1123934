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

/// Run by another user than root (nobody, through setpriv), each command that touches the
/// firewall says in one line that it needs root and what works without, instead of
/// "Permission denied" or "cannot list the nf_tables generation"; a bad value is still the
/// usage error it is, and nothing changes.
fn without_root_one_line_says_so() {
    use std::os::unix::fs::PermissionsExt;
    let cfg = TempConfig::new();
    let out = cfg.run(
        None,
        "add-ip",
        ["joe", "192.0.2.7", "--allow", "sip-udp", "--no-restart"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    for dir in [
        cfg.root().to_owned(),
        cfg.config_dir().to_owned(),
        cfg.config_dir().join("accounts"),
        cfg.state_dir().to_owned(),
    ] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let before = common::snapshot(cfg.config_dir());
    let change = "needs root (CAP_NET_ADMIN) to change the firewall; run it with sudo";
    let cases: &[(&[&str], i32, String)] = &[
        (
            &["add-ip", "ann", "192.0.2.8", "--allow", "1"],
            1,
            format!("add-ip: error: {change}, or use --no-restart to only save the account"),
        ),
        (
            &["add-fqdn", "m", "m.example", "--allow", "1"],
            1,
            format!("add-fqdn: error: {change}, or use --no-restart to only save the account"),
        ),
        (
            &["del-acct", "joe"],
            1,
            format!("del-acct: error: {change}, or use --no-restart to only remove the files"),
        ),
        (
            &["restart"],
            1,
            format!("restart: error: {change}, or use --dry-run to print the ruleset"),
        ),
        (&["ipchecker"], 1, format!("ipchecker: error: {change}")),
        (
            &["status"],
            1,
            "status: error: needs root (CAP_NET_ADMIN) to read the firewall; run it with sudo"
                .into(),
        ),
        (
            &["enable-trusted-providers", "--all"],
            1,
            format!("enable-trusted-providers: error: {change}, or use --list or --no-restart"),
        ),
        (
            &["pbxwall", "restart"],
            1,
            format!("pbxwall: error: {change}, or use --dry-run to print the ruleset"),
        ),
        (
            &["add-ip", "joe", "192.0.2.8", "--append"],
            1,
            format!("add-ip: error: {change}, or use --no-restart to only save the account"),
        ),
        (
            &["del-acct", "joe", "--address", "192.0.2.7"],
            1,
            format!("del-acct: error: {change}, or use --no-restart to only remove the files"),
        ),
        // Reading the account files (0640, root's) needs root too.
        (
            &["pbxwall", "list"],
            1,
            "pbxwall: error: needs root to read pbxwall's files (".into(),
        ),
        // A bad value is said first: it is wrong whoever runs the command.
        (
            &["add-ip", "ann", "192.0.2.300", "--allow", "1"],
            2,
            "add-ip: error: invalid address \"192.0.2.300\"".into(),
        ),
        // Files only, in a folder of root's: the file it could not write, and sudo.
        (
            &["add-ip", "ann", "192.0.2.8", "--allow", "1", "--no-restart"],
            1,
            "add-ip: error: needs root to change pbxwall's files (account ann: ".into(),
        ),
    ];
    let setpriv = common::tool_path("setpriv");
    let mut failures = Vec::new();
    for (args, code, line) in cases {
        let (bin, rest) = args.split_first().unwrap();
        let mut full: Vec<std::ffi::OsString> = vec![
            "--reuid=65534".into(),
            "--regid=65534".into(),
            "--clear-groups".into(),
            "--".into(),
            common::bin(bin).into(),
        ];
        full.extend(rest.iter().map(Into::into));
        let out = cfg.run_program(None, &setpriv, &full, &[]);
        let err = stderr(&out);
        if out.status.code() != Some(*code)
            || err.lines().count() != 1
            || !err.starts_with(line.as_str())
        {
            failures.push(format!(
                "{args:?}: want exit {code} and {line:?}\n{}",
                show(&out)
            ));
        }
    }
    assert_eq!(common::snapshot(cfg.config_dir()), before);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `add-fqdn` of a name that does not exist (NXDOMAIN) is refused, naming it and --force,
/// and nothing is saved; a name whose DNS fails only for a while (SERVFAIL) is saved with a
/// warning, as before.
fn add_fqdn_refuses_a_name_that_does_not_exist() {
    use std::net::SocketAddr;
    let topo = Topology::new();
    let _dns = topo.start_dnsmasq();
    topo.add_client_addr("192.0.2.54");
    let _servfail =
        common::dns::ServfailDns::start(topo.client_ns(), SocketAddr::from(([192, 0, 2, 54], 53)));
    let cfg = TempConfig::new();
    let settings = |ns: &str| {
        format!(
            "trusted = []\n[resolver]\nnameservers = [\"{ns}\"]\ntimeout_ms = 500\nattempts = 1\n"
        )
    };
    cfg.write("pbxwall.toml", &settings("192.0.2.53"));
    let ns = Some(topo.pbx_ns());
    let out = cfg.run(
        ns,
        "add-fqdn",
        [
            "joe-mobile",
            "joe.dyndsn.example.test",
            "--allow",
            "sip-udp",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        stderr(&out),
        "add-fqdn: error: account joe-mobile: the change was not saved: refusing to add \
         joe.dyndsn.example.test: it does not exist (NXDOMAIN); check the spelling, or pass \
         --force to save it anyway (it is resolved again at every restart and by ipchecker)\n"
    );
    assert!(cfg.read("accounts/joe-mobile.toml").is_none(), "not saved");

    cfg.write("pbxwall.toml", &settings("192.0.2.54"));
    let out = cfg.run(
        ns,
        "add-fqdn",
        ["joe-mobile", "joe.dyn.example.test", "--allow", "sip-udp"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(stderr(&out).contains("SERVFAIL"), "{}", show(&out));
    assert!(cfg.read("accounts/joe-mobile.toml").is_some(), "saved");
}

common::test_main! {
    Needs::ROOT => [lockout_advice_is_a_command_that_works],
    Needs::root_and(&["setpriv"]) => [without_root_one_line_says_so],
    Needs::root_and(&["dnsmasq"]) => [add_fqdn_refuses_a_name_that_does_not_exist],
}
