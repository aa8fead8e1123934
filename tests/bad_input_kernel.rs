//! Bad input across every command, with a ruleset loaded in a namespace: each case gets its
//! one-line error and documented exit code, and changes neither the configuration folder nor
//! the kernel's table. The table is compared as `nft -a -s list table inet pbxwall`, with
//! handles, so even a re-apply of the same ruleset would show; `last-applied.nft` must not
//! change either.
//!
//! Besides values the parsers refuse, the table has cases that fail later, after a file was
//! already written: the SSH lock-out guard refusing the new ruleset, and the kernel refusing
//! every write (the command run without CAP_NET_ADMIN). Those must put every file back as it
//! was (`change_then_apply`). tests/cli_errors.rs covers more values without root; this
//! file is about "nothing changed", kernel included. Needs root.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::Output;

use common::{Needs, TempConfig, Topology, ns_cmd, show, stderr, stdout};

/// How a case is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    /// As is.
    Plain,
    /// From an SSH session whose client is `SSH_CLIENT_ADDR` (not whitelisted for ssh).
    SshStranger,
    /// From an SSH session of the `admin` account's address (whitelisted for ssh).
    SshAdmin,
    /// Without CAP_NET_ADMIN: the kernel refuses every nftables message.
    NoNetAdmin,
}

struct Case {
    args: &'static [&'static str],
    code: i32,
    /// What the one error line must contain.
    error: &'static str,
    how: How,
    /// A file written under the config dir before the case (and removed after it).
    file: Option<(&'static str, &'static str)>,
}

const fn case(args: &'static [&'static str], code: i32, error: &'static str) -> Case {
    Case {
        args,
        code,
        error,
        how: How::Plain,
        file: None,
    }
}

impl Case {
    const fn how(self, how: How) -> Case {
        Case { how, ..self }
    }

    const fn with_file(self, rel: &'static str, text: &'static str) -> Case {
        Case {
            file: Some((rel, text)),
            ..self
        }
    }
}

/// A client address of no account.
const SSH_STRANGER: &str = "198.51.100.77 52314 192.0.2.1 22";
/// The `admin` account's address.
const SSH_ADMIN: &str = "192.0.2.10 52314 192.0.2.1 22";

const BAD_RTP: &str = "trusted = []\n[rtp]\nports = \"20000-10000\"\n";
const BAD_PROFILE: &str = "code = 1\nname = \"sip-udp\"\nports = [\"udp/99999\"]\n";

