//! `pbxwall init`: detected ports, this server's and the admin's addresses, nothing else
//! beyond the trusted ranges; a second run changes nothing.

mod common;

use common::{Needs, Probe, Servers, TempConfig, Topology, assert_probes, show, stdout};

/// A fake host configuration: sshd on 2222, PJSIP UDP on 5070, RTP 12000-12100.
fn host_files(cfg: &TempConfig) -> (String, String) {
    let ssh = cfg.root().join("ssh");
    let ast = cfg.root().join("asterisk");
    std::fs::create_dir_all(&ssh).unwrap();
    std::fs::create_dir_all(&ast).unwrap();
    std::fs::write(ssh.join("sshd_config"), "Port 2222\n").unwrap();
    std::fs::write(
        ast.join("pjsip.transports.conf"),
        "[0.0.0.0-udp]\ntype=transport\nprotocol=udp\nbind=0.0.0.0:5070\n",
    )
    .unwrap();
    std::fs::write(
        ast.join("rtp.conf"),
        "[general]\nrtpstart=12000\nrtpend=12100\n",
    )
    .unwrap();
    (
        ssh.join("sshd_config").display().to_string(),
        ast.display().to_string(),
    )
}

fn init_whitelists_server_and_admin_with_detected_ports() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[22, 2222], &[5060, 5070, 12050]);
    let cfg = TempConfig::new();
    let (sshd, ast) = host_files(&cfg);
    let args = [
        "init",
        "--admin",
        "203.0.113.10",
        "--sshd-config",
        &sshd,
        "--asterisk-dir",
        &ast,
    ];
    let ssh = [("SSH_CONNECTION", "198.51.100.10 50000 192.0.2.1 2222")];
    let out = cfg.run_env(Some(topo.pbx_ns()), "pbxwall", args, &ssh);
    common::assert_exit(&out, 0, "pbxwall init");
    let settings = cfg.read("pbxwall.toml").unwrap();
    assert!(settings.contains("\"192.168.0.0/16\""), "{settings}");
    assert!(settings.contains("ports = \"12000-12100\""), "{settings}");
    assert!(
        cfg.read("profiles/ssh.toml")
            .unwrap()
            .contains("ports = [\"tcp/2222\"]")
    );
    assert!(
        cfg.read("profiles/sip-udp.toml")
            .unwrap()
            .contains("ports = [\"udp/5070\"]")
    );
    let admin = cfg.read("accounts/admin.toml").unwrap();
    assert!(
        admin.contains("addresses = [\"203.0.113.10\", \"198.51.100.10\"]"),
        "{admin}"
    );
    assert!(
        admin.contains("services = [\"web\", \"webmin\", \"ssh\"]"),
        "{admin}"
    );
    let own = cfg.read("accounts/pbx-self.toml").unwrap();
    assert!(
        own.contains("\"192.0.2.1\"") && own.contains("\"2001:db8::1\""),
        "{own}"
    );
    assert!(own.contains("services = [\"all\"]"), "{own}");
    assert_probes(
        &topo,
        &[
            Probe::tcp("203.0.113.10", 2222, true),
            Probe::tcp("198.51.100.10", 2222, true),
            Probe::tcp("203.0.113.10", 22, false),
            Probe::tcp("192.0.2.11", 2222, false),
            Probe::udp("192.0.2.11", 5070, false),
            Probe::udp("203.0.113.10", 5070, false),
            Probe::udp("192.0.2.11", 12050, true),
            Probe::tcp("2001:db8::11", 2222, false),
        ],
    );

    // Again: nothing changes.
    let before = common::snapshot(cfg.config_dir());
    let out = cfg.run_env(Some(topo.pbx_ns()), "pbxwall", args, &ssh);
    common::assert_exit(&out, 0, "second pbxwall init");
    assert!(stdout(&out).contains("nothing to change"), "{}", show(&out));
    assert_eq!(common::snapshot(cfg.config_dir()), before);
    // ... and applies nothing while the table is in sync; once it is gone, applies and says why.
    assert!(!stdout(&out).contains("applied table"), "{}", show(&out));
    let gone = common::ns_cmd(
        topo.pbx_ns(),
        "nft",
        &["delete", "table", "inet", "pbxwall"],
    );
    assert!(gone.status.success(), "{}", show(&gone));
    let out = cfg.run_env(Some(topo.pbx_ns()), "pbxwall", args, &ssh);
    common::assert_exit(&out, 0, "third pbxwall init");
    let text = stdout(&out);
    assert!(
        text.contains("nothing to change in the files, but table inet pbxwall is not loaded: applying them\napplied table inet pbxwall"),
        "{}",
        show(&out)
    );
}

