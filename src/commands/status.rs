//! `status`: is the table loaded, does it match what `restart` would build, and what does
//! every account open right now.
//!
//! The expected ruleset is compiled from the current files and the cached name resolution
//! (no DNS queries); the live one is read back through netlink. Exit 0 when in sync and
//! nothing is degraded, 3 on drift or degradation, 1 on error.
//!
//! JSON shape (`status --json`), stable:
//!
//! ```json
//! {
//!   "table": "loaded",                  // or "missing"
//!   "in_sync": true,
//!   "differences": ["map hosts_v4: missing 203.0.113.10 : jump allow_ssh"],
//!   "degraded": false,
//!   "problems": ["left out x.example (account a): does not resolve (NXDOMAIN)"],
//!   "last_apply": {"at": "2026-11-27T10:00:00Z", "by": "restart"},     // or null
//!   "ipchecker": {"last_run": "...", "outcome": "ok", "netlink_writes": 0,
//!                 "cron_schedule": "*/5 * * * *", "next_run": "..."},   // fields may be null
//!   "dropped": {"packets": 12, "bytes": 840},                           // or null
//!   "geo": {"database": "/srv/geo/dbip.csv", "format": "DB-IP lite CSV",  // or null
//!           "modified": "...", "rows": 600000, "countries": "DE, AT", "ranges_v4": 9000,
//!           "ranges_v6": 3000, "missing": [], "problem": null, "cached": true,
//!           "live": true, "recorded_ranges": 12000, "delta_ranges": 40,
//!           "update_pending": false},
//!   "accounts": [{
//!     "name": "joe", "services": ["sip-udp"], "comment": null, "provider": null,
//!     "expires": null, "expired": false,   // a temporary account: "2026-12-24T18:00:00Z"
//!     "addresses": [{"address": "203.0.113.7", "applied": true}],
//!     "fqdns": [{"name": "joe.dyn.example", "state": "ok", "v4": ["192.0.2.10"], "v6": [],
//!                "resolved_at": "...", "applied": ["192.0.2.10"]}],
//!     "media": []
//!   }],
//!   "recent_changes": [{"at": "...", "user": "root", "command": "add-ip",
//!                       "what": "account joe added: addresses 203.0.113.7; services sip-udp"}]
//! }
//! ```
//! A stale name also has `since` and `error`; a left-out name has `reason`.
//!
//! `status --prometheus` ([`prometheus_text`]) reports the same state as Prometheus metrics,
//! for node_exporter's textfile collector (`--prometheus-file PATH` writes them atomically).

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::Local;
use clap::Args;
use ipnet::IpNet;
use serde_json::{Value, json};

use super::{Build, Ctx, Dns, Outcome, build};
use crate::addrset::AddrRange;
use crate::audit;
use crate::compile::{ADMITTED_SET, HOSTS_MAP, RANGES_MAP, SIP_GUARD_CHAIN, set_name};
use crate::cron;
use crate::diff;
use crate::model::Account;
use crate::model::display_net;
use crate::nft::netlink::{self, LiveTable};
use crate::resolve::{NameResult, NameState};
use crate::ruleset::{INPUT_CHAIN, Ruleset};
use crate::state::State;
use crate::store;

/// `status --help`: exit codes and the `--json` shape.
pub const LONG_HELP: &str = "\
Exit status: 0 loaded and in sync with the configuration, nothing degraded; 1 error;
3 drifted (the kernel differs from what restart would apply), not loaded, or degraded
(names left out or stale, account files skipped).

The drop counter counts from the last full apply (restart, a change, ipchecker reloading
the table), whose time it shows; ipchecker's address updates keep it.

When the configuration does not build (a broken pbxwall.toml), status shows the error and
what is live (the table's size, the drop counter, the last apply, ipchecker, recent
changes), then exits 1.

With --prometheus it prints the same state as metrics in Prometheus' text exposition
format (the state is in the metrics, so the exit status is 0 unless they cannot be made);
--prometheus-file PATH writes them atomically to PATH instead, for node_exporter's
textfile collector (run it from cron every minute).

Metrics: pbxwall_table_loaded, pbxwall_in_sync, pbxwall_degraded (1 or 0);
pbxwall_differences, pbxwall_problems; pbxwall_dropped_packets_total and
pbxwall_dropped_bytes_total (since the last full apply); pbxwall_accounts, pbxwall_addresses;
pbxwall_set_elements{set}; pbxwall_names{state} (ok, stale, left_out);
pbxwall_last_apply_timestamp_seconds; pbxwall_ipchecker_last_run_timestamp_seconds;
pbxwall_ipchecker_last_run_outcome{outcome} (ok, degraded, error); pbxwall_bans{origin}
(manual, guard, fail2ban); pbxwall_guard_hits_total (with the SIP layer); with a fleet bundle
(pbxwall sync): pbxwall_fleet_serial, pbxwall_fleet_last_sync_timestamp_seconds,
pbxwall_fleet_last_sync_outcome{outcome} (ok, unchanged, failed).