#[rustfmt::skip]
const CASES: &[Case] = &[
    // add-ip: values
    case(&["add-ip", "eve", "0.0.0.0", "--allow", "1"], 2, "invalid address \"0.0.0.0\": not a unicast source address"),
    case(&["add-ip", "eve", "255.255.255.255", "--allow", "1"], 2, "invalid address \"255.255.255.255\": not a unicast source address"),
    case(&["add-ip", "eve", "ff02::1", "--allow", "1"], 2, "invalid address \"ff02::1\": not a unicast source address"),
    case(&["add-ip", "eve", "::/0", "--allow", "1"], 2, "refusing to whitelist ::/0: it is larger than /8 (IPv4) or /32 (IPv6); pass --force"),
    case(&["add-ip", "eve", "192.0.2.1/-1", "--allow", "1"], 2, "invalid address \"192.0.2.1/-1\": expected an IPv4 or IPv6 address or CIDR"),
    case(&["add-ip", "eve", "fe80::1%eth0", "--allow", "1"], 2, "invalid address \"fe80::1%eth0\""),
    case(&["add-ip", "eve", "192.0.2.1", "2001:db8::1/129", "--allow", "1"], 2, "invalid address \"2001:db8::1/129\""),
    case(&["add-ip", "eve", "2001:db8::1/64", "--allow", "1"], 2, "invalid network \"2001:db8::1/64\": host bits are set after /64; the network is 2001:db8::/64"),
    case(&["add-ip", "eve smith", "192.0.2.1", "--allow", "1"], 2, "invalid account name \"eve smith\": use 1-64 characters of A-Z a-z 0-9 . _ -"),
    case(&["add-ip", "jöe", "192.0.2.1", "--allow", "1"], 2, "invalid account name \"jöe\""),
    case(&["add-ip", "..", "192.0.2.1", "--allow", "1"], 2, "invalid account name \"..\""),
    case(&["add-ip", "eve", "192.0.2.1", "--allow", ""], 2, "no services given: name at least one"),
    case(&["add-ip", "eve", "192.0.2.1", "--allow", "sip"], 2, "unknown service \"sip\": valid services are 0=all, 1=sip-udp"),
    case(&["add-ip", "eve", "192.0.2.1", "--allow", "256"], 2, "unknown service \"256\""),
    case(&["add-ip", "joe-office", "192.0.2.1", "--allow", "1"], 1, "account joe-office exists already: pass --replace to overwrite it"),
    // add-ip: usage
    case(&["add-ip", "eve", "192.0.2.1", "--allow", "-1"], 2, "unexpected argument '-1'"),
    case(&["add-ip", "eve", "192.0.2.1", "--allow", "1", "--comment"], 2, "a value is required for '--comment <TEXT>'"),
    case(&["add-ip", "eve", "192.0.2.1", "--allow", "1", "--replace", "--replace"], 2, "the argument '--replace' cannot be used multiple times"),
    case(&["add-ip", "eve", "--allow", "1"], 2, "missing arguments: give NAME, at least one IP address or CIDR and --allow SERVICES"),
    // add-ip: refused later; the file written is taken back
    case(&["add-ip", "eve", "192.0.2.11", "--allow", "sip-udp"], 1, "account eve: the change was not saved: refusing to apply: your SSH client 198.51.100.77 could no longer reach tcp port 22").how(How::SshStranger),
    case(&["add-ip", "admin", "192.0.2.99", "--allow", "ssh", "--replace"], 1, "account admin: the change was not saved: refusing to apply: your SSH client 192.0.2.10 could no longer reach tcp port 22").how(How::SshAdmin),
    case(&["add-ip", "eve", "192.0.2.11", "--allow", "sip-udp"], 1, "account eve: the change was not saved: applying table inet pbxwall failed; the previous ruleset is still in place").how(How::NoNetAdmin),
    case(&["add-ip", "joe-office", "192.0.2.12", "--allow", "iax", "--replace"], 1, "account joe-office: the change was not saved: applying table inet pbxwall failed").how(How::NoNetAdmin),
    case(&["add-ip", "eve", "192.0.2.11", "--allow", "sip-udp"], 1, "account eve: the change was not saved: ").with_file("pbxwall.toml", BAD_RTP),
    case(&["add-ip", "eve", "192.0.2.11", "--allow", "sip-udp"], 1, "profiles/sip-udp.toml:3: invalid port \"udp/99999\"").with_file("profiles/sip-udp.toml", BAD_PROFILE),
    // add-fqdn
    case(&["add-fqdn", "m", "a-.example", "--allow", "1"], 2, "invalid host name \"a-.example\": a label may not start or end with -"),
    case(&["add-fqdn", "m", "host.123", "--allow", "1"], 2, "invalid host name \"host.123\": the last label is all digits; use add-ip for addresses"),
    case(&["add-fqdn", "m", "xn--a.example", "--allow", "1"], 2, "invalid host name \"xn--a.example\": not a valid internationalised domain name"),
    case(&["add-fqdn", "m", "a b.example", "--allow", "1"], 2, "invalid host name \"a b.example\": use letters, digits and - between the dots"),
    case(&["add-fqdn", "m", "2001:db8::1", "--allow", "1"], 2, "invalid host name \"2001:db8::1\": it is an IP address; use add-ip for addresses"),
    case(&["add-fqdn", "m", "192.0.2.0/24", "--allow", "1"], 2, "invalid host name \"192.0.2.0/24\": it is an IP address"),
    case(&["add-fqdn", "m", "ok.example", "--allow", "sip,iax"], 2, "unknown service \"sip\""),
    case(&["add-fqdn", "m/x", "ok.example", "--allow", "1"], 2, "invalid account name \"m/x\""),
    case(&["add-fqdn", "admin", "ok.example", "--allow", "1"], 1, "account admin exists already"),
    case(&["add-fqdn", "m", "", "--allow", "1"], 2, "no host name given: name at least one"),
    case(&["add-ip", "joe", ",", "--allow", "1"], 2, "no address given: name at least one IPv4 or IPv6 address or CIDR"),
    case(&["add-fqdn", "m", "ok.example"], 2, "missing arguments: give NAME, at least one host name and --allow SERVICES"),
    case(&["add-fqdn", "m", "ok.example", "--allow", "1"], 1, "account m: the change was not saved: applying table inet pbxwall failed").how(How::NoNetAdmin),
    // del-acct
    case(&["del-acct", "."], 2, "invalid account name \".\""),
    case(&["del-acct", "admin", "joe-office", "nobody"], 1, "no account named nobody"),
    case(&["del-acct", "joe-offic"], 1, "no account named joe-offic; did you mean joe-office?"),
    case(&["del-acct", "joe office"], 2, "invalid account name \"joe office\""),
    case(&["del-acct", "--bogus", "admin"], 2, "unexpected argument '--bogus'"),
    case(&["del-acct", "admin"], 1, "the change was not saved: refusing to apply: your SSH client 192.0.2.10 could no longer reach tcp port 22").how(How::SshAdmin),
    case(&["del-acct", "joe-office"], 1, "the change was not saved: applying table inet pbxwall failed; the previous ruleset is still in place").how(How::NoNetAdmin),
    case(&["del-acct", "joe-office"], 1, "the change was not saved: ").with_file("pbxwall.toml", BAD_RTP),
    // restart
    case(&["restart", "now"], 2, "unexpected argument 'now'"),
    case(&["restart", "--dry-run", "--dry-run"], 2, "the argument '--dry-run' cannot be used multiple times"),
    case(&["restart"], 1, "refusing to apply: your SSH client 198.51.100.77 could no longer reach tcp port 22; whitelist it first (add-ip admin-2 198.51.100.77 --allow ssh) or pass --force").how(How::SshStranger),
    case(&["restart"], 1, "applying table inet pbxwall failed; the previous ruleset is still in place").how(How::NoNetAdmin),
    case(&["restart"], 1, "pbxwall.toml:3: invalid rtp ports \"20000-10000\": expected FIRST-LAST within 1-65535").with_file("pbxwall.toml", BAD_RTP),
    case(&["restart"], 1, "pbxwall.toml:1: invalid network \"10.0.0.1/8\": host bits are set after /8").with_file("pbxwall.toml", "trusted = [\"10.0.0.1/8\"]\n"),
    case(&["restart"], 1, "pbxwall.toml:2: invalid type: string \"yes\", expected a boolean").with_file("pbxwall.toml", "trusted = []\nlog_drops = \"yes\"\n"),
    case(&["restart"], 1, "pbxwall.toml:2: invalid attempts 0: use 1 to 10").with_file("pbxwall.toml", "[resolver]\nattempts = 0\n"),
    case(&["restart"], 1, "pbxwall.toml:2: key with no value").with_file("pbxwall.toml", "trusted = []\n\0\n"),
    case(&["restart"], 1, "profiles/sip-udp.toml:3: invalid port \"udp/99999\"").with_file("profiles/sip-udp.toml", BAD_PROFILE),
    case(&["restart"], 1, "profiles/x.toml:1: invalid code 12: codes are 0-9").with_file("profiles/x.toml", "code = 12\nname = \"x\"\nports = [\"udp/1\"]\n"),
    case(&["restart", "--dry-run"], 1, "pbxwall.toml:3: invalid rtp ports").with_file("pbxwall.toml", BAD_RTP),
    // ipchecker
    case(&["ipchecker", "--install-cron", "61 * * * *", "--cron-file", "@CRON"], 2, "invalid cron schedule \"61 * * * *\": invalid minute field"),
    case(&["ipchecker", "--install-cron", "* * * *", "--cron-file", "@CRON"], 2, "invalid cron schedule \"* * * *\": it has 4 fields"),
    case(&["ipchecker", "--install-cron", "* * * * *\nroot x", "--cron-file", "@CRON"], 2, "newlines and % are not allowed"),
    case(&["ipchecker", "--install-cron", "*/5 * * * * %", "--cron-file", "@CRON"], 2, "newlines and % are not allowed"),
    case(&["ipchecker", "--install-cron", "0 0 30 2 *", "--cron-file", "@CRON"], 2, "schedule can never occur"),
    case(&["ipchecker", "--install-cron", "", "--cron-file", "@CRON"], 2, "invalid cron schedule \"\": it has 0 fields"),
    case(&["ipchecker", "--install-cron"], 2, "a value is required for '--install-cron <SCHEDULE>'"),
    case(&["ipchecker", "--install-cron", "* * * * *", "--remove-cron"], 2, "cannot be used with"),
    case(&["ipchecker", "extra"], 2, "unexpected argument 'extra'"),
    case(&["ipchecker"], 1, "pbxwall.toml:3: invalid rtp ports").with_file("pbxwall.toml", BAD_RTP),
    case(&["ipchecker"], 1, "reading table inet pbxwall: cannot list the nf_tables generation").how(How::NoNetAdmin),
    // status
    case(&["status", "--bogus"], 2, "unexpected argument '--bogus'"),
    case(&["status", "extra"], 2, "unexpected argument 'extra'"),
    case(&["status", "--cron-file"], 2, "a value is required for '--cron-file <PATH>'"),
    case(&["status"], 1, "pbxwall.toml:3: invalid rtp ports").with_file("pbxwall.toml", BAD_RTP),
    case(&["status"], 1, "cannot read table inet pbxwall from the kernel (status needs root)").how(How::NoNetAdmin),
    // enable-trusted-providers
    case(&["enable-trusted-providers"], 2, "nothing to do: give provider ids, --all, --disable ID... or --list"),
    case(&["enable-trusted-providers", "nosuch"], 2, "unknown provider \"nosuch\""),
    case(&["enable-trusted-providers", "--disable", "nosuch"], 2, "unknown provider \"nosuch\""),
    case(&["enable-trusted-providers", "--list", "--all"], 2, "the argument '--list' cannot be used with '--all'"),
    case(&["enable-trusted-providers", "--all", "--disable", "x"], 2, "cannot be used with"),
    case(&["enable-trusted-providers", "--all", "--providers-file", "/nonexistent/pbxwall/providers.toml"], 1, "/nonexistent/pbxwall/providers.toml: No such file or directory"),
    case(&["enable-trusted-providers", "--all"], 1, "the change was not saved: applying table inet pbxwall failed").how(How::NoNetAdmin),
    case(&["enable-trusted-providers", "--all"], 1, "the change was not saved: ").with_file("pbxwall.toml", BAD_RTP),
    // the dispatcher
    case(&["pbxwall", "frobnicate"], 2, "unrecognized subcommand 'frobnicate'"),
    case(&["pbxwall"], 2, "requires a subcommand"),
    case(&["pbxwall", "add-ip", "eve", "300.1.2.3", "--allow", "1"], 2, "invalid address \"300.1.2.3\""),
    case(&["pbxwall", "--config-dir"], 2, "a value is required for '--config-dir <DIR>'"),
    case(&["pbxwall", "del-acct", "admin"], 1, "refusing to apply").how(How::SshAdmin),
];

