//! `status`: in sync, drift behind pbxwall's back (a set element removed, a rule added, a
//! rule replaced, the policy and the table flags changed, the table gone), back in sync after
//! restart; every name shows what it expanded to. Needs root.

mod common;

use std::net::IpAddr;

use common::{Needs, TempConfig, Topology, ns_cmd, show, stdout};
use serde_json::Value;

fn status_json(cfg: &TempConfig, topo: &Topology, code: i32) -> Value {
    let out = cfg.run(Some(topo.pbx_ns()), "status", ["--json"]);
    common::assert_exit(&out, code, "status --json");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&out)))
}

#[track_caller]
fn nft(topo: &Topology, args: &[&str]) {
    let out = ns_cmd(topo.pbx_ns(), "nft", args);
    assert!(out.status.success(), "nft {args:?}: {}", show(&out));
}

fn status_reports_sync_drift_and_names() {
    let topo = Topology::new();
    let dns = topo.start_dnsmasq();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    dns.set_records(&[
        ("joe.dyn.example.test", ip("192.0.2.10")),
        ("joe.dyn.example.test", ip("2001:db8::10")),
    ]);
    let cfg = TempConfig::new();
    cfg.write(
        "pbxwall.toml",
        "trusted = []\n[resolver]\nnameservers = [\"192.0.2.53\"]\ntimeout_ms = 500\nattempts = 1\n",
    );
    let ns = Some(topo.pbx_ns());
    let out = cfg.run(
        ns,
        "add-ip",
        [
            "office",
            "203.0.113.10",
            "--allow",
            "ssh",
            "--comment",
            "HQ",
        ],
    );
    common::assert_exit(&out, 0, "add-ip");
    // What was saved comes first, then what the apply did.
    let said: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(said[0], "account office saved", "{said:?}");
    assert!(
        said[1].starts_with("applied table inet pbxwall: "),
        "{said:?}"
    );
    common::assert_exit(
        &cfg.run(
            ns,
            "add-fqdn",
            ["joe", "joe.dyn.example.test", "--allow", "sip-udp"],
        ),
        0,
        "add-fqdn",
    );

    let s = status_json(&cfg, &topo, 0);
    assert_eq!(s["table"], "loaded");
    assert_eq!(s["in_sync"], true, "{s:#}");
    assert_eq!(s["degraded"], false);
    assert_eq!(s["last_apply"]["by"], "add-fqdn");
    assert!(s["dropped"]["packets"].is_u64(), "{s:#}");
    let accounts = s["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 2);
    let joe = &accounts[0];
    assert_eq!(joe["name"], "joe");
    assert_eq!(joe["services"][0], "sip-udp");
    let name = &joe["fqdns"][0];
    assert_eq!(name["name"], "joe.dyn.example.test");
    assert_eq!(name["state"], "ok");
    assert_eq!(name["v4"][0], "192.0.2.10");
    assert_eq!(name["v6"][0], "2001:db8::10");
    assert_eq!(name["applied"].as_array().unwrap().len(), 2);
    // The documented keys are there for a name that resolves too, null when empty.
    for key in ["since", "error", "reason"] {
        assert!(
            name.as_object().unwrap().contains_key(key) && name[key].is_null(),
            "{key}: {name:#}"
        );
    }
    let office = &accounts[1];
    assert_eq!(office["comment"], "HQ");
    assert_eq!(office["addresses"][0]["address"], "203.0.113.10");
    assert_eq!(office["addresses"][0]["applied"], true);

    let out = cfg.run(ns, "status", [] as [&str; 0]);
    common::assert_exit(&out, 0, "status");
    let text = stdout(&out);
    assert!(
        text.contains("table inet pbxwall: loaded, in sync"),
        "{text}"
    );
    assert!(
        text.contains("joe.dyn.example.test -> 192.0.2.10, 2001:db8::10 [ok; 2 of 2 applied]"),
        "{text}"
    );

    // Behind pbxwall's back: an element removed, a rule added.
    nft(
        &topo,
        &[
            "delete",
            "element",
            "inet",
            "pbxwall",
            "hosts_v4",
            "{ 203.0.113.10 }",
        ],
    );
    nft(
        &topo,
        &[
            "add", "rule", "inet", "pbxwall", "input", "tcp", "dport", "23", "accept",
        ],
    );
    let s = status_json(&cfg, &topo, 3);
    assert_eq!(s["in_sync"], false);
    let diffs: Vec<&str> = s["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        diffs.contains(&"map hosts_v4: missing 203.0.113.10 : jump allow_ssh"),
        "{diffs:?}"
    );
    assert!(
        diffs
            .iter()
            .any(|d| d.starts_with("chain input:") && d.contains("rules, expected")),
        "{diffs:?}"
    );
    assert_eq!(s["accounts"][1]["addresses"][0]["applied"], false);
    let out = cfg.run(ns, "status", [] as [&str; 0]);
    common::assert_exit(&out, 3, "status with drift");
    assert!(stdout(&out).contains("DRIFTED"), "{}", show(&out));

    common::assert_exit(&cfg.run(ns, "restart", [] as [&str; 0]), 0, "restart");
    assert_eq!(status_json(&cfg, &topo, 0)["in_sync"], true);

    // A rule replaced in place (same count, same handle): the content check sees it.
    let handle = common::rule_handle(topo.pbx_ns(), "@hosts_v4");
    nft(
        &topo,
        &[
            "replace", "rule", "inet", "pbxwall", "input", "handle", &handle, "tcp", "dport", "22",
            "accept",
        ],
    );
    let s = status_json(&cfg, &topo, 3);
    let diffs: Vec<&str> = s["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        diffs
            .iter()
            .any(|d| d.contains("differs from what pbxwall applied (ip saddr vmap @hosts_v4)")),
        "{diffs:?}"
    );
    common::assert_exit(&cfg.run(ns, "restart", [] as [&str; 0]), 0, "restart");
    assert_eq!(status_json(&cfg, &topo, 0)["in_sync"], true);

    // The base chain's policy and the table's flags changed in place: what a packet meets
    // changed though no rule, set or element did.
    nft(
        &topo,
        &["chain", "inet", "pbxwall", "input", "{ policy accept; }"],
    );
    nft(
        &topo,
        &["add", "table", "inet", "pbxwall", "{ flags dormant; }"],
    );
    let s = status_json(&cfg, &topo, 3);
    assert_eq!(
        s["differences"],
        serde_json::json!([
            "table flags 0x1 (dormant), want 0",
            "chain input: policy is accept, expected drop"
        ]),
        "{s:#}"
    );

    nft(&topo, &["delete", "table", "inet", "pbxwall"]);
    let s = status_json(&cfg, &topo, 3);
    assert_eq!(s["table"], "missing");
    assert_eq!(s["differences"][0], "table inet pbxwall is not loaded");
}

/// The drop counter says since when it counts, ipchecker is described in words, and a
/// configuration that does not build still shows what is live, with the error.
fn status_says_what_it_counts_and_survives_a_broken_configuration() {
    let topo = Topology::new();
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", "trusted = []\n");
    let ns = Some(topo.pbx_ns());
    let no_cron = cfg.root().join("no-cron");
    let no_cron = no_cron.to_str().unwrap();
    common::assert_exit(
        &cfg.run(ns, "add-ip", ["office", "203.0.113.10", "--allow", "ssh"]),
        0,
        "add-ip",
    );
    let out = cfg.run(ns, "status", ["--json", "--cron-file", no_cron]);
    common::assert_exit(&out, 0, "status --json");
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(s["error"].is_null(), "{s:#}");
    assert!(s["dropped"]["since"].is_string(), "{s:#}");
    assert_eq!(s["dropped"]["since"], s["last_apply"]["at"], "{s:#}");
    let out = cfg.run(ns, "status", ["--cron-file", no_cron]);
    common::assert_exit(&out, 0, "status");
    let text = stdout(&out);
    let since = s["dropped"]["since"].as_str().unwrap();
    assert!(
        text.contains(&format!(
            "dropped by policy since the last full apply at {since}: "
        )),
        "{text}"
    );
    assert!(
        text.contains("\nipchecker has not run yet; no cron entry\n"),
        "{text}"
    );

    cfg.write("pbxwall.toml", "trusted = [\n");
    let out = cfg.run(ns, "status", ["--cron-file", no_cron]);
    common::assert_exit(&out, 1, "status with a broken pbxwall.toml");
    let text = stdout(&out);
    assert!(
        text.starts_with("configuration: ERROR, not compared with what is live: "),
        "{}",
        show(&out)
    );
    assert!(text.contains("pbxwall.toml"), "{}", show(&out));
    assert!(
        text.contains("table inet pbxwall: loaded (") && text.contains("dropped by policy"),
        "{}",
        show(&out)
    );
    let out = cfg.run(ns, "status", ["--json", "--cron-file", no_cron]);
    common::assert_exit(&out, 1, "status --json with a broken pbxwall.toml");
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["table"], "loaded");
    assert!(
        s["error"].as_str().unwrap().contains("pbxwall.toml"),
        "{s:#}"
    );
    assert!(s["live"]["elements"].as_u64().unwrap() >= 1, "{s:#}");
}

