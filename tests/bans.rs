//! `pbxwall ban`, `unban`, `bans` with real packets: a ban beats an account and ends the
//! running flows of the source, runs out by itself in the kernel, is refused for trusted
//! networks, pbx-self and the SSH client without `--force`, takes addresses from stdin,
//! survives a deleted table; bad input is one line, exit 2, nothing changed.
//!
//! Every test makes its own namespaces (pbx and client) and removes them at the end.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::process::Output;
use std::time::{Duration, Instant};

use common::{Needs, Servers, TempConfig, Topology, show, stdout};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const WAIT: Duration = Duration::from_secs(1);

/// A configuration trusting 198.51.100.0/24, with the account joe (192.0.2.10 and
/// 2001:db8::10, every service) and pbx-self (203.0.113.10).
fn config() -> TempConfig {
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", "trusted = [\"198.51.100.0/24\"]\n");
    cfg.write(
        "accounts/joe.toml",
        "addresses = [\"192.0.2.10\", \"192.0.2.11\", \"2001:db8::10\"]\nservices = [\"all\"]\n",
    );
    cfg.write(
        "accounts/pbx-self.toml",
        "addresses = [\"203.0.113.10\"]\nservices = [\"all\"]\n",
    );
    cfg
}

struct Setup {
    topo: Topology,
    cfg: TempConfig,
    _servers: Servers,
}

impl Setup {
    fn new() -> Setup {
        let topo = Topology::new();
        let cfg = config();
        let servers = Servers::start(&topo, &[22], &[5060]);
        let s = Setup {
            topo,
            cfg,
            _servers: servers,
        };
        s.ok(&["restart"]);
        s
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cfg.run(Some(self.topo.pbx_ns()), "pbxwall", args)
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.cfg
            .run_env(Some(self.topo.pbx_ns()), "pbxwall", args, env)
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        common::assert_exit(&out, 0, &format!("pbxwall {args:?}"));
        out
    }

    fn with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let cmd = self
            .cfg
            .command(Some(self.topo.pbx_ns()), &common::bin("pbxwall"), args);
        common::run_with_timeout(cmd, Some(input), common::RUN_TIMEOUT).unwrap()
    }

    fn tcp(&self, src: &str) -> bool {
        let dst = SocketAddr::new(self.topo.pbx_addr_for(ip(src)), 22);
        common::tcp_probe(&self.topo, ip(src), dst, WAIT)
    }

    fn udp(&self, src: &str) -> bool {
        let dst = SocketAddr::new(self.topo.pbx_addr_for(ip(src)), 5060);
        common::udp_probe(&self.topo, ip(src), dst, WAIT)
    }

    /// `bans --json` as (address, origin, comment, seconds left).
    fn bans(&self) -> Vec<(String, String, Option<String>, Option<u64>)> {
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
                    b["comment"].as_str().map(str::to_owned),
                    b["expires_in_s"].as_u64(),
                )
            })
            .collect()
    }
}

