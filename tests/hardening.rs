//! Hardening: what an intruder or a clumsy administrator does to the table, the state
//! folder and the files, and what pbxwall must do about it. Root tests make their own
//! namespaces ([`Topology`]: a "pbx" and a "client" namespace joined by a veth pair) and use
//! documentation addresses only; the others run the binaries on a temporary config folder.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{
    Needs, Probe, Servers, TempConfig, Topology, assert_exit, assert_probes, ns_cmd, show, stderr,
    stdout,
};

/// joe (192.0.2.10) may reach SSH; nobody else may; no LAN is trusted.
fn setup(topo: &Topology) -> TempConfig {
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", "trusted = []\n");
    let out = cfg.run(
        Some(topo.pbx_ns()),
        "add-ip",
        ["joe", "192.0.2.10", "--allow", "ssh"],
    );
    assert_exit(&out, 0, "add-ip joe");
    cfg
}

/// joe reaches SSH, a stranger does not.
fn assert_whitelist_holds(topo: &Topology) {
    assert_probes(
        topo,
        &[
            Probe::tcp("192.0.2.10", 22, true),
            Probe::tcp("192.0.2.11", 22, false),
            Probe::tcp("2001:db8::11", 22, false),
        ],
    );
}

fn a_base_chain_moved_to_another_hook_is_drift_and_repaired() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[22], &[]);
    let cfg = setup(&topo);
    let ns = Some(topo.pbx_ns());
    let listed = stdout(&ns_cmd(
        topo.pbx_ns(),
        "nft",
        &["list", "table", "inet", "pbxwall"],
    ));
    assert!(listed.contains("hook input"), "{listed}");
    let moved = listed.replace("hook input", "hook forward");
    common::nft_ok(
        topo.pbx_ns(),
        &format!("delete table inet pbxwall\n{moved}"),
    );
    assert_probes(&topo, &[Probe::tcp("192.0.2.11", 22, true)]);
    let out = cfg.run(ns, "status", [] as [&str; 0]);
    assert_exit(&out, 3, "status of a chain on hook forward");
    assert!(stdout(&out).contains("hook forward"), "{}", show(&out));

    assert_exit(&cfg.run(ns, "ipchecker", [] as [&str; 0]), 0, "ipchecker");
    assert_whitelist_holds(&topo);
    assert_exit(
        &cfg.run(ns, "status", [] as [&str; 0]),
        0,
        "status after ipchecker",
    );
}

/// A tmpfs mounted on a folder for the length of a test; unmounted on drop, panics included.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = common::run_cmd(
            {
                let mut c = std::process::Command::new("mount");
                c.args(["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs"])
                    .arg(dir);
                c
            },
            None,
        );
        assert!(out.status.success(), "mount tmpfs: {}", show(&out));
        Tmpfs(dir.to_owned())
    }

    /// Fills the file system to the last byte.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let chunk = vec![0u8; 64 << 10];
        for _ in 0..1024 {
            if std::io::Write::write_all(&mut f, &chunk).is_err() {
                return;
            }
        }
        panic!("{} never filled up", self.0.display());
    }

    fn read_only(&self) {
        let mut c = std::process::Command::new("mount");
        c.args(["-o", "remount,ro"]).arg(&self.0);
        let out = common::run_cmd(c, None);
        assert!(out.status.success(), "remount ro: {}", show(&out));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let mut c = std::process::Command::new("umount");
        c.arg("-l").arg(&self.0);
        let _ = common::run_cmd(c, None);
    }
}