With --json it prints one object (every key always present; null when it has no value):
  {\"table\": \"loaded\" | \"missing\", \"error\": null | \"...\",
   \"in_sync\": true | null, \"differences\": [\"...\"],
   \"degraded\": false | null, \"problems\": [\"...\"],
   \"live\": {\"rules\", \"sets\", \"elements\"} | null,
   \"last_apply\": {\"at\", \"by\"} | null,
   \"ipchecker\": {\"last_run\", \"outcome\", \"netlink_writes\", \"cron_schedule\", \"next_run\"},
   \"dropped\": {\"packets\", \"bytes\", \"since\"} | null,
   \"geo\": {\"database\", \"format\", \"modified\", \"rows\", \"countries\", \"ranges_v4\",
            \"ranges_v6\", \"missing\", \"problem\", \"cached\", \"live\",
            \"recorded_ranges\", \"delta_ranges\", \"update_pending\"} | null,
   \"accounts\": [{\"name\", \"services\", \"comment\", \"provider\",
                 \"expires\": null | \"RFC 3339 time\", \"expired\": false | true,
                 \"addresses\": [{\"address\", \"applied\"}],
                 \"fqdns\": [{\"name\", \"state\": \"ok\" | \"stale\" | \"left_out\",
                            \"since\", \"error\", \"reason\", \"v4\", \"v6\", \"resolved_at\", \"applied\"}],
                 \"media\"}],
   \"recent_changes\": [{\"at\", \"user\", \"command\", \"what\"}],
   \"sip\": {\"enabled\", \"register_domains\", \"admit_for\", \"open\", \"admitted\",
            \"guard\": {\"limit\", \"burst\", \"ban_for\", \"hits\"},
            \"bans\": {\"manual\", \"guard\", \"fail2ban\"}} | null,
   \"knock\": {\"enabled\", \"steps\", \"protocol\", \"step_timeout\", \"grant_for\", \"services\",
              \"grants\"} | null,
   \"fleet\": {\"source\", \"serial\", \"created\", \"accounts\", \"applied_at\", \"last_sync\",
             \"last_outcome\": \"ok\" | \"unchanged\" | \"failed\", \"last_error\"} | null}
Each account also has \"origin\": \"local\" or \"fleet\" (from the bundle pbxwall sync applied).";

/// `status`: what is loaded, whether it matches the configuration, per account.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The cron.d file whose schedule tells when ipchecker runs next
    #[arg(long, value_name = "PATH", default_value = crate::cron::DEFAULT_CRON_FILE)]
    pub cron_file: PathBuf,
    /// Print metrics in Prometheus' text format instead (exit 0 when printed)
    #[arg(long)]
    pub prometheus: bool,
    /// Write those metrics atomically to PATH instead of printing them, e.g. into
    /// node_exporter's textfile folder (exit 0 when written)
    #[arg(long, value_name = "PATH")]
    pub prometheus_file: Option<PathBuf>,
}

/// `status [--json]`.
///
/// When the configuration does not build (a broken pbxwall.toml, say), it still shows what is
/// live (the table, its size, the drop counter, the last apply, ipchecker, recent changes)
/// with the error, then fails with that error (exit 1).
pub fn status(ctx: &Ctx, args: StatusArgs) -> Result<Outcome> {
    if args.prometheus || args.prometheus_file.is_some() {
        return prometheus(ctx, &args);
    }
    let built = build(ctx, None, Dns::CacheOnly);
    let live = netlink::read_table()
        .context("cannot read table inet pbxwall from the kernel (status needs root)")?;
    let (st, _) = State::load(&ctx.paths);
    let schedule = cron::installed_schedule(&args.cron_file);
    let next_run = schedule
        .as_ref()
        .and_then(|s| s.next_runs(Local::now(), 1).pop())
        .map(|t| t.format("%Y-%m-%d %H:%M %Z").to_string());
    let dropped = live.as_ref().and_then(drop_counter);
    let counted_since = st.applied.as_ref().and_then(|a| a.loaded_at.clone());
    let mut report = json!({
        "table": if live.is_some() { "loaded" } else { "missing" },
        "error": null,
        "last_apply": st.applied.as_ref().map(|a| json!({"at": a.at, "by": a.by})),
        "ipchecker": {
            "last_run": st.ipchecker.as_ref().map(|r| r.at.clone()),
            "outcome": st.ipchecker.as_ref().map(|r| r.outcome.clone()),
            "netlink_writes": st.ipchecker.as_ref().map(|r| r.netlink_writes),
            "cron_schedule": schedule.as_ref().map(|s| s.as_str().to_owned()),
            "next_run": next_run,
        },
        "dropped": dropped.map(|(p, by)| json!({"packets": p, "bytes": by, "since": counted_since})),
        "recent_changes": audit::last(&ctx.paths, RECENT_CHANGES),
        "fleet": fleet_json(ctx),
    });
    let b = match built {
        Ok(b) => b,
        Err(e) => {
            let m = report.as_object_mut().expect("an object");
            m.insert("error".into(), json!(format!("{e:#}")));
            m.insert("in_sync".into(), Value::Null);
            m.insert("differences".into(), json!([]));
            m.insert("degraded".into(), Value::Null);
            m.insert("problems".into(), json!([]));
            m.insert("live".into(), live.as_ref().map(live_size).into());
            m.insert("geo".into(), Value::Null);
            m.insert("accounts".into(), json!([]));
            m.insert("sip".into(), Value::Null);
            m.insert("knock".into(), Value::Null);
            show(ctx, &report)?;
            return Err(e.context(
                "the configuration does not build, so status cannot compare it with what is live",
            ));
        }
    };
    let want_rules = netlink::rule_fingerprints(&b.ruleset);
    let diff = diff::diff(&b.ruleset, want_rules.as_deref(), live.as_ref());
    let in_sync = diff.is_in_sync();
    let m = report.as_object_mut().expect("an object");
    m.insert("in_sync".into(), json!(in_sync));
    m.insert("differences".into(), json!(diff.lines()));
    m.insert("degraded".into(), json!(b.degraded()));
    m.insert("problems".into(), json!(b.problems()));
    m.insert("live".into(), live.as_ref().map(live_size).into());
    m.insert("geo".into(), geo_json(&b, &ctx.paths, live.as_ref()));
    let fleet_names = crate::fleet::fleet_account_names(&ctx.paths);
    m.insert(
        "accounts".into(),
        b.accounts
            .iter()
            .chain(&b.expired)
            .map(|a| {
                let mut v = account_json(&b, a, live.as_ref());
                let fleet = fleet_names.contains_key(&a.name)
                    && !crate::store::account_exists(&ctx.paths, &a.name);
                v["origin"] = json!(if fleet { "fleet" } else { "local" });
                v
            })
            .collect(),
    );
    m.insert("sip".into(), sip_json(&b.settings, live.as_ref()));
    m.insert("knock".into(), knock_json(&b.settings, live.as_ref()));
    show(ctx, &report)?;
    Ok(if in_sync && !b.degraded() {
        Outcome::Done
    } else {
        Outcome::Degraded
    })
}