/// A UDP "keepalive" flow and a TCP connection of 192.0.2.10, both working; after the ban
/// both are dead, every new probe too, v4 and v6, while 192.0.2.11 of the same account is
/// untouched; the ban runs out by itself in the kernel.
fn a_ban_beats_the_account_ends_its_flows_and_runs_out() {
    let s = Setup::new();
    let pbx = s.topo.pbx_v4();
    let (udp, mut tcp) = s.topo.in_client(|| {
        let u = UdpSocket::bind((ip("192.0.2.10"), 0)).unwrap();
        u.set_read_timeout(Some(WAIT)).unwrap();
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&SocketAddr::new(ip("192.0.2.10"), 0).into())
            .unwrap();
        sock.connect_timeout(&SocketAddr::new(pbx, 22).into(), WAIT)
            .unwrap();
        let t: TcpStream = sock.into();
        t.set_read_timeout(Some(WAIT)).unwrap();
        (u, t)
    });
    let echo = |u: &UdpSocket| {
        let _ = u.send_to(b"ping", (pbx, 5060));
        let mut buf = [0u8; 16];
        u.recv_from(&mut buf).is_ok()
    };
    assert!(echo(&udp), "the keepalive works before the ban");
    let mut hello = [0u8; 6];
    tcp.read_exact(&mut hello).unwrap();
    assert!(s.tcp("2001:db8::10"));

    let out = s.ok(&[
        "ban",
        "192.0.2.10",
        "2001:db8::10",
        "--for",
        "10s",
        "--comment",
        "brute force",
    ]);
    let text = stdout(&out);
    assert!(
        text.contains("banned 192.0.2.10, 2001:db8::10 for 10s (manual: brute force)"),
        "{text}"
    );
    assert!(
        text.contains("ended"),
        "the running flows were ended: {text}"
    );
    let banned_at = Instant::now();
    assert!(!echo(&udp), "the established UDP flow is dead");
    let tcp_dead = tcp.write_all(b"x").is_err() || {
        let mut b = [0u8; 1];
        !matches!(tcp.read(&mut b), Ok(n) if n > 0)
    };
    assert!(tcp_dead, "the TCP connection is dead");
    assert!(!s.tcp("192.0.2.10") && !s.udp("192.0.2.10"));
    assert!(!s.tcp("2001:db8::10"));
    assert!(
        s.tcp("192.0.2.11") && s.udp("192.0.2.11"),
        "others untouched"
    );

    let bans = s.bans();
    assert_eq!(bans.len(), 2, "{bans:?}");
    for (addr, origin, comment, left) in &bans {
        assert!(addr == "192.0.2.10" || addr == "2001:db8::10");
        assert_eq!(origin, "manual");
        assert_eq!(comment.as_deref(), Some("brute force"));
        assert!(left.unwrap() <= 10);
    }
    let text = stdout(&s.ok(&["bans"]));
    assert!(
        text.contains("192.0.2.10") && text.contains("manual"),
        "{text}"
    );

    // Runs out by itself: no command involved.
    let deadline = banned_at + Duration::from_secs(15);
    while !s.tcp("192.0.2.10") {
        assert!(Instant::now() < deadline, "the ban did not run out");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(s.tcp("2001:db8::10"));
    assert!(s.bans().is_empty());
}

/// unban ends a ban at once (and an address that is not banned is no error); banning again
/// replaces the duration; the ban survives restart and a deleted table (from the state).
fn unban_reban_and_persistence() {
    let s = Setup::new();
    s.ok(&["ban", "192.0.2.11", "--for", "1h"]);
    s.ok(&[
        "ban",
        "192.0.2.11",
        "--for",
        "2h",
        "--comment",
        "f2b:asterisk",
    ]);
    let bans = s.bans();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0].1, "fail2ban");
    assert!(
        bans[0].3.unwrap() > 3600,
        "replaced by the 2h ban: {bans:?}"
    );
    s.ok(&["restart"]);
    assert_eq!(s.bans().len(), 1, "restart keeps the ban");
    common::nft_ok(s.topo.pbx_ns(), "delete table inet pbxwall");
    s.ok(&["restart"]);
    assert_eq!(s.bans().len(), 1, "a new table gets the ban back");
    assert!(!s.tcp("192.0.2.11"));
    let out = s.ok(&["unban", "192.0.2.11", "192.0.2.99"]);
    let text = stdout(&out);
    assert!(text.contains("unbanned 192.0.2.11"), "{text}");
    assert!(text.contains("192.0.2.99 is not banned"), "{text}");
    assert!(s.tcp("192.0.2.11"));
    common::nft_ok(s.topo.pbx_ns(), "delete table inet pbxwall");
    s.ok(&["restart"]);
    assert!(s.bans().is_empty(), "an unban is not brought back");
    let audit = std::fs::read_to_string(s.cfg.state_dir().join("audit.log")).unwrap_or_default();
    assert!(audit.contains("unbanned 192.0.2.11"), "{audit}");
}