/// Removing access and restoring a missing table must work when the state folder cannot
/// be written: `spoil` makes it so after two accounts were added.
fn state_folder_that_cannot_be_written(spoil: fn(&Tmpfs)) {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[22], &[]);
    let cfg = TempConfig::new();
    let state = Tmpfs::mount(cfg.state_dir());
    cfg.write("pbxwall.toml", "trusted = []\n");
    let ns = Some(topo.pbx_ns());
    for (name, addr) in [("joe", "192.0.2.10"), ("ann", "203.0.113.10")] {
        let out = cfg.run(ns, "add-ip", [name, addr, "--allow", "ssh"]);
        assert_exit(&out, 0, "add-ip");
    }
    spoil(&state);

    let out = cfg.run(ns, "del-acct", ["joe"]);
    assert_exit(&out, 3, "del-acct with a read-only state folder");
    assert!(stderr(&out).contains("failed"), "{}", show(&out));
    assert!(cfg.read("accounts/joe.toml").is_none());
    assert_probes(
        &topo,
        &[
            Probe::tcp("192.0.2.10", 22, false),
            Probe::tcp("203.0.113.10", 22, true),
        ],
    );
    // The boot file never admits a source the live ruleset no longer admits: it was
    // rewritten or removed, unless the folder is read-only (then the warning says so).
    let boot = std::fs::read_to_string(cfg.state_dir().join("last-applied.nft"));
    match boot {
        Ok(text) if text.contains("192.0.2.10") => assert!(
            stderr(&out).contains("still holds an older ruleset and could not be removed"),
            "{}",
            show(&out)
        ),
        _ => {}
    }

    common::nft_ok(topo.pbx_ns(), "flush ruleset\n");
    let out = cfg.run(ns, "ipchecker", [] as [&str; 0]);
    assert_exit(&out, 3, "ipchecker after a flush, read-only state folder");
    assert_probes(
        &topo,
        &[
            Probe::tcp("192.0.2.11", 22, false),
            Probe::tcp("203.0.113.10", 22, true),
        ],
    );
    common::nft_ok(topo.pbx_ns(), "flush ruleset\n");
    assert_exit(&cfg.run(ns, "restart", [] as [&str; 0]), 3, "restart");
    assert_probes(&topo, &[Probe::tcp("192.0.2.11", 22, false)]);
}

fn a_read_only_state_folder_never_blocks_removing_access_or_restoring_the_table() {
    state_folder_that_cannot_be_written(Tmpfs::read_only);
}

fn a_full_state_folder_never_blocks_removing_access_or_restoring_the_table() {
    state_folder_that_cannot_be_written(Tmpfs::fill);
}

