//! pbxwall benchmarks (issue "Benchmarks"): `make bench`, i.e. `cargo bench --bench bench`.
//!
//! Needs root (network namespaces, nftables); without it, it says SKIPPED loudly and exits 0.
//! Every scenario runs in throwaway namespaces (`pbxw-<pid>-...`) with documentation
//! addresses only; competitors run on the same machine in the same run, repetitions are
//! interleaved (round-robin, rotated each round), and every figure is a median with its
//! [min–max] spread. BENCHMARKS.md has the method, the numbers and the verdicts.
//!
//! ```text
//! cargo bench --bench bench                    # everything (about 4 minutes)
//! cargo bench --bench bench -- restart packets # only some scenarios:
//!                                              #   restart packets dns ipchecker sip geo scale
//!                                              #   (scale-bans: scenario 8's ban part only;
//!                                              #   geo-packets: scenario 7's per-packet part)
//! cargo bench --bench bench -- --reps 3        # fewer rounds
//! cargo bench --bench bench -- scale --accounts-only   # scenario 8 without its ban part
//! cargo bench --bench bench -- geo --geo-full-reps 1   # geo: one round of full loads
//! cargo bench --bench bench -- --write-geo DIR  # geo databases and settings, for profiling
//! PBXWALL_BENCH_BIN_DIR=/other/target/release cargo bench --bench bench   # other binaries
//! ```
//!
//! Under `cargo test` (which also builds and runs bench targets) it only runs its quick
//! self-checks, without root and without the network.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "bench/dns.rs"]
mod dns;
#[path = "bench/flood.rs"]
mod flood;
#[path = "bench/geo.rs"]
mod geo;
#[path = "bench/measure.rs"]
mod measure;
#[path = "bench/scale.rs"]
mod scale;
#[path = "bench/workload.rs"]
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use measure::{Measured, Stats, measure_in, ratio, settle, stats};
use pbxwall::nft::netlink::{self, LiveTable};

/// Rounds of every interleaved comparison unless `--reps` says otherwise.
const DEFAULT_REPS: usize = 5;
/// Upper bound of one pbxwall command.
const CMD_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound of one `nft -f` (the classic ruleset at 100k addresses takes seconds).
const NFT_TIMEOUT: Duration = Duration::from_secs(300);
/// Rounds of the classic ruleset at 100k addresses (about 10 s per load).
const CLASSIC_100K_REPS: usize = 3;
/// Niceness of the bench and everything it starts (inherited): less noise from other work
/// on a shared machine, the same for every competitor.
const NICE: libc::c_int = -10;

// -------------------------------------------------------------------------------------------
// Options, binaries, configuration folders

struct Opts {
    reps: usize,
    /// `--accounts-only`: scenario 8 without its ban part.
    scale_accounts_only: bool,
    /// Rounds of scenario 7's full loads (restart, nft -f); `reps` unless given.
    geo_full_reps: Option<usize>,
    only: Vec<String>,
    bin_dir: PathBuf,
}

impl Opts {
    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

fn default_bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PBXWALL_BENCH_BIN_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_BIN_EXE_restart"))
        .parent()
        .expect("binary has a folder")
        .to_path_buf()
}

/// A throwaway config/state/share folder (share empty: the built-in profiles).
struct Cfg {
    tmp: common::TempConfig,
    share: PathBuf,
}

impl Cfg {
    fn new(settings: &str, accounts: &[workload::Account]) -> Cfg {
        let tmp = common::TempConfig::new();
        let share = tmp.root().join("share");
        std::fs::create_dir_all(&share).expect("share dir");
        tmp.write("pbxwall.toml", settings);
        let dir = tmp.config_dir().join("accounts");
        std::fs::create_dir_all(&dir).expect("accounts dir");
        for a in accounts {
            std::fs::write(dir.join(format!("{}.toml", a.name)), a.toml()).expect("write account");
        }
        Cfg { tmp, share }
    }

    /// `program args...` with this configuration's environment (no SSH variables, so the
    /// lock-out guard never looks at the developer's session).
    fn cmd(&self, program: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.args(args)
            .env("PBXWALL_CONFIG_DIR", self.tmp.config_dir())
            .env("PBXWALL_STATE_DIR", self.tmp.state_dir())
            .env("PBXWALL_SHARE_DIR", &self.share);
        for v in common::SCRUBBED_ENV {
            c.env_remove(v);
        }
        c
    }

    fn file(&self, name: &str) -> PathBuf {
        self.tmp.root().join(name)
    }

    /// A file of the state folder.
    fn state_file(&self, name: &str) -> PathBuf {
        self.tmp.state_dir().join(name)
    }
}

fn nft_cmd(file: &Path) -> Command {
    let mut c = Command::new(common::tool_path("nft"));
    c.arg("-f").arg(file);
    c
}

/// The ms figure of restart's "... netlink messages in 12.3 ms" line.
fn apply_ms(stdout: &str) -> Option<f64> {
    let line = stdout.lines().find(|l| l.starts_with("applied table"))?;
    let tail = line.rsplit(" in ").next()?;
    tail.trim_end_matches(" ms").trim().parse().ok()
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

// -------------------------------------------------------------------------------------------
// Report: tables as they come, verdicts at the end

struct Verdict {
    target: String,
    measured: String,
    /// None: skipped (or, with `info`, no target).
    met: Option<bool>,
    /// A figure without a target: shown as "info".
    info: bool,
}

#[derive(Default)]
struct Report {
    verdicts: Vec<Verdict>,
    failures: Vec<String>,
}

impl Report {
    fn verdict(&mut self, target: &str, measured: String, met: Option<bool>) {
        self.verdicts.push(Verdict {
            target: target.to_string(),
            measured,
            met,
            info: false,
        });
    }

    /// A figure without a target (no pass or fail), listed with the verdicts.
    fn info(&mut self, what: &str, measured: String) {
        self.verdicts.push(Verdict {
            target: what.to_string(),
            measured,
            met: None,
            info: true,
        });
    }
}

fn say(s: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", s.as_ref());
    let _ = out.flush();
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::from("|");
        for (i, c) in cells.iter().enumerate() {
            let pad = w[i] - c.chars().count();
            if i == 0 {
                let _ = write!(s, " {c}{} |", " ".repeat(pad));
            } else {
                let _ = write!(s, " {}{c} |", " ".repeat(pad));
            }
        }
        s
    };
    let mut out = line(header.to_vec()) + "\n|";
    for (i, width) in w.iter().enumerate() {
        out += &if i == 0 {
            format!("{}|", "-".repeat(width + 2))
        } else {
            format!("{}:|", "-".repeat(width + 1))
        };
    }
    out.push('\n');
    for r in rows {
        out += &line(r.iter().map(String::as_str).collect());
        out.push('\n');
    }
    out
}

fn met(b: bool) -> &'static str {
    if b { "MET" } else { "NOT MET" }
}

// -------------------------------------------------------------------------------------------
// Scenario 1 (and 5): restart at 1k / 10k accounts and 100k addresses

const DEFAULT_SETTINGS: &str = "# defaults: trusted LAN ranges, rtp from any, log_drops\n";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Method {
    /// `restart` into a fresh namespace (no table yet).
    Pbx,
    /// `nft -f` of the `restart --dry-run` text into a fresh namespace.
    Nft,
    /// `nft -f` of the classic ruleset (one rule per address per port range).
    Classic,
    /// `restart` where the same table is already loaded (the everyday case).
    PbxReplace,
    /// `restart --dry-run` (load, compile, render; no kernel).
    DryRun,
}

