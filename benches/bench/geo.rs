//! Scenario 6: the geo gate at scale. A seeded country database (DB-IP lite CSV layout) of
//! 600,768 rows whose DE rows never touch, so `allow = ["DE"]` makes 300,384 ranges in
//! `geo_v4`/`geo_v6`: `restart` against `nft -f` of the same ruleset text (fresh namespace
//! each run), peak memory, and `geo update` after 1 % of the rows changed country (the
//! delta only) and with nothing changed (no netlink write).
//!
//! Only documentation addresses: the 768 addresses of the three v4 /24s (every other one
//! DE) and 2001:db8::/32, cut into 600,000 consecutive ranges of random sizes.
//!
//! Its per-packet part (`geo-packets`, also run alone): IPv6 UDP floods to the RTP port, as in
//! scenario 2, from a source in a DE row and one in a row of another country, against the
//! whitelist without the gate, open RTP without the gate, and the gate just after `restart`
//! and after a `geo update` of the 1 % change (the small sets filled).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::measure::{self, Measured, Stats, measure_in, ratio, settle, stats};
use crate::workload::Rng;
use crate::{
    ALLOWED6, CMD_TIMEOUT, Cfg, FLOOD_SECS, NFT_TIMEOUT, Opts, RTP_PORT, Report, Sender, Setup,
    Shot, common, mib, nft_cmd, say, shot_from, table,
};
use pbxwall::geo::Gate;

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
    s7_packets(o, rep);
}

/// Where the per-packet part picks its sources: rows from here on.
const SOURCE_ROWS_FROM: usize = 768 + V6_ROWS / 4;
/// The sources stay below 2001:db8:100:: (the generated accounts' sources are above).
const SOURCES_BELOW: &str = "2001:db8:100::";

/// The two sources of the per-packet part: the middle address of the first DE row and of
/// the first row of another country from [`SOURCE_ROWS_FROM`] on whose country the 1 %
/// change leaves alone: (allowed, not allowed).
fn packet_sources(a: &[Row], b: &[Row]) -> (Ipv6Addr, Ipv6Addr) {
    let pick = |de: bool| -> Ipv6Addr {
        let (ra, _) = a
            .iter()
            .zip(b)
            .skip(SOURCE_ROWS_FROM)
            .find(|(ra, rb)| !ra.v4 && ra.country == rb.country && (ra.country == "DE") == de)
            .expect("a row");
        Ipv6Addr::from(ra.start + (ra.end - ra.start) / 2)
    };
    (pick(true), pick(false))
}

/// Elements of a set in namespace `ns` (`nft list set`).
fn set_size(ns: &str, set: &str) -> usize {
    let out = common::ns_cmd(ns, "nft", &["list", "set", "inet", "pbxwall", set]);
    assert!(out.status.success(), "nft list set {set}: {out:?}");
    listed_elements(&String::from_utf8_lossy(&out.stdout))
}

/// Elements in `nft list set` output (its `elements = { ... }` spans lines).
fn listed_elements(text: &str) -> usize {
    text.split_once("elements = {")
        .and_then(|(_, rest)| rest.split_once('}'))
        .map_or(0, |(list, _)| list.matches(',').count() + 1)
}

/// One ruleset of the per-packet part and the floods it gets: (sender, source address).
struct PacketCase {
    setup: Setup,
    sources: Vec<(Sender, String)>,
    /// `nft list set` sizes of [`Gate::set_names`]'s sets (None without the gate).
    sizes: Option<Vec<(String, usize)>>,
}

