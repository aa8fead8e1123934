//! Scenario 6: the geo gate at scale. A seeded country database (DB-IP lite CSV layout) of
//! 600,768 rows whose DE rows never touch, so `allow = ["DE"]` makes 300,384 ranges in
//! `geo_v4`/`geo_v6`: `restart` against `nft -f` of the same ruleset text (fresh namespace
//! each run), peak memory, and `geo update` after 1 % of the rows changed country (the
//! delta only) and with nothing changed (no netlink write).
//!
//! Only documentation addresses: the 768 addresses of the three v4 /24s (every other one
//! DE) and 2001:db8::/32, cut into 600,000 consecutive ranges of random sizes.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::measure::{self, Measured, measure_in, ratio, settle, stats};
use crate::workload::Rng;
use crate::{CMD_TIMEOUT, Cfg, NFT_TIMEOUT, Opts, Report, mib, nft_cmd, say, table};

/// IPv6 rows of the database (half of them DE).
const V6_ROWS: usize = 600_000;
/// Countries of the rows that are not DE.
const OTHERS: [&str; 5] = ["US", "FR", "AT", "NL", "GB"];

/// One database row: first and last address as numbers, v4 or v6, country.
#[derive(Clone)]
struct Row {
    v4: bool,
    start: u128,
    end: u128,
    country: &'static str,
}

/// The seeded database: DE on every even row, another country on every odd one.
fn rows(seed: u64) -> Vec<Row> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(768 + V6_ROWS);
    let mut i = 0usize;
    for net in [[192u8, 0, 2], [198, 51, 100], [203, 0, 113]] {
        for h in 0..=255u8 {
            let a = u32::from(Ipv4Addr::new(net[0], net[1], net[2], h)) as u128;
            out.push(Row {
                v4: true,
                start: a,
                end: a,
                country: pick(i, &mut rng),
            });
            i += 1;
        }
    }
    let mut pos = u128::from("2001:db8::".parse::<Ipv6Addr>().expect("address"));
    for _ in 0..V6_ROWS {
        // 1 to 2^70 addresses: 600,000 of them fit in 2001:db8::/32 (2^96).
        let size = 1 + (u128::from(rng.next_u64()) << 6 | u128::from(rng.below(64)));
        out.push(Row {
            v4: false,
            start: pos,
            end: pos + size - 1,
            country: pick(i, &mut rng),
        });
        pos += size;
        i += 1;
    }
    out
}

fn pick(i: usize, rng: &mut Rng) -> &'static str {
    if i.is_multiple_of(2) {
        "DE"
    } else {
        OTHERS[rng.below(OTHERS.len() as u64) as usize]
    }
}

/// 1 % of the rows change country: half of the changed ones leave DE, half join it (and
/// merge with their DE neighbours).
fn changed(rows: &[Row], seed: u64) -> Vec<Row> {
    let mut rng = Rng::new(seed);
    let mut out = rows.to_vec();
    for _ in 0..rows.len() / 100 {
        let i = rng.below(rows.len() as u64) as usize;
        out[i].country = if out[i].country == "DE" { "FR" } else { "DE" };
    }
    out
}

fn csv(rows: &[Row]) -> String {
    let mut s = String::with_capacity(rows.len() * 64);
    for r in rows {
        if r.v4 {
            let _ = writeln!(
                s,
                "{},{},{}",
                Ipv4Addr::from(r.start as u32),
                Ipv4Addr::from(r.end as u32),
                r.country
            );
        } else {
            let _ = writeln!(
                s,
                "{},{},{}",
                Ipv6Addr::from(r.start),
                Ipv6Addr::from(r.end),
                r.country
            );
        }
    }
    s
}

/// Puts `text` in place as the configured database (written aside, then renamed, as a
/// download would be).
fn install_db(cfg: &Cfg, text: &str) {
    let tmp = cfg.file("geo.csv.new");
    std::fs::write(&tmp, text).expect("write database");
    std::fs::rename(&tmp, cfg.file("geo.csv")).expect("rename database");
}

fn json(m: &Measured, what: &str) -> serde_json::Value {
    serde_json::from_str(&m.stdout)
        .unwrap_or_else(|e| panic!("{what}: --json: {e}\n{}\n{}", m.stdout, m.stderr))
}