impl Method {
    const ALL: [Method; 5] = [
        Method::Pbx,
        Method::Nft,
        Method::Classic,
        Method::PbxReplace,
        Method::DryRun,
    ];

    fn label(self) -> &'static str {
        match self {
            Method::Pbx => "pbxwall restart (fresh)",
            Method::Nft => "nft -f same ruleset",
            Method::Classic => "nft -f 1 rule/address",
            Method::PbxReplace => "pbxwall restart (replace)",
            Method::DryRun => "restart --dry-run",
        }
    }
}

struct Size {
    label: &'static str,
    accounts: usize,
    addresses: usize,
    elements: usize,
    classic_rules: usize,
    cfg: Cfg,
    ruleset: PathBuf,
    classic: PathBuf,
}

#[derive(Default)]
struct Sample {
    ms: Vec<f64>,
    cpu_ms: Vec<f64>,
    rss_kib: Vec<f64>,
    apply_ms: Vec<f64>,
}

/// The workloads of scenario 1: 1k and 10k accounts of 1–4 addresses, and 1k accounts of
/// 100 addresses; 10 % v4.
fn restart_workloads() -> Vec<(&'static str, Vec<workload::Account>)> {
    let one_to_four = |r: &mut workload::Rng| 1 + r.below(4) as usize;
    vec![
        (
            "1k accounts",
            workload::accounts(11, 1_000, one_to_four, 10),
        ),
        (
            "10k accounts",
            workload::accounts(12, 10_000, one_to_four, 10),
        ),
        ("100k addresses", workload::accounts(13, 1_000, |_| 100, 10)),
    ]
}

/// `--write-workloads DIR`: scenario 1's workloads as DIR/<workload>/ with `config/`
/// (pbxwall.toml, accounts/), `state/`, `share/` (empty: built-in profiles), and the
/// rulesets the bench compares: `ruleset.nft` (restart --dry-run) and `classic.nft`. For
/// profiling by hand (BENCHMARKS.md shows how).
fn write_workloads(o: &Opts, dir: &Path) {
    for (label, accounts) in restart_workloads() {
        let d = dir.join(label.replace(' ', "-"));
        let accts = d.join("config").join("accounts");
        std::fs::create_dir_all(&accts).expect("create workload dir");
        std::fs::create_dir_all(d.join("state")).expect("create state dir");
        std::fs::create_dir_all(d.join("share")).expect("create share dir");
        std::fs::write(d.join("config").join("pbxwall.toml"), DEFAULT_SETTINGS)
            .expect("write settings");
        for a in &accounts {
            std::fs::write(accts.join(format!("{}.toml", a.name)), a.toml())
                .expect("write account");
        }
        let mut dry = Command::new(o.bin("restart"));
        dry.arg("--dry-run")
            .env("PBXWALL_CONFIG_DIR", d.join("config"))
            .env("PBXWALL_STATE_DIR", d.join("state"))
            .env("PBXWALL_SHARE_DIR", d.join("share"));
        let dry = measure::measure(dry, CMD_TIMEOUT).expect("restart --dry-run");
        dry.expect_code(&[0], "restart --dry-run");
        std::fs::write(d.join("ruleset.nft"), &dry.stdout).expect("write");
        let (classic, _) = workload::classic_from_dry_run(&dry.stdout);
        std::fs::write(d.join("classic.nft"), classic).expect("write");
        println!("{}: {} accounts", d.display(), accounts.len());
    }
}

