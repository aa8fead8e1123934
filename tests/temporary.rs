//! Temporary access: accounts with `--expires` close at the kernel's timeout with no command
//! run, and the next command removes their file; the TM4 recipe (whitelisting by telephone)
//! runs the exact command line README and pbxwall(8) show.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{Needs, Probe, Servers, TempConfig, Topology, assert_probes, show, stderr, stdout};

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

fn temporary_account_closes_at_the_kernel_timeout_and_the_next_command_removes_it() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[22], &[5060]);
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", "trusted = []\n");
    let ns = Some(topo.pbx_ns());
    ok(
        cfg.run(ns, "add-ip", ["office", "192.0.2.10", "--allow", "ssh"]),
        "add-ip office",
    );
    let out = ok(
        cfg.run(
            ns,
            "add-ip",
            [
                "visitor",
                "203.0.113.10",
                "--allow",
                "ssh,sip-udp",
                "--expires",
                "8s",
            ],
        ),
        "add-ip visitor --expires 8s",
    );
    let added = Instant::now();
    assert!(
        stdout(&out).contains("account visitor saved"),
        "{}",
        show(&out)
    );
    let text = cfg.read("accounts/visitor.toml").unwrap();
    assert!(text.contains("expires = "), "{text}");
    let open = |yes: bool| {
        vec![
            Probe::tcp("203.0.113.10", 22, yes),
            Probe::udp("203.0.113.10", 5060, yes),
            Probe::tcp("192.0.2.10", 22, true),
            Probe::tcp("203.0.113.11", 22, false),
        ]
    };
    assert_probes(&topo, &open(true));
    // status shows the expiry and is in sync.
    let out = ok(cfg.run(ns, "pbxwall", ["status", "--json"]), "status");
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["in_sync"], true, "{}", show(&out));
    let visitor = v["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "visitor")
        .expect("visitor in status");
    assert!(visitor["expires"].is_string(), "{visitor}");
    assert_eq!(visitor["expired"], false);
    // restart applies the time that is left (the kernel's element has less than 8 s).
    ok(
        cfg.run(ns, "restart", std::iter::empty::<&str>()),
        "restart",
    );
    let out = common::ns_cmd(
        topo.pbx_ns(),
        "nft",
        &["list", "set", "inet", "pbxwall", "temp_sip_udp.ssh_v4"],
    );
    let listed = stdout(&out);
    assert!(listed.contains("203.0.113.10 timeout"), "{}", show(&out));
    assert!(listed.contains("comment \"visitor\""), "{listed}");
    assert_probes(&topo, &open(true));
    // A running flow (a phone's UDP keepalive from a fixed port).
    let flow = common::udp_flow(&topo, "203.0.113.10", "192.0.2.1:5060");
    let echoes = common::udp_flow_echoes;
    assert!(echoes(&flow), "the visitor's flow works");
    // Closed at the kernel's timeout, with no command run.
    let deadline = added + Duration::from_secs(9);
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    assert_probes(&topo, &open(false));
    assert!(
        cfg.read("accounts/visitor.toml").is_some(),
        "no command ran yet"
    );
    // conntrack has no timeout tied to the element: the running flow goes on until ...
    assert!(
        echoes(&flow),
        "the flow keeps its conntrack entry until ipchecker"
    );
    // The next command removes the file and says so, in its output and the audit log.
    let out = ok(cfg.run(ns, "pbxwall", ["ipchecker"]), "ipchecker");
    assert!(
        cfg.read("accounts/visitor.toml").is_none(),
        "{}",
        show(&out)
    );
    // ... the next ipchecker run, which ends it.
    assert!(
        !echoes(&flow),
        "the expired account's flow still answers: {}",
        show(&out)
    );
    let audit = std::fs::read_to_string(cfg.state_dir().join("audit.log")).unwrap();
    assert!(
        audit.contains("account visitor expired at") && audit.contains("removed"),
        "{audit}"
    );
    assert_probes(&topo, &open(false));
    // Expiry in the past, or a network too large: refused, nothing changed.
    let before = common::snapshot(cfg.config_dir());
    for (args, want) in [
        (
            vec![
                "late",
                "203.0.113.11",
                "--allow",
                "ssh",
                "--expires",
                "2020-01-01T00:00:00Z",
            ],
            "invalid expiry \"2020-01-01T00:00:00Z\": it is in the past",
        ),
        (
            vec![
                "late",
                "203.0.113.11",
                "--allow",
                "ssh",
                "--expires",
                "soon",
            ],
            "invalid expiry \"soon\": expected a duration",
        ),
        (
            vec![
                "big",
                "198.51.100.0/23",
                "--allow",
                "ssh",
                "--expires",
                "1h",
            ],
            "refusing 198.51.100.0/23 for a temporary account",
        ),
    ] {
        let out = cfg.run(ns, "add-ip", &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", show(&out));
        assert_eq!(stderr(&out).trim_end().lines().count(), 1, "{}", show(&out));
    }
    assert_eq!(common::snapshot(cfg.config_dir()), before);
}

fn a_temporary_host_name_follows_its_address_until_it_expires() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[22], &[]);
    let dns = topo.start_dnsmasq();
    dns.set_records(&[("visitor.dyn.example.test", "192.0.2.10".parse().unwrap())]);
    let cfg = TempConfig::new();
    cfg.write(
        "pbxwall.toml",
        "trusted = []\n[resolver]\nnameservers = [\"192.0.2.53\"]\ntimeout_ms = 500\nattempts = 1\n",
    );
    let ns = Some(topo.pbx_ns());
    ok(
        cfg.run(
            ns,
            "add-fqdn",
            [
                "visitor",
                "visitor.dyn.example.test",
                "--allow",
                "ssh",
                "--expires",
                "1h",
            ],
        ),
        "add-fqdn --expires",
    );
    assert_probes(
        &topo,
        &[
            Probe::tcp("192.0.2.10", 22, true),
            Probe::tcp("192.0.2.11", 22, false),
        ],
    );
    // The name moves: ipchecker refills the temporary set (a full apply), the time left kept.
    dns.set_records(&[("visitor.dyn.example.test", "192.0.2.11".parse().unwrap())]);
    let out = ok(
        cfg.run(ns, "ipchecker", ["--json"]),
        "ipchecker after the move",
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["apply"], "full", "{}", show(&out));
    assert_probes(
        &topo,
        &[
            Probe::tcp("192.0.2.10", 22, false),
            Probe::tcp("192.0.2.11", 22, true),
        ],
    );
    let out = common::ns_cmd(
        topo.pbx_ns(),
        "nft",
        &["list", "set", "inet", "pbxwall", "temp_ssh_v4"],
    );
    let listed = stdout(&out);
    assert!(
        listed.contains("192.0.2.11 timeout 59m") || listed.contains("192.0.2.11 timeout 1h"),
        "{listed}"
    );
    // Nothing moved: nothing written.
    let out = ok(cfg.run(ns, "ipchecker", ["--json"]), "ipchecker again");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["apply"], "none", "{}", show(&out));
}

common::test_main! {
    Needs::NOTHING => [
        tm4_recipe_shows_one_command_everywhere,
    ],
    Needs::ROOT => [
        tm4_recipe_command_grants_the_callers_address_for_two_hours,
        temporary_account_closes_at_the_kernel_timeout_and_the_next_command_removes_it,
    ],
    Needs::root_and(&["dnsmasq"]) => [
        a_temporary_host_name_follows_its_address_until_it_expires,
    ],
}