pub fn s7_geo(o: &Opts, rep: &mut Report) {
    say("\n## 7. geo gate: 300k ranges; restart vs nft -f; geo update of a 1 % change\n");
    let base = rows(61);
    let a_text = csv(&base);
    let b_text = csv(&changed(&base, 62));
    let cfg = Cfg::new("", &[]);
    let settings = format!(
        "[geo]\ndatabase = \"{}\"\nallow = [\"DE\"]\n",
        cfg.file("geo.csv").display()
    );
    cfg.tmp.write("pbxwall.toml", &settings);
    install_db(&cfg, &a_text);
    let restart = o.bin("restart");
    let pbxwall = o.bin("pbxwall");
    let dry = measure::measure(cfg.cmd(&restart, &["--dry-run"]), CMD_TIMEOUT).expect("dry-run");
    dry.expect_code(&[0], "restart --dry-run");
    let ruleset = cfg.file("ruleset.nft");
    std::fs::write(&ruleset, &dry.stdout).expect("write ruleset");
    let elements = crate::workload::element_count(&dry.stdout);
    say(table(
        &[
            "database rows",
            "size MiB",
            "geo set elements (v4+v6)",
            "ruleset text MiB",
        ],
        &[vec![
            base.len().to_string(),
            format!("{:.1}", a_text.len() as f64 / 1048576.0),
            elements.to_string(),
            format!("{:.1}", dry.stdout.len() as f64 / 1048576.0),
        ]],
    ));

    // restart (fresh namespace) vs nft -f of the same text, interleaved.
    let full = |pbx: bool| -> Measured {
        let ns = measure::scratch_ns();
        settle(elements);
        let m = if pbx {
            measure_in(ns.name(), || cfg.cmd(&restart, &[]), CMD_TIMEOUT)
        } else {
            measure_in(ns.name(), || nft_cmd(&ruleset), NFT_TIMEOUT)
        };
        m.expect_code(&[0], if pbx { "restart" } else { "nft -f" });
        drop(ns);
        m
    };
    full(true);
    full(false);
    let (mut pbx_ms, mut nft_ms, mut pbx_rss, mut nft_rss) = (vec![], vec![], vec![], vec![]);
    let (mut pbx_cpu, mut nft_cpu) = (vec![], vec![]);
    let full_reps = o.geo_full_reps.unwrap_or(o.reps);
    for r in 0..full_reps {
        for k in 0..2 {
            let pbx = (k + r) % 2 == 0;
            let m = full(pbx);
            let (ms, rss, cpu) = if pbx {
                (&mut pbx_ms, &mut pbx_rss, &mut pbx_cpu)
            } else {
                (&mut nft_ms, &mut nft_rss, &mut nft_cpu)
            };
            ms.push(m.ms());
            rss.extend(m.maxrss_kib.map(|k| mib(k as f64)));
            cpu.push(m.cpu.as_secs_f64() * 1e3);
        }
        say(format!("  round {}/{full_reps} (full loads) done", r + 1));
    }

    // geo update: a namespace with the table of database A; B (1 % changed) and back, each
    // timed; then nothing changed.
    let ns = measure::scratch_ns();
    measure_in(ns.name(), || cfg.cmd(&restart, &[]), CMD_TIMEOUT).expect_code(&[0], "restart");
    let update = |what: &str| -> (Measured, serde_json::Value) {
        let m = measure_in(
            ns.name(),
            || cfg.cmd(&pbxwall, &["geo", "update", "--json"]),
            CMD_TIMEOUT,
        );
        m.expect_code(&[0], what);
        let v = json(&m, what);
        (m, v)
    };
    let (mut upd_ms, mut upd_cpu, mut upd_rss, mut same_ms) = (vec![], vec![], vec![], vec![]);
    let mut deltas = Vec::new();
    let mut writes_unchanged = std::collections::BTreeSet::new();
    let mut all_elements = true;
    for r in 0..o.reps {
        for text in [&b_text, &a_text] {
            install_db(&cfg, text);
            let (m, v) = update("geo update (1 % changed)");
            all_elements &= v["apply"] == "elements" && v["netlink_writes"] == 1;
            deltas.push((
                v["added"].as_u64().unwrap_or(0),
                v["removed"].as_u64().unwrap_or(0),
            ));
            upd_ms.push(m.ms());
            upd_cpu.push(m.cpu.as_secs_f64() * 1e3);
            upd_rss.extend(m.maxrss_kib.map(|k| mib(k as f64)));
        }
        let (m, v) = update("geo update (unchanged)");
        writes_unchanged.insert(v["netlink_writes"].as_u64().unwrap_or(u64::MAX));
        same_ms.push(m.ms());
        say(format!("  round {}/{} (updates) done", r + 1, o.reps));
    }
    drop(ns);

    let (p, n) = (stats(&pbx_ms), stats(&nft_ms));
    let (pc, nc) = (stats(&pbx_cpu), stats(&nft_cpu));
    let (u, s) = (stats(&upd_ms), stats(&same_ms));
    let uc = stats(&upd_cpu);
    say(format!(
        "\nwall and CPU time, ms, median [min–max] of {} interleaved rounds; RSS MiB\n",
        o.reps
    ));
    say(table(
        &[
            "",
            "wall ms",
            "CPU ms",
            "peak RSS MiB",
            "÷ nft -f (wall)",
            "÷ restart (wall)",
        ],
        &[
            vec![
                "pbxwall restart (fresh)".into(),
                p.show(0),
                pc.show(0),
                stats(&pbx_rss).show(1),
                ratio(&p, &n),
                "1".into(),
            ],
            vec![
                "nft -f same text".into(),
                n.show(0),
                nc.show(0),
                stats(&nft_rss).show(1),
                "1".into(),
                ratio(&n, &p),
            ],
            vec![
                format!(
                    "geo update, 1 % of rows changed (+{} −{} elements)",
                    deltas[0].0, deltas[0].1
                ),
                u.show(0),
                uc.show(0),
                stats(&upd_rss).show(1),
                ratio(&u, &n),
                ratio(&u, &p),
            ],
            vec![
                "geo update, nothing changed".into(),
                s.show(0),
                "-".into(),
                "-".into(),
                ratio(&s, &n),
                ratio(&s, &p),
            ],
        ],
    ));
    let rss_max = pbx_rss.iter().chain(&upd_rss).copied().fold(0.0, f64::max);
    rep.verdict(
        "7. restart with 300k geo ranges ≤ 0.5 × nft -f (wall)",
        format!("{} ({:.0} vs {:.0} ms)", ratio(&p, &n), p.median, n.median),
        Some(p.median <= 0.5 * n.median),
    );
    rep.verdict(
        "7. restart with 300k geo ranges: peak RSS ≤ 100 MiB",
        format!("{rss_max:.1} MiB (largest of restart and geo update)"),
        Some(rss_max <= 100.0),
    );
    rep.verdict(
        "7. geo update, 1 % changed: delta only, ≤ 10 % of a full load (wall)",
        format!(
            "{} of restart ({:.0} vs {:.0} ms); element updates only: {all_elements}",
            ratio(&u, &p),
            u.median,
            p.median
        ),
        Some(all_elements && u.median <= 0.1 * p.median),
    );
    rep.verdict(
        "7. geo update, nothing changed: no netlink write",
        format!("netlink writes {writes_unchanged:?}"),
        Some(writes_unchanged == std::collections::BTreeSet::from([0])),
    );
}