fn s1_restart(o: &Opts, rep: &mut Report) {
    say("\n## 1. restart vs nft -f vs one rule per address (fresh namespace each run)\n");
    let restart = o.bin("restart");
    let mut sizes = Vec::new();
    for (label, accounts) in restart_workloads() {
        let count = accounts.len();
        let cfg = Cfg::new(DEFAULT_SETTINGS, &accounts);
        let dry = measure::measure(cfg.cmd(&restart, &["--dry-run"]), CMD_TIMEOUT)
            .expect("restart --dry-run");
        dry.expect_code(&[0], "restart --dry-run");
        let ruleset = cfg.file("ruleset.nft");
        std::fs::write(&ruleset, &dry.stdout).expect("write ruleset");
        let (classic_text, classic_rules) = workload::classic_from_dry_run(&dry.stdout);
        let classic = cfg.file("classic.nft");
        std::fs::write(&classic, classic_text).expect("write classic");
        sizes.push(Size {
            label,
            accounts: count,
            addresses: workload::address_count(&accounts),
            elements: workload::element_count(&dry.stdout),
            classic_rules,
            cfg,
            ruleset,
            classic,
        });
    }
    let rows: Vec<Vec<String>> = sizes
        .iter()
        .map(|s| {
            vec![
                s.label.to_string(),
                s.accounts.to_string(),
                s.addresses.to_string(),
                s.elements.to_string(),
                s.classic_rules.to_string(),
            ]
        })
        .collect();
    say(table(
        &[
            "workload",
            "accounts",
            "addresses",
            "set and map elements",
            "classic rules",
        ],
        &rows,
    ));

    let run = |s: &Size, m: Method| -> Measured {
        let out = match m {
            Method::DryRun => {
                measure::measure(s.cfg.cmd(&restart, &["--dry-run"]), CMD_TIMEOUT).expect("run")
            }
            _ => {
                let ns = measure::scratch_ns();
                if m == Method::PbxReplace {
                    measure_in(ns.name(), || s.cfg.cmd(&restart, &[]), CMD_TIMEOUT)
                        .expect_code(&[0], "restart (first load)");
                }
                settle(s.elements);
                let out = match m {
                    Method::Pbx | Method::PbxReplace => {
                        measure_in(ns.name(), || s.cfg.cmd(&restart, &[]), CMD_TIMEOUT)
                    }
                    Method::Nft => measure_in(ns.name(), || nft_cmd(&s.ruleset), NFT_TIMEOUT),
                    _ => measure_in(ns.name(), || nft_cmd(&s.classic), NFT_TIMEOUT),
                };
                drop(ns);
                settle(if m == Method::Classic {
                    s.classic_rules
                } else {
                    s.elements
                });
                out
            }
        };
        out.expect_code(&[0], &format!("{} at {}", m.label(), s.label));
        out
    };

    // Warm-up (page cache, binaries, first state files): one untimed run of each, except
    // the slow classic loads.
    for (si, s) in sizes.iter().enumerate() {
        for m in Method::ALL {
            if m != Method::Classic || si == 0 {
                run(s, m);
            }
        }
    }
    let mut samples: BTreeMap<(usize, Method), Sample> = BTreeMap::new();
    for r in 0..o.reps {
        let started = Instant::now();
        for (si, s) in sizes.iter().enumerate() {
            for k in 0..Method::ALL.len() {
                let m = Method::ALL[(k + r) % Method::ALL.len()];
                if m == Method::Classic && s.classic_rules > 100_000 && r >= CLASSIC_100K_REPS {
                    continue;
                }
                let out = run(s, m);
                let e = samples.entry((si, m)).or_default();
                e.ms.push(out.ms());
                e.rss_kib.extend(out.maxrss_kib.map(|k| k as f64));
                e.cpu_ms.push(out.cpu.as_secs_f64() * 1e3);
                if let Some(a) = apply_ms(&out.stdout) {
                    e.apply_ms.push(a);
                }
            }
        }
        say(format!(
            "  round {}/{} done in {:.1} s",
            r + 1,
            o.reps,
            started.elapsed().as_secs_f64()
        ));
    }

    let st = |si: usize, m: Method| stats(&samples[&(si, m)].ms);
    let mut rows = Vec::new();
    for (si, s) in sizes.iter().enumerate() {
        let pbx = st(si, Method::Pbx);
        let nft = st(si, Method::Nft);
        let classic = st(si, Method::Classic);
        let apply = &samples[&(si, Method::Pbx)].apply_ms;
        rows.push(vec![
            s.label.to_string(),
            pbx.show(1),
            if apply.is_empty() {
                "-".into()
            } else {
                stats(apply).show(1)
            },
            st(si, Method::PbxReplace).show(1),
            st(si, Method::DryRun).show(1),
            nft.show(1),
            classic.show(1),
            ratio(&nft, &pbx),
            ratio(&classic, &pbx),
        ]);
    }
    say(format!(
        "\nwall time, ms: median [min–max] of {} interleaved rounds ({CLASSIC_100K_REPS} for the \
         classic ruleset at 100k); ratios of medians [extremes]\n",
        o.reps
    ));
    say(table(
        &[
            "workload",
            "pbxwall restart (fresh)",
            "of which netlink apply",
            "restart (replace)",
            "restart --dry-run",
            "nft -f same text",
            "nft -f 1 rule/addr",
            "nft÷pbxwall",
            "classic÷pbxwall",
        ],
        &rows,
    ));

    // Scenario 5: peak memory, and CPU time for the record.
    let mut rows = Vec::new();
    for (si, s) in sizes.iter().enumerate() {
        let rss = |m: Method| {
            let v: Vec<f64> = samples[&(si, m)].rss_kib.iter().map(|k| mib(*k)).collect();
            if v.is_empty() {
                "-".to_string()
            } else {
                stats(&v).show(1)
            }
        };
        let cpu_st = |m: Method| stats(&samples[&(si, m)].cpu_ms);
        let cpu = |m: Method| cpu_st(m).show(0);
        rows.push(vec![
            s.label.to_string(),
            rss(Method::Pbx),
            rss(Method::PbxReplace),
            rss(Method::DryRun),
            rss(Method::Nft),
            rss(Method::Classic),
            cpu(Method::Pbx),
            cpu(Method::Nft),
            cpu(Method::Classic),
            ratio(&cpu_st(Method::Nft), &cpu_st(Method::Pbx)),
            ratio(&cpu_st(Method::Classic), &cpu_st(Method::Pbx)),
        ]);
    }
    say(
        "\n## 5. peak memory (GNU time %M: max RSS of the command alone), MiB; and CPU time (user+sys, wait4), ms\n",
    );
    say(table(
        &[
            "workload",
            "restart (fresh)",
            "restart (replace)",
            "restart --dry-run",
            "nft -f same text",
            "nft -f 1 rule/addr",
            "CPU restart (fresh)",
            "CPU nft -f same",
            "CPU nft 1 rule/addr",
            "CPU nft÷pbxwall",
            "CPU classic÷pbxwall",
        ],
        &rows,
    ));

    let (ten_k, hundred_k) = (1, 2);
    let cpu = |si: usize, m: Method| stats(&samples[&(si, m)].cpu_ms).median;
    let vs = |si: usize, other: Method| {
        let (p, x) = (st(si, Method::Pbx), st(si, other));
        format!(
            "{:.0} vs {:.0} ms wall: ×{:.2}; CPU ×{:.2}",
            p.median,
            x.median,
            x.median / p.median,
            cpu(si, other) / cpu(si, Method::Pbx)
        )
    };
    let p10 = st(ten_k, Method::Pbx);
    let n10 = st(ten_k, Method::Nft);
    rep.verdict(
        "1. pbxwall restart ≤ nft -f at 10k accounts",
        vs(ten_k, Method::Nft),
        Some(p10.median <= n10.median),
    );
    let p100 = st(hundred_k, Method::Pbx);
    let n100 = st(hundred_k, Method::Nft);
    let c100 = st(hundred_k, Method::Classic);
    rep.verdict(
        "1. pbxwall restart ≤ nft -f at 100k addresses",
        vs(hundred_k, Method::Nft),
        Some(p100.median <= n100.median),
    );
    rep.verdict(
        "1. ≥ 20× faster than one rule per address at 100k",
        vs(hundred_k, Method::Classic),
        Some(c100.median / p100.median >= 20.0),
    );
    rep.verdict(
        "1. 100k addresses under 1 s",
        format!(
            "{:.0} ms median [{:.0}–{:.0}]",
            p100.median, p100.min, p100.max
        ),
        Some(p100.median < 1000.0),
    );
    let rss: Vec<f64> = [Method::Pbx, Method::PbxReplace]
        .iter()
        .flat_map(|m| samples[&(hundred_k, *m)].rss_kib.iter().copied())
        .collect();
    if rss.is_empty() {
        rep.verdict(
            "5. restart peak RSS at 100k addresses < 100 MiB",
            format!("not measured: {} missing", measure::GNU_TIME),
            None,
        );
    } else {
        let r = stats(&rss);
        rep.verdict(
            "5. restart peak RSS at 100k addresses < 100 MiB",
            format!("{:.1} MiB (max {:.1})", mib(r.median), mib(r.max)),
            Some(mib(r.max) < 100.0),
        );
    }
}

// -------------------------------------------------------------------------------------------
// Scenario 2: per-packet cost

const PBX6: &str = "2001:db8::1";
const ALLOWED6: &str = "2001:db8::10";
const STRANGER6: &str = "2001:db8::11";
const SIP_PORT: u16 = 5060;
const RTP_PORT: u16 = 12000;
const FLOOD_SECS: f64 = 1.0;
const FLOOD_MAX: u64 = 20_000_000;

/// Accounts with `n` sources in all for the per-packet scenario: one account of 10 when
/// n = 10, else accounts of 10 (10k) or 100 (100k). The middle account holds the allowed
/// sender's address with sip-udp among its services.
fn packet_accounts(n: usize) -> Vec<workload::Account> {
    let per = if n >= 100_000 { 100 } else { 10 };
    let mut accounts = workload::accounts(20 + n as u64, n / per, |_| per, 10);
    let mid = accounts.len() / 2;
    let a = &mut accounts[mid];
    a.addresses[0] = ALLOWED6.to_string();
    if !a.services.contains(&"sip-udp") {
        a.services.push("sip-udp");
    }
    accounts
}

