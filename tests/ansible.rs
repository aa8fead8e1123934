//! The Ansible collection of contrib/ansible, run by Debian's `ansible-playbook -c local`
//! inside a PBX namespace with temporary configuration and state folders: the role writes
//! pbxwall.toml (the package install is switched off), the module pbxwall_account creates,
//! changes and removes accounts through pbxwall's commands, pbxwall_sync writes only the
//! [sync] table of a hand-written settings file. Check mode changes nothing and reports the
//! diff; the real run applies (probes); a second run reports no change.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{Needs, Probe, Servers, TempConfig, Topology, assert_probes, show, snapshot, stdout};
use serde_json::Value;

/// A key line `minisign -G` wrote (only parsed here: nothing is verified).
const PUBLIC_KEY: &str = "RWSsFi1QPn7mBRjoY86uXCjMDTDNV+iD/eAJd+x22dm2em+UiQQIe/cN";

fn playbook(cfg: &TempConfig, other: &Path) -> String {
    let c = cfg.config_dir().display();
    let s = cfg.state_dir().display();
    let o = other.display();
    format!(
        r#"---
- name: A PBX managed by Ansible
  hosts: localhost
  gather_facts: false
  roles:
    - role: pbxwall.pbxwall.pbxwall
      vars:
        pbxwall_install_package: false
        pbxwall_config_dir: "{c}"
        pbxwall_state_dir: "{s}"
        pbxwall_trusted: []
        pbxwall_rtp: {{ports: "10000-20000", from: "any"}}
        pbxwall_sync: {{url: "file:///srv/fleet/accounts.bundle", public_key: "{PUBLIC_KEY}"}}
        pbxwall_sync_timer: false
  tasks:
    - name: alice, ssh from her office
      pbxwall.pbxwall.pbxwall_account:
        name: alice
        addresses: [198.51.100.10]
        services: [ssh]
        comment: alice's office
    - name: bob, SIP and IAX, given as TM3 codes
      pbxwall.pbxwall.pbxwall_account:
        name: bob
        addresses: ["203.0.113.10", "2001:db8::10"]
        services: ["1", "3"]
    - name: an account that must go
      pbxwall.pbxwall.pbxwall_account:
        name: gone
        state: absent

- name: The [sync] table of a hand-written settings file
  hosts: localhost
  gather_facts: false
  tasks:
    - pbxwall.pbxwall.pbxwall_sync:
        config_dir: "{o}"
        state_dir: "{s}"
        url: https://fleet.example/accounts.bundle
        public_key: "{PUBLIC_KEY}"
        timeout: 20s
"#
    )
}

/// Runs the playbook in `ns` (check mode and diff with `check`); returns the output and the
/// json callback's document.
fn run(cfg: &TempConfig, ns: &str, work: &Path, book: &Path, check: bool) -> (Output, Value) {
    let mut args: Vec<String> = vec![
        "-c".into(),
        "local".into(),
        "-i".into(),
        "localhost,".into(),
        "-e".into(),
        "ansible_python_interpreter=/usr/bin/python3".into(),
        "--diff".into(),
    ];
    if check {
        args.push("--check".into());
    }
    args.push(book.display().to_string());
    let bins = common::bin("pbxwall").parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = cfg.command(Some(ns), &common::tool_path("ansible-playbook"), &args);
    cmd.env("PATH", path)
        .env("HOME", work)
        .env("ANSIBLE_LOCAL_TEMP", work.join("tmp"))
        .env("ANSIBLE_REMOTE_TEMP", work.join("tmp"))
        .env("ANSIBLE_COLLECTIONS_PATH", work.join("collections"))
        .env("ANSIBLE_STDOUT_CALLBACK", "json")
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0");
    let out = common::run_with_timeout(cmd, None, std::time::Duration::from_secs(300)).unwrap();
    let doc: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("json callback output: {e}\n{}", show(&out)));
    (out, doc)
}

fn changed(doc: &Value) -> u64 {
    doc["stats"]["localhost"]["changed"].as_u64().unwrap()
}

/// The task results, by task name.
fn results(doc: &Value) -> Vec<(String, Value)> {
    doc["plays"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["tasks"].as_array().unwrap().iter())
        .map(|t| {
            (
                t["task"]["name"].as_str().unwrap_or("").to_owned(),
                t["hosts"]["localhost"].clone(),
            )
        })
        .collect()
}

fn table(ns: &str) -> String {
    stdout(&common::ns_cmd(
        ns,
        "nft",
        &["-s", "list", "table", "inet", "pbxwall"],
    ))
}