/// The geo gate: null when off; else its database (path, format, modification time, rows),
/// the countries it passes, its ranges per family, whether both sets are live, and how many
/// ranges pbxwall recorded putting there (their elements are not read back: see
/// [`netlink::dumps_elements`]).
fn geo_json(b: &Build, paths: &store::Paths, live: Option<&LiveTable>) -> Value {
    if !b.settings.geo.enabled() {
        return Value::Null;
    }
    let live_sets = crate::geo::Gate::set_names()
        .iter()
        .all(|name| live.is_some_and(|t| t.sets.iter().any(|s| s.name == *name)));
    let recorded = crate::geo::Applied::load(paths);
    // The database (or [geo]) changed since the gate was applied: geo update loads it.
    let update_pending = recorded.as_ref().map(|r| &r.key) != b.geo.key.as_ref();
    let mut v = serde_json::to_value(&b.geo).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.insert("live".into(), json!(live_sets));
        // The ranges `geo update` put in geo_added_* and geo_removed_* since the base sets
        // were loaded in full.
        let delta_ranges = recorded.as_ref().map(|r| r.delta.len());
        m.insert(
            "recorded_ranges".into(),
            json!(recorded.map(|r| r.ranges_len())),
        );
        m.insert("delta_ranges".into(), json!(delta_ranges));
        m.insert("update_pending".into(), json!(update_pending));
    }
    v
}

/// The fleet: where the bundle comes from, the serial in force, how the last sync went;
/// null when no `[sync] url` is set and no bundle is stored.
fn fleet_json(ctx: &Ctx) -> Value {
    let source = store::load_settings(&ctx.paths)
        .ok()
        .and_then(|s| s.sync.source)
        .map(|s| s.url());
    let stored = crate::fleet::stored_bundle(&ctx.paths).ok().flatten();
    if source.is_none() && stored.is_none() {
        return Value::Null;
    }
    let st = crate::fleet::SyncState::load(&ctx.paths);
    json!({
        "source": source,
        "serial": stored.as_ref().map(|(b, _)| b.serial),
        "created": stored.as_ref().map(|(b, _)| b.created.clone()),
        "accounts": stored.as_ref().map_or(0, |(b, _)| b.account_names().len()),
        "applied_at": st.applied_at,
        "last_sync": st.last_run,
        "last_outcome": st.last_outcome,
        "last_error": st.last_error,
    })
}

/// Port knocking as `status` shows it: its settings (not the ports: status output is
/// shared more freely than the settings file) and the number of live grants.
fn knock_json(settings: &crate::model::Settings, live: Option<&LiveTable>) -> Value {
    let k = &settings.knock;
    let grants = live.map(|live| {
        [crate::addrset::Family::V4, crate::addrset::Family::V6]
            .iter()
            .filter_map(|f| {
                let name = set_name(crate::compile::KNOCK_GRANT_SET, *f);
                live.sets.iter().find(|s| s.name == name)
            })
            .map(|s| s.elements.len())
            .sum::<usize>()
    });
    json!({
        "enabled": k.enabled(),
        "steps": k.sequence.len(),
        "protocol": k.protocol.keyword(),
        "step_timeout": k.step_timeout.to_string(),
        "grant_for": k.grant_for.to_string(),
        "services": k.services,
        "grants": grants,
    })
}