struct Setup {
    label: String,
    topo: common::Topology,
    firewall: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Sender {
    Stranger,
    Allowed,
}

/// Packets counted by the `counter` rule at the end of the input chain.
fn drop_counter(ns: &str) -> u64 {
    let t: Option<LiveTable> =
        common::in_ns(ns, netlink::read_table).unwrap_or_else(|e| panic!("read table: {e}"));
    t.map_or(0, |t| {
        t.chains
            .iter()
            .flat_map(|c| c.counters.iter().map(|x| x.1))
            .sum()
    })
}

struct Shot {
    /// Packets per wall-clock second.
    sent_pps: f64,
    /// CPU nanoseconds per packet: the sender thread plus ksoftirqd/0 (its CPU), i.e. the
    /// send and receive path including the firewall; robust to other work on the machine.
    cpu_ns: f64,
    /// What the path under test handled: the drop counter for a stranger behind a firewall,
    /// else the sink's count; as a fraction of what was sent.
    handled: f64,
    errors: u64,
}

fn shot(s: &Setup, who: Sender, secs: f64) -> Shot {
    let (src, port) = match who {
        Sender::Stranger => (STRANGER6, RTP_PORT),
        Sender::Allowed => (ALLOWED6, SIP_PORT),
    };
    shot_from(s, src, port, who == Sender::Stranger && s.firewall, secs)
}

/// A flood of `secs` from `src` (an address of the client namespace) to the pbx's `port`;
/// `counted`: the packets are meant to be dropped, so the drop counter tells what was
/// handled (else the sink).
fn shot_from(s: &Setup, src: &str, port: u16, counted: bool, secs: f64) -> Shot {
    let src: SocketAddr = SocketAddr::new(src.parse().unwrap(), 0);
    let dst: SocketAddr = SocketAddr::new(PBX6.parse().unwrap(), port);
    let pbx = s.topo.pbx_ns();
    let before = if counted { drop_counter(pbx) } else { 0 };
    let sink = flood::Sink::start(pbx, port);
    let soft0 = flood::ksoftirqd_secs(0).unwrap_or(0.0);
    let f = common::in_ns(s.topo.client_ns(), || {
        flood::flood(src, dst, Duration::from_secs_f64(secs), FLOOD_MAX)
    })
    .unwrap_or_else(|e| panic!("flood from {src}: {e}"));
    let soft = flood::ksoftirqd_secs(0).unwrap_or(0.0) - soft0;
    std::thread::sleep(Duration::from_millis(30));
    let received = sink.stop();
    let handled = if counted {
        drop_counter(pbx) - before
    } else {
        received
    };
    let sent = f.sent.max(1) as f64;
    Shot {
        sent_pps: f.pps(),
        cpu_ns: (f.cpu_secs + soft) * 1e9 / sent,
        handled: handled as f64 / sent,
        errors: f.errors,
    }
}

/// The floods of a per-packet scenario, by case (ruleset) and sender, one a round.
type FloodSamples = BTreeMap<(usize, Sender), Vec<Shot>>;

/// `reps` interleaved rounds over `cases` cases (each round starts one case later), each
/// case flooded once from each of its `senders` by `shoot`.
fn interleaved_floods(
    reps: usize,
    cases: usize,
    senders: impl Fn(usize) -> Vec<Sender>,
    mut shoot: impl FnMut(usize, Sender) -> Shot,
) -> FloodSamples {
    let mut samples = FloodSamples::new();
    for r in 0..reps {
        let started = Instant::now();
        for k in 0..cases {
            let i = (k + r) % cases;
            for who in senders(i) {
                let sh = shoot(i, who);
                samples.entry((i, who)).or_default().push(sh);
            }
        }
        say(format!(
            "  round {}/{} done in {:.1} s",
            r + 1,
            reps,
            started.elapsed().as_secs_f64()
        ));
    }
    samples
}

/// Thousand packets sent per wall-clock second by `who` at case `i`, over the rounds.
fn kpps(samples: &FloodSamples, i: usize, who: Sender) -> Stats {
    let v: Vec<f64> = samples[&(i, who)]
        .iter()
        .map(|s| s.sent_pps / 1e3)
        .collect();
    stats(&v)
}

/// The least share of the packets handled over the rounds, and the send errors if any.
fn handled(samples: &FloodSamples, i: usize, who: Sender) -> String {
    let v = &samples[&(i, who)];
    let min = v.iter().map(|s| s.handled).fold(f64::INFINITY, f64::min);
    let errs: u64 = v.iter().map(|s| s.errors).sum();
    let mut t = format!("{:.1} %", min * 100.0);
    if errs > 0 {
        let _ = write!(t, " ({errs} send errors)");
    }
    t
}

/// Warns about the floods of which under 99 % of the packets were handled (backlog or
/// socket drops: the sender's rate then overstates the path), by ruleset and sender.
fn warn_incomplete<'a>(samples: &FloodSamples, label: impl Fn(usize) -> &'a str) {
    let incomplete: Vec<String> = samples
        .iter()
        .filter(|(_, v)| v.iter().any(|s| s.handled < 0.99))
        .map(|((i, who), _)| format!("{} ({who:?})", label(*i)))
        .collect();
    if !incomplete.is_empty() {
        say(format!(
            "WARNING: under 99 % of the packets sent were handled (backlog or socket drops), \
             so the sender's rate overstates the path for: {}",
            incomplete.join(", ")
        ));
    }
}

fn s2_packets(o: &Opts, rep: &mut Report) {
    say("\n## 2. per-packet cost: UDP flood over veth, IPv6, packets/s sent (= handled)\n");
    let restart = o.bin("restart");
    let settings = "[rtp]\nfrom = \"whitelist\"\n";
    let mut setups = vec![Setup {
        label: "no firewall".into(),
        topo: common::Topology::new(),
        firewall: false,
    }];
    let mut classic_src = None;
    let mut sizes_info = Vec::new();
    for n in [10usize, 10_000, 100_000] {
        let accounts = packet_accounts(n);
        let cfg = Cfg::new(settings, &accounts);
        let topo = common::Topology::new();
        measure_in(topo.pbx_ns(), || cfg.cmd(&restart, &[]), CMD_TIMEOUT)
            .expect_code(&[0], "restart (per-packet setup)");
        let dry =
            measure::measure(cfg.cmd(&restart, &["--dry-run"]), CMD_TIMEOUT).expect("dry-run");
        let elements = workload::element_count(&dry.stdout);
        sizes_info.push(format!("{n} sources → {elements} set elements"));
        if n == 10_000 {
            classic_src = Some(dry.stdout.clone());
        }
        setups.push(Setup {
            label: format!("pbxwall, {n} sources"),
            topo,
            firewall: true,
        });
    }
    let (classic, rules) = workload::classic_from_dry_run(&classic_src.expect("10k dry run"));
    let topo = common::Topology::new();
    // Removed on drop, also when a load fails.
    let tmp = tempfile::Builder::new()
        .prefix("pbxw-bench-")
        .suffix(".nft")
        .tempfile()
        .expect("temp file");
    let file = tmp.path().to_path_buf();
    std::fs::write(&file, classic).expect("write classic");
    let loaded = measure_in(topo.pbx_ns(), || nft_cmd(&file), NFT_TIMEOUT);
    loaded.expect_code(&[0], "nft -f classic 10k");
    setups.push(Setup {
        label: format!("1 rule/address, 10k sources ({rules} rules)"),
        topo,
        firewall: true,
    });
    say(format!(
        "rulesets: {}; [rtp] from = \"whitelist\"",
        sizes_info.join(", ")
    ));

    // Warm-up: neighbour discovery, caches, sockets.
    for s in &setups {
        for who in [Sender::Stranger, Sender::Allowed] {
            shot(s, who, 0.2);
        }
    }
    let samples = interleaved_floods(
        o.reps,
        setups.len(),
        |_| vec![Sender::Stranger, Sender::Allowed],
        |i, who| shot(&setups[i], who, FLOOD_SECS),
    );
    let wall = |i: usize, who: Sender| kpps(&samples, i, who);
    // Packets per CPU-second (thousands): 1e6 / (CPU ns per packet).
    let cpu = |i: usize, who: Sender| -> Stats {
        let v: Vec<f64> = samples[&(i, who)].iter().map(|s| 1e6 / s.cpu_ns).collect();
        stats(&v)
    };
    let base = 1; // pbxwall, 10 sources
    say(format!(
        "\n{} interleaved rounds of {FLOOD_SECS} s floods per ruleset and sender; median [min–max].\n\
         kpps = thousand packets per wall-clock second; CPU ns/pkt = CPU time of the sending thread \
         (+ ksoftirqd/0) per packet: the whole send and receive path, firewall included, and not \
         inflated by other work on the machine; ÷ 10 src = packets per CPU-second relative to \
         pbxwall with 10 sources; handled = min over rounds of (dropped by the counter rule, or \
         received by the sink) ÷ sent.\n\
         stranger: {STRANGER6} → udp {RTP_PORT} (RTP range, closed to strangers): walks the whole \
         input chain (lookups in trusted_v6, hosts_v6 and ranges_v6, none matching), then \
         dropped.\n\
         allowed:  {ALLOWED6} → udp {SIP_PORT}: a single address (lookups in trusted_v6, then \
         hosts_v6, which jumps to its account's chain), accepted by the sip-udp rule there and \
         delivered to a socket.\n",
        o.reps
    ));
    for who in [Sender::Stranger, Sender::Allowed] {
        let mut rows = Vec::new();
        for (i, s) in setups.iter().enumerate() {
            let c = cpu(i, who);
            rows.push(vec![
                s.label.clone(),
                wall(i, who).show(0),
                format!("{:.0}", 1e6 / c.median),
                ratio(&c, &cpu(base, who)),
                ratio(&wall(i, who), &wall(base, who)),
                handled(&samples, i, who),
            ]);
        }
        say(format!("{who:?}:\n"));
        say(table(
            &[
                "ruleset",
                "kpps (wall)",
                "CPU ns/pkt",
                "÷ 10 src (CPU)",
                "÷ 10 src (wall)",
                "handled",
            ],
            &rows,
        ));
    }
    warn_incomplete(&samples, |i| &setups[i].label);
    for (i, n) in [(2usize, "10k"), (3, "100k")] {
        for who in [Sender::Stranger, Sender::Allowed] {
            let (x, b) = (cpu(i, who), cpu(base, who));
            let rel = x.median / b.median;
            let relw = wall(i, who).median / wall(base, who).median;
            rep.verdict(
                &format!("2. {n} sources within 15 % of 10 sources ({who:?})"),
                format!(
                    "{:+.1} % per CPU-second ({:.0} vs {:.0} ns/pkt); {:+.1} % wall",
                    (rel - 1.0) * 100.0,
                    1e6 / x.median,
                    1e6 / b.median,
                    (relw - 1.0) * 100.0
                ),
                Some(rel >= 0.85),
            );
        }
    }
}