fn collection_runs_idempotently_with_check_and_diff_modes() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[22], &[]);
    let ns = topo.pbx_ns();
    let cfg = TempConfig::new();
    let work = tempfile::tempdir().unwrap();
    // The collection, where ansible looks for it: ansible_collections/NAMESPACE/NAME.
    let coll = work.path().join("collections/ansible_collections/pbxwall");
    std::fs::create_dir_all(&coll).unwrap();
    let src: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/ansible");
    std::os::unix::fs::symlink(&src, coll.join("pbxwall")).unwrap();
    std::fs::create_dir_all(work.path().join("tmp")).unwrap();
    // A settings file written by hand, whose other tables pbxwall_sync keeps.
    let other = work.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let hand = "# by hand\ntrusted = [\"192.0.2.0/28\"]\n\n[sync]\nurl = \"https://old.example/b\"\npublic_key = \"RWQ-old\"\n\n[rtp]\nports = \"10000-20000\"\n";
    std::fs::write(other.join("pbxwall.toml"), hand).unwrap();
    cfg.write(
        "accounts/gone.toml",
        "addresses = [\"203.0.113.99\"]\nservices = [\"ssh\"]\n",
    );
    let book = work.path().join("site.yml");
    std::fs::write(&book, playbook(&cfg, &other)).unwrap();

    // Check mode: changes reported with their diffs, nothing written, nothing applied.
    let before = (snapshot(cfg.root()), snapshot(&other), table(ns));
    let (out, doc) = run(&cfg, ns, work.path(), &book, true);
    assert!(out.status.success(), "check mode failed:\n{}", show(&out));
    assert_eq!(
        (snapshot(cfg.root()), snapshot(&other), table(ns)),
        before,
        "check mode changed something"
    );
    assert!(changed(&doc) >= 5, "{}", stdout(&out));
    let r = results(&doc);
    let alice = &r.iter().find(|(n, _)| n.starts_with("alice")).unwrap().1;
    assert_eq!(alice["changed"], true);
    let after = alice["diff"]["after"].as_str().unwrap_or_default();
    assert!(
        after.contains("198.51.100.10") && after.contains("alice's office"),
        "{alice}"
    );
    let bob = &r.iter().find(|(n, _)| n.starts_with("bob")).unwrap().1;
    // pbxwall itself turned the codes into names.
    assert_eq!(
        bob["account"]["services"],
        serde_json::json!(["sip-udp", "iax"]),
        "{bob}"
    );
    let gone = &r
        .iter()
        .find(|(n, _)| n.starts_with("an account"))
        .unwrap()
        .1;
    assert_eq!(gone["changed"], true, "{gone}");

    // The real run applies.
    let (out, doc) = run(&cfg, ns, work.path(), &book, false);
    assert!(out.status.success(), "run failed:\n{}", show(&out));
    assert!(changed(&doc) >= 5, "{}", stdout(&out));
    let settings = cfg.read("pbxwall.toml").unwrap();
    assert!(
        settings.contains("trusted = []") && settings.contains("[sync]"),
        "{settings}"
    );
    assert!(cfg.read("accounts/gone.toml").is_none());
    let bob_file = cfg.read("accounts/bob.toml").unwrap();
    assert!(
        bob_file.contains("services = [\"sip-udp\", \"iax\"]"),
        "{bob_file}"
    );
    let live = table(ns);
    assert!(
        live.contains("198.51.100.10") && !live.contains("203.0.113.99"),
        "{live}"
    );
    assert_probes(
        &topo,
        &[
            Probe::tcp("198.51.100.10", 22, true),
            Probe::tcp("203.0.113.10", 22, false),
        ],
    );
    let other_text = std::fs::read_to_string(other.join("pbxwall.toml")).unwrap();
    assert!(
        other_text.starts_with("# by hand\ntrusted = [\"192.0.2.0/28\"]\n\n[rtp]\nports")
            && other_text.ends_with(
                "[sync]\nurl = \"https://fleet.example/accounts.bundle\"\npublic_key = \"RWSsFi1QPn7mBRjoY86uXCjMDTDNV+iD/eAJd+x22dm2em+UiQQIe/cN\"\ntimeout = \"20s\"\n"
            ),
        "{other_text}"
    );

    // Again: nothing to do, in check mode and for real.
    let (out, doc) = run(&cfg, ns, work.path(), &book, true);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(changed(&doc), 0, "{}", stdout(&out));
    let before = (snapshot(cfg.config_dir()), snapshot(&other), table(ns));
    let (out, doc) = run(&cfg, ns, work.path(), &book, false);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(changed(&doc), 0, "second run: {}", stdout(&out));
    assert_eq!(
        (snapshot(cfg.config_dir()), snapshot(&other), table(ns)),
        before
    );
    // A value pbxwall refuses fails the task with pbxwall's own message; nothing changes.
    let bad = work.path().join("bad.yml");
    std::fs::write(
        &bad,
        "---\n- hosts: localhost\n  gather_facts: false\n  tasks:\n    - pbxwall.pbxwall.pbxwall_account:\n        name: eve\n        addresses: [203.0.113.66]\n        services: [nope]\n",
    )
    .unwrap();
    let (out, doc) = run(&cfg, ns, work.path(), &bad, false);
    assert!(!out.status.success(), "{}", show(&out));
    let eve = &results(&doc)[0].1;
    let msg = eve["msg"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("invalid account eve: ") && msg.contains("nope"),
        "{eve}"
    );
    assert!(cfg.read("accounts/eve.toml").is_none());
}

common::test_main! {
    Needs::root_and(&["ansible-playbook"]) => [collection_runs_idempotently_with_check_and_diff_modes],
}
