//! Port knocking (`[knock]`, `pbxwall knock`): the settings and the command line refuse bad
//! sequences with one line and change nothing; `--setup` writes a sequence keeping the
//! settings file's comments.

mod common;

use common::{Needs, TempConfig, show, stderr, stdout};

struct Case {
    args: &'static [&'static str],
    code: i32,
    error: &'static str,
}

const fn case(args: &'static [&'static str], code: i32, error: &'static str) -> Case {
    Case { args, code, error }
}

#[rustfmt::skip]
const CLI_CASES: &[Case] = &[
    case(&["knock", "--setup", "--sequence", "23456,34567,23456"], 2, "invalid knock sequence [23456,34567,23456]: port 23456 appears twice; the ports must be distinct"),
    case(&["knock", "--setup", "--sequence", "23456,5060"], 2, "invalid knock port 5060: it is in udp 5060-5061 of service sip-udp; knock ports are never services"),
    case(&["knock", "--setup", "--sequence", "23456,10000"], 2, "invalid knock port 10000: it is tcp port 10000 of service webmin"),
    case(&["knock", "--setup", "--sequence", "23456,15000"], 2, "invalid knock port 15000: it is inside the RTP range 10000-20000"),
    case(&["knock", "--setup", "--sequence", "23456"], 2, "invalid knock sequence [23456]: use 2 to 8 distinct ports"),
    case(&["knock", "--setup", "--sequence", "2001,2002,2003,2004,2005,2006,2007,2008,2009"], 2, "invalid knock sequence [2001,2002,2003,2004,2005,2006,2007,2008,2009]: use 2 to 8"),
    case(&["knock", "--setup", "--sequence", "22,23456"], 2, "invalid knock port \"22\": use a port from 1024 to 65535"),
    case(&["knock", "--setup", "--sequence", "23456,x"], 2, "invalid knock port \"x\""),
    case(&["knock", "--setup", "--length", "1"], 2, "invalid knock length 1: use 2 to 8 ports"),
    case(&["knock", "--setup", "--length", "9"], 2, "invalid knock length 9: use 2 to 8 ports"),
    case(&["knock", "--setup", "--protocol", "icmp"], 2, "invalid knock protocol \"icmp\": use tcp or udp"),
    case(&["knock", "--setup", "--length", "3", "--sequence", "23456,34567"], 2, "cannot be used with"),
    case(&["knock", "192.0.2.1", "--setup"], 2, "cannot be used with"),
    case(&["knock"], 2, "required"),
    case(&["knock", "192.0.2.1"], 2, "no knock sequence: give --sequence P,P,P"),
    case(&["knock", "192.0.2.1", "--sequence", "23456,23456"], 2, "port 23456 appears twice"),
    case(&["knock", "192.0.2.1", "--sequence", "23456"], 2, "use 2 to 8 distinct ports"),
    case(&["knock", "192.0.2.1", "--sequence", "23456,34567", "--protocol", "sctp"], 2, "invalid knock protocol \"sctp\""),
];