/// The live table with handles, without counter values.
fn kernel_table(topo: &Topology) -> String {
    let out = ns_cmd(
        topo.pbx_ns(),
        "nft",
        &["-a", "-s", "list", "table", "inet", "pbxwall"],
    );
    assert!(out.status.success(), "nft list: {}", show(&out));
    stdout(&out)
}

fn run_case(cfg: &TempConfig, topo: &Topology, c: &Case, cron: &Path) -> Output {
    let (bin, args) = c.args.split_first().unwrap();
    let args: Vec<OsString> = args
        .iter()
        .map(|a| match *a {
            "@CRON" => cron.as_os_str().to_owned(),
            a => a.into(),
        })
        .collect();
    let ns = Some(topo.pbx_ns());
    match c.how {
        How::Plain => cfg.run(ns, bin, &args),
        How::SshStranger => cfg.run_env(ns, bin, &args, &[("SSH_CONNECTION", SSH_STRANGER)]),
        How::SshAdmin => cfg.run_env(ns, bin, &args, &[("SSH_CONNECTION", SSH_ADMIN)]),
        How::NoNetAdmin => {
            let mut full: Vec<OsString> = vec![
                "--bounding-set=-net_admin".into(),
                "--inh-caps=-net_admin".into(),
                "--".into(),
                common::bin(bin).into(),
            ];
            full.extend(args);
            cfg.run_program(ns, &common::tool_path("setpriv"), &full, &[])
        }
    }
}