fn init_cloud_trusts_nothing_and_refuses_bad_admin() {
    let cfg = TempConfig::new();
    let (sshd, ast) = host_files(&cfg);
    let base = [
        "init",
        "--cloud",
        "--no-restart",
        "--sshd-config",
        &sshd,
        "--asterisk-dir",
        &ast,
    ];
    let mut bad = base.to_vec();
    bad.extend(["--admin", "203.0.113.300"]);
    let out = cfg.run(None, "pbxwall", &bad);
    common::assert_exit(&out, 2, "bad --admin");
    assert!(
        common::stderr(&out).contains("invalid address \"203.0.113.300\""),
        "{}",
        show(&out)
    );
    assert!(cfg.read("pbxwall.toml").is_none(), "nothing written");

    let out = cfg.run(None, "pbxwall", base);
    common::assert_exit(&out, 0, "init --cloud");
    assert!(cfg.read("pbxwall.toml").unwrap().contains("trusted = []"));
    assert!(
        common::stderr(&out).contains("--cloud: no private range is trusted"),
        "{}",
        show(&out)
    );
    let dry = cfg.run(None, "restart", ["--dry-run"]);
    common::assert_exit(&dry, 0, "dry-run after init");
    assert!(!stdout(&dry).contains("192.168.0.0/16"), "{}", show(&dry));
}

/// Init says what it did not find, profiles it writes name the detected ports (not the
/// shipped ones), and a second run with nothing to change says so and does nothing else.
fn init_says_what_it_did_not_find_and_what_it_detected() {
    let cfg = TempConfig::new();
    let missing_ssh = cfg.root().join("no-ssh/sshd_config");
    let missing_ast = cfg.root().join("no-asterisk");
    let args = [
        "init",
        "--no-restart",
        "--sshd-config",
        missing_ssh.to_str().unwrap(),
        "--asterisk-dir",
        missing_ast.to_str().unwrap(),
    ];
    let out = cfg.run(None, "pbxwall", args);
    common::assert_exit(&out, 0, "init with nothing to read");
    let text = stdout(&out);
    for want in [
        format!(
            "not found: {} (no sshd configuration): the ssh profile keeps its shipped port; give --sshd-config PATH if sshd is configured elsewhere\n",
            missing_ssh.display()
        ),
        format!(
            "not found: {} (no Asterisk configuration folder): the SIP, IAX2 and RTP ports stay the shipped ones; give --asterisk-dir DIR if Asterisk is configured elsewhere\n",
            missing_ast.display()
        ),
        "not found: an SSH client (no SSH_CONNECTION) and no --admin: no admin account written; give --admin ADDR for the addresses you administer from\n".to_owned(),
    ] {
        assert!(text.contains(&want), "{want:?} not in:\n{}", show(&out));
    }
    assert!(cfg.read("accounts/admin.toml").is_none());

    let cfg = TempConfig::new();
    let (sshd, ast) = host_files(&cfg);
    let args = [
        "init",
        "--no-restart",
        "--sshd-config",
        &sshd,
        "--asterisk-dir",
        &ast,
        "--admin",
        "203.0.113.10",
    ];
    let out = cfg.run(None, "pbxwall", args);
    common::assert_exit(&out, 0, "init");
    assert!(!stdout(&out).contains("not found"), "{}", show(&out));
    let ssh = cfg.read("profiles/ssh.toml").unwrap();
    assert!(
        ssh.contains("description = \"Secure shell (ports detected on this host: 2222)\""),
        "{ssh}"
    );
    let sip = cfg.read("profiles/sip-udp.toml").unwrap();
    assert!(
        sip.contains(
            "description = \"SIP signalling over UDP (ports detected on this host: 5070)\""
        ),
        "{sip}"
    );
    let before = common::snapshot(cfg.config_dir());
    let out = cfg.run(None, "pbxwall", args);
    common::assert_exit(&out, 0, "second init");
    assert_eq!(common::snapshot(cfg.config_dir()), before);
    let text = stdout(&out);
    assert!(
        text.ends_with("nothing to change: pbxwall is set up\n") && !text.contains("saved"),
        "{}",
        show(&out)
    );
}

common::test_main! {
    Needs::NOTHING => [
        init_cloud_trusts_nothing_and_refuses_bad_admin,
        init_says_what_it_did_not_find_and_what_it_detected,
    ],
    Needs::ROOT => [init_whitelists_server_and_admin_with_detected_ports],
}