/// Scenario 7's per-packet part (`geo-packets`): what the gate's lookups cost a packet.
pub fn s7_packets(o: &Opts, rep: &mut Report) {
    say("\n## 7b. geo gate per packet: IPv6 UDP floods to the RTP port, 300k ranges\n");
    let base = rows(61);
    let b_rows = changed(&base, 62);
    let (de, other) = packet_sources(&base, &b_rows);
    let (a_text, b_text) = (csv(&base), csv(&b_rows));
    let restart = o.bin("restart");
    let pbxwall = o.bin("pbxwall");
    let accounts = crate::packet_accounts(10);
    let geo_cfg = || {
        let cfg = Cfg::new("", &accounts);
        let settings = format!(
            "[rtp]\nfrom = \"any\"\n[geo]\ndatabase = \"{}\"\nallow = [\"DE\"]\n",
            cfg.file("geo.csv").display()
        );
        cfg.tmp.write("pbxwall.toml", &settings);
        install_db(&cfg, &a_text);
        cfg
    };
    let cfgs = [
        (
            "1. whitelist, no gate",
            Cfg::new("[rtp]\nfrom = \"whitelist\"\n", &accounts),
        ),
        (
            "1b. open RTP, no gate",
            Cfg::new("[rtp]\nfrom = \"any\"\n", &accounts),
        ),
        ("2. gate after restart", geo_cfg()),
        ("3. gate after geo update", geo_cfg()),
    ];
    let (de_s, other_s) = (de.to_string(), other.to_string());
    let mut cases = Vec::new();
    let mut delta = (0, 0);
    for (k, (label, cfg)) in cfgs.iter().enumerate() {
        let topo = common::Topology::new();
        for a in [&de_s, &other_s] {
            topo.add_client_addr(&format!("{a}/128"));
            topo.add_pbx_route(&format!("{a}/128"));
        }
        measure_in(topo.pbx_ns(), || cfg.cmd(&restart, &[]), CMD_TIMEOUT)
            .expect_code(&[0], "restart (geo per-packet setup)");
        if k == 3 {
            install_db(cfg, &b_text);
            let m = measure_in(
                topo.pbx_ns(),
                || cfg.cmd(&pbxwall, &["geo", "update", "--json"]),
                CMD_TIMEOUT,
            );
            m.expect_code(&[0], "geo update (per-packet setup)");
            let v = json(&m, "geo update");
            assert_eq!(
                v["apply"], "elements",
                "geo update wrote elements only: {v}"
            );
            delta = (
                v["added"].as_u64().unwrap_or(0),
                v["removed"].as_u64().unwrap_or(0),
            );
        }
        let sizes = (k >= 2).then(|| {
            Gate::set_names()
                .into_iter()
                .map(|set| {
                    let n = set_size(topo.pbx_ns(), &set);
                    (set, n)
                })
                .collect()
        });
        let sources = match k {
            0 => vec![
                (Sender::Stranger, other_s.clone()),
                (Sender::Allowed, ALLOWED6.to_string()),
            ],
            1 => vec![(Sender::Allowed, de_s.clone())],
            _ => vec![
                (Sender::Stranger, other_s.clone()),
                (Sender::Allowed, de_s.clone()),
            ],
        };
        cases.push(PacketCase {
            setup: Setup {
                label: label.to_string(),
                topo,
                firewall: true,
            },
            sources,
            sizes,
        });
    }
    let flood = |c: &PacketCase, who: Sender, src: &str, secs: f64| -> Shot {
        shot_from(&c.setup, src, RTP_PORT, who == Sender::Stranger, secs)
    };
    // Warm-up (neighbour discovery, caches, sockets), and the check that each source gets
    // the verdict it should: the stranger's packets counted as dropped, the allowed one's
    // delivered.
    for c in &cases {
        for (who, src) in &c.sources {
            flood(c, *who, src, 0.2);
            let sh = flood(c, *who, src, 0.2);
            assert!(
                sh.handled > 0.9,
                "{}: {who:?} {src} → udp {RTP_PORT}: only {:.1} % {} (setup wrong)",
                c.setup.label,
                sh.handled * 100.0,
                if *who == Sender::Stranger {
                    "dropped"
                } else {
                    "delivered"
                }
            );
        }
    }
    let sizes: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            c.sizes.as_ref().map(|v| {
                let v: Vec<String> = v.iter().map(|(s, n)| format!("{s} {n}")).collect();
                format!("{}: elements: {}", c.setup.label, v.join(", "))
            })
        })
        .collect();
    say(format!(
        "sources: {de} (a DE row: allowed), {other} (a row of another country: not allowed), \
         both rows the same country in the 1 % change; accounts as in scenario 2 with 10 \
         sources; geo update +{} −{} elements (v4+v6)\n{}",
        delta.0,
        delta.1,
        sizes.join("\n")
    ));

    // The source of a case's sender.
    let source = |i: usize, who: Sender| -> &str {
        &cases[i]
            .sources
            .iter()
            .find(|(w, _)| *w == who)
            .expect("source")
            .1
    };
    let samples = crate::interleaved_floods(
        o.reps,
        cases.len(),
        |i| cases[i].sources.iter().map(|(who, _)| *who).collect(),
        |i, who| flood(&cases[i], who, source(i, who), FLOOD_SECS),
    );
    let ns = |i: usize, who: Sender| -> Stats {
        let v: Vec<f64> = samples[&(i, who)].iter().map(|s| s.cpu_ns).collect();
        stats(&v)
    };
    say(format!(
        "\n{} interleaved rounds of {FLOOD_SECS} s floods per ruleset and source, to udp \
         {RTP_PORT}; median [min–max]. CPU ns/pkt = CPU time of the sending thread (+ \
         ksoftirqd/0) per packet, the whole send and receive path (scenario 2); ÷ 1 = CPU \
         ns/pkt ÷ ruleset 1's (cost: above 1 is dearer); handled = min over rounds of \
         (dropped by the counter rule, or received by the sink) ÷ sent.\n\
         Stranger: {other} (not DE): ruleset 1 drops it at the policy after the whitelist's \
         lookups; rulesets 2 and 3 look it up in geo_v6 and geo_added_v6 (no match) \
         first.\n\
         Allowed: ruleset 1: {ALLOWED6} (whitelisted; accepted by its account's RTP rule); \
         1b and 2, 3: {de} (DE, not whitelisted; accepted by the open RTP rule, in 2 and 3 \
         after the lookups in geo_v6 and geo_removed_v6).\n",
        o.reps,
    ));
    for who in [Sender::Stranger, Sender::Allowed] {
        let rows: Vec<Vec<String>> = cases
            .iter()
            .enumerate()
            .filter(|(_, c)| c.sources.iter().any(|(w, _)| *w == who))
            .map(|(i, c)| {
                vec![
                    c.setup.label.clone(),
                    source(i, who).to_owned(),
                    crate::kpps(&samples, i, who).show(0),
                    ns(i, who).show(0),
                    ratio(&ns(i, who), &ns(0, who)),
                    crate::handled(&samples, i, who),
                ]
            })
            .collect();
        say(format!("{who:?}:\n"));
        say(table(
            &[
                "ruleset",
                "source",
                "kpps (wall)",
                "CPU ns/pkt",
                "÷ 1 (CPU ns)",
                "handled",
            ],
            &rows,
        ));
    }
    crate::warn_incomplete(&samples, |i| &cases[i].setup.label);
    let (s1, s2, s3) = (
        ns(0, Sender::Stranger),
        ns(2, Sender::Stranger),
        ns(3, Sender::Stranger),
    );
    rep.info(
        "7b. geo gate per packet, not-allowed source (dropped), CPU ns/pkt",
        format!(
            "whitelist {:.0}; gate after restart {:.0} (×{:.2}), after update {:.0} (×{:.2}); \
             update ÷ restart {}",
            s1.median,
            s2.median,
            s2.median / s1.median,
            s3.median,
            s3.median / s1.median,
            ratio(&s3, &s2)
        ),
    );
    let (a1, a1b, a2, a3) = (
        ns(0, Sender::Allowed),
        ns(1, Sender::Allowed),
        ns(2, Sender::Allowed),
        ns(3, Sender::Allowed),
    );
    rep.info(
        "7b. geo gate per packet, allowed source (delivered), CPU ns/pkt",
        format!(
            "whitelisted {:.0}; open RTP {:.0}; gate after restart {:.0} (×{:.2} of open), \
             after update {:.0} (×{:.2}); update ÷ restart {}",
            a1.median,
            a1b.median,
            a2.median,
            a2.median / a1b.median,
            a3.median,
            a3.median / a1b.median,
            ratio(&a3, &a2)
        ),
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
    assert_eq!(
        listed_elements(
            "set s {\n\telements = { 2001:db8::/64, 2001:db8:1::-2001:db8:1::5,\n\t\t2001:db8:2::1 }\n}\n"
        ),
        3
    );
    assert_eq!(listed_elements("set s {\n\ttype ipv6_addr\n}\n"), 0);
    let (de, other) = packet_sources(&r, &c);
    let below = u128::from(SOURCES_BELOW.parse::<Ipv6Addr>().unwrap());
    for (addr, want_de) in [(de, true), (other, false)] {
        let a = u128::from(addr);
        assert!(a < below, "{addr} below {SOURCES_BELOW}");
        for rows in [&r, &c] {
            let row = rows
                .iter()
                .find(|x| !x.v4 && x.start <= a && a <= x.end)
                .expect("in a row");
            assert_eq!(row.country == "DE", want_de, "{addr}: {}", row.country);
        }
    }
}