/// Problems with one case's output: exit code, and exactly one error line (our own errors:
/// `PROG: error: ...`, nothing else but `warning:` lines; clap's usage errors: `error: ...`
/// first, then its usage block) containing the expected text.
fn check_output(c: &Case, out: &Output) -> Option<String> {
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    let error_lines: Vec<&&str> = lines.iter().filter(|l| l.contains("error:")).collect();
    let clap = lines.first().is_some_and(|l| l.starts_with("error: "));
    let ours_one_line = lines
        .iter()
        .all(|l| l.starts_with("warning: ") || l.contains(": error: "));
    let mut wrong = Vec::new();
    if out.status.code() != Some(c.code) {
        wrong.push(format!(
            "exit code {:?}, want {}",
            out.status.code(),
            c.code
        ));
    }
    if error_lines.len() != 1 {
        wrong.push(format!("{} error lines, want 1", error_lines.len()));
    } else if !error_lines[0].contains(c.error) {
        wrong.push(format!("error line lacks {:?}", c.error));
    }
    if !clap && !ours_one_line {
        wrong.push("stderr has lines besides the error and warnings".into());
    }
    if clap && c.code != 2 {
        wrong.push("a usage error must exit 2".into());
    }
    (!wrong.is_empty()).then(|| {
        format!(
            "{:?} ({:?}): {}\n{}",
            c.args,
            c.how,
            wrong.join("; "),
            show(out)
        )
    })
}

