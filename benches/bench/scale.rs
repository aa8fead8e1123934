//! Scenario 8: big operations against `nft -f` doing the same work, interleaved rounds in a
//! fresh namespace each run.
//!
//! - `ban --stdin` of 100,000 addresses against `nft -f` of a file adding the same elements
//!   (same timeout, same comment) to `ban_v4`/`ban_v6` (the table loaded by `restart`
//!   beforehand, not timed). The ban sets hold `pbxwall::compile::BAN_SET_SIZE` each.
//!   `scale-bans` runs this part only.
//! - `restart` of 10,000 accounts, one file each, against `nft -f` of its `restart
//!   --dry-run` text (scenario 1's workload): warm (the accounts' parse cache of the state
//!   folder present and the files unchanged, as at every restart but the first after an
//!   edit; the runs check that none wrote the cache again) and cold (the cache removed
//!   before each run, not timed), in interleaved rounds.
//!
//! `--accounts-only` leaves the ban part out.

use std::path::Path;
use std::process::Command;

use crate::measure::{self, Measured, measure_in, ratio, settle, stats};
use crate::{CMD_TIMEOUT, Cfg, NFT_TIMEOUT, Opts, Report, mib, nft_cmd, say, table};

/// The list the issue asks for, timed.
const ASKED: usize = 100_000;

/// The `i`-th of `n` documentation addresses: first the 768 IPv4 ones, then IPv6 ones in
/// 2001:db8:5ca1::/48.
pub fn addr(i: usize) -> String {
    if i < 768 {
        let net = ["192.0.2", "198.51.100", "203.0.113"][i / 256];
        format!("{net}.{}", i % 256)
    } else {
        let j = i - 768 + 1;
        format!("2001:db8:5ca1::{:x}:{:x}", j >> 16, j & 0xffff)
    }
}

/// `nft -f` text adding addresses `0..n` to the ban sets with `timeout 1h` and the comment
/// `ban --stdin --for 1h` gives them (`manual`).
pub fn nft_text(n: usize) -> String {
    let (v4, v6): (Vec<String>, Vec<String>) = (0..n).map(addr).partition(|a| !a.contains(':'));
    let mut out = String::new();
    for (set, list) in [("ban_v4", v4), ("ban_v6", v6)] {
        if list.is_empty() {
            continue;
        }
        let elems: Vec<String> = list
            .iter()
            .map(|a| format!("{a} timeout 1h comment \"manual\""))
            .collect();
        out += &format!(
            "add element inet pbxwall {set} {{ {} }}\n",
            elems.join(", ")
        );
    }
    out
}

fn ban_cmd(cfg: &Cfg, pbxwall: &Path, list: &Path) -> Command {
    let mut c = cfg.cmd(Path::new("/bin/sh"), &[]);
    c.arg("-c")
        .arg("exec \"$0\" ban --stdin --for 1h --quiet < \"$1\"")
        .arg(pbxwall)
        .arg(list);
    c
}

/// One run in a fresh namespace with the table loaded: `ban --stdin` (`pbx`) or `nft -f`.
/// Returns the measurement of the timed command only.
fn bulk(o: &Opts, pbx: bool, n: usize, list: &Path, nft_file: &Path, codes: &[i32]) -> Measured {
    let cfg = Cfg::new("trusted = []\n", &[]);
    let ns = measure::scratch_ns();
    measure_in(ns.name(), || cfg.cmd(&o.bin("restart"), &[]), CMD_TIMEOUT)
        .expect_code(&[0], "restart (ban setup)");
    let m = if pbx {
        measure_in(
            ns.name(),
            || ban_cmd(&cfg, &o.bin("pbxwall"), list),
            CMD_TIMEOUT,
        )
    } else {
        measure_in(ns.name(), || nft_cmd(nft_file), NFT_TIMEOUT)
    };
    m.expect_code(
        codes,
        if pbx {
            "ban --stdin"
        } else {
            "nft -f add element"
        },
    );
    drop(ns);
    settle(n);
    m
}

pub fn s8_scale(o: &Opts, rep: &mut Report) {
    say(
        "\n## 8. at scale: ban --stdin vs nft -f adding the same elements; restart of 10,000 accounts vs nft -f\n",
    );
    if o.scale_accounts_only {
        say("(--accounts-only: the ban part is left out)\n");
    } else {
        s8_bans(o, rep);
    }
    accounts(o, rep);
}

