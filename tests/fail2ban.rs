//! The shipped fail2ban action (`packaging/fail2ban/action.d/pbxwall.conf`) with the real
//! fail2ban: a fail2ban-server started in the pbx namespace with its own configuration
//! folder, socket and pid file, the stock `asterisk` filter (Debian's, copied from
//! /etc/fail2ban/filter.d) reading a log file into which the test writes real Asterisk
//! security-log failure lines. The source is banned in the kernel within seconds (origin
//! fail2ban in `pbxwall bans`), its packets dropped; `fail2ban-client ... unbanip` and the
//! end of bantime let it in again.
//!
//! Every process started is stopped by PID, the namespaces removed, failures included.

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Needs, Servers, TempConfig, Topology, show, stdout};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fail2ban-server in a namespace; stopped (fail2ban-client stop, then SIGTERM by PID)
/// when dropped.
struct Fail2ban {
    child: Child,
    ns: String,
    conf: PathBuf,
    sock: PathBuf,
}

impl Fail2ban {
    fn client(&self, args: &[&str]) -> std::process::Output {
        let conf = self.conf.to_str().unwrap();
        let sock = self.sock.to_str().unwrap();
        let mut all = vec!["-c", conf, "-s", sock];
        all.extend_from_slice(args);
        let cmd = common::ns_command(&self.ns, "fail2ban-client", &all);
        common::run_with_timeout(cmd, None, Duration::from_secs(30)).unwrap()
    }
}