fn bad_command_lines_are_refused_with_one_line_and_change_nothing() {
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", "# mine\ntrusted = []\n");
    let before = common::snapshot(cfg.config_dir());
    let mut failures = Vec::new();
    for c in CLI_CASES {
        let out = cfg.run(None, "pbxwall", c.args);
        let err = stderr(&out);
        let first_error_line = err.lines().find(|l| l.contains("error")).unwrap_or("");
        let clap = err.starts_with("error: ");
        let one_line = clap || err.trim_end().lines().count() == 1;
        if out.status.code() != Some(c.code) || !first_error_line.contains(c.error) || !one_line {
            failures.push(format!(
                "{:?}: want exit {} and {:?}\n{}",
                c.args,
                c.code,
                c.error,
                show(&out)
            ));
        }
        if common::snapshot(cfg.config_dir()) != before {
            failures.push(format!("{:?} changed the config dir", c.args));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[rustfmt::skip]
const FILE_CASES: &[(&str, &str)] = &[
    ("[knock]\nsequence = [23456, 34567, 23456]\n", "pbxwall.toml:2: invalid knock sequence [23456,34567,23456]: port 23456 appears twice"),
    ("[knock]\nsequence = [23456, 5060]\n", "pbxwall.toml:2: invalid knock port 5060: it is in udp 5060-5061 of service sip-udp"),
    ("[knock]\nsequence = [23456]\n", "pbxwall.toml:2: invalid knock sequence [23456]: use 2 to 8 distinct ports"),
    ("[knock]\nsequence = [2001, 2002, 2003, 2004, 2005, 2006, 2007, 2008, 2009]\n", "pbxwall.toml:2: invalid knock sequence"),
    ("\n[knock]\nsequence = [23456, 34567]\nstep_timeout = \"10 seconds\"\n", "pbxwall.toml:4: step_timeout: invalid duration \"10 seconds\": expected a number and a unit"),
    ("[knock]\nsequence = [23456, 34567]\ngrant_for = \"400d\"\n", "pbxwall.toml:3: grant_for: invalid duration \"400d\""),
    ("[knock]\nsequence = [23456, 34567]\nservices = [\"telnet\"]\n", "pbxwall.toml:3: [knock] services: unknown service \"telnet\""),
    ("[knock]\nsequence = [23456, 34567]\nprotocol = \"icmp\"\n", "pbxwall.toml:3: invalid knock protocol \"icmp\""),
];

fn bad_knock_settings_stop_every_apply_with_file_and_line() {
    let cfg = TempConfig::new();
    let mut failures = Vec::new();
    for (text, want) in FILE_CASES {
        cfg.write("pbxwall.toml", text);
        let before = common::snapshot(cfg.config_dir());
        // `knock --setup` replaces a sequence that collides with a service (the fix), so it
        // is refused only for what it does not replace.
        let setup_fixes = want.contains("of service sip-udp");
        let runs: &[&[&str]] = if setup_fixes {
            &[&["restart", "--dry-run"]]
        } else {
            &[
                &["restart", "--dry-run"],
                &["knock", "--setup", "--no-restart"],
            ]
        };
        for args in runs {
            let out = cfg.run(None, "pbxwall", *args);
            let err = stderr(&out);
            if out.status.code() != Some(1)
                || !err.contains(want)
                || err.trim_end().lines().count() != 1
                || !stdout(&out).is_empty()
            {
                failures.push(format!(
                    "{text:?} {args:?}: want exit 1 and {want:?}\n{}",
                    show(&out)
                ));
            }
            if common::snapshot(cfg.config_dir()) != before {
                failures.push(format!("{text:?} {args:?} changed the config dir"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn setup_writes_a_checked_sequence_and_keeps_the_file() {
    let cfg = TempConfig::new();
    let mine = "# my settings\ntrusted = []   # cloud\n\n[rtp]\nports = \"12000-13000\"\n";
    cfg.write("pbxwall.toml", mine);
    let out = cfg.run(
        None,
        "pbxwall",
        ["knock", "--setup", "--length", "4", "--no-restart"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = cfg.read("pbxwall.toml").unwrap();
    assert!(text.starts_with(mine), "{text}");
    let settings =
        pbxwall::store::parse_settings(std::path::Path::new("pbxwall.toml"), &text).unwrap();
    let seq = settings.knock.sequence.clone();
    assert_eq!(seq.len(), 4, "{text}");
    let profiles = pbxwall::store::builtin_profiles();
    pbxwall::knock::check_sequence(&seq, &profiles, &settings.rtp).unwrap();
    let printed = stdout(&out);
    let list = pbxwall::knock::sequence_text(&seq);
    assert!(
        printed.contains(&format!(
            "pbxwall knock HOST --sequence {list} --protocol tcp"
        )),
        "{printed}"
    );
    let knockd: Vec<String> = seq.iter().map(|p| format!("{p}:tcp")).collect();
    assert!(
        printed.contains(&format!("knock HOST {}", knockd.join(" "))),
        "{printed}"
    );
    // A chosen sequence and protocol replace it; the rest stays.
    let out = cfg.run(
        None,
        "pbxwall",
        [
            "knock",
            "--setup",
            "--sequence",
            "40001,30002,50003",
            "--protocol",
            "udp",
            "--no-restart",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = cfg.read("pbxwall.toml").unwrap();
    assert!(text.starts_with(mine), "{text}");
    assert!(
        text.contains("sequence = [40001, 30002, 50003]\nprotocol = \"udp\""),
        "{text}"
    );
    let audit = std::fs::read_to_string(cfg.state_dir().join("audit.log")).unwrap_or_default();
    assert!(
        audit.contains("knock sequence udp 40001,30002,50003 written"),
        "{audit}"
    );
    // The ruleset still compiles with it.
    let out = cfg.run(None, "pbxwall", ["restart", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

common::test_main! {
    Needs::NOTHING => [
        bad_command_lines_are_refused_with_one_line_and_change_nothing,
        bad_knock_settings_stop_every_apply_with_file_and_line,
        setup_writes_a_checked_sequence_and_keeps_the_file,
    ],
}