// -------------------------------------------------------------------------------------------
// 6. The SIP layer: ban as an element operation, bulk bans, per-packet cost

/// Bans measured one by one (each a new address).
const SINGLE_BANS: usize = 40;
/// Addresses of one `ban --stdin`.
const BULK_BANS: usize = 10_000;

/// The `n`-th documentation address of block `block` (2001:db8:b<block>::/48).
fn ban_addr(block: usize, n: usize) -> String {
    format!("2001:db8:b{block:03x}::{:x}:{:x}", n >> 16, n & 0xffff)
}

fn s6_sip(o: &Opts, rep: &mut Report) {
    say("
## 6. the SIP layer: pbxwall ban, ban --stdin, per-packet cost with 10,000 bans
");
    let pbxwall = o.bin("pbxwall");
    let restart = o.bin("restart");
    let accounts = packet_accounts(10);
    let cfg = Cfg::new("trusted = []\n", &accounts);
    let topo = common::Topology::new();
    measure_in(topo.pbx_ns(), || cfg.cmd(&restart, &[]), CMD_TIMEOUT)
        .expect_code(&[0], "restart (ban setup)");

    // One ban: a process, a dump of the ban sets, one batch, the conntrack table, the state.
    let mut one = Vec::new();
    for i in 0..SINGLE_BANS {
        let addr = ban_addr(0, i + 1);
        let m = measure_in(
            topo.pbx_ns(),
            || cfg.cmd(&pbxwall, &["ban", &addr, "--for", "1h", "--quiet"]),
            CMD_TIMEOUT,
        );
        m.expect_code(&[0], "pbxwall ban");
        one.push(m.ms());
    }
    let one = stats(&one);
    say(format!(
        "pbxwall ban ADDR (wall, {SINGLE_BANS} runs, each a new address, {} bans live at the end): {} ms",
        SINGLE_BANS,
        one.show(2)
    ));
    rep.verdict(
        "6. pbxwall ban of one address ≤ 5 ms (median wall)",
        format!("{} ms", one.show(2)),
        Some(one.median <= 5.0),
    );

    // Bulk: 10,000 addresses a line on standard input, a new block each round.
    let mut rates = Vec::new();
    for r in 0..o.reps {
        let list = cfg.file(&format!("bulk-{r}.txt"));
        let text: String = (0..BULK_BANS)
            .map(|i| format!("{}\n", ban_addr(r + 1, i + 1)))
            .collect();
        std::fs::write(&list, text).expect("write list");
        let m = measure_in(
            topo.pbx_ns(),
            || {
                let mut c = cfg.cmd(Path::new("/bin/sh"), &[]);
                c.arg("-c")
                    .arg("exec \"$0\" ban --stdin --for 1h --quiet < \"$1\"")
                    .arg(&pbxwall)
                    .arg(&list);
                c
            },
            CMD_TIMEOUT,
        );
        m.expect_code(&[0], "pbxwall ban --stdin");
        rates.push(BULK_BANS as f64 / m.wall.as_secs_f64());
    }
    let rates = stats(&rates);
    say(format!(
        "pbxwall ban --stdin of {BULK_BANS} addresses: {} addresses/s (a new block each round)",
        rates.show(0)
    ));
    rep.verdict(
        "6. ban --stdin of 10,000 addresses ≥ 10,000/s",
        format!("{} /s", rates.show(0)),
        Some(rates.median >= 10_000.0),
    );
    drop(topo);

    // Per packet: the plain whitelist against the SIP layer on (register domain, guard)
    // with 10,000 bans loaded, same accounts; interleaved floods as in scenario 2.
    let plain = Cfg::new("[rtp]\nfrom = \"whitelist\"\n", &accounts);
    let layered = Cfg::new(
        "[rtp]\nfrom = \"whitelist\"\n[sip]\nregister_domains = [\"xq356jq.dyndns.example\"]\n",
        &accounts,
    );
    let mut setups = Vec::new();
    for (label, cfg, bans) in [
        ("plain whitelist", &plain, false),
        ("SIP layer + 10k bans", &layered, true),
    ] {
        let topo = common::Topology::new();
        measure_in(topo.pbx_ns(), || cfg.cmd(&restart, &[]), CMD_TIMEOUT)
            .expect_code(&[0], "restart (per-packet setup)");
        if bans {
            let list = cfg.file("bans.txt");
            let text: String = (0..BULK_BANS)
                .map(|i| format!("{}\n", ban_addr(0x100, i + 1)))
                .collect();
            std::fs::write(&list, text).expect("write list");
            measure_in(
                topo.pbx_ns(),
                || {
                    let mut c = cfg.cmd(Path::new("/bin/sh"), &[]);
                    c.arg("-c")
                        .arg("exec \"$0\" ban --stdin --for 1h --quiet < \"$1\"")
                        .arg(&pbxwall)
                        .arg(&list);
                    c
                },
                CMD_TIMEOUT,
            )
            .expect_code(&[0], "10k bans");
        }
        setups.push(Setup {
            label: label.to_string(),
            topo,
            firewall: true,
        });
    }
    for s in &setups {
        for who in [Sender::Stranger, Sender::Allowed] {
            shot(s, who, 0.2);
        }
    }
    let mut samples: BTreeMap<(usize, Sender), Vec<Shot>> = BTreeMap::new();
    for r in 0..o.reps {
        for k in 0..setups.len() {
            let i = (k + r) % setups.len();
            for who in [Sender::Stranger, Sender::Allowed] {
                samples
                    .entry((i, who))
                    .or_default()
                    .push(shot(&setups[i], who, FLOOD_SECS));
            }
        }
    }
    let cpu = |i: usize, who: Sender| -> Stats {
        let v: Vec<f64> = samples[&(i, who)].iter().map(|s| 1e6 / s.cpu_ns).collect();
        stats(&v)
    };
    let wall = |i: usize, who: Sender| -> Stats {
        let v: Vec<f64> = samples[&(i, who)]
            .iter()
            .map(|s| s.sent_pps / 1e3)
            .collect();
        stats(&v)
    };
    say(format!(
        "\n{} interleaved rounds of {FLOOD_SECS} s floods; allowed = {ALLOWED6} → udp {SIP_PORT} \
         (with the layer: the jump to sip_guard and its lookups, then the established accept); \
         stranger = {STRANGER6} → udp {RTP_PORT} (no SIP port: the ban lookups, then the whole \
         chain, dropped).\n",
        o.reps
    ));
    for who in [Sender::Stranger, Sender::Allowed] {
        let rows: Vec<Vec<String>> = setups
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let c = cpu(i, who);
                vec![
                    s.label.clone(),
                    wall(i, who).show(0),
                    format!("{:.0}", 1e6 / c.median),
                    ratio(&c, &cpu(0, who)),
                ]
            })
            .collect();
        say(format!("{who:?}:\n"));
        say(table(
            &["ruleset", "kpps (wall)", "CPU ns/pkt", "÷ plain (CPU)"],
            &rows,
        ));
        let rel = cpu(1, who).median / cpu(0, who).median;
        rep.verdict(
            &format!("6. SIP layer + 10k bans within 10 % of the plain whitelist ({who:?})"),
            format!(
                "{:+.1} % per CPU-second ({:.0} vs {:.0} ns/pkt)",
                (rel - 1.0) * 100.0,
                1e6 / cpu(1, who).median,
                1e6 / cpu(0, who).median
            ),
            Some(rel >= 0.90),
        );
    }
}