impl Drop for Fail2ban {
    fn drop(&mut self) {
        let _ = self.client(&["stop"]);
        common::stop_child(&mut self.child, Duration::from_secs(5));
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Asterisk's failure lines for `src` at the current local time: the security log's
/// `InvalidPassword` event, chan_pjsip's failed REGISTER, chan_sip's wrong password.
fn asterisk_failures(src: &str) -> String {
    let now = chrono::Local::now();
    let t = now.format("%Y-%m-%d %H:%M:%S");
    let tv = now.format("%Y-%m-%dT%H:%M:%S%.6f%z");
    format!(
        "[{t}] SECURITY[2461] res_security_log.c: SecurityEvent=\"InvalidPassword\",EventTV=\"{tv}\",Severity=\"Error\",Service=\"PJSIP\",EventVersion=\"2\",AccountID=\"100\",SessionID=\"3b6c1a2f-1\",LocalAddress=\"IPV4/UDP/192.0.2.1/5060\",RemoteAddress=\"IPV4/UDP/{src}/5060\",Challenge=\"1a2b3c4d\",ReceivedChallenge=\"1a2b3c4d\",ReceivedHash=\"5f4dcc3b5aa765d61d8327deb882cf99\"\n\
         [{t}] NOTICE[2461] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '<sip:100@192.0.2.1>' failed for '{src}:5060' (callid: 8f1e2d3c4b5a) - Failed to authenticate\n\
         [{t}] NOTICE[2461] chan_sip.c: Registration from '\"100\" <sip:100@192.0.2.1>' failed for '{src}:5060' - Wrong password\n"
    )
}

/// The asterisk jail with the shipped action bans a source in the kernel from its log
/// lines; unbanip and the end of bantime let it in again.
fn fail2ban_bans_through_pbxwall() {
    let topo = Topology::new();
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", "trusted = []\n");
    cfg.write(
        "accounts/phones.toml",
        "addresses = [\"203.0.113.0/24\"]\nservices = [\"sip-udp\"]\n",
    );
    let out = cfg.run(Some(topo.pbx_ns()), "pbxwall", ["restart"]);
    common::assert_exit(&out, 0, "restart");
    let _servers = Servers::start(&topo, &[], &[5060]);
    let reaches = |src: &str| {
        let dst = SocketAddr::new(topo.pbx_addr_for(ip(src)), 5060);
        common::udp_probe(&topo, ip(src), dst, Duration::from_millis(800))
    };
    assert!(reaches("203.0.113.10"));

    // fail2ban's own folder: fail2ban.conf, jail.conf, the stock filters, the shipped action.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    copy_dir(Path::new("/etc/fail2ban/filter.d"), &conf.join("filter.d"));
    std::fs::create_dir_all(conf.join("action.d")).unwrap();
    let pbxwall = format!(
        "{} --config-dir {} --state-dir {}",
        common::bin("pbxwall").display(),
        cfg.config_dir().display(),
        cfg.state_dir().display()
    );
    let action =
        std::fs::read_to_string(root().join("packaging/fail2ban/action.d/pbxwall.conf")).unwrap();
    assert!(action.contains("pbxwall = /usr/sbin/pbxwall"));
    std::fs::write(conf.join("action.d/pbxwall.conf"), &action).unwrap();
    let sock = dir.path().join("f2b.sock");
    let log = dir.path().join("security.log");
    std::fs::write(&log, "").unwrap();
    std::fs::write(
        conf.join("fail2ban.conf"),
        format!(
            "[Definition]\nloglevel = INFO\nlogtarget = {}\nsocket = {}\npidfile = {}\ndbfile = :memory:\n",
            dir.path().join("fail2ban.log").display(),
            sock.display(),
            dir.path().join("f2b.pid").display()
        ),
    )
    .unwrap();
    std::fs::write(
        conf.join("jail.conf"),
        format!(
            "[DEFAULT]\nbackend = polling\nbanaction = pbxwall\n\n\
             [asterisk]\nenabled = true\nfilter = asterisk\n\
             action = pbxwall[pbxwall=\"{pbxwall}\"]\n\
             logpath = {}\nmaxretry = 3\nfindtime = 10m\nbantime = 8\n",
            log.display()
        ),
    )
    .unwrap();
    let child = common::ns_command(
        topo.pbx_ns(),
        "fail2ban-server",
        &[
            "-f",
            "-x",
            "-c",
            conf.to_str().unwrap(),
            "-s",
            sock.to_str().unwrap(),
            "-p",
            dir.path().join("f2b.pid").to_str().unwrap(),
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("start fail2ban-server");
    let f2b = Fail2ban {
        child,
        ns: topo.pbx_ns().to_owned(),
        conf: conf.clone(),
        sock,
    };
    let ready = Instant::now() + Duration::from_secs(30);
    loop {
        let out = f2b.client(&["status", "asterisk"]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < ready,
            "fail2ban did not start: {}\n{}",
            show(&out),
            std::fs::read_to_string(dir.path().join("fail2ban.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    let bans = || {
        let out = cfg.run(Some(topo.pbx_ns()), "pbxwall", ["bans", "--json"]);
        common::assert_exit(&out, 0, "bans");
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        v["bans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["address"].as_str().unwrap().to_owned(),
                    b["origin"].as_str().unwrap().to_owned(),
                    b["comment"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    let append = |text: &str| {
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    let wait_until = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(25);
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "{what}; fail2ban log:\n{}",
                std::fs::read_to_string(dir.path().join("fail2ban.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };

    // Three failures from 203.0.113.10: banned in the kernel, although its range is an
    // account (a ban beats an account).
    let written = Instant::now();
    append(&asterisk_failures("203.0.113.10"));
    wait_until("203.0.113.10 banned", &|| !bans().is_empty());
    let took = written.elapsed();
    assert_eq!(
        bans(),
        [(
            "203.0.113.10".to_string(),
            "fail2ban".to_string(),
            "f2b:asterisk".to_string()
        )]
    );
    assert!(took < Duration::from_secs(10), "banned after {took:?}");
    assert!(!reaches("203.0.113.10"), "banned: dropped");
    assert!(reaches("203.0.113.11"), "others untouched");

    // fail2ban's unban goes through pbxwall unban.
    let out = f2b.client(&["set", "asterisk", "unbanip", "203.0.113.10"]);
    assert!(out.status.success(), "{}", show(&out));
    wait_until("203.0.113.10 unbanned", &|| bans().is_empty());
    assert!(reaches("203.0.113.10"));
    let audit = std::fs::read_to_string(cfg.state_dir().join("audit.log")).unwrap_or_default();
    assert!(audit.contains("unbanned 203.0.113.10"), "{audit}");

    // At bantime (8 s) the ban ends by itself.
    append(&asterisk_failures("203.0.113.11"));
    wait_until("203.0.113.11 banned", &|| {
        bans().iter().any(|b| b.0 == "203.0.113.11")
    });
    let banned = Instant::now();
    assert!(!reaches("203.0.113.11"));
    wait_until("203.0.113.11 unbanned at bantime", &|| bans().is_empty());
    assert!(
        banned.elapsed() >= Duration::from_secs(5),
        "not before bantime"
    );
    assert!(reaches("203.0.113.11"));
    drop(f2b);
}

/// The shipped jail example names the action and the stock filters, and fail2ban accepts
/// it with the action (`fail2ban-client -t`).
fn the_jail_example_is_valid() {
    let text =
        std::fs::read_to_string(root().join("packaging/fail2ban/jail.d/pbxwall.conf.example"))
            .unwrap();
    for want in [
        "banaction = pbxwall",
        "[asterisk]",
        "[sshd]",
        "enabled  = true",
    ] {
        assert!(text.contains(want), "{want}");
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path();
    copy_dir(Path::new("/etc/fail2ban"), conf);
    copy_dir(Path::new("/etc/fail2ban/filter.d"), &conf.join("filter.d"));
    copy_dir(Path::new("/etc/fail2ban/action.d"), &conf.join("action.d"));
    std::fs::create_dir_all(conf.join("jail.d")).unwrap();
    std::fs::copy(
        root().join("packaging/fail2ban/action.d/pbxwall.conf"),
        conf.join("action.d/pbxwall.conf"),
    )
    .unwrap();
    // The logs the example names must exist for the test; point them into the temp dir.
    let log = dir.path().join("asterisk.log");
    std::fs::write(&log, "").unwrap();
    let auth = dir.path().join("auth.log");
    std::fs::write(&auth, "").unwrap();
    let local = text
        .replace(
            "logpath  = /var/log/asterisk/security\n           /var/log/asterisk/messages",
            &format!("logpath  = {}", log.display()),
        )
        .replace(
            "[sshd]\n",
            &format!("[sshd]\nbackend = polling\nlogpath = {}\n", auth.display()),
        );
    std::fs::write(conf.join("jail.d/pbxwall.local"), local).unwrap();
    let out = common::run_with_timeout(
        {
            let mut c = std::process::Command::new("fail2ban-client");
            c.args(["-c", conf.to_str().unwrap(), "-d"]);
            c
        },
        None,
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let dump = stdout(&out);
    assert!(
        dump.contains("'asterisk'") && dump.contains("pbxwall ban --quiet --for"),
        "{dump}"
    );
}

common::test_main! {
    Needs::root_and(&["fail2ban-server", "fail2ban-client"]) => [
        fail2ban_bans_through_pbxwall,
    ],
    Needs::tools(&["fail2ban-client"]) => [
        the_jail_example_is_valid,
    ],
}