/// Trusted networks, pbx-self and this SSH session's client are refused without --force
/// (exit 2, nothing changed); with --force they are banned.
fn protected_addresses_need_force() {
    let s = Setup::new();
    for (addr, why) in [
        ("198.51.100.10", "trusted network 198.51.100.0/24"),
        ("203.0.113.10", "account pbx-self"),
    ] {
        let out = s.run(&["ban", addr]);
        common::assert_exit(&out, 2, addr);
        let err = common::stderr(&out);
        assert!(err.contains(why) && err.contains("--force"), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    let out = s.run_env(
        &["ban", "192.0.2.11"],
        &[("SSH_CONNECTION", "192.0.2.11 40000 192.0.2.1 22")],
    );
    common::assert_exit(&out, 2, "ssh client");
    assert!(common::stderr(&out).contains("client of this SSH session"));
    assert!(s.bans().is_empty());
    assert!(s.udp("198.51.100.10"));
    s.ok(&["ban", "198.51.100.10", "--force", "--for", "1m"]);
    assert!(
        !s.udp("198.51.100.10"),
        "a forced ban beats the trusted network"
    );
}

/// Bulk bans from standard input; bad input of every kind is one line, exit 2, nothing
/// changed; without a table, exit 1.
fn stdin_bulk_and_bad_input() {
    let s = Setup::new();
    let mut input = String::from("# from a blocklist\n\n");
    for i in 0..1000u32 {
        input.push_str(&format!("203.0.{}.{}\n", 113 + (i / 250) % 2, i % 250 + 1));
        input.push_str(&format!("2001:db8:2::{:x}\n", i + 1));
    }
    // 203.0.113.10 is pbx-self: --force.
    let out = s.with_stdin(
        &["ban", "--stdin", "--force", "--for", "10m"],
        input.as_bytes(),
    );
    common::assert_exit(&out, 0, "ban --stdin");
    assert_eq!(s.bans().len(), 1000 + 500, "{}", show(&out));

    let before = s.bans();
    let bad: [(&[&str], &str); 7] = [
        (&["ban", "192.0.2.0/24"], "not a network"),
        (&["ban", "192.0.2.300"], "invalid address"),
        (&["ban", "127.0.0.1"], "not a unicast"),
        (&["ban", "192.0.2.7", "--for", "5x"], "invalid duration"),
        (&["ban", "192.0.2.7", "--for", "400d"], "invalid duration"),
        (&["ban"], "no address given"),
        (&["unban", "nonsense"], "invalid address"),
    ];
    for (args, what) in bad {
        let out = s.run(args);
        common::assert_exit(&out, 2, &format!("{args:?}"));
        let err = common::stderr(&out);
        assert!(err.contains(what), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
    }
    let long = "x".repeat(200);
    let out = s.run(&["ban", "192.0.2.7", "--comment", &long]);
    common::assert_exit(&out, 2, "long comment");
    let out = s.with_stdin(&["ban", "--stdin"], b"192.0.2.7\n192.0.2.8 oops\n");
    common::assert_exit(&out, 2, "bad stdin line");
    assert!(common::stderr(&out).contains("line 2 of standard input"));
    assert_eq!(s.bans(), before, "nothing changed");

    common::nft_ok(s.topo.pbx_ns(), "delete table inet pbxwall");
    let out = s.run(&["ban", "192.0.2.7"]);
    common::assert_exit(&out, 1, "no table");
    assert!(
        common::stderr(&out).contains("run restart first"),
        "{}",
        show(&out)
    );

    // A full ban set (the kernel's ENFILE) is said as such, and nothing changes: ban sets
    // of size 2 stand in for full ones of pbxwall::compile::BAN_SET_SIZE.
    common::nft_ok(
        s.topo.pbx_ns(),
        "add table inet pbxwall; \
         add set inet pbxwall ban_v4 { type ipv4_addr; size 2; flags dynamic,timeout; }; \
         add set inet pbxwall ban_v6 { type ipv6_addr; size 2; flags dynamic,timeout; }; \
         add element inet pbxwall ban_v4 { 192.0.2.6 timeout 1h comment \"manual\" }",
    );
    let before = s.bans();
    assert_eq!(before.len(), 1, "{before:?}");
    let out = s.run(&["ban", "192.0.2.7", "192.0.2.8", "192.0.2.9", "--force"]);
    common::assert_exit(&out, 1, "full ban set");
    let err = common::stderr(&out);
    assert!(
        err.contains(&format!(
            "the ban sets are full: ban_v4 and ban_v6 hold at most {} addresses each",
            pbxwall::compile::BAN_SET_SIZE
        )) && err.contains("nothing changed"),
        "{}",
        show(&out)
    );
    assert_eq!(s.bans(), before, "nothing changed");

    // restart over ban sets of another size (an older pbxwall's 65,536, here 2): they are
    // created anew with today's size and keep their elements (the live one, and the 1,500
    // recorded in the state folder by the bulk ban above).
    s.ok(&["restart"]);
    let listed = common::nft_ok(s.topo.pbx_ns(), "list set inet pbxwall ban_v4");
    assert!(
        stdout(&listed).contains(&format!("size {}", pbxwall::compile::BAN_SET_SIZE)),
        "{}",
        show(&listed)
    );
    let after = s.bans();
    assert_eq!(
        after.len(),
        1 + 1500,
        "restart kept the live ban and restored the rest"
    );
    let kept = after
        .iter()
        .find(|b| b.0 == "192.0.2.6")
        .expect("192.0.2.6 kept");
    assert_eq!(kept.2.as_deref(), Some("manual"));
}

/// A long `ban --stdin` goes to the kernel in pieces while it is parsed: when something
/// fails after the first pieces are in (a bad line, an address that needs `--force`, a
/// piece the kernel refuses), those are taken out again; the bans from before stay as
/// they were (not replaced), and the state record is untouched.
fn a_failed_piece_takes_the_earlier_ones_back() {
    let s = Setup::new();
    s.ok(&[
        "ban",
        "--for",
        "2h",
        "--comment",
        "pre",
        "2001:db8:9::1",
        "192.0.2.50",
    ]);
    let record = s.cfg.state_dir().join("dynamic-sets.json");
    let read_record = || std::fs::read_to_string(&record).unwrap_or_default();
    // Address, origin and comment of every ban, and whether it has more than 1h left (a
    // ban from before, not replaced by a 1h one).
    let summary = |s: &Setup| -> Vec<(String, Option<String>, bool)> {
        s.bans()
            .into_iter()
            .map(|(a, _, c, left)| (a, c, left.is_some_and(|l| l > 3600)))
            .collect()
    };
    let before = summary(&s);
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(before.iter().all(|b| b.2), "{before:?}");
    let record_before = read_record();
    let list = |n: u32, tail: &str| {
        let mut input = String::new();
        // One of the addresses banned already, early: it is replaced in the last
        // transaction only.
        input.push_str("2001:db8:9::1\n");
        for i in 0..n {
            input.push_str(&format!("2001:db8:7::{:x}\n", i + 1));
        }
        input + tail
    };
    let cases: [(&str, &str, i32); 2] = [
        ("nonsense\n", "line 20002 of standard input", 2),
        ("203.0.113.10\n", "refusing to ban 203.0.113.10", 2),
    ];
    for (tail, said, code) in cases {
        let out = s.with_stdin(
            &["ban", "--stdin", "--for", "1h"],
            list(20_000, tail).as_bytes(),
        );
        common::assert_exit(&out, code, tail);
        let err = common::stderr(&out);
        assert!(err.contains(said), "{}", show(&out));
        assert_eq!(
            summary(&s),
            before,
            "{tail:?}: the first pieces were taken back"
        );
        assert_eq!(
            read_record(),
            record_before,
            "{tail:?}: the record is untouched"
        );
    }

    // A piece the kernel refuses: a ban_v6 of 10,000 stands in for a full one (the first
    // piece fits, a later one does not).
    common::nft_ok(
        s.topo.pbx_ns(),
        "delete table inet pbxwall; add table inet pbxwall; \
         add set inet pbxwall ban_v4 { type ipv4_addr; size 100; flags dynamic,timeout; }; \
         add set inet pbxwall ban_v6 { type ipv6_addr; size 10000; flags dynamic,timeout; }; \
         add element inet pbxwall ban_v6 { 2001:db8:9::1 timeout 2h comment \"pre\" }",
    );
    let before = summary(&s);
    assert_eq!(before.len(), 1, "{before:?}");
    let out = s.with_stdin(
        &["ban", "--stdin", "--for", "1h"],
        list(12_000, "").as_bytes(),
    );
    common::assert_exit(&out, 1, "a later piece refused");
    let err = common::stderr(&out);
    assert!(
        err.contains("the ban sets are full") && err.contains("nothing changed"),
        "{}",
        show(&out)
    );
    assert_eq!(summary(&s), before, "the first piece was taken back");
    assert_eq!(read_record(), record_before, "the record is untouched");

    // What fits goes in whole, the ban from before replaced.
    let out = s.with_stdin(
        &["ban", "--stdin", "--for", "1h"],
        list(9_000, "").as_bytes(),
    );
    common::assert_exit(&out, 0, "fits");
    let after = summary(&s);
    assert_eq!(after.len(), 9_001);
    let pre = after.iter().find(|b| b.0 == "2001:db8:9::1").unwrap();
    assert_eq!(
        pre,
        &("2001:db8:9::1".to_owned(), Some("manual".to_owned()), false)
    );
    assert!(read_record().contains("\"2001:db8:7::2328\""));
}

common::test_main! {
    Needs::ROOT => [
        a_ban_beats_the_account_ends_its_flows_and_runs_out,
        unban_reban_and_persistence,
        protected_addresses_need_force,
        stdin_bulk_and_bad_input,
        a_failed_piece_takes_the_earlier_ones_back,
    ],
}