/// `--flood N SECS`: the per-packet setup with N sources, then a stranger flood of SECS
/// seconds (run `perf record -C 0 -g` meanwhile; BENCHMARKS.md shows how).
fn flood_for_profiling(o: &Opts, n: usize, secs: f64) {
    let cfg = Cfg::new("[rtp]\nfrom = \"whitelist\"\n", &packet_accounts(n));
    let topo = common::Topology::new();
    measure_in(
        topo.pbx_ns(),
        || cfg.cmd(&o.bin("restart"), &[]),
        CMD_TIMEOUT,
    )
    .expect_code(&[0], "restart");
    let s = Setup {
        label: String::new(),
        topo,
        firewall: true,
    };
    shot(&s, Sender::Stranger, 0.2);
    eprintln!("flooding {} for {secs} s", s.topo.pbx_ns());
    let r = shot(&s, Sender::Stranger, secs);
    println!(
        "{n} sources: {:.0} kpps, {:.0} CPU ns/packet",
        r.sent_pps / 1e3,
        r.cpu_ns
    );
}

// -------------------------------------------------------------------------------------------
// Scenarios 3 and 4: host names

const DNS_SERVER: &str = "192.0.2.53";
const SILENT_SERVER: &str = "192.0.2.54";
const SLOW_ZONE: &str = "slow.example";
const NAMES: usize = 1000;
const TIMEOUT_MS: u64 = 500;
const ATTEMPTS: u64 = 2;

fn dns_settings() -> String {
    format!(
        "trusted = []\n[resolver]\nnameservers = [\"{DNS_SERVER}\"]\ntimeout_ms = {TIMEOUT_MS}\nattempts = {ATTEMPTS}\n"
    )
}

/// Records of names `0..NAMES` (skipping the slow ones when `slow`), each an AAAA of
/// generation `generation[i]` (default 0) and an A.
fn records(slow: bool, moved: &BTreeMap<usize, u16>) -> Vec<(String, IpAddr)> {
    let mut v = Vec::new();
    for i in 0..NAMES {
        if slow && i.is_multiple_of(10) {
            continue;
        }
        let name = workload::host_name(i, None);
        let g = moved.get(&i).copied().unwrap_or(0);
        v.push((name.clone(), IpAddr::V6(workload::host_v6(i, g))));
        v.push((name, IpAddr::V4(workload::host_v4(i))));
    }
    v
}

fn dns_topology() -> common::Topology {
    let topo = common::Topology::new();
    topo.add_client_addr(DNS_SERVER);
    topo.add_client_addr(SILENT_SERVER);
    topo
}

fn s3_slow_dns(o: &Opts, rep: &mut Report) {
    say(format!(
        "\n## 3. restart with {NAMES} names, 100 of them behind a name server that never answers\n"
    ));
    let topo = dns_topology();
    let silent = common::SilentDns::start(
        topo.client_ns(),
        SocketAddr::new(SILENT_SERVER.parse().unwrap(), 53),
    );
    let _dns = dns::Dnsmasq::start(
        topo.client_ns(),
        SocketAddr::new(DNS_SERVER.parse().unwrap(), 53),
        &records(true, &BTreeMap::new()),
        Some((
            SLOW_ZONE,
            SocketAddr::new(SILENT_SERVER.parse().unwrap(), 53),
        )),
    );
    let restart = o.bin("restart");
    let slow_cfg = Cfg::new(
        &dns_settings(),
        &workload::fqdn_accounts(31, NAMES / 10, 10, Some(SLOW_ZONE)),
    );
    let fast_cfg = Cfg::new(
        &dns_settings(),
        &workload::fqdn_accounts(31, NAMES / 10, 10, None),
    );
    // The same accounts with every name under example.test: the 100 names that were slow
    // are NXDOMAIN there (not in the records), so both runs leave out the same 100 names.
    let one = |cfg: &Cfg, codes: &[i32]| {
        let m = measure_in(topo.pbx_ns(), || cfg.cmd(&restart, &[]), CMD_TIMEOUT);
        m.expect_code(codes, "restart with names");
        m
    };
    // Warm-up, and check what a slow run reports.
    let m = one(&slow_cfg, &[3]);
    let left_out = m.stderr.matches("left out ").count();
    assert_eq!(
        left_out,
        100,
        "100 names left out:\n{}",
        &m.stderr[..m.stderr.len().min(3000)]
    );
    let q0 = silent.queries();
    let mut slow = Vec::new();
    let mut fast = Vec::new();
    let reps = o.reps.clamp(1, 3);
    for r in 0..reps {
        if r.is_multiple_of(2) {
            slow.push(one(&slow_cfg, &[3]).ms());
            fast.push(one(&fast_cfg, &[3]).ms());
        } else {
            fast.push(one(&fast_cfg, &[3]).ms());
            slow.push(one(&slow_cfg, &[3]).ms());
        }
    }
    let queries = (silent.queries() - q0) / reps;
    let t = (TIMEOUT_MS * ATTEMPTS) as f64;
    let (s, f) = (stats(&slow), stats(&fast));
    say(table(
        &[
            "names",
            "restart wall ms",
            "÷ (timeout × attempts)",
            "queries at the silent server per run",
        ],
        &[
            vec![
                "1000 (900 answered, 100 silent)".into(),
                s.show(0),
                format!("{:.2}", s.median / t),
                queries.to_string(),
            ],
            vec![
                "900 answered (the same 100 names left out as NXDOMAIN)".into(),
                f.show(0),
                format!("{:.2}", f.median / t),
                "-".into(),
            ],
        ],
    ));
    say(format!(
        "timeout_ms = {TIMEOUT_MS}, attempts = {ATTEMPTS}: one unanswered query costs {t:.0} ms; \
         100 silent names = 200 queries; the tree this bench was built from runs at most {} \
         queries at once (resolve::MAX_QUERIES_IN_FLIGHT)",
        pbxwall::resolve::MAX_QUERIES_IN_FLIGHT
    ));
    rep.verdict(
        "3. 100 silent names: restart ≤ 2 × timeout × attempts",
        format!("{:.0} ms = {:.2} × {t:.0} ms", s.median, s.median / t),
        Some(s.median <= 2.0 * t),
    );
}