fn bad_input_changes_neither_files_nor_the_kernel() {
    assert!(CASES.len() >= 40, "{} cases", CASES.len());
    let topo = Topology::new();
    let cfg = TempConfig::new();
    // A nameserver that refuses at once (nothing listens on loopback port 53 here): provider
    // host names fail fast instead of waiting for a timeout.
    cfg.write(
        "pbxwall.toml",
        "trusted = []\n[resolver]\nnameservers = [\"127.0.0.1\"]\ntimeout_ms = 200\nattempts = 1\n",
    );
    let ns = Some(topo.pbx_ns());
    for args in [
        &[
            "joe-office",
            "203.0.113.7",
            "2001:db8::7",
            "--allow",
            "sip-udp",
        ][..],
        &[
            "admin",
            "192.0.2.10",
            "--allow",
            "ssh,web",
            "--comment",
            "HQ",
        ][..],
    ] {
        let out = cfg.run(ns, "add-ip", args);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    }
    let cron = cfg.root().join("cron.d-pbxwall");
    let out = cfg.run(
        ns,
        "ipchecker",
        [
            "--install-cron",
            "*/5 * * * *",
            "--cron-file",
            cron.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let last_applied = cfg.state_dir().join("last-applied.nft");

    let table = kernel_table(&topo);
    let applied = std::fs::read(&last_applied).expect("last-applied.nft");
    let cron_text = std::fs::read(&cron).expect("cron file");
    let mut failures = Vec::new();
    let mut by_command: BTreeMap<&str, usize> = BTreeMap::new();
    for c in CASES {
        let bin = if c.args[0] == "pbxwall" {
            "pbxwall"
        } else {
            c.args[0]
        };
        *by_command.entry(bin).or_default() += 1;
        if let Some((rel, text)) = c.file {
            cfg.write(rel, text);
        }
        let before = common::snapshot(cfg.config_dir());
        let out = run_case(&cfg, &topo, c, &cron);
        if let Some(f) = check_output(c, &out) {
            failures.push(f);
        }
        let after = common::snapshot(cfg.config_dir());
        if after != before {
            let changed: Vec<&String> = before
                .keys()
                .chain(after.keys())
                .filter(|k| before.get(*k) != after.get(*k))
                .collect();
            failures.push(format!(
                "{:?} ({:?}) changed the config dir: {changed:?}",
                c.args, c.how
            ));
        }
        let now = kernel_table(&topo);
        if now != table {
            failures.push(format!(
                "{:?} ({:?}) changed the kernel table:\n--- before ---\n{table}\n--- after ---\n{now}",
                c.args, c.how
            ));
        }
        if std::fs::read(&last_applied).ok().as_deref() != Some(&applied[..]) {
            failures.push(format!(
                "{:?} ({:?}) changed last-applied.nft",
                c.args, c.how
            ));
        }
        if std::fs::read(&cron).ok().as_deref() != Some(&cron_text[..]) {
            failures.push(format!("{:?} ({:?}) changed the cron file", c.args, c.how));
        }
        if let Some((rel, _)) = c.file {
            std::fs::remove_file(cfg.config_dir().join(rel)).unwrap();
            if rel == "pbxwall.toml" {
                cfg.write(
                    "pbxwall.toml",
                    "trusted = []\n[resolver]\nnameservers = [\"127.0.0.1\"]\ntimeout_ms = 200\nattempts = 1\n",
                );
            }
        }
    }
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "bad input with the kernel check: {} cases ({by_command:?}), {} failed\n",
            CASES.len(),
            failures.len()
        )
        .as_bytes(),
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

common::test_main! {
    Needs::root_and(&["setpriv"]) => [bad_input_changes_neither_files_nor_the_kernel],
}