/// The ban part of scenario 8 (`scale-bans` runs it alone): `ban --stdin` against `nft -f`
/// adding the same elements.
pub fn s8_bans(o: &Opts, rep: &mut Report) {
    let files = Cfg::new("", &[]);
    let write = |name: &str, text: String| {
        let p = files.file(name);
        std::fs::write(&p, text).expect("write bench file");
        p
    };
    let list: String = (0..ASKED).map(|i| addr(i) + "\n").collect();
    let list = write("bans-100k.txt", list);
    let nft = write("bans-100k.nft", nft_text(ASKED));
    bulk(o, true, ASKED, &list, &nft, &[0]);
    bulk(o, false, ASKED, &list, &nft, &[0]);
    let (mut pw, mut nw, mut pc, mut nc, mut pr, mut nr) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for r in 0..o.reps {
        for k in 0..2 {
            let pbx = (k + r) % 2 == 0;
            let m = bulk(o, pbx, ASKED, &list, &nft, &[0]);
            let (w, c, rs) = if pbx {
                (&mut pw, &mut pc, &mut pr)
            } else {
                (&mut nw, &mut nc, &mut nr)
            };
            w.push(m.ms());
            c.push(m.cpu.as_secs_f64() * 1e3);
            rs.extend(m.maxrss_kib.map(|k| mib(k as f64)));
        }
        say(format!("  round {}/{} (bans) done", r + 1, o.reps));
    }
    let (p, n) = (stats(&pw), stats(&nw));
    let (pcs, ncs) = (stats(&pc), stats(&nc));
    say(format!(
        "\n{ASKED} addresses (768 v4 + {} v6), timeout 1h, comment manual; ban sets of size {}; ms, median [min–max] of {} interleaved rounds\n",
        ASKED - 768,
        pbxwall::compile::BAN_SET_SIZE,
        o.reps
    ));
    say(table(
        &[
            "",
            "wall ms",
            "CPU ms",
            "peak RSS MiB",
            "÷ nft -f (wall)",
            "÷ nft -f (CPU)",
        ],
        &[
            vec![
                "pbxwall ban --stdin".into(),
                p.show(0),
                pcs.show(0),
                stats(&pr).show(1),
                ratio(&p, &n),
                ratio(&pcs, &ncs),
            ],
            vec![
                "nft -f add element".into(),
                n.show(0),
                ncs.show(0),
                stats(&nr).show(1),
                "1".into(),
                "1".into(),
            ],
        ],
    ));
    rep.verdict(
        "8. ban --stdin of 100,000 addresses ≤ 0.5 × nft -f (wall)",
        format!("{} (CPU {})", ratio(&p, &n), ratio(&pcs, &ncs)),
        Some(p.median <= 0.5 * n.median),
    );
}