fn rule_handles(t: &LiveTable) -> Vec<u64> {
    t.chains
        .iter()
        .flat_map(|c| c.rule_handles.iter().copied())
        .collect()
}

fn set_elements(t: &LiveTable) -> BTreeMap<String, (u64, BTreeSet<String>)> {
    t.sets
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                (
                    s.handle,
                    s.elements.iter().map(|e| e.range.to_string()).collect(),
                ),
            )
        })
        .collect()
}

fn live(ns: &str) -> LiveTable {
    common::in_ns(ns, netlink::read_table)
        .expect("read table")
        .expect("table exists")
}

fn s4_ipchecker(o: &Opts, rep: &mut Report) {
    say(format!(
        "\n## 4. ipchecker with {NAMES} names: nothing changed, then one name moved\n"
    ));
    let topo = dns_topology();
    let mut moved: BTreeMap<usize, u16> = BTreeMap::new();
    let mut dns = dns::Dnsmasq::start(
        topo.client_ns(),
        SocketAddr::new(DNS_SERVER.parse().unwrap(), 53),
        &records(false, &moved),
        None,
    );
    let accounts = workload::fqdn_accounts(41, NAMES / 10, 10, None);
    let cfg = Cfg::new(&dns_settings(), &accounts);
    let restart = o.bin("restart");
    let ipchecker = o.bin("ipchecker");
    let pbx = topo.pbx_ns().to_string();
    measure_in(&pbx, || cfg.cmd(&restart, &[]), CMD_TIMEOUT).expect_code(&[0], "restart");

    // The DNS floor: the same names resolved in-process by pbxwall's own resolver code
    // (pbxwall::resolve::resolve_all), same server, same settings.
    let names: BTreeSet<pbxwall::model::Fqdn> = accounts
        .iter()
        .flat_map(|a| a.fqdns.iter().map(|n| n.parse().expect("fqdn")))
        .collect();
    let resolver = pbxwall::model::ResolverSettings {
        nameservers: vec![SocketAddr::new(DNS_SERVER.parse().unwrap(), 53)],
        timeout_ms: TIMEOUT_MS,
        attempts: ATTEMPTS as u32,
        stale_grace_s: 3600,
        ..Default::default()
    };
    let dns_floor = || -> f64 {
        common::in_ns(&pbx, || {
            let mut cache = pbxwall::resolve::Cache::default();
            let t = Instant::now();
            let r =
                pbxwall::resolve::resolve_all(&names, &resolver, &mut cache, chrono::Utc::now());
            let ms = t.elapsed().as_secs_f64() * 1e3;
            assert_eq!(r.degraded().count(), 0, "every name resolves");
            ms
        })
    };
    let check = |what: &str| -> (Measured, serde_json::Value) {
        let m = measure_in(&pbx, || cfg.cmd(&ipchecker, &["--json"]), CMD_TIMEOUT);
        m.expect_code(&[0], what);
        let v: serde_json::Value = serde_json::from_str(&m.stdout)
            .unwrap_or_else(|e| panic!("{what}: ipchecker --json: {e}\n{}", m.stdout));
        (m, v)
    };
    check("ipchecker warm-up");
    dns_floor();

    let mut wall = Vec::new();
    let mut floor = Vec::new();
    let mut writes = BTreeSet::new();
    let before = live(&pbx);
    for r in 0..o.reps {
        let mut one = || {
            let (m, v) = check("ipchecker, nothing changed");
            writes.insert(v["netlink_writes"].as_u64().unwrap_or(u64::MAX));
            assert_eq!(v["apply"], "none", "{}", m.stdout);
            wall.push(m.ms());
        };
        if r.is_multiple_of(2) {
            one();
            floor.push(dns_floor());
        } else {
            floor.push(dns_floor());
            one();
        }
    }
    let after = live(&pbx);
    let untouched = rule_handles(&after) == rule_handles(&before)
        && set_elements(&after) == set_elements(&before);
    let (w, f) = (stats(&wall), stats(&floor));
    let beyond = w.median - f.median;

    // One name moves, three times (there and back): exactly its elements change.
    let mut moved_rows = Vec::new();
    let mut all_exact = true;
    let mut moved_ms = Vec::new();
    for (k, idx) in [137usize, 542, 137].into_iter().enumerate() {
        let old = workload::host_v6(idx, moved.get(&idx).copied().unwrap_or(0));
        let g = if moved.get(&idx).copied().unwrap_or(0) == 0 {
            1
        } else {
            0
        };
        moved.insert(idx, g);
        let new = workload::host_v6(idx, g);
        let name = workload::host_name(idx, None);
        dns.set_records(&records(false, &moved), &name, IpAddr::V6(new));
        let before = live(&pbx);
        let (m, v) = check("ipchecker, one name moved");
        let after = live(&pbx);
        moved_ms.push(m.ms());
        // A single address: one element of the IPv6 host map, whatever its services.
        let want_sets: BTreeSet<String> = ["hosts_v6".to_string()].into();
        let changes: Vec<String> = v["changes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let (b, a) = (set_elements(&before), set_elements(&after));
        let mut changed_sets = BTreeSet::new();
        let mut exact = true;
        for (set, (handle, elems)) in &b {
            let Some((h2, e2)) = a.get(set) else {
                exact = false;
                continue;
            };
            exact &= handle == h2;
            let added: Vec<&String> = e2.difference(elems).collect();
            let removed: Vec<&String> = elems.difference(e2).collect();
            if added.is_empty() && removed.is_empty() {
                continue;
            }
            changed_sets.insert(set.clone());
            exact &= added == [&new.to_string()] && removed == [&old.to_string()];
        }
        exact &= changed_sets == want_sets;
        exact &= rule_handles(&before) == rule_handles(&after);
        exact &= v["apply"] == "elements" && v["netlink_writes"] == 1;
        let name_lines = changes.iter().filter(|c| c.starts_with(&name)).count();
        let set_lines = changes.iter().filter(|c| c.starts_with("map ")).count();
        exact &=
            name_lines == 1 && set_lines == want_sets.len() && changes.len() == 1 + want_sets.len();
        all_exact &= exact;
        moved_rows.push(vec![
            format!("#{} {name}: {old} → {new}", k + 1),
            format!("{:.0}", m.ms()),
            v["netlink_writes"].to_string(),
            format!(
                "{} ({})",
                changed_sets.len(),
                changed_sets.into_iter().collect::<Vec<_>>().join(", ")
            ),
            if exact {
                "yes".into()
            } else {
                format!("NO: {changes:?}")
            },
        ]);
    }

    say(table(
        &["run", "wall ms", "netlink writes", "rules and sets kept"],
        &[
            vec![
                "ipchecker --json, nothing changed".into(),
                w.show(0),
                format!("{writes:?}"),
                if untouched { "yes".into() } else { "NO".into() },
            ],
            vec![
                "DNS alone: resolve_all in-process, same names and server".into(),
                f.show(0),
                "-".into(),
                "-".into(),
            ],
        ],
    ));
    say(format!(
        "ipchecker beyond DNS: {beyond:.0} ms (difference of the medians)\n"
    ));
    say(table(
        &[
            "one name moved",
            "wall ms",
            "netlink writes",
            "sets changed",
            "only its element changed, handles kept",
        ],
        &moved_rows,
    ));
    rep.verdict(
        "4. nothing changed: 0 netlink writes",
        format!("{writes:?}; handles and elements identical: {untouched}"),
        Some(writes == BTreeSet::from([0]) && untouched),
    );
    rep.verdict(
        "4. nothing changed: ≤ 100 ms beyond DNS (1,000 names)",
        format!(
            "{:.0} ms wall − {:.0} ms DNS = {beyond:.0} ms",
            w.median, f.median
        ),
        Some(beyond <= 100.0),
    );
    rep.verdict(
        "4. one of 1,000 moved: only its element changes, handles stay",
        format!(
            "{} runs exact: {all_exact}; {:.0} ms median",
            moved_rows.len(),
            stats(&moved_ms).median
        ),
        Some(all_exact),
    );
}

// -------------------------------------------------------------------------------------------

fn machine() -> String {
    let uname = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let nft = Command::new(common::tool_path("nft"))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "kernel {uname}, {cpus} CPUs ({model}), {nft}; {}",
        loadavg()
    )
}

