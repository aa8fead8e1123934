//! The SIP layer with real packets: TM3's obscure-domain trick (`[sip] register_domains`),
//! responsive mode (`[sip] open`) and the guard (`[guard]`), in the kernel.
//!
//! Exact-payload probes over UDP and TCP for the boundary cases (the domain followed by
//! ` `, `:5060`, `;transport=`, `>`; a longer name sharing the prefix; OPTIONS; lowercase
//! method), then SIPp (`sipp`) in the client namespace registering against SIPp as a
//! registrar in the pbx namespace, with the secret domain and with a wrong one, and
//! flooding until the guard bans it in the kernel.
//!
//! Every test makes its own namespaces and temporary folders and removes them (SIPp
//! processes are stopped by PID) at the end, failures included.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Needs, Servers, TempConfig, Topology, show, stdout};

const DOMAIN: &str = "xq356jq.dyndns.example";
const WAIT: Duration = Duration::from_millis(800);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Setup {
    topo: Topology,
    cfg: TempConfig,
}

impl Setup {
    /// Topology, the account joe (192.0.2.10, sip-udp and sip-tcp), no trusted network,
    /// and `settings` appended to `pbxwall.toml`; applied.
    fn new(settings: &str) -> Setup {
        let topo = Topology::new();
        let cfg = TempConfig::new();
        cfg.write("pbxwall.toml", &format!("trusted = []\n{settings}"));
        cfg.write(
            "accounts/joe.toml",
            "addresses = [\"192.0.2.10\"]\nservices = [\"sip-udp\", \"sip-tcp\"]\n",
        );
        let s = Setup { topo, cfg };
        s.ok(&["restart"]);
        s
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> std::process::Output {
        let out = self.cfg.run(Some(self.topo.pbx_ns()), "pbxwall", args);
        common::assert_exit(&out, 0, &format!("pbxwall {args:?}"));
        out
    }

    fn pbx(&self, src: &str, port: u16) -> SocketAddr {
        SocketAddr::new(self.topo.pbx_addr_for(ip(src)), port)
    }

    /// Sends `payload` over UDP from `src` (a fresh port) to port 5060: whether the echo
    /// came back.
    fn udp(&self, src: &str, payload: &str) -> bool {
        let dst = self.pbx(src, 5060);
        let src = ip(src);
        let payload = payload.as_bytes().to_vec();
        self.topo.in_client(move || {
            let s = UdpSocket::bind((src, 0)).unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            s.send_to(&payload, dst).unwrap();
            let mut buf = [0u8; 2048];
            matches!(s.recv_from(&mut buf), Ok((n, _)) if buf[..n] == payload[..])
        })
    }

    /// Connects over TCP from `src` to port 5060 and sends `payload`: whether the server's
    /// greeting arrived (it is sent once the connection is established on its side).
    fn tcp(&self, src: &str, payload: &str) -> bool {
        let dst = self.pbx(src, 5060);
        let src = ip(src);
        let payload = payload.as_bytes().to_vec();
        self.topo.in_client(move || {
            let sock = socket2::Socket::new(
                socket2::Domain::for_address(dst),
                socket2::Type::STREAM,
                None,
            )
            .unwrap();
            sock.bind(&SocketAddr::new(src, 0).into()).unwrap();
            if sock.connect_timeout(&dst.into(), WAIT).is_err() {
                return false;
            }
            let mut t: TcpStream = sock.into();
            t.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            if t.write_all(&payload).is_err() {
                return false;
            }
            let mut hello = [0u8; 6];
            t.read_exact(&mut hello).is_ok()
        })
    }

    /// `admitted --json`: the admitted addresses with their seconds left.
    fn admitted(&self) -> Vec<(String, u64)> {
        let out = self.ok(&["admitted", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
        v["admitted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["address"].as_str().unwrap().to_owned(),
                    a["expires_in_s"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// `bans --json`: (address, origin).
    fn bans(&self) -> Vec<(String, String)> {
        let out = self.ok(&["bans", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
        v["bans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["address"].as_str().unwrap().to_owned(),
                    b["origin"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

fn register(domain_and_rest: &str) -> String {
    format!("REGISTER sip:{domain_and_rest} SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.10:5070\r\n\r\n")
}

/// The boundary cases of the REGISTER match over UDP and TCP: only the secret name followed
/// by ` `, `:`, `;` or `>` admits, and then the source's other requests pass too; a
/// whitelisted account is not concerned; admissions survive restart.
fn register_domain_admits_exactly_the_secret_name() {
    let s = Setup::new(&format!(
        "[sip]\nregister_domains = [\"{DOMAIN}\"]\nadmit_for = \"10m\"\n[guard]\nlimit = \"600/minute\"\nburst = 100\n"
    ));
    let _servers = Servers::start(&s.topo, &[5060], &[5060]);
    let stranger = "203.0.113.10";
    let refused = [
        format!("OPTIONS sip:{DOMAIN} SIP/2.0\r\n\r\n"),
        register("wrong.dyndns.example"),
        register(&format!("{DOMAIN}x")),
        register(&format!("{DOMAIN}.evil.example")),
        format!("register sip:{DOMAIN} SIP/2.0\r\n\r\n"),
        format!("REGISTER sips:{DOMAIN} SIP/2.0\r\n\r\n"),
        format!("INVITE sip:100@{DOMAIN} SIP/2.0\r\n\r\n"),
        format!("REGISTER sip:{}", &DOMAIN[..10]),
    ];
    for p in &refused {
        assert!(!s.udp(stranger, p), "udp {p:?} must be dropped");
    }
    assert!(!s.tcp(stranger, &refused[1]), "tcp wrong domain");
    assert!(s.admitted().is_empty());
    // Whitelisted: not concerned by the layer.
    assert!(s.udp("192.0.2.10", &refused[0]));

    assert!(s.udp(stranger, &register(&format!("{DOMAIN}:5060"))));
    // Admitted: its other requests pass now.
    assert!(s.udp(stranger, &refused[0]), "admitted source's OPTIONS");
    let adm = s.admitted();
    assert_eq!(adm.len(), 1, "{adm:?}");
    assert_eq!(adm[0].0, stranger);
    assert!(adm[0].1 <= 600 && adm[0].1 > 590, "{adm:?}");

    for (src, rest) in [
        ("203.0.113.11", format!("{DOMAIN};transport=udp")),
        ("198.51.100.10", DOMAIN.to_string()),
        ("2001:db8::10", format!("{DOMAIN}>")),
    ] {
        assert!(s.udp(src, &register(&rest)), "{src} {rest}");
    }
    // TCP: the handshake passes, the REGISTER data admits.
    assert!(s.tcp("198.51.100.11", &register(DOMAIN)), "tcp REGISTER");
    let mut addrs: Vec<String> = s.admitted().into_iter().map(|a| a.0).collect();
    addrs.sort();
    assert_eq!(
        addrs,
        [
            "198.51.100.10",
            "198.51.100.11",
            "2001:db8::10",
            "203.0.113.10",
            "203.0.113.11"
        ]
    );
    // Kernel state: a restart and a deleted table keep the admissions.
    s.ok(&["restart"]);
    assert_eq!(s.admitted().len(), 5);
    common::nft_ok(s.topo.pbx_ns(), "delete table inet pbxwall");
    s.ok(&["restart"]);
    assert_eq!(s.admitted().len(), 5);
    assert!(
        s.udp(stranger, &refused[0]),
        "still admitted after a new table"
    );
    // nft lists the SIP layer as the renderer prints it, and the boot file loads with
    // nft -f (simulated reboot: table deleted, boot file, restart).
    let listed = common::ns_cmd(
        s.topo.pbx_ns(),
        "nft",
        &["list", "table", "inet", "pbxwall"],
    );
    let boot = s.cfg.state_dir().join("last-applied.nft");
    let rendered = std::fs::read_to_string(&boot).unwrap();
    // Compared without element lists: the dynamic sets hold live elements now.
    let bare = |text: &str| {
        pbxwall::nft::render::normalize(text)
            .lines()
            .filter(|l| !l.starts_with("elements = "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        bare(&stdout(&listed)),
        bare(&rendered),
        "nft lists what was rendered"
    );
    common::nft_ok(s.topo.pbx_ns(), "delete table inet pbxwall");
    let out = common::ns_cmd(s.topo.pbx_ns(), "nft", &["-f", boot.to_str().unwrap()]);
    assert!(out.status.success(), "boot file: {}", show(&out));
    assert!(
        !s.udp(stranger, &refused[0]),
        "the boot file holds no admissions"
    );
    s.ok(&["restart"]);
    assert_eq!(s.admitted().len(), 5, "restored after the simulated reboot");
    // status sees no drift and shows the layer.
    let out = s.ok(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["sip"]["register_domains"][0], DOMAIN, "{v}");
    assert_eq!(v["sip"]["admitted"], 5, "{v}");
}

/// The guard: a stranger flooding (from one socket, so all but the first packet are an
/// established flow) is banned in the kernel for ban_for and dropped; a whitelisted
/// account flooding the same way is never metered. Responsive mode lets strangers in.
fn guard_bans_a_flooding_stranger_in_open_mode() {
    let s = Setup::new(
        "[sip]\nopen = true\n[guard]\nlimit = \"10/minute\"\nburst = 5\nban_for = \"30s\"\n",
    );
    let _servers = Servers::start(&s.topo, &[5060], &[5060]);
    assert!(
        s.udp("203.0.113.10", "OPTIONS sip:x SIP/2.0\r\n\r\n"),
        "open: a stranger's SIP passes"
    );
    let flood = |src: &str, n: usize| {
        let dst = s.pbx(src, 5060);
        let src = ip(src);
        s.topo.in_client(move || {
            let sock = UdpSocket::bind((src, 0)).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut answered = 0;
            let mut buf = [0u8; 256];
            for i in 0..n {
                sock.send_to(format!("REGISTER sip:{i} SIP/2.0\r\n\r\n").as_bytes(), dst)
                    .unwrap();
                if sock.recv_from(&mut buf).is_ok() {
                    answered += 1;
                }
            }
            answered
        })
    };
    let answered = flood("203.0.113.11", 30);
    assert!(
        (5..=8).contains(&answered),
        "the burst passes, then nothing: {answered} answered"
    );
    let bans = s.bans();
    assert_eq!(
        bans,
        [("203.0.113.11".to_string(), "guard".to_string())],
        "banned by the kernel, origin guard"
    );
    assert!(!s.udp("203.0.113.11", "OPTIONS sip:x SIP/2.0\r\n\r\n"));
    assert_eq!(
        flood("192.0.2.10", 40),
        40,
        "a whitelisted account is not metered"
    );
    assert!(s.udp("203.0.113.10", "OPTIONS sip:x SIP/2.0\r\n\r\n"));
    assert_eq!(s.bans().len(), 1);
}

/// The SIP layer's settings are checked: one line naming file, line and what is valid;
/// exit 1, nothing changed.
fn bad_settings_are_refused() {
    let s = Setup::new("");
    let before = common::ns_cmd(s.topo.pbx_ns(), "nft", &["list", "ruleset"]);
    for (text, want) in [
        (
            "[sip]\nregister_domains = [\"bad domain\"]\n",
            "register_domains",
        ),
        (
            "[sip]\nregister_domains = [\"192.0.2.1\"]\n",
            "register_domains",
        ),
        ("[sip]\nadmit_for = \"1x\"\n", "admit_for"),
        ("[sip]\nopen = \"yes\"\n", "expected a boolean"),
        ("[guard]\nlimit = \"10/fortnight\"\n", "invalid rate"),
        ("[guard]\nlimit = \"0/minute\"\n", "invalid rate"),
        ("[guard]\nburst = 0\n", "burst"),
        ("[guard]\nban_for = \"400d\"\n", "ban_for"),
        ("[guard]\nlimits = \"10/minute\"\n", "limits"),
    ] {
        s.cfg
            .write("pbxwall.toml", &format!("trusted = []\n{text}"));
        let out = s.cfg.run(Some(s.topo.pbx_ns()), "pbxwall", ["restart"]);
        common::assert_exit(&out, 1, text);
        let err = common::stderr(&out);
        assert!(
            err.contains(want) && err.contains("pbxwall.toml"),
            "{text}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{text}: one line: {err}");
    }
    let after = common::ns_cmd(s.topo.pbx_ns(), "nft", &["list", "ruleset"]);
    assert_eq!(stdout(&before), stdout(&after), "nothing changed");
}

// ---------------------------------------------------------------------------------------
// SIPp

const UAS: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="registrar">
  <recv request="REGISTER"/>
  <send>
    <![CDATA[

SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port]>
Expires: 3600
Content-Length: 0

    ]]>
  </send>
</scenario>
"#;

fn uac(domain: &str, expect_answer: bool) -> String {
    let recv = if expect_answer {
        r#"<recv response="200" timeout="3000"/>"#
    } else {
        ""
    };
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register">
  <send>
    <![CDATA[

REGISTER sip:{domain} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:100@{domain}>;tag=[pid]SIPpTag00[call_number]
To: <sip:100@{domain}>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: <sip:100@[local_ip]:[local_port]>
Max-Forwards: 70
Expires: 3600
Content-Length: 0

    ]]>
  </send>
  {recv}
</scenario>
"#
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

fn sipp_cmd(ns: &str, args: &[&str]) -> Command {
    let mut c = common::ns_command(ns, "sipp", args);
    c.stdin(Stdio::null());
    c
}

/// SIPp registers with the secret domain and gets its 200 OK (admitted); with a wrong
/// domain it gets no answer; flooding REGISTERs with the wrong domain gets it banned by
/// the guard (origin guard in `pbxwall bans`).
fn sipp_registers_with_the_secret_domain_and_a_flood_is_banned() {
    let s = Setup::new(&format!(
        "[sip]\nregister_domains = [\"{DOMAIN}\"]\n[guard]\nlimit = \"60/minute\"\nburst = 20\nban_for = \"1h\"\n"
    ));
    let dir = tempfile::tempdir().unwrap();
    let pbx = s.pbx("203.0.113.10", 5060);
    let uas = write(dir.path(), "uas.xml", UAS);
    let child = sipp_cmd(
        s.topo.pbx_ns(),
        &[
            "-sf",
            &uas,
            "-i",
            &pbx.ip().to_string(),
            "-p",
            "5060",
            "-nostdin",
            "-bg",
        ],
    );
    // -bg forks: the parent prints the PID of the background SIPp and exits.
    let out = common::run_cmd(child, None);
    let pid: i32 = stdout(&out)
        .split_whitespace()
        .rev()
        .find_map(|w| w.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .unwrap_or_else(|| panic!("sipp -bg printed no PID: {}", show(&out)));
    let _uas = KillOnDrop(pid);
    std::thread::sleep(Duration::from_millis(300));

    let run_uac = |src: &str, port: &str, scenario: &str, extra: &[&str]| {
        let mut args = vec![
            "-sf",
            scenario,
            "-i",
            src,
            "-p",
            port,
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "6s",
            "-timeout_error",
        ];
        args.extend_from_slice(extra);
        let target = pbx.to_string();
        args.push(&target);
        let cmd = sipp_cmd(s.topo.client_ns(), &args);
        common::run_with_timeout(cmd, None, Duration::from_secs(30)).unwrap()
    };
    let good = write(dir.path(), "good.xml", &uac(DOMAIN, true));
    let wrong = write(dir.path(), "wrong.xml", &uac("pbx.dyndns.example", true));
    let out = run_uac("203.0.113.10", "5070", &good, &[]);
    assert!(out.status.success(), "secret domain: {}", show(&out));
    assert!(
        s.admitted().iter().any(|a| a.0 == "203.0.113.10"),
        "admitted by SIPp's REGISTER"
    );
    let out = run_uac("203.0.113.11", "5071", &wrong, &[]);
    assert!(!out.status.success(), "wrong domain must get no answer");
    assert!(!s.admitted().iter().any(|a| a.0 == "203.0.113.11"));

    // Flood: 200 REGISTERs at 400/s from one socket, no answers expected.
    let flood = write(dir.path(), "flood.xml", &uac("pbx.dyndns.example", false));
    let started = Instant::now();
    let out = run_uac("198.51.100.11", "5072", &flood, &["-m", "200", "-r", "400"]);
    let _ = out;
    let bans = s.bans();
    assert!(
        bans.contains(&("198.51.100.11".to_string(), "guard".to_string())),
        "the flood is banned by the guard within {:?}: {bans:?}",
        started.elapsed()
    );
    // The admitted phone registers again, undisturbed.
    let out = run_uac("203.0.113.10", "5073", &good, &[]);
    assert!(out.status.success(), "re-REGISTER: {}", show(&out));
}

/// Kills a background process by PID on drop.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID SIPp printed for its own background process.
        unsafe { libc::kill(self.0, libc::SIGTERM) };
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: as above; it is gone or ignoring SIGTERM.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

common::test_main! {
    Needs::ROOT => [
        register_domain_admits_exactly_the_secret_name,
        guard_bans_a_flooding_stranger_in_open_mode,
        bad_settings_are_refused,
    ],
    Needs::root_and(&["sipp"]) => [
        sipp_registers_with_the_secret_domain_and_a_flood_is_banned,
    ],
}