/// `restart` of 10,000 accounts against `nft -f` of its dry-run text: warm (the parse cache
/// of the state folder present, the files unchanged: every restart but the first after an
/// edit) and cold (the cache removed before each run, not timed).
fn accounts(o: &Opts, rep: &mut Report) {
    let accounts = crate::restart_workloads()
        .into_iter()
        .find(|(l, _)| *l == "10k accounts")
        .expect("10k workload")
        .1;
    let cfg = Cfg::new(crate::DEFAULT_SETTINGS, &accounts);
    let restart = o.bin("restart");
    let dry = measure::measure(cfg.cmd(&restart, &["--dry-run"]), CMD_TIMEOUT)
        .expect("restart --dry-run");
    dry.expect_code(&[0], "restart --dry-run");
    let ruleset = cfg.file("ruleset.nft");
    std::fs::write(&ruleset, &dry.stdout).expect("write ruleset");
    let cache = cfg.state_file(pbxwall::account_cache::CACHE_FILE);
    let cache_mtime = || std::fs::metadata(&cache).and_then(|m| m.modified()).ok();
    // 0: pbxwall warm, 1: pbxwall cold, 2: nft -f.
    const NAMES: [&str; 3] = ["restart (warm)", "restart (cold)", "nft -f"];
    let warm_rewrites = std::cell::Cell::new(0);
    let full = |who: usize| -> Measured {
        if who == 1 {
            let _ = std::fs::remove_file(&cache);
        }
        let before = cache_mtime();
        let ns = measure::scratch_ns();
        let m = if who < 2 {
            measure_in(ns.name(), || cfg.cmd(&restart, &[]), CMD_TIMEOUT)
        } else {
            measure_in(ns.name(), || nft_cmd(&ruleset), NFT_TIMEOUT)
        };
        m.expect_code(&[0], NAMES[who]);
        if who == 0 && cache_mtime() != before {
            warm_rewrites.set(warm_rewrites.get() + 1);
        }
        drop(ns);
        settle(25_000);
        m
    };
    // The files were just written: the first restarts may find them too recent to trust
    // (the cache's margin is 2 s), so the warm-up waits that out.
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    for who in 0..3 {
        full(who);
    }
    full(0);
    warm_rewrites.set(0);
    let mut wall: [Vec<f64>; 3] = Default::default();
    let mut cpu: [Vec<f64>; 3] = Default::default();
    let mut rss: [Vec<f64>; 3] = Default::default();
    for r in 0..o.reps {
        for k in 0..3 {
            let who = (k + r) % 3;
            let m = full(who);
            wall[who].push(m.ms());
            cpu[who].push(m.cpu.as_secs_f64() * 1e3);
            rss[who].extend(m.maxrss_kib.map(|k| mib(k as f64)));
        }
        say(format!("  round {}/{} (restart 10k) done", r + 1, o.reps));
    }
    say(format!(
        "warm runs that wrote the cache again: {} of {} (0 expected: files unchanged)",
        warm_rewrites.get(),
        o.reps
    ));
    let (p, c, n) = (stats(&wall[0]), stats(&wall[1]), stats(&wall[2]));
    let (pcs, ccs, ncs) = (stats(&cpu[0]), stats(&cpu[1]), stats(&cpu[2]));
    say(format!(
        "\nrestart of {} accounts (one file each) into a fresh namespace vs nft -f of its dry-run text ({:.1} MiB); ms, median [min–max] of {} interleaved rounds\n",
        accounts.len(),
        dry.stdout.len() as f64 / 1048576.0,
        o.reps
    ));
    say(table(
        &[
            "",
            "wall ms",
            "CPU ms",
            "peak RSS MiB",
            "÷ nft -f (wall)",
            "÷ nft -f (CPU)",
        ],
        &[
            vec![
                "pbxwall restart (warm: cache present, files unchanged)".into(),
                p.show(0),
                pcs.show(0),
                stats(&rss[0]).show(1),
                ratio(&p, &n),
                ratio(&pcs, &ncs),
            ],
            vec![
                "pbxwall restart (cold: no cache)".into(),
                c.show(0),
                ccs.show(0),
                stats(&rss[1]).show(1),
                ratio(&c, &n),
                ratio(&ccs, &ncs),
            ],
            vec![
                "nft -f same text".into(),
                n.show(0),
                ncs.show(0),
                stats(&rss[2]).show(1),
                "1".into(),
                "1".into(),
            ],
        ],
    ));
    rep.verdict(
        "8. restart of 10,000 accounts ≤ 1.0 × nft -f of its dry-run text (wall; warm)",
        format!("warm {}; cold {}", ratio(&p, &n), ratio(&c, &n)),
        Some(p.median <= n.median),
    );
}

/// Checks that need neither root nor the network.
pub fn self_check() {
    assert_eq!(addr(0), "192.0.2.0");
    assert_eq!(addr(767), "203.0.113.255");
    assert_eq!(addr(768), "2001:db8:5ca1::0:1");
    assert_eq!(addr(768 + 0x1_0000 - 1), "2001:db8:5ca1::1:0");
    let all: std::collections::BTreeSet<String> = (0..ASKED).map(addr).collect();
    assert_eq!(all.len(), ASKED);
    let t = nft_text(770);
    assert!(t.starts_with(
        "add element inet pbxwall ban_v4 { 192.0.2.0 timeout 1h comment \"manual\", "
    ));
    assert!(t.contains("add element inet pbxwall ban_v6 { 2001:db8:5ca1::0:1 timeout 1h comment \"manual\", 2001:db8:5ca1::0:2 timeout 1h comment \"manual\" }\n"));
    let size = pbxwall::compile::BAN_SET_SIZE as usize;
    assert!(ASKED - 768 <= size, "ban set size {size}");
}
