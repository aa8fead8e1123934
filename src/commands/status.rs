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
//!   "accounts": [{
//!     "name": "joe", "services": ["sip-udp"], "comment": null, "provider": null,
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
use crate::compile::{HOSTS_MAP, RANGES_MAP, set_name};
use crate::cron;
use crate::diff;
use crate::model::Account;
use crate::model::display_net;
use crate::nft::netlink::{self, LiveTable};
use crate::resolve::NameResult;
use crate::ruleset::{INPUT_CHAIN, Ruleset};
use crate::state::State;

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

With --json it prints one object (every key always present; null when it has no value):
  {\"table\": \"loaded\" | \"missing\", \"error\": null | \"...\",
   \"in_sync\": true | null, \"differences\": [\"...\"],
   \"degraded\": false | null, \"problems\": [\"...\"],
   \"live\": {\"rules\", \"sets\", \"elements\"} | null,
   \"last_apply\": {\"at\", \"by\"} | null,
   \"ipchecker\": {\"last_run\", \"outcome\", \"netlink_writes\", \"cron_schedule\", \"next_run\"},
   \"dropped\": {\"packets\", \"bytes\", \"since\"} | null,
   \"accounts\": [{\"name\", \"services\", \"comment\", \"provider\",
                 \"addresses\": [{\"address\", \"applied\"}],
                 \"fqdns\": [{\"name\", \"state\": \"ok\" | \"stale\" | \"left_out\",
                            \"since\", \"error\", \"reason\", \"v4\", \"v6\", \"resolved_at\", \"applied\"}],
                 \"media\"}],
   \"recent_changes\": [{\"at\", \"user\", \"command\", \"what\"}]}";

/// `status`: what is loaded, whether it matches the configuration, per account.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The cron.d file whose schedule tells when ipchecker runs next
    #[arg(long, value_name = "PATH", default_value = crate::cron::DEFAULT_CRON_FILE)]
    pub cron_file: PathBuf,
}

/// `status [--json]`.
///
/// When the configuration does not build (a broken pbxwall.toml, say), it still shows what is
/// live (the table, its size, the drop counter, the last apply, ipchecker, recent changes)
/// with the error, then fails with that error (exit 1).
pub fn status(ctx: &Ctx, args: StatusArgs) -> Result<Outcome> {
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
            m.insert("accounts".into(), json!([]));
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
    m.insert(
        "accounts".into(),
        b.accounts
            .iter()
            .map(|a| account_json(&b, a, live.as_ref()))
            .collect(),
    );
    show(ctx, &report)?;
    Ok(if in_sync && !b.degraded() {
        Outcome::Done
    } else {
        Outcome::Degraded
    })
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