/// The SIP layer as `status` shows it: its settings, the sources admitted, the bans by
/// origin (manual, guard, fail2ban) and the guard's hits (packets over the limit since
/// the last full apply).
fn sip_json(settings: &crate::model::Settings, live: Option<&LiveTable>) -> Value {
    let sip = &settings.sip;
    let count_of = |base: &str| -> Option<usize> {
        let live = live?;
        Some(
            [crate::addrset::Family::V4, crate::addrset::Family::V6]
                .iter()
                .filter_map(|f| live.sets.iter().find(|s| s.name == set_name(base, *f)))
                .map(|s| s.elements.len())
                .sum(),
        )
    };
    let mut bans = json!({"manual": 0, "guard": 0, "fail2ban": 0});
    if let Ok(entries) = super::ban::ban_entries() {
        for e in entries {
            if let Some(n) = bans[e.origin].as_u64() {
                bans[e.origin] = json!(n + 1);
            }
        }
    }
    json!({
        "enabled": sip.enabled(),
        "register_domains": sip.register_domains.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
        "admit_for": sip.admit_for.to_string(),
        "open": sip.open,
        "admitted": count_of(ADMITTED_SET),
        "guard": {
            "limit": settings.guard.limit.to_string(),
            "burst": settings.guard.burst,
            "ban_for": settings.guard.ban_for.to_string(),
            "hits": live.and_then(guard_hits),
        },
        "bans": bans,
    })
}

/// Packets over the guard's limit since the last full apply: the counters of the chain
/// `sip_guard` (only its meter rules count).
fn guard_hits(live: &LiveTable) -> Option<u64> {
    let chain = live.chains.iter().find(|c| c.name == SIP_GUARD_CHAIN)?;
    Some(chain.counters.iter().map(|(_, p, _)| *p).sum())
}

/// Prints the report as JSON or text.
fn show(ctx: &Ctx, report: &Value) -> Result<()> {
    if ctx.json {
        ctx.print_json(report)
    } else {
        print_text(report);
        Ok(())
    }
}

/// The size of the live table: rules of all chains, sets, and the address ranges in them.
fn live_size(live: &LiveTable) -> Value {
    json!({
        "rules": live.chains.iter().map(|c| c.rule_count).sum::<usize>(),
        "sets": live.sets.len(),
        "elements": live.sets.iter().map(|s| s.elements.len()).sum::<usize>(),
    })
}

/// How many audit-log entries `status` shows.
pub const RECENT_CHANGES: usize = 5;

/// Packets and bytes of the last counter in the input chain: what the drop policy dropped.
fn drop_counter(live: &LiveTable) -> Option<(u64, u64)> {
    let input = live.chains.iter().find(|c| c.name == INPUT_CHAIN)?;
    input.counters.last().map(|(_, p, b)| (*p, *b))
}

/// Whether `range` is live as `restart` would apply it: every element of the built source
/// maps that overlaps it (its own, or the pieces it shares with overlapping accounts) is in
/// the live map of the same name with the same jump.
fn applied(want: &Ruleset, live: Option<&LiveTable>, range: AddrRange) -> bool {
    let Some(live) = live else {
        return false;
    };
    let mut found = false;
    for base in [HOSTS_MAP, RANGES_MAP] {
        let name = set_name(base, range.family);
        let Some(want) = want.set(&name) else {
            continue;
        };
        let have = live.sets.iter().find(|s| s.name == name);
        // Elements are sorted and disjoint: binary search for the first that may overlap.
        let first = want.elements.partition_point(|e| e.range.end < range.start);
        for e in want.elements[first..]
            .iter()
            .take_while(|e| e.range.start <= range.end)
        {
            if have.is_none_or(|h| h.elements.binary_search(e).is_err()) {
                return false;
            }
            found = true;
        }
    }
    found
}

fn account_json(b: &Build, a: &Account, live: Option<&LiveTable>) -> Value {
    let net_json = |n: &IpNet| json!({"address": display_net(n), "applied": applied(&b.ruleset, live, AddrRange::from_net(*n))});
    let fqdns: Vec<Value> = a
        .fqdns
        .iter()
        .map(|f| match b.resolution.names.get(f) {
            Some(r) => name_json(&b.ruleset, r, live),
            None => with_every_name_key(
                json!({"name": f.as_str(), "state": "left_out", "reason": "not resolved"}),
            ),
        })
        .collect();
    json!({
        "name": a.name.as_str(),
        "services": a.services,
        "comment": a.comment,
        "provider": a.provider,
        "expires": a.expires.map(crate::model::format_time),
        "expired": a.expires.is_some_and(|t| t <= chrono::Utc::now()),
        "addresses": a.addresses.iter().map(net_json).collect::<Vec<_>>(),
        "fqdns": fqdns,
        "media": a.media.iter().map(display_net).collect::<Vec<_>>(),
    })
}

fn name_json(want: &Ruleset, r: &NameResult, live: Option<&LiveTable>) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    let applied: Vec<String> = r
        .addrs()
        .into_iter()
        .filter(|ip: &IpAddr| applied(want, live, AddrRange::from_addr(*ip)))
        .map(|ip| ip.to_string())
        .collect();
    if let Value::Object(m) = &mut v {
        m.insert("applied".into(), json!(applied));
    }
    with_every_name_key(v)
}

/// The keys `--json` documents for a name, each present (`null` when it has no value):
/// a resolved name has no `since`, `error` or `reason`, a name never resolved no addresses.
const NAME_KEYS: [&str; 9] = [
    "name",
    "state",
    "since",
    "error",
    "reason",
    "v4",
    "v6",
    "resolved_at",
    "applied",
];

fn with_every_name_key(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        for key in NAME_KEYS {
            let empty = match key {
                "v4" | "v6" | "applied" => json!([]),
                _ => Value::Null,
            };
            m.entry(key).or_insert(empty);
        }
    }
    v
}

