//! Fleets: several PBX namespaces pull a bundle signed with the real `minisign` from an HTTP
//! server in a namespace of its own (tests/fleet_server.py: ETag, Last-Modified, 304, and
//! modes that cut a download short or never answer), and admit its accounts (probes from
//! each PBX's client namespace). A new serial adds and removes accounts everywhere; a PBX
//! that was offline catches up; a tampered bundle, a signature by another key, a replayed
//! older serial, the same serial with other content, a bad account, a truncated download
//! and a server that is down or does not answer are refused with exit 3 and change nothing
//! (the live table and the stored bundle are compared before and after). Two keys are
//! accepted during a key rotation.
//!
//! ```text
//!  PBX i  vp0 203.0.113.(202+4i)/30  <--- veth --->  vs{i} 203.0.113.(201+4i)/30  server ns
//!  (each PBX also has the client namespace of its Topology, as in the other tests)
//! ```

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    Needs, Netns, Probe, Servers, TempConfig, Topology, assert_exit, assert_probes, run_ok, show,
    stdout, tool_path,
};

const PORT: u16 = 8080;
const BUNDLE: &str = "accounts.bundle";
/// Proxy variables a developer's shell may have: the test server is reached directly.
const PROXY_ENV: [&str; 6] = [
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "all_proxy",
];

fn ip(args: &[&str]) {
    let mut c = Command::new(tool_path("ip"));
    c.args(args);
    run_ok(c, None);
}

// ---------------------------------------------------------------------------------------
// minisign

/// Two key pairs made by `minisign -G -W` (no password) in a temp folder.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        for k in ["a", "b"] {
            let mut c = Command::new(tool_path("minisign"));
            c.arg("-G").arg("-W").arg("-f");
            c.arg("-p").arg(dir.path().join(format!("{k}.pub")));
            c.arg("-s").arg(dir.path().join(format!("{k}.key")));
            run_ok(c, None);
        }
        Keys { dir }
    }

    /// The base64 line of key `k`'s public key.
    fn public(&self, k: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{k}.pub"))).unwrap();
        text.lines().last().unwrap().trim().to_owned()
    }

    /// `minisign -S -s k.key -m file`: writes file.minisig.
    fn sign(&self, k: &str, file: &Path) {
        let mut c = Command::new(tool_path("minisign"));
        c.arg("-S")
            .arg("-s")
            .arg(self.dir.path().join(format!("{k}.key")))
            .arg("-m")
            .arg(file);
        run_ok(c, None);
    }
}

// ---------------------------------------------------------------------------------------
// The HTTP server

/// tests/fleet_server.py in a namespace, serving a temp folder; stopped by PID on drop.
struct HttpServer {
    child: Child,
    www: tempfile::TempDir,
    log: PathBuf,
}

impl HttpServer {
    fn start(ns: &str, addr: &str) -> HttpServer {
        HttpServer::start_tls(ns, addr, None)
    }