/// The load average: other work on the machine shows here (the bench runs at nice -10).
fn loadavg() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<&str> = l.split_whitespace().take(3).collect();
    format!("load average {}", v.join(" "))
}

fn self_check() {
    workload::self_check();
    measure::self_check();
    geo::self_check();
    scale::self_check();
    assert_eq!(
        apply_ms(
            "applied table inet pbxwall: 3 accounts, 5 address ranges in 10 sets, 40 netlink messages in 12.5 ms\n"
        ),
        Some(12.5)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        self_check();
        println!(
            "bench: self-check passed; the benchmarks themselves run with `make bench` \
             (cargo bench --bench bench, as root)"
        );
        return;
    }
    let mut opts = Opts {
        reps: DEFAULT_REPS,
        scale_accounts_only: false,
        geo_full_reps: None,
        only: Vec::new(),
        bin_dir: default_bin_dir(),
    };
    let mut it = args.iter().filter(|a| *a != "--bench");
    while let Some(a) = it.next() {
        match a.as_str() {
            "--reps" => {
                opts.reps = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n >= 1)
                    .expect("--reps N (N ≥ 1)");
            }
            "--accounts-only" => opts.scale_accounts_only = true,
            "--geo-full-reps" => {
                opts.geo_full_reps = Some(
                    it.next()
                        .and_then(|n| n.parse().ok())
                        .filter(|n| *n >= 1)
                        .expect("--geo-full-reps N (N ≥ 1)"),
                );
            }
            "--write-geo" => {
                let dir = it.next().expect("--write-geo DIR");
                geo::write_workload(&opts, Path::new(dir));
                return;
            }
            "restart" | "packets" | "dns" | "ipchecker" | "sip" | "geo" | "geo-packets"
            | "scale" | "scale-bans" => opts.only.push(a.clone()),
            "--flood" => {
                // Profiling aid: one pbxwall topology with N sources, a stranger flood of S s.
                let n = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--flood N SECS");
                let secs = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--flood N SECS");
                flood_for_profiling(&opts, n, secs);
                return;
            }
            "--write-workloads" => {
                let dir = it.next().expect("--write-workloads DIR");
                write_workloads(&opts, Path::new(dir));
                return;
            }
            other => {
                eprintln!(
                    "bench: unknown argument {other:?}; scenarios: restart packets dns ipchecker sip geo geo-packets scale scale-bans; --reps N"
                );
                std::process::exit(2);
            }
        }
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let missing = common::missing_tools(&["ip", "nft"]);
    if euid != 0 || !missing.is_empty() {
        let line = "=".repeat(78);
        eprintln!(
            "{line}\nSKIPPED: pbxwall benchmarks need root and ip/nft (they build network \
             namespaces and load nftables rulesets)\n         euid {euid}, missing: {missing:?}. \
             Run `make bench` as root.\n{line}"
        );
        return;
    }
    for b in ["restart", "ipchecker", "pbxwall"] {
        assert!(
            opts.bin(b).is_file(),
            "{} missing (cargo bench builds it; or set PBXWALL_BENCH_BIN_DIR)",
            opts.bin(b).display()
        );
    }
    // SAFETY: setpriority on this thread only; threads and children created later inherit it.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) } != 0 {
        eprintln!(
            "bench: could not set nice {NICE}: {}",
            std::io::Error::last_os_error()
        );
    }
    let started = Instant::now();
    say(format!("# pbxwall benchmarks\n\n{}", machine()));
    say(format!(
        "binaries: {}; {} interleaved rounds; median [min–max]",
        opts.bin_dir.display(),
        opts.reps
    ));
    let mut report = Report::default();
    let have_dnsmasq = common::tool("dnsmasq").is_some();
    type Scenario = fn(&Opts, &mut Report);
    let scenarios: [(&str, Scenario, bool); 9] = [
        ("restart", s1_restart, true),
        ("packets", s2_packets, true),
        ("dns", s3_slow_dns, have_dnsmasq),
        ("ipchecker", s4_ipchecker, have_dnsmasq),
        ("sip", s6_sip, true),
        ("geo", geo::s7_geo, true),
        ("geo-packets", geo::s7_packets, true),
        ("scale", scale::s8_scale, true),
        ("scale-bans", scale::s8_bans, true),
    ];
    for (name, f, can) in scenarios {
        // geo-packets and scale-bans are parts of geo and scale, run alone only when asked for.
        let part = name == "geo-packets" || name == "scale-bans";
        if !opts.wants(name) || (part && opts.only.is_empty()) {
            continue;
        }
        if !can {
            say(format!(
                "\n## {name}: SKIPPED: needs dnsmasq (apt-get install dnsmasq-base)"
            ));
            report.verdict(&format!("{name} (skipped: no dnsmasq)"), "-".into(), None);
            continue;
        }
        let t = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| f(&opts, &mut report)));
        match r {
            Ok(()) => say(format!("({name}: {:.0} s)", t.elapsed().as_secs_f64())),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                say(format!("\n## {name}: FAILED: {msg}"));
                report.failures.push(name.to_string());
            }
        }
    }
    say("\n## Targets\n");
    let rows: Vec<Vec<String>> = report
        .verdicts
        .iter()
        .map(|v| {
            vec![
                v.target.clone(),
                v.measured.clone(),
                match (v.met, v.info) {
                    (Some(m), _) => met(m).to_string(),
                    (None, true) => "info".into(),
                    (None, false) => "SKIPPED".into(),
                },
            ]
        })
        .collect();
    say(table(&["target", "measured", "verdict"], &rows));
    say(format!(
        "total {:.0} s; {} at the end",
        started.elapsed().as_secs_f64(),
        loadavg()
    ));
    if !report.failures.is_empty() {
        eprintln!("bench: scenarios failed: {}", report.failures.join(", "));
        std::process::exit(1);
    }
}