/// What `status` says of ipchecker, in words: when it last ran and how it went, and whether
/// cron runs it.
fn ipchecker_line(ip: &Value) -> String {
    let last = match ip["last_run"].as_str() {
        Some(_) => format!(
            "ipchecker last ran at {} ({})",
            s(&ip["last_run"]),
            s(&ip["outcome"])
        ),
        None => "ipchecker has not run yet".to_owned(),
    };
    let cron = match (ip["cron_schedule"].as_str(), ip["next_run"].as_str()) {
        (Some(_), Some(_)) => format!(
            "cron runs it at \"{}\", next at {}",
            s(&ip["cron_schedule"]),
            s(&ip["next_run"])
        ),
        (Some(_), None) => format!("cron runs it at \"{}\"", s(&ip["cron_schedule"])),
        (None, _) => "no cron entry".to_owned(),
    };
    format!("{last}; {cron}")
}

/// A value of the report as text; strings from files (comments, user names) escaped.
fn s(v: &Value) -> String {
    match v {
        Value::String(s) => crate::model::printable(s).into_owned(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_text(r: &Value) {
    if r["error"].is_string() {
        outln!(
            "configuration: ERROR, not compared with what is live: {}",
            s(&r["error"])
        );
    }
    let table = if r["table"] == "missing" {
        "NOT LOADED".to_owned()
    } else if r["in_sync"].is_null() {
        let l = &r["live"];
        format!(
            "loaded ({} rules, {} sets, {} address ranges)",
            s(&l["rules"]),
            s(&l["sets"]),
            s(&l["elements"])
        )
    } else if r["in_sync"] == true {
        "loaded, in sync with the configuration".to_owned()
    } else {
        "loaded, DRIFTED from the configuration (run restart)".to_owned()
    };
    outln!("table inet pbxwall: {table}");
    for d in r["differences"].as_array().into_iter().flatten() {
        outln!("  - {}", s(d));
    }
    if let Some(a) = r["last_apply"].as_object() {
        outln!("last apply: {} by {}", s(&a["at"]), s(&a["by"]));
    }
    outln!("{}", ipchecker_line(&r["ipchecker"]));
    if let Some(g) = r["geo"].as_object() {
        outln!(
            "geo gate: {} on the open paths; {} IPv4 and {} IPv6 ranges ({})",
            s(&g["countries"]),
            s(&g["ranges_v4"]),
            s(&g["ranges_v6"]),
            if g["live"] == true {
                match g["delta_ranges"].as_u64() {
                    Some(n) if n > 0 => format!(
                        "live; {} applied, {n} of them in geo_added/geo_removed",
                        s(&g["recorded_ranges"])
                    ),
                    _ => format!("live; {} applied", s(&g["recorded_ranges"])),
                }
            } else {
                "NOT live".to_owned()
            }
        );
        outln!(
            "geo database: {} ({}, modified {}, {} rows)",
            s(&g["database"]),
            s(&g["format"]),
            s(&g["modified"]),
            s(&g["rows"])
        );
        if g["update_pending"] == true {
            outln!("geo database changed since the gate was applied: run pbxwall geo update");
        }
    }
    if let Some(f) = r["fleet"].as_object() {
        let serial = match f["serial"] {
            Value::Null => "no bundle yet".to_owned(),
            _ => format!(
                "serial {} ({} accounts, made {})",
                s(&f["serial"]),
                s(&f["accounts"]),
                s(&f["created"])
            ),
        };
        let mut line = format!("fleet: {} from {}", serial, s(&f["source"]));
        if f["last_sync"].is_string() {
            line.push_str(&format!(
                "; last sync {}: {}",
                s(&f["last_sync"]),
                s(&f["last_outcome"])
            ));
        }
        outln!("{line}");
        if f["last_error"].is_string() {
            outln!("  last sync failed: {}", s(&f["last_error"]));
        }
    }
    if let Some(d) = r["dropped"].as_object() {
        // The counter starts from zero whenever the table is loaded in full (restart, a
        // change, ipchecker repairing it); ipchecker's address updates keep it.
        let since = match d["since"] {
            Value::String(_) => format!("since the last full apply at {}", s(&d["since"])),
            _ => "since the last full apply".to_owned(),
        };
        outln!(
            "dropped by policy {since}: {} packets, {} bytes",
            s(&d["packets"]),
            s(&d["bytes"])
        );
    }
    for p in r["problems"].as_array().into_iter().flatten() {
        outln!("problem: {}", s(p));
    }
    let sip = &r["sip"];
    let b = &sip["bans"];
    if sip.is_object() {
        outln!(
            "bans: {} manual, {} by the guard, {} by fail2ban",
            s(&b["manual"]),
            s(&b["guard"]),
            s(&b["fail2ban"])
        );
    }
    if sip["enabled"] == true {
        let domains: Vec<String> = sip["register_domains"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        let admission = if domains.is_empty() {
            "no register domains".to_owned()
        } else {
            format!(
                "a REGISTER for {} admits for {}; {} admitted now",
                domains.join(", "),
                s(&sip["admit_for"]),
                s(&sip["admitted"])
            )
        };
        let g = &sip["guard"];
        outln!(
            "SIP layer: {admission}; {}; guard {} burst {} per source, bans for {}, {} packets over it",
            if sip["open"] == true {
                "open to everyone (responsive)"
            } else {
                "closed to everyone else"
            },
            s(&g["limit"]),
            s(&g["burst"]),
            s(&g["ban_for"]),
            s(&g["hits"])
        );
    }
    let k = &r["knock"];
    if k["enabled"] == true {
        let services: Vec<String> = k["services"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        outln!(
            "port knocking: {} {} steps, each within {}; a grant opens {} for {}; {} granted now",
            s(&k["protocol"]),
            s(&k["steps"]),
            s(&k["step_timeout"]),
            services.join(", "),
            s(&k["grant_for"]),
            s(&k["grants"])
        );
    }
    let recent = r["recent_changes"].as_array().cloned().unwrap_or_default();
    if !recent.is_empty() {
        outln!("recent changes:");
        for e in &recent {
            outln!(
                "  {} {} ({}): {}",
                s(&e["at"]),
                s(&e["command"]),
                s(&e["user"]),
                s(&e["what"])
            );
        }
    }
    outln!();
    for a in r["accounts"].as_array().into_iter().flatten() {
        let services: Vec<String> = a["services"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        let mut head = format!("{}: {}", s(&a["name"]), services.join(", "));
        if a["comment"].is_string() {
            head.push_str(&format!(" ({})", s(&a["comment"])));
        }
        if a["expired"] == true {
            head.push_str(&format!(
                "; expired at {}, closed (the next command removes it)",
                s(&a["expires"])
            ));
        } else if a["expires"].is_string() {
            head.push_str(&format!("; expires {}", s(&a["expires"])));
        }
        outln!("{head}");
        for addr in a["addresses"].as_array().into_iter().flatten() {
            let state = if addr["applied"] == true {
                "applied"
            } else {
                "NOT applied"
            };
            outln!("    {} [{state}]", s(&addr["address"]));
        }
        for f in a["fqdns"].as_array().into_iter().flatten() {
            let addrs: Vec<String> = ["v4", "v6"]
                .iter()
                .flat_map(|k| f[*k].as_array().into_iter().flatten().map(s))
                .collect();
            let state = match f["state"].as_str() {
                Some("ok") => "ok".to_owned(),
                Some("stale") => format!("stale since {}: {}", s(&f["since"]), s(&f["error"])),
                _ => format!("left out: {}", s(&f["reason"])),
            };
            let shown = if addrs.is_empty() {
                "nothing".to_owned()
            } else {
                addrs.join(", ")
            };
            let applied = f["applied"].as_array().map_or(0, Vec::len);
            outln!(
                "    {} -> {shown} [{state}; {applied} of {} applied]",
                s(&f["name"]),
                addrs.len()
            );
        }
    }
}

/// What `status --prometheus` reports, gathered from the same sources as the text and JSON
/// report: the build from the files and the cached resolution, the live table, state.json.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Whether table inet pbxwall is loaded.
    pub table_loaded: bool,
    /// Whether the live table is what `restart` would apply.
    pub in_sync: bool,
    /// Whether names are left out or stale, or account files skipped.
    pub degraded: bool,
    /// How many differences the drift check found.
    pub differences: usize,
    /// How many problems (names left out or stale, files skipped) there are.
    pub problems: usize,
    /// Packets and bytes the drop policy's counter holds, when the table is loaded.
    pub dropped: Option<(u64, u64)>,
    /// Accounts that loaded.
    pub accounts: usize,
    /// Addresses and networks written in the account files.
    pub addresses: usize,
    /// Elements of every live set and map, by set name.
    pub set_elements: Vec<(String, usize)>,
    /// Host names that resolved this run or recently (ok), kept from earlier (stale), and
    /// left out of the ruleset.
    pub names_ok: usize,
    /// See [`Metrics::names_ok`].
    pub names_stale: usize,
    /// See [`Metrics::names_ok`].
    pub names_left_out: usize,
    /// When the last apply happened (unix seconds).
    pub last_apply: Option<i64>,
    /// When ipchecker last ran (unix seconds), and its outcome ("ok", "degraded", "error").
    pub ipchecker_last_run: Option<(i64, String)>,
    /// The serial of the fleet bundle in force (`pbxwall sync`), if there is one.
    pub fleet_serial: Option<u64>,
    /// When `pbxwall sync` last ran (unix seconds), and its outcome ("ok", "unchanged",
    /// "failed").
    pub fleet_last_sync: Option<(i64, String)>,
    /// Live bans by origin (manual, guard, fail2ban), when the table is loaded.
    pub bans: Option<[(&'static str, u64); 3]>,
    /// Packets over the SIP guard's limit since the last full apply (SIP layer on).
    pub guard_hits: Option<u64>,
}

/// The outcomes `pbxwall sync` records; each gets a 0/1 sample of
/// `pbxwall_fleet_last_sync_outcome`.
const SYNC_OUTCOMES: [&str; 3] = ["ok", "unchanged", "failed"];

/// The outcomes ipchecker records; each gets a 0/1 sample of
/// `pbxwall_ipchecker_last_run_outcome`.
const IPCHECKER_OUTCOMES: [&str; 3] = ["ok", "degraded", "error"];

/// The samples of an outcome metric: one per possible outcome, 1 for the one `last` had
/// (none when there was no run).
fn outcome_samples(outcomes: [&str; 3], last: Option<&(i64, String)>) -> Vec<(String, String)> {
    let Some((_, outcome)) = last else {
        return Vec::new();
    };
    outcomes
        .iter()
        .map(|o| {
            (
                format!("{{outcome=\"{o}\"}}"),
                u8::from(outcome == o).to_string(),
            )
        })
        .collect()
}

/// `status --prometheus` / `--prometheus-file PATH`.
fn prometheus(ctx: &Ctx, args: &StatusArgs) -> Result<Outcome> {
    let b = build(ctx, None, Dns::CacheOnly)?;
    let live = netlink::read_table()
        .context("cannot read table inet pbxwall from the kernel (status needs root)")?;
    let want_rules = netlink::rule_fingerprints(&b.ruleset);
    let diff = diff::diff(&b.ruleset, want_rules.as_deref(), live.as_ref());
    let (st, _) = State::load(&ctx.paths);
    let unix = |at: &str| {
        chrono::DateTime::parse_from_rfc3339(at)
            .ok()
            .map(|t| t.timestamp())
    };
    let mut m = Metrics {
        table_loaded: live.is_some(),
        in_sync: diff.is_in_sync(),
        degraded: b.degraded(),
        differences: diff.lines().len(),
        problems: b.problems().len(),
        dropped: live.as_ref().and_then(drop_counter),
        accounts: b.accounts.len(),
        addresses: b.accounts.iter().map(|a| a.addresses.len()).sum(),
        set_elements: live
            .iter()
            .flat_map(|l| &l.sets)
            .map(|s| (s.name.clone(), s.elements.len()))
            .collect(),
        last_apply: st.applied.as_ref().and_then(|a| unix(&a.at)),
        ipchecker_last_run: st
            .ipchecker
            .as_ref()
            .and_then(|r| Some((unix(&r.at)?, r.outcome.clone()))),
        fleet_serial: crate::fleet::stored_bundle(&ctx.paths)
            .ok()
            .flatten()
            .map(|(b, _)| b.serial),
        fleet_last_sync: {
            let sync = crate::fleet::SyncState::load(&ctx.paths);
            sync.last_run
                .as_deref()
                .and_then(unix)
                .zip(sync.last_outcome)
        },
        ..Metrics::default()
    };
    if live.is_some() {
        let sip = sip_json(&b.settings, live.as_ref());
        let n = |k: &str| sip["bans"][k].as_u64().unwrap_or(0);
        m.bans = Some([
            ("manual", n("manual")),
            ("guard", n("guard")),
            ("fail2ban", n("fail2ban")),
        ]);
        m.guard_hits = sip["guard"]["hits"].as_u64();
    }
    let names: std::collections::BTreeSet<_> = b.accounts.iter().flat_map(|a| &a.fqdns).collect();
    for name in names {
        match b.resolution.names.get(name).map(|r| &r.state) {
            Some(NameState::Ok) => m.names_ok += 1,
            Some(NameState::Stale { .. }) => m.names_stale += 1,
            Some(NameState::LeftOut { .. }) | None => m.names_left_out += 1,
        }
    }
    let text = prometheus_text(&m);
    match &args.prometheus_file {
        Some(path) => store::write_atomic(path, text.as_bytes(), 0o644)
            .with_context(|| format!("cannot write the metrics to {}", path.display()))?,
        None => out!("{text}"),
    }
    Ok(Outcome::Done)
}

/// The metrics in Prometheus' text exposition format (version 0.0.4), one `# HELP` and
/// `# TYPE` line per metric. Metrics with nothing to report (no table, never applied) are
/// left out rather than given a made-up value.
pub fn prometheus_text(m: &Metrics) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |v: String| vec![(String::new(), v)];
    let flag = |b: bool| one(u8::from(b).to_string());
    let maybe = |v: Option<String>| v.map(one).unwrap_or_default();
    metric(
        "pbxwall_table_loaded",
        "gauge",
        "Whether table inet pbxwall is loaded (1) or not (0).",
        &flag(m.table_loaded),
    );
    metric(
        "pbxwall_in_sync",
        "gauge",
        "Whether the live table is what restart would apply (1) or drifted or missing (0).",
        &flag(m.in_sync),
    );
    metric(
        "pbxwall_degraded",
        "gauge",
        "Whether host names are left out or stale or account files skipped (1).",
        &flag(m.degraded),
    );
    metric(
        "pbxwall_differences",
        "gauge",
        "Differences between the live table and what restart would apply.",
        &one(m.differences.to_string()),
    );
    metric(
        "pbxwall_problems",
        "gauge",
        "Problems: host names left out or stale, account files skipped.",
        &one(m.problems.to_string()),
    );
    metric(
        "pbxwall_dropped_packets_total",
        "counter",
        "Packets dropped by the input chain's policy since the table was last applied.",
        &maybe(m.dropped.map(|(p, _)| p.to_string())),
    );
    metric(
        "pbxwall_dropped_bytes_total",
        "counter",
        "Bytes dropped by the input chain's policy since the table was last applied.",
        &maybe(m.dropped.map(|(_, b)| b.to_string())),
    );
    metric(
        "pbxwall_accounts",
        "gauge",
        "Accounts that loaded from the account files.",
        &one(m.accounts.to_string()),
    );
    metric(
        "pbxwall_addresses",
        "gauge",
        "Addresses and networks written in the account files (host names not counted).",
        &one(m.addresses.to_string()),
    );
    let sets: Vec<(String, String)> = m
        .set_elements
        .iter()
        .map(|(set, n)| (format!("{{set=\"{}\"}}", label_value(set)), n.to_string()))
        .collect();
    metric(
        "pbxwall_set_elements",
        "gauge",
        "Elements (addresses and ranges) in each live set and map of table inet pbxwall.",
        &sets,
    );
    let names: Vec<(String, String)> = [
        ("ok", m.names_ok),
        ("stale", m.names_stale),
        ("left_out", m.names_left_out),
    ]
    .iter()
    .map(|(state, n)| (format!("{{state=\"{state}\"}}"), n.to_string()))
    .collect();
    metric(
        "pbxwall_names",
        "gauge",
        "Host names of the accounts: resolved (ok), kept from an earlier answer (stale), left out.",
        &names,
    );
    metric(
        "pbxwall_last_apply_timestamp_seconds",
        "gauge",
        "When pbxwall last applied the ruleset (unix time).",
        &maybe(m.last_apply.map(|t| t.to_string())),
    );
    metric(
        "pbxwall_ipchecker_last_run_timestamp_seconds",
        "gauge",
        "When ipchecker last ran (unix time).",
        &maybe(m.ipchecker_last_run.as_ref().map(|(t, _)| t.to_string())),
    );
    metric(
        "pbxwall_ipchecker_last_run_outcome",
        "gauge",
        "The outcome of the last ipchecker run: 1 for the one it had (ok, degraded, error).",
        &outcome_samples(IPCHECKER_OUTCOMES, m.ipchecker_last_run.as_ref()),
    );
    metric(
        "pbxwall_fleet_serial",
        "gauge",
        "The serial of the fleet bundle in force (pbxwall sync).",
        &maybe(m.fleet_serial.map(|s| s.to_string())),
    );
    metric(
        "pbxwall_fleet_last_sync_timestamp_seconds",
        "gauge",
        "When pbxwall sync last ran (unix time).",
        &maybe(m.fleet_last_sync.as_ref().map(|(t, _)| t.to_string())),
    );
    metric(
        "pbxwall_fleet_last_sync_outcome",
        "gauge",
        "The outcome of the last pbxwall sync: 1 for the one it had (ok, unchanged, failed).",
        &outcome_samples(SYNC_OUTCOMES, m.fleet_last_sync.as_ref()),
    );
    let bans: Vec<(String, String)> = m
        .bans
        .iter()
        .flatten()
        .map(|(origin, n)| (format!("{{origin=\"{origin}\"}}"), n.to_string()))
        .collect();
    metric(
        "pbxwall_bans",
        "gauge",
        "Sources banned now, by origin: manual (pbxwall ban), guard (the SIP guard), fail2ban.",
        &bans,
    );
    metric(
        "pbxwall_guard_hits_total",
        "counter",
        "Packets over the SIP guard's per-source limit since the table was last applied.",
        &maybe(m.guard_hits.map(|h| h.to_string())),
    );
    out
}

/// A label value escaped as the text format wants (backslash, double quote, newline).
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_help_type_and_samples() {
        let m = Metrics {
            table_loaded: true,
            in_sync: true,
            dropped: Some((12, 840)),
            accounts: 2,
            addresses: 3,
            set_elements: vec![("hosts_v4".into(), 3)],
            names_ok: 1,
            names_left_out: 1,
            last_apply: Some(1_800_000_000),
            ipchecker_last_run: Some((1_800_000_060, "degraded".into())),
            ..Metrics::default()
        };
        let text = prometheus_text(&m);
        for line in [
            "# HELP pbxwall_table_loaded Whether table inet pbxwall is loaded (1) or not (0).",
            "# TYPE pbxwall_table_loaded gauge",
            "pbxwall_table_loaded 1",
            "pbxwall_in_sync 1",
            "pbxwall_degraded 0",
            "# TYPE pbxwall_dropped_packets_total counter",
            "pbxwall_dropped_packets_total 12",
            "pbxwall_dropped_bytes_total 840",
            "pbxwall_accounts 2",
            "pbxwall_addresses 3",
            "pbxwall_set_elements{set=\"hosts_v4\"} 3",
            "pbxwall_names{state=\"ok\"} 1",
            "pbxwall_names{state=\"stale\"} 0",
            "pbxwall_names{state=\"left_out\"} 1",
            "pbxwall_last_apply_timestamp_seconds 1800000000",
            "pbxwall_ipchecker_last_run_timestamp_seconds 1800000060",
            "pbxwall_ipchecker_last_run_outcome{outcome=\"ok\"} 0",
            "pbxwall_ipchecker_last_run_outcome{outcome=\"degraded\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }

        // Nothing to report: no made-up values.
        let text = prometheus_text(&Metrics::default());
        assert!(text.contains("pbxwall_table_loaded 0\n"), "{text}");
        for absent in [
            "pbxwall_dropped",
            "pbxwall_set_elements",
            "pbxwall_last_apply",
            "pbxwall_ipchecker",
        ] {
            assert!(!text.contains(absent), "{absent} in:\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