/// `--write-geo DIR`: the databases (`geo-a.csv`, `geo-b.csv` with 1 % changed) and a
/// configuration folder using `DIR/geo.csv`, with empty state and share folders, for
/// profiling `geo update` by hand (see BENCHMARKS.md, "Reproducing a profile").
pub fn write_workload(_o: &Opts, dir: &std::path::Path) {
    let base = rows(61);
    for d in ["config", "state", "share"] {
        std::fs::create_dir_all(dir.join(d)).expect("create workload dir");
    }
    std::fs::write(dir.join("geo-a.csv"), csv(&base)).expect("write database");
    std::fs::write(dir.join("geo-b.csv"), csv(&changed(&base, 62))).expect("write database");
    std::fs::write(
        dir.join("config").join("pbxwall.toml"),
        format!(
            "[geo]\ndatabase = \"{}\"\nallow = [\"DE\"]\n",
            dir.join("geo.csv").display()
        ),
    )
    .expect("write settings");
    println!(
        "{}: geo-a.csv, geo-b.csv (1 % changed); copy one to geo.csv",
        dir.display()
    );
}

/// Checks without root: the workload is what the text says.
pub fn self_check() {
    let r = rows(61);
    assert_eq!(r.len(), 768 + V6_ROWS);
    let de = r.iter().filter(|x| x.country == "DE").count();
    assert_eq!(de, (768 + V6_ROWS) / 2);
    assert!(
        r.windows(2)
            .all(|w| w[0].end < w[1].start || w[0].v4 != w[1].v4)
    );
    let top = r.last().map(|x| x.end).unwrap_or(0);
    assert!(top < u128::from("2001:db9::".parse::<Ipv6Addr>().unwrap()));
    let c = changed(&r, 62);
    let diff = r
        .iter()
        .zip(&c)
        .filter(|(a, b)| a.country != b.country)
        .count();
    assert!(diff > r.len() / 120 && diff <= r.len() / 100, "{diff}");
}