fn the_audit_log_is_never_appended_through_a_symbolic_link() {
    let ns = common::Netns::new();
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", "trusted = []\n");
    std::fs::create_dir_all(cfg.state_dir()).unwrap();
    let target = cfg.root().join("elsewhere");
    std::fs::write(&target, "untouched\n").unwrap();
    std::os::unix::fs::symlink(&target, cfg.state_dir().join("audit.log")).unwrap();
    let out = cfg.run(
        Some(ns.name()),
        "add-ip",
        ["joe", "192.0.2.10", "--allow", "ssh"],
    );
    assert_exit(&out, 0, "add-ip with audit.log a symbolic link");
    assert!(
        stderr(&out).contains("could not write the audit log"),
        "{}",
        show(&out)
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched\n");
    let mode = |p: &str| {
        std::fs::metadata(cfg.root().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("config/accounts/joe.toml"), 0o640);
    assert_eq!(mode("state/last-applied.nft"), 0o600);
}

/// `pbxwall init EXTRA... --asterisk-dir DIR --sshd-config FILE` in the pbx namespace, with
/// `rtp_conf` (if any) as the Asterisk folder's rtp.conf and an sshd on port 22.
fn run_init(
    cfg: &TempConfig,
    topo: &Topology,
    extra: &[&str],
    rtp_conf: Option<&str>,
) -> std::process::Output {
    let ast = cfg.root().join("asterisk");
    std::fs::create_dir_all(&ast).unwrap();
    if let Some(text) = rtp_conf {
        std::fs::write(ast.join("rtp.conf"), text).unwrap();
    }
    let sshd = cfg.root().join("sshd_config");
    std::fs::write(&sshd, "Port 22\n").unwrap();
    let (ast, sshd) = (ast.display().to_string(), sshd.display().to_string());
    let mut args = vec!["init"];
    args.extend_from_slice(extra);
    args.extend(["--asterisk-dir", &ast, "--sshd-config", &sshd]);
    cfg.run(Some(topo.pbx_ns()), "pbxwall", args)
}

fn init_refuses_an_rtp_range_over_the_service_ports() {
    let topo = Topology::new();
    let cfg = TempConfig::new();
    let before = common::snapshot(cfg.config_dir());
    let rtp = "[general]\nrtpstart=1\nrtpend=65535\n";
    let out = run_init(&cfg, &topo, &[], Some(rtp));
    assert_exit(&out, 1, "init with rtpstart=1 rtpend=65535");
    let err = stderr(&out);
    assert!(err.contains("rtp.conf"), "{err}");
    assert!(err.contains("udp 5060-5061 of service sip-udp"), "{err}");
    assert_eq!(common::snapshot(cfg.config_dir()), before);
    let listed = ns_cmd(topo.pbx_ns(), "nft", &["list", "table", "inet", "pbxwall"]);
    assert!(!listed.status.success(), "nothing applied");
}

fn rtp_ports_over_a_service_port_are_refused() {
    let cfg = TempConfig::new();
    cfg.write(
        "pbxwall.toml",
        "trusted = []\n[rtp]\nports = \"5000-6000\"\n",
    );
    let out = cfg.run(None, "restart", ["--dry-run"]);
    assert_exit(&out, 1, "restart --dry-run with [rtp] ports over sip-udp");
    assert!(
        stderr(&out)
            .contains("invalid rtp ports 5000-6000: they cover udp 5060-5061 of service sip-udp"),
        "{}",
        show(&out)
    );
}

fn init_leaves_an_account_file_it_cannot_parse_alone() {
    let topo = Topology::new();
    let cfg = TempConfig::new();
    let admin = "addresses = [\"203.0.113.0/28\", \"198.51.100.0/28\", \"2001:db8::/48\"]\nservices = [\"ssh\"]\ncolour = \"blue\"\n";
    cfg.write("accounts/admin.toml", admin);
    let out = run_init(&cfg, &topo, &["--admin", "203.0.113.20"], None);
    assert_exit(&out, 1, "init over an unreadable admin.toml");
    assert!(stderr(&out).contains("admin.toml"), "{}", show(&out));
    assert_eq!(cfg.read("accounts/admin.toml").as_deref(), Some(admin));
}

fn account_files_others_could_write_are_not_applied() {
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", "trusted = []\n");
    cfg.write(
        "accounts/joe.toml",
        "addresses = [\"192.0.2.10\"]\nservices = [\"ssh\"]\n",
    );
    let eve = cfg.write(
        "accounts/eve.toml",
        "addresses = [\"0.0.0.0/0\"]\nservices = [\"all\"]\n",
    );
    std::os::unix::fs::chown(&eve, Some(65534), Some(65534)).unwrap();
    let out = cfg.run(None, "restart", ["--dry-run"]);
    assert_exit(&out, 3, "restart --dry-run with eve.toml owned by nobody");
    assert!(
        stderr(&out).contains("eve.toml: it is owned by uid 65534, not root"),
        "{}",
        show(&out)
    );
    assert!(stdout(&out).contains("192.0.2.10"), "{}", show(&out));
    assert!(!stdout(&out).contains("0.0.0.0/0"), "{}", show(&out));

    std::os::unix::fs::chown(&eve, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&eve, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = cfg.run(None, "restart", ["--dry-run"]);
    assert_exit(&out, 3, "restart --dry-run with a world-writable eve.toml");
    assert!(
        stderr(&out).contains("eve.toml: it is writable by group or others (mode 0666)"),
        "{}",
        show(&out)
    );
    std::fs::remove_file(&eve).unwrap();
    std::os::unix::fs::symlink(cfg.root().join("gone.toml"), &eve).unwrap();
    let out = cfg.run(None, "restart", ["--dry-run"]);
    assert_exit(&out, 3, "restart --dry-run with a dangling eve.toml");
    assert!(
        stderr(&out).contains("symbolic link to a file that does not exist"),
        "{}",
        show(&out)
    );

    let accounts = cfg.config_dir().join("accounts");
    std::fs::set_permissions(&accounts, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = cfg.run(None, "restart", ["--dry-run"]);
    assert_exit(
        &out,
        1,
        "restart --dry-run with a world-writable accounts folder",
    );
    assert!(
        stderr(&out).contains("writable by group or others"),
        "{}",
        show(&out)
    );
}

fn special_purpose_addresses_are_refused_with_a_hint() {
    let cfg = TempConfig::new();
    let before = common::snapshot(cfg.config_dir());
    for (addr, expect) in [
        (
            "::ffff:203.0.113.8",
            "invalid address \"::ffff:203.0.113.8\": not a unicast source address (IPv4-mapped IPv6); write it as 203.0.113.8",
        ),
        (
            "::ffff:0:0/96",
            "invalid address \"::ffff:0:0/96\": not a unicast source address (IPv4-mapped IPv6)",
        ),
        (
            "64:ff9b::/96",
            "invalid address \"64:ff9b::/96\": not a unicast source address (IPv4 embedded in IPv6)",
        ),
        ("127.0.0.1", "not a unicast source address (loopback)"),
        ("fe80::1", "not a unicast source address (link-local)"),
    ] {
        let out = cfg.run(
            None,
            "add-ip",
            ["x", addr, "--allow", "ssh", "--force", "--no-restart"],
        );
        assert_exit(&out, 2, addr);
        assert!(stderr(&out).contains(expect), "{addr}: {}", show(&out));
    }
    assert_eq!(common::snapshot(cfg.config_dir()), before);
}

fn cron_lines_cannot_be_injected_through_folder_names() {
    let cfg = TempConfig::new();
    let cron = cfg.root().join("cron.d");
    std::fs::create_dir_all(&cron).unwrap();
    let file = cron.join("pbxwall");
    let evil = format!(
        "{}/x\n* * * * * root touch /tmp/pbxwall-pwned",
        cfg.root().display()
    );
    let out = cfg.run(
        None,
        "ipchecker",
        [
            "--install-cron",
            "*/5 * * * *",
            "--cron-file",
            &file.display().to_string(),
            "--share-dir",
            &evil,
        ],
    );
    assert_exit(
        &out,
        1,
        "ipchecker --install-cron with a newline in --share-dir",
    );
    assert!(stderr(&out).contains("control character"), "{}", show(&out));
    assert!(!file.exists());
}

fn comments_and_names_from_files_cannot_draw_on_the_terminal() {
    let ns = common::Netns::new();
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", "trusted = []\n");
    let out = cfg.run(
        Some(ns.name()),
        "add-ip",
        [
            "joe",
            "192.0.2.10",
            "--allow",
            "ssh",
            "--comment",
            "x\n\u{1b}[2Ktable inet pbxwall: loaded, in sync",
        ],
    );
    assert_exit(&out, 0, "add-ip with escape sequences in the comment");
    let out = cfg.run(Some(ns.name()), "status", [] as [&str; 0]);
    let text = stdout(&out);
    assert!(!text.contains('\u{1b}'), "{text}");
    assert!(
        text.contains("joe: ssh (x\\n\\u{1b}[2Ktable inet pbxwall: loaded, in sync)"),
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("table inet pbxwall"))
            .count(),
        1,
        "{text}"
    );
}

fn init_cloud_takes_effect_on_the_shipped_settings_file() {
    let topo = Topology::new();
    let cfg = TempConfig::new();
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/pbxwall.toml");
    cfg.write("pbxwall.toml", &std::fs::read_to_string(shipped).unwrap());
    let out = run_init(&cfg, &topo, &["--cloud", "--admin", "203.0.113.20"], None);
    assert_exit(&out, 0, "init --cloud over the shipped settings file");
    let settings = cfg.read("pbxwall.toml").unwrap();
    assert!(settings.contains("trusted = []"), "{settings}");
    let listed = stdout(&ns_cmd(
        topo.pbx_ns(),
        "nft",
        &["list", "table", "inet", "pbxwall"],
    ));
    assert!(!listed.contains("192.168.0.0/16"), "{listed}");
    assert!(!listed.contains("10.0.0.0/8"), "{listed}");
}

fn dns_answers_are_screened_and_capped() {
    let topo = Topology::new();
    let dns = topo.start_dnsmasq();
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let name = "joe.dyn.example.test";
    // 24 + 2 A records still fit one UDP answer (the harness checks dnsmasq over UDP).
    let mut records: Vec<(&str, std::net::IpAddr)> = (1..=24)
        // Every third address: no two adjacent, so each stays a single element.
        .map(|i| (name, ip(&format!("198.51.100.{}", i * 3))))
        .collect();
    for special in [
        "127.0.0.1",
        "169.254.7.7",
        "::1",
        "fe80::7",
        "::ffff:203.0.113.9",
    ] {
        records.push((name, ip(special)));
    }
    dns.set_records(&records);
    let cfg = TempConfig::new();
    cfg.write(
        "pbxwall.toml",
        "trusted = []\n[resolver]\nnameservers = [\"192.0.2.53\"]\ntimeout_ms = 1000\nattempts = 2\n",
    );
    let out = cfg.run(
        Some(topo.pbx_ns()),
        "add-fqdn",
        ["joe", name, "--allow", "ssh"],
    );
    assert_exit(&out, 3, "add-fqdn of a name with 29 addresses");
    let err = stderr(&out);
    for special in [
        "127.0.0.1",
        "169.254.7.7",
        "::1",
        "fe80::7",
        "::ffff:203.0.113.9",
    ] {
        assert!(
            err.contains(&format!("ignored {special} from DNS")),
            "{special}: {err}"
        );
    }
    assert!(
        err.contains("answered 24 addresses, more than [resolver] max_addresses = 16"),
        "{err}"
    );
    let listed = stdout(&ns_cmd(
        topo.pbx_ns(),
        "nft",
        &["list", "table", "inet", "pbxwall"],
    ));
    let whitelisted = (1..=24)
        .filter(|i| listed.contains(&format!("198.51.100.{} ", i * 3)))
        .count();
    assert_eq!(whitelisted, 16, "{listed}");
    for special in ["127.0.0.1", "169.254.7.7", "fe80::7"] {
        assert!(!listed.contains(special), "{special}: {listed}");
    }
}

common::test_main! {
    Needs::ROOT => [
        a_base_chain_moved_to_another_hook_is_drift_and_repaired,
        a_read_only_state_folder_never_blocks_removing_access_or_restoring_the_table,
        a_full_state_folder_never_blocks_removing_access_or_restoring_the_table,
        the_audit_log_is_never_appended_through_a_symbolic_link,
        init_refuses_an_rtp_range_over_the_service_ports,
        init_leaves_an_account_file_it_cannot_parse_alone,
        account_files_others_could_write_are_not_applied,
        comments_and_names_from_files_cannot_draw_on_the_terminal,
        init_cloud_takes_effect_on_the_shipped_settings_file,
    ],
    Needs::root_and(&["dnsmasq"]) => [dns_answers_are_screened_and_capped],
    Needs::NOTHING => [
        rtp_ports_over_a_service_port_are_refused,
        special_purpose_addresses_are_refused_with_a_hint,
        cron_lines_cannot_be_injected_through_folder_names,
    ],
}