    /// With `tls` (certificate and key PEM files), HTTPS.
    fn start_tls(ns: &str, addr: &str, tls: Option<(&Path, &Path)>) -> HttpServer {
        let www = tempfile::tempdir().unwrap();
        let log = www.path().join(".log");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fleet_server.py");
        let mut cmd = Command::new(tool_path("ip"));
        cmd.args(["netns", "exec", ns])
            .arg(tool_path("python3"))
            .arg(script)
            .arg(www.path())
            .arg(addr)
            .arg(PORT.to_string())
            .arg(&log);
        if let Some((cert, key)) = tls {
            cmd.arg(cert).arg(key);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("start fleet_server.py");
        let s = HttpServer { child, www, log };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !s.requests().iter().any(|l| l == "ready") {
            assert!(Instant::now() < deadline, "fleet_server.py did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.www.path().join(name)
    }

    /// Switches a mode (`.truncate`, `.hang`) on or off.
    fn mode(&self, marker: &str, on: bool) {
        let p = self.path(marker);
        if on {
            std::fs::write(p, "").unwrap();
        } else {
            let _ = std::fs::remove_file(p);
        }
    }

    fn stop(&mut self) {
        common::stop_child(&mut self.child, Duration::from_secs(2));
        if common::wait_bounded(&mut self.child, Duration::from_secs(1)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Bundles

/// Writes accounts (name, address, services) into a fresh source folder, runs
/// `pbxwall bundle create` into `out` with `serial`, and signs it with key `k`.
fn publish(
    cfg: &TempConfig,
    keys: &Keys,
    k: &str,
    accounts: &[(&str, &str, &str)],
    serial: u64,
    out: &Path,
) {
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("accounts")).unwrap();
    for (name, addr, services) in accounts {
        std::fs::write(
            src.path().join(format!("accounts/{name}.toml")),
            format!("addresses = [\"{addr}\"]\nservices = [\"{services}\"]\ncomment = \"fleet\"\n"),
        )
        .unwrap();
    }
    let args: Vec<std::ffi::OsString> = vec![
        "bundle".into(),
        "create".into(),
        src.path().into(),
        "-o".into(),
        out.into(),
        "--serial".into(),
        serial.to_string().into(),
    ];
    let o = cfg.run(None, "pbxwall", args);
    assert_exit(&o, 0, "bundle create");
    keys.sign(k, out);
}

// ---------------------------------------------------------------------------------------
// PBXes

/// One PBX: its topology (pbx + client namespace), listeners on tcp 22 and udp 5060, its
/// own configuration pointing at the server through its link vp0.
struct Pbx {
    // Field order is drop order: the listeners go before their namespace.
    _servers: Servers,
    topo: Topology,
    cfg: TempConfig,
}

impl Pbx {
    fn new(i: u8, server_ns: &str, keys: &[String]) -> Pbx {
        let topo = Topology::new();
        let servers = Servers::start(&topo, &[22], &[5060]);
        let pbx_ns = topo.pbx_ns().to_owned();
        let (srv, me) = (201 + 4 * i, 202 + 4 * i);
        let vs = format!("vs{i}");
        ip(&[
            "-n", server_ns, "link", "add", &vs, "type", "veth", "peer", "name", "vp0", "netns",
            &pbx_ns,
        ]);
        ip(&[
            "-n",
            server_ns,
            "addr",
            "add",
            &format!("203.0.113.{srv}/30"),
            "dev",
            &vs,
        ]);
        ip(&["-n", server_ns, "link", "set", &vs, "up"]);
        ip(&[
            "-n",
            &pbx_ns,
            "addr",
            "add",
            &format!("203.0.113.{me}/30"),
            "dev",
            "vp0",
        ]);
        ip(&["-n", &pbx_ns, "link", "set", "vp0", "up"]);
        wait_up(&pbx_ns, "vp0");
        let cfg = TempConfig::new();
        let pbx = Pbx {
            _servers: servers,
            topo,
            cfg,
        };
        pbx.settings(&format!("http://203.0.113.{srv}:{PORT}/{BUNDLE}"), keys, "");
        pbx
    }

    /// Writes pbxwall.toml: [sync] with `url`, the keys (the second as next_public_key), a
    /// 3 s timeout and `extra` lines.
    fn settings(&self, url: &str, keys: &[String], extra: &str) {
        let mut settings = format!(
            "[sync]\nurl = \"{url}\"\npublic_key = \"{}\"\ntimeout = \"3s\"\n{extra}",
            keys[0]
        );
        if let Some(next) = keys.get(1) {
            settings.push_str(&format!("next_public_key = \"{next}\"\n"));
        }
        self.cfg.write("pbxwall.toml", &settings);
    }

    fn ns(&self) -> &str {
        self.topo.pbx_ns()
    }

    fn pbxwall(&self, args: &[&str]) -> Output {
        let mut cmd = self
            .cfg
            .command(Some(self.ns()), &common::bin("pbxwall"), args);
        for v in PROXY_ENV {
            cmd.env_remove(v);
        }
        common::run_with_timeout(cmd, None, common::RUN_TIMEOUT).unwrap()
    }

    fn sync(&self) -> Output {
        self.pbxwall(&["sync"])
    }

    /// The live table (without counter values) and the stored bundle: what a refused sync
    /// must leave as it was.
    fn fingerprint(&self) -> (String, Option<String>) {
        let out = common::ns_cmd(
            self.ns(),
            "nft",
            &["-s", "list", "table", "inet", "pbxwall"],
        );
        (stdout(&out), self.cfg.read("fleet/bundle.json"))
    }

    fn set_link(&self, up: bool) {
        ip(&[
            "-n",
            self.ns(),
            "link",
            "set",
            "vp0",
            if up { "up" } else { "down" },
        ]);
        if up {
            wait_up(self.ns(), "vp0");
        }
    }
}

/// Waits (bounded) until `dev` in `ns` is operationally up.
fn wait_up(ns: &str, dev: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = common::ns_cmd(ns, "ip", &["-o", "link", "show", dev]);
        if stdout(&out).contains("state UP") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{dev} in {ns} not up:\n{}",
            show(&out)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[track_caller]
fn refused(p: &Pbx, why: &str) {
    let before = p.fingerprint();
    let out = p.sync();
    assert_exit(&out, 3, why);
    let err = common::stderr(&out);
    assert!(err.contains(why), "expected {why:?} in:\n{}", show(&out));
    assert!(
        err.contains("pbxwall: error:"),
        "one error line:\n{}",
        show(&out)
    );
    assert_eq!(p.fingerprint(), before, "a refused sync changed something");
}

/// Probes of serial 1: alice (198.51.100.10, ssh) and bob (203.0.113.10, sip-udp) are in,
/// carol (203.0.113.11) is not.
fn serial1_probes() -> Vec<Probe> {
    vec![
        Probe::tcp("198.51.100.10", 22, true),
        Probe::udp("203.0.113.10", 5060, true),
        Probe::tcp("203.0.113.11", 22, false),
        Probe::udp("192.0.2.10", 5060, false),
    ]
}

/// Probes of serial 2: alice removed, carol (203.0.113.11, ssh) added, bob kept.
fn serial2_probes() -> Vec<Probe> {
    vec![
        Probe::tcp("198.51.100.10", 22, false),
        Probe::udp("203.0.113.10", 5060, true),
        Probe::tcp("203.0.113.11", 22, true),
    ]
}

const SERIAL1: &[(&str, &str, &str)] = &[
    ("alice", "198.51.100.10", "ssh"),
    ("bob", "203.0.113.10", "sip-udp"),
];
const SERIAL2: &[(&str, &str, &str)] = &[
    ("bob", "203.0.113.10", "sip-udp"),
    ("carol", "203.0.113.11", "ssh"),
];

fn pbxes_pull_signed_bundles() {
    let keys = Keys::new();
    let tool_cfg = TempConfig::new();
    let server_ns = Netns::new();
    let a = keys.public("a");
    let b = keys.public("b");
    let pbxes: Vec<Pbx> = (0..3)
        .map(|i| Pbx::new(i, server_ns.name(), std::slice::from_ref(&a)))
        .collect();
    let mut server = HttpServer::start(server_ns.name(), "0.0.0.0");
    let bundle = server.path(BUNDLE);
    let sig = server.path(&format!("{BUNDLE}.minisig"));

    // Serial 1 reaches every PBX.
    publish(&tool_cfg, &keys, "a", SERIAL1, 1, &bundle);
    let serial1 = (
        std::fs::read(&bundle).unwrap(),
        std::fs::read(&sig).unwrap(),
    );
    for p in &pbxes {
        let out = p.sync();
        assert_exit(&out, 0, "first sync");
        assert!(
            stdout(&out).contains("fleet bundle serial 1 from http://")
                && stdout(&out).contains("added alice, bob"),
            "{}",
            show(&out)
        );
        assert_probes(&p.topo, &serial1_probes());
    }

    // The same bundle again: a conditional request, answered 304, no download.
    let seen = server.requests().len();
    let out = pbxes[0].sync();
    assert_exit(&out, 0, "sync of an unchanged bundle");
    assert!(
        stdout(&out).contains("bundle unchanged (serial 1)"),
        "{}",
        show(&out)
    );
    assert_eq!(
        server.requests()[seen..],
        [format!("GET /{BUNDLE} 304")],
        "an unchanged bundle costs no download"
    );

    // Serial 2 while PBX 2 is offline: the others apply it, PBX 2 keeps serial 1 (exit 3).
    pbxes[2].set_link(false);
    publish(&tool_cfg, &keys, "a", SERIAL2, 2, &bundle);
    for p in &pbxes[..2] {
        let out = p.sync();
        assert_exit(&out, 0, "sync of serial 2");
        assert!(
            stdout(&out).contains("serial 2")
                && stdout(&out).contains("added carol; removed alice"),
            "{}",
            show(&out)
        );
        assert_probes(&p.topo, &serial2_probes());
    }
    refused(&pbxes[2], "cannot fetch http://");
    assert_probes(&pbxes[2].topo, &serial1_probes());
    pbxes[2].set_link(true);
    let out = pbxes[2].sync();
    assert_exit(&out, 0, "the offline PBX catches up");
    assert!(stdout(&out).contains("(was serial 1)"), "{}", show(&out));
    assert_probes(&pbxes[2].topo, &serial2_probes());

    let p = &pbxes[0];
    let serial2 = (
        std::fs::read(&bundle).unwrap(),
        std::fs::read(&sig).unwrap(),
    );
    let put = |files: &(Vec<u8>, Vec<u8>)| {
        std::fs::write(&bundle, &files.0).unwrap();
        std::fs::write(&sig, &files.1).unwrap();
    };

    // A tampered bundle: one address changed after signing.
    let tampered = String::from_utf8(serial2.0.clone())
        .unwrap()
        .replace("203.0.113.11", "203.0.113.12");
    std::fs::write(&bundle, tampered).unwrap();
    refused(p, "bad signature");

    // A good bundle signed by another key.
    publish(&tool_cfg, &keys, "b", SERIAL2, 3, &bundle);
    refused(p, "not signed by key");

    // A replayed older serial, with its genuine signature.
    put(&serial1);
    refused(p, "refusing serial 1: it is below serial 2");

    // The same serial with other content.
    publish(&tool_cfg, &keys, "a", SERIAL1, 2, &bundle);
    refused(p, "serial 2 was applied already with other content");

    // A signed bundle with an account restart would refuse (loopback).
    let evil = pbxwall::fleet::Bundle::new(
        3,
        "2026-12-03T08:00:00Z".into(),
        vec![(
            "accounts/evil.toml".into(),
            "addresses = [\"127.0.0.1\"]\nservices = [\"all\"]\n".into(),
        )],
    );
    std::fs::write(&bundle, evil.to_text()).unwrap();
    keys.sign("a", &bundle);
    refused(p, "invalid bundle");

    // A download cut short (the whole Content-Length announced, half sent).
    publish(&tool_cfg, &keys, "a", SERIAL2, 3, &bundle);
    server.mode(".truncate", true);
    refused(p, "the download was cut short");
    server.mode(".truncate", false);

    // A server that accepts the connection but never answers: the [sync] timeout (3 s).
    server.mode(".hang", true);
    let started = Instant::now();
    refused(p, "cannot fetch http://");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the timeout holds"
    );
    server.mode(".hang", false);

    // status names the last failure; the audit log carries the serials.
    let out = p.pbxwall(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("status json");
    assert_eq!(v["fleet"]["serial"], 2, "{v}");
    assert_eq!(v["fleet"]["last_outcome"], "failed", "{v}");
    assert!(
        v["fleet"]["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot fetch"),
        "{v}"
    );
    let carol = v["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "carol")
        .expect("carol in status");
    assert_eq!(carol["origin"], "fleet");
    let audit = std::fs::read_to_string(p.cfg.state_dir().join("audit.log")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("applied table inet pbxwall: 2 accounts")
                && l.contains("[fleet serial 2]")),
        "{audit}"
    );
    assert!(audit.contains("refused"), "{audit}");

    // Key rotation: with both keys configured, a bundle signed by the new key is applied.
    let rotated = Pbx::new(3, server_ns.name(), &[a.clone(), b.clone()]);
    publish(&tool_cfg, &keys, "b", SERIAL2, 4, &bundle);
    let out = rotated.sync();
    assert_exit(&out, 0, "a bundle signed by the next key during a rotation");
    assert_probes(&rotated.topo, &serial2_probes());
    // ... and one PBX that only knows the old key refuses it.
    refused(p, "not signed by key");

    // The server down: connection refused.
    server.stop();
    refused(p, "cannot fetch http://");
}

/// openssl: a CA and a server certificate it signs for `ip` (in `dir`): (ca.pem, cert, key).
fn tls_files(dir: &Path, tag: &str, ip: &str) -> (PathBuf, PathBuf, PathBuf) {
    let f = |n: &str| dir.join(format!("{tag}-{n}"));
    let openssl = |args: &[&str]| {
        let mut c = Command::new(tool_path("openssl"));
        c.args(args).current_dir(dir);
        run_ok(c, None);
    };
    let ext = f("ext.cnf");
    std::fs::write(
        &ext,
        format!(
            "subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    let (ca, ca_key, key, csr, cert) = (
        f("ca.pem"),
        f("ca.key"),
        f("key.pem"),
        f("csr.pem"),
        f("cert.pem"),
    );
    let s = |p: &PathBuf| p.display().to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &s(&ca_key),
        "-out",
        &s(&ca),
        "-days",
        "2",
        "-subj",
        &format!("/CN=pbxwall test CA {tag}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &s(&key),
        "-out",
        &s(&csr),
        "-subj",
        &format!("/CN={ip}"),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-CA",
        &s(&ca),
        "-CAkey",
        &s(&ca_key),
        "-CAcreateserial",
        "-out",
        &s(&cert),
        "-days",
        "2",
        "-extfile",
        &s(&ext),
    ]);
    (ca, cert, key)
}

/// https: with `[sync] ca_file` only that CA is trusted; a certificate of another CA, and
/// the test CA under the system's store, are refused (exit 3, nothing changed).
fn https_with_a_pinned_ca() {
    let keys = Keys::new();
    let tool_cfg = TempConfig::new();
    let server_ns = Netns::new();
    let a = keys.public("a");
    let pbx = Pbx::new(0, server_ns.name(), std::slice::from_ref(&a));
    let tls = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(tls.path(), "one", "203.0.113.201");
    let (other_ca, _, _) = tls_files(tls.path(), "two", "203.0.113.201");
    let server = HttpServer::start_tls(server_ns.name(), "0.0.0.0", Some((&cert, &key)));
    let url = format!("https://203.0.113.201:{PORT}/{BUNDLE}");
    publish(&tool_cfg, &keys, "a", SERIAL1, 1, &server.path(BUNDLE));

    // The system's CA store does not know the test CA.
    pbx.settings(&url, std::slice::from_ref(&a), "");
    refused(&pbx, "UnknownIssuer");
    // Another CA pinned: refused.
    pbx.settings(
        &url,
        std::slice::from_ref(&a),
        &format!("ca_file = \"{}\"\n", other_ca.display()),
    );
    refused(&pbx, "UnknownIssuer");
    // The right CA pinned: applied.
    pbx.settings(
        &url,
        std::slice::from_ref(&a),
        &format!("ca_file = \"{}\"\n", ca.display()),
    );
    let out = pbx.sync();
    assert_exit(&out, 0, "sync over https with the pinned CA");
    assert!(
        stdout(&out).contains("fleet bundle serial 1 from https://"),
        "{}",
        show(&out)
    );
    assert_probes(&pbx.topo, &serial1_probes());
    // Unchanged: a 304 over https too.
    let out = pbx.sync();
    assert_exit(&out, 0, "second sync");
    assert_eq!(
        server.requests().last().unwrap(),
        &format!("GET /{BUNDLE} 304")
    );
}

/// file:// source: a local account with the name of a fleet account wins (with a warning);
/// del-acct refuses a fleet account and says where to change it; the bundle's
/// providers.toml is the list enable-trusted-providers offers.
fn local_account_wins_and_del_acct_refuses_fleet_accounts() {
    let keys = Keys::new();
    let ns = Netns::new();
    let cfg = TempConfig::new();
    let www = tempfile::tempdir().unwrap();
    let bundle = www.path().join(BUNDLE);
    // A provider list of the fleet's own: one entry of the shipped list.
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/providers.toml")).unwrap();
    let first = shipped.find("\n[[provider]]\n").unwrap() + 1;
    let second = shipped[first + 1..]
        .find("\n[[provider]]\n")
        .map_or(shipped.len(), |i| i + first + 2);
    let one = &shipped[first..second];
    let id = one
        .lines()
        .find_map(|l| l.strip_prefix("id = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let mut files: Vec<(String, String)> = SERIAL1
        .iter()
        .map(|(n, a, s)| {
            (
                format!("accounts/{n}.toml"),
                format!("addresses = [\"{a}\"]\nservices = [\"{s}\"]\n"),
            )
        })
        .collect();
    files.push(("providers.toml".into(), one.to_owned()));
    let b = pbxwall::fleet::Bundle::new(5, "2026-12-03T08:00:00Z".into(), files);
    std::fs::write(&bundle, b.to_text()).unwrap();
    keys.sign("a", &bundle);
    cfg.write(
        "pbxwall.toml",
        &format!(
            "[sync]\nurl = \"file://{}\"\npublic_key = \"{}\"\n",
            bundle.display(),
            keys.public("a")
        ),
    );
    cfg.write(
        "accounts/bob.toml",
        "addresses = [\"192.0.2.99\"]\nservices = [\"sip-udp\"]\n",
    );
    let out = cfg.run(Some(ns.name()), "pbxwall", ["sync"]);
    assert_exit(&out, 0, "sync from file://");
    let err = common::stderr(&out);
    assert!(
        err.contains("account bob: the local file")
            && err.contains("not the fleet bundle's (serial 5)"),
        "{}",
        show(&out)
    );
    let table = stdout(&common::ns_cmd(
        ns.name(),
        "nft",
        &["list", "table", "inet", "pbxwall"],
    ));
    assert!(
        table.contains("192.0.2.99") && !table.contains("203.0.113.10"),
        "{table}"
    );
    assert!(table.contains("198.51.100.10"), "{table}");

    // status --prometheus: the serial in force and the last sync, valid for promtool.
    let out = cfg.run(Some(ns.name()), "pbxwall", ["status", "--prometheus"]);
    assert_exit(&out, 0, "status --prometheus");
    let metrics = stdout(&out);
    assert!(
        metrics.contains("\npbxwall_fleet_serial 5\n")
            && metrics.contains("\npbxwall_fleet_last_sync_outcome{outcome=\"ok\"} 1\n"),
        "{metrics}"
    );
    if let Some(promtool) = common::tool("promtool") {
        let mut c = Command::new(promtool);
        c.args(["check", "metrics"]);
        let checked = common::run_cmd(c, Some(metrics.as_bytes()));
        assert!(
            checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
            "promtool: {}",
            show(&checked)
        );
    }

    let out = cfg.run(
        None,
        "pbxwall",
        ["enable-trusted-providers", "--list", "--json"],
    );
    assert_exit(&out, 0, "enable-trusted-providers --list");
    let listed = stdout(&out);
    assert!(
        listed.contains("fleet/bundle.json/providers.toml")
            && listed.contains(&format!("\"{id}\"")),
        "{listed}"
    );

    let out = cfg.run(Some(ns.name()), "pbxwall", ["del-acct", "alice"]);
    assert_exit(&out, 1, "del-acct of a fleet account");
    let err = common::stderr(&out);
    assert!(
        err.contains("account alice comes from the fleet bundle (serial 5, file://")
            && err.contains("pbxwall bundle create"),
        "{}",
        show(&out)
    );
    // Nor edited in place: the next sync would put it back.
    for args in [
        &["add-ip", "alice", "192.0.2.98", "--append"][..],
        &["del-acct", "alice", "--address", "198.51.100.10"][..],
    ] {
        let out = cfg.run(Some(ns.name()), "pbxwall", args);
        assert_exit(&out, 1, "editing a fleet account in place");
        assert!(
            common::stderr(&out)
                .contains("account alice comes from the fleet bundle (serial 5), not from ")
                && common::stderr(&out)
                    .contains("change accounts/alice.toml in the bundle's folder"),
            "{args:?}: {}",
            show(&out)
        );
    }
    // Removing the local bob brings the fleet's bob into force.
    let out = cfg.run(Some(ns.name()), "pbxwall", ["del-acct", "bob"]);
    assert_exit(
        &out,
        0,
        "del-acct of a local account overriding a fleet one",
    );
    assert!(
        common::stderr(&out).contains("the bundle's account bob is in force"),
        "{}",
        show(&out)
    );
    let table = stdout(&common::ns_cmd(
        ns.name(),
        "nft",
        &["list", "table", "inet", "pbxwall"],
    ));
    assert!(
        table.contains("203.0.113.10") && !table.contains("192.0.2.99"),
        "{table}"
    );
    // --json: the report of every command, with sync's lines.
    let out = cfg.run(Some(ns.name()), "pbxwall", ["sync", "--json"]);
    assert_exit(&out, 0, "sync --json of the same bundle");
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["command"], "sync", "{v}");
    assert!(
        v["messages"][0]
            .as_str()
            .unwrap()
            .contains("bundle unchanged (serial 5)"),
        "{v}"
    );

    // A bundle larger than [sync] max_bytes is refused (exit 3), the last one stays.
    cfg.write(
        "pbxwall.toml",
        &format!(
            "[sync]\nurl = \"file://{}\"\npublic_key = \"{}\"\nmax_bytes = 1024\n",
            bundle.display(),
            keys.public("a")
        ),
    );
    let many: Vec<(String, String, String)> = (0..20)
        .map(|i| {
            (
                format!("user{i}"),
                format!("203.0.113.{}", 100 + i),
                "ssh".to_owned(),
            )
        })
        .collect();
    let many: Vec<(&str, &str, &str)> = many
        .iter()
        .map(|(n, a, s)| (n.as_str(), a.as_str(), s.as_str()))
        .collect();
    publish(&cfg, &keys, "a", &many, 6, &bundle);
    let before = cfg.read("fleet/bundle.json");
    let out = cfg.run(Some(ns.name()), "pbxwall", ["sync", "--json"]);
    assert_exit(&out, 3, "a bundle over max_bytes");
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("larger than 1024 bytes ([sync] max_bytes)"),
        "{v}"
    );
    assert_eq!(cfg.read("fleet/bundle.json"), before);

    // The SSH lockout guard: a bundle that removes this SSH session's client (alice) is
    // refused (exit 3, nothing changed) unless --force.
    cfg.write(
        "pbxwall.toml",
        &format!(
            "[sync]\nurl = \"file://{}\"\npublic_key = \"{}\"\n",
            bundle.display(),
            keys.public("a")
        ),
    );
    publish(&cfg, &keys, "a", SERIAL2, 7, &bundle);
    let ssh = [("SSH_CONNECTION", "198.51.100.10 50000 192.0.2.1 22")];
    let out = cfg.run_env(Some(ns.name()), "pbxwall", ["sync"], &ssh);
    assert_exit(&out, 3, "sync that would lock out the SSH client");
    assert!(
        common::stderr(&out).contains("refusing to apply: your SSH client 198.51.100.10"),
        "{}",
        show(&out)
    );
    assert_eq!(cfg.read("fleet/bundle.json"), before);
    let out = cfg.run_env(Some(ns.name()), "pbxwall", ["sync", "--force"], &ssh);
    assert_exit(&out, 0, "sync --force");
    assert!(stdout(&out).contains("removed alice"), "{}", show(&out));
}

/// bundle create checks every account as restart would, and writes nothing when one is bad;
/// sync without [sync] url says what to set.
fn bundle_create_checks_accounts() {
    let cfg = TempConfig::new();
    let src = tempfile::tempdir().unwrap();
    let acc = src.path().join("accounts");
    std::fs::create_dir(&acc).unwrap();
    std::fs::write(
        acc.join("ok.toml"),
        "addresses = [\"203.0.113.7\"]\nservices = [1]\n",
    )
    .unwrap();
    std::fs::write(
        acc.join("bad.toml"),
        "addresses = [\"203.0.113.7\"]\nservices = [\"nope\"]\n",
    )
    .unwrap();
    let out_file = src.path().join("b.json");
    let args = |extra: &[&str]| {
        let mut v = vec![
            "bundle".to_owned(),
            "create".into(),
            src.path().display().to_string(),
            "-o".into(),
            out_file.display().to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let out = cfg.run(None, "pbxwall", args(&[]));
    assert_exit(&out, 1, "a bad account");
    assert!(
        common::stderr(&out).contains("bad.toml:2"),
        "{}",
        show(&out)
    );
    assert!(!out_file.exists());
    std::fs::remove_file(acc.join("bad.toml")).unwrap();
    let out = cfg.run(None, "pbxwall", args(&["--serial", "0"]));
    assert_exit(&out, 2, "serial 0");
    let out = cfg.run(None, "pbxwall", args(&[]));
    assert_exit(&out, 0, "bundle create");
    let b = pbxwall::fleet::Bundle::parse(&std::fs::read(&out_file).unwrap()).unwrap();
    assert!(b.serial > 1_700_000_000, "default serial: the time");
    assert_eq!(b.files.len(), 1);
    // Made again at once: the serial still goes up.
    let out = cfg.run(None, "pbxwall", args(&[]));
    assert_exit(&out, 0, "bundle create again");
    let again = pbxwall::fleet::Bundle::parse(&std::fs::read(&out_file).unwrap()).unwrap();
    assert!(again.serial > b.serial);

    let out = cfg.run(None, "pbxwall", ["sync"]);
    assert_exit(&out, 1, "sync without [sync] url");
    assert!(
        common::stderr(&out).contains("no [sync] url in"),
        "{}",
        show(&out)
    );

    // --install-cron, as ipchecker's: the first line is the marker purge looks for.
    let cron = src.path().join("pbxwall-sync");
    let cron_arg = cron.display().to_string();
    let out = cfg.run(
        None,
        "pbxwall",
        [
            "sync",
            "--install-cron",
            "*/15 * * * *",
            "--cron-file",
            &cron_arg,
        ],
    );
    assert_exit(&out, 0, "sync --install-cron");
    let text = std::fs::read_to_string(&cron).unwrap();
    assert!(
        text.starts_with("# pbxwall: pull the signed fleet bundle and apply it.\n"),
        "{text}"
    );
    assert!(
        text.contains("\n*/15 * * * * root ") && text.contains(" sync"),
        "{text}"
    );
    let out = cfg.run(
        None,
        "pbxwall",
        ["sync", "--remove-cron", "--cron-file", &cron_arg],
    );
    assert_exit(&out, 0, "sync --remove-cron");
    assert!(!cron.exists());
}

common::test_main! {
    Needs::NOTHING => [bundle_create_checks_accounts],
    Needs::root_and(&["minisign", "python3"]) => [pbxes_pull_signed_bundles],
    Needs::root_and(&["minisign", "python3", "openssl"]) => [https_with_a_pinned_ca],
    Needs::root_and(&["minisign"]) => [local_account_wins_and_del_acct_refuses_fleet_accounts],
}