/// `promtool check metrics` on `text`: the exposition format and Prometheus' naming rules.
#[track_caller]
fn promtool_check(text: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(common::tool_path("promtool"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{text}",
        show(&out)
    );
}

/// The sample of `metric` (with its labels, e.g. `pbxwall_names{state="ok"}`) in `text`.
#[track_caller]
fn sample(text: &str, metric: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(metric)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {metric} in:\n{text}"))
        .to_owned()
}

/// `status --prometheus` for node_exporter's textfile collector: valid for promtool, the
/// values of the table and the accounts, and `--prometheus-file` writes the same atomically.
fn status_prometheus_passes_promtool() {
    let topo = Topology::new();
    let dns = topo.start_dnsmasq();
    dns.set_records(&[("joe.dyn.example.test", "192.0.2.10".parse().unwrap())]);
    let cfg = TempConfig::new();
    cfg.write(
        "pbxwall.toml",
        "trusted = []\n[resolver]\nnameservers = [\"192.0.2.53\"]\ntimeout_ms = 500\nattempts = 1\n",
    );
    let ns = Some(topo.pbx_ns());
    let prometheus = || {
        let out = cfg.run(ns, "status", ["--prometheus"]);
        common::assert_exit(&out, 0, "status --prometheus");
        stdout(&out)
    };

    // Nothing applied yet: no table, still valid metrics and exit 0.
    let text = prometheus();
    promtool_check(&text);
    assert_eq!(sample(&text, "pbxwall_table_loaded"), "0", "{text}");
    assert_eq!(sample(&text, "pbxwall_in_sync"), "0", "{text}");
    assert!(!text.contains("pbxwall_last_apply"), "{text}");

    let add = cfg.run(
        ns,
        "add-ip",
        [
            "office",
            "203.0.113.10",
            "198.51.100.0/24",
            "--allow",
            "ssh",
        ],
    );
    common::assert_exit(&add, 0, "add-ip");
    let add = cfg.run(
        ns,
        "add-fqdn",
        ["joe", "joe.dyn.example.test", "--allow", "sip-udp"],
    );
    common::assert_exit(&add, 0, "add-fqdn");
    let ipchecker = cfg.run(ns, "ipchecker", [] as [&str; 0]);
    common::assert_exit(&ipchecker, 0, "ipchecker");

    let before = chrono::Utc::now().timestamp();
    let text = prometheus();
    promtool_check(&text);
    for (metric, want) in [
        ("pbxwall_table_loaded", "1"),
        ("pbxwall_in_sync", "1"),
        ("pbxwall_degraded", "0"),
        ("pbxwall_differences", "0"),
        ("pbxwall_accounts", "2"),
        ("pbxwall_addresses", "2"),
        ("pbxwall_set_elements{set=\"hosts_v4\"}", "2"),
        ("pbxwall_set_elements{set=\"ranges_v4\"}", "1"),
        ("pbxwall_names{state=\"ok\"}", "1"),
        ("pbxwall_names{state=\"left_out\"}", "0"),
        ("pbxwall_ipchecker_last_run_outcome{outcome=\"ok\"}", "1"),
    ] {
        assert_eq!(sample(&text, metric), want, "{metric} in:\n{text}");
    }
    assert!(
        text.contains("# TYPE pbxwall_dropped_packets_total counter\n"),
        "{text}"
    );
    sample(&text, "pbxwall_dropped_packets_total")
        .parse::<u64>()
        .unwrap();
    for metric in [
        "pbxwall_last_apply_timestamp_seconds",
        "pbxwall_ipchecker_last_run_timestamp_seconds",
    ] {
        let at: i64 = sample(&text, metric).parse().unwrap();
        assert!(
            (before - 120..=before).contains(&at),
            "{metric} {at}, now {before}"
        );
    }

    // Drift shows; status itself would exit 3, the metrics still exit 0.
    nft(
        &topo,
        &[
            "delete",
            "element",
            "inet",
            "pbxwall",
            "hosts_v4",
            "{ 203.0.113.10 }",
        ],
    );
    let text = prometheus();
    assert_eq!(sample(&text, "pbxwall_in_sync"), "0", "{text}");
    assert_eq!(sample(&text, "pbxwall_set_elements{set=\"hosts_v4\"}"), "1");

    // --prometheus-file: written whole (mode 0644), nothing on stdout.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pbxwall.prom");
    let out = cfg.run(ns, "status", ["--prometheus-file", file.to_str().unwrap()]);
    common::assert_exit(&out, 0, "status --prometheus-file");
    assert_eq!(stdout(&out), "", "{}", show(&out));
    let written = std::fs::read_to_string(&file).unwrap();
    promtool_check(&written);
    assert_eq!(sample(&written, "pbxwall_in_sync"), "0", "{written}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "a temporary file was left behind");
}

common::test_main! {
    Needs::root_and(&["dnsmasq"]) => [status_reports_sync_drift_and_names],
    Needs::ROOT => [status_says_what_it_counts_and_survives_a_broken_configuration],
    Needs::root_and(&["dnsmasq", "promtool"]) => [status_prometheus_passes_promtool],
}
