//! `ipchecker`: re-resolve every host name and write to the kernel only what changed.
//!
//! Meant for cron every few minutes: it prints nothing when nothing changed, one line per
//! change, and one line per problem (so cron mails only then). When the addresses behind a
//! name change, only the affected set elements are deleted and added, in one transaction;
//! the rules and every other element stay as they are. A full apply happens only when the
//! table is missing (after a reboot, or someone's `nft flush ruleset`) or its structure
//! changed since the last apply (accounts or settings edited without a restart).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::Local;
use serde::Serialize;

use super::{Build, Ctx, Dns, Outcome, apply, build, guard_ssh_lockout, record_applied};
use crate::cli::IpcheckerArgs;
use crate::cron::{self, CronSchedule};
use crate::nft::netlink::{self, LiveTable, SetChange};
use crate::nft::render;
use crate::resolve::Cache;
use crate::ruleset::{Element, SetKind, element_changes, element_list};
use crate::state::{IpcheckerRun, State, now_rfc3339};
use crate::store::{self, StoreLock};

/// What one run did, as printed with `--json`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// "none", "elements" (set elements updated) or "full" (whole table applied).
    pub apply: &'static str,
    /// Netlink transactions sent (0 when nothing changed).
    pub netlink_writes: u32,
    /// One line per change.
    pub changes: Vec<String>,
    /// One line per problem (names left out or stale, files skipped).
    pub problems: Vec<String>,
}

/// `ipchecker [--install-cron SCHEDULE | --remove-cron] [--cron-file PATH]`.
pub fn ipchecker(ctx: &Ctx, args: IpcheckerArgs) -> Result<Outcome> {
    if let Some(schedule) = &args.install_cron {
        return install_cron(ctx, schedule, &args.cron_file);
    }
    if args.remove_cron {
        return remove_cron(ctx, &args.cron_file);
    }
    let lock = ctx.lock()?;
    let (old_cache, _) = Cache::load(&ctx.paths);
    let result = check(ctx, &lock, &old_cache, args.force);
    let (mut st, _) = State::load(&ctx.paths);
    let run = match &result {
        Ok((report, outcome)) => IpcheckerRun {
            at: now_rfc3339(),
            outcome: if *outcome == Outcome::Done {
                "ok"
            } else {
                "degraded"
            }
            .into(),
            netlink_writes: report.netlink_writes,
            changes: report
                .changes
                .iter()
                .chain(&report.problems)
                .cloned()
                .collect(),
        },
        Err(e) => IpcheckerRun {
            at: now_rfc3339(),
            outcome: "error".into(),
            netlink_writes: 0,
            changes: vec![format!("{e:#}")],
        },
    };
    st.ipchecker = Some(run);
    st.save(&ctx.paths, &lock)?;
    let (report, outcome) = result?;
    for line in &report.changes {
        ctx.audit(line);
    }
    if ctx.json {
        ctx.print_json(&report)?;
    } else {
        for line in &report.changes {
            outln!("{line}");
        }
        for line in &report.problems {
            ctx.warn(line);
        }
    }
    Ok(outcome)
}

fn check(ctx: &Ctx, lock: &StoreLock, old_cache: &Cache, force: bool) -> Result<(Report, Outcome)> {
    let b = build(ctx, Some(lock), Dns::Query)?;
    let mut changes = name_changes(&b, old_cache);
    let problems = b.problems();
    let live = netlink::read_table().context("reading table inet pbxwall")?;
    let (st, _) = State::load(&ctx.paths);
    let recorded = st.applied.as_ref().map(|a| a.skeleton.as_str());
    let (apply_kind, writes) = match live {
        None => {
            changes.push("table inet pbxwall was missing; applied the full ruleset".into());
            full_apply(ctx, &b, lock, force)?
        }
        Some(live) if !same_structure(&b, &live, recorded) => {
            changes.push(
                "the ruleset changed beyond addresses since the last apply; applied it in full"
                    .into(),
            );
            full_apply(ctx, &b, lock, force)?
        }
        Some(live) => {
            let deltas = element_deltas(&b, &live);
            if deltas.is_empty() {
                ("none", 0)
            } else {
                if !force {
                    guard_ssh_lockout(&b.ruleset)?;
                }
                let set_changes: Vec<SetChange<'_>> = deltas
                    .iter()
                    .map(|d| SetChange {
                        set: &d.set,
                        family: d.family,
                        kind: d.kind,
                        remove: &d.remove,
                        add: &d.add,
                    })
                    .collect();
                netlink::update_sets(&set_changes).context(
                    "updating set elements of table inet pbxwall failed; the previous ruleset is still in place",
                )?;
                record_applied(ctx, &b.ruleset, lock);
                for d in &deltas {
                    changes.push(d.describe());
                }
                ("elements", 1)
            }
        }
    };
    let report = Report {
        apply: apply_kind,
        netlink_writes: writes,
        changes,
        problems,
    };
    Ok((report, b.outcome()))
}

fn full_apply(ctx: &Ctx, b: &Build, lock: &StoreLock, force: bool) -> Result<(&'static str, u32)> {
    let quiet = Ctx {
        quiet: true,
        ..ctx.clone()
    };
    apply(&quiet, b, lock, force)?;
    Ok(("full", 1))
}

/// Whether only set elements can differ between what is live and what was built: the same
/// sets and maps, the same chains with the same rules (compared by content, as libnftnl
/// prints them), and the same skeleton as recorded at the last apply.
fn same_structure(b: &Build, live: &LiveTable, recorded: Option<&str>) -> bool {
    let want: BTreeSet<(&str, Option<SetKind>)> = b
        .ruleset
        .sets
        .iter()
        .map(|s| (s.name.as_str(), Some(s.kind)))
        .collect();
    let have: BTreeSet<(&str, Option<SetKind>)> = live
        .sets
        .iter()
        .map(|s| (s.name.as_str(), s.kind))
        .collect();
    let Ok(rules) = netlink::rule_fingerprints(&b.ruleset) else {
        return false;
    };
    let same_rules = live.chains.len() == rules.len()
        && rules.iter().all(|(chain, want_rules)| {
            live.chains
                .iter()
                .any(|c| c.name == *chain && c.rules == *want_rules)
        });
    want == have && same_rules && recorded == Some(render::skeleton(&b.ruleset).as_str())
}

/// The element changes of one set.
#[derive(Debug)]
struct Delta {
    set: String,
    kind: SetKind,
    family: crate::addrset::Family,
    remove: Vec<Element>,
    add: Vec<Element>,
}

impl Delta {
    fn describe(&self) -> String {
        let (noun, set) = (self.kind.noun(), &self.set);
        match (self.add.is_empty(), self.remove.is_empty()) {
            (false, false) => format!(
                "{noun} {set}: added {}; removed {}",
                element_list(&self.add),
                element_list(&self.remove)
            ),
            (false, true) => format!("{noun} {set}: added {}", element_list(&self.add)),
            _ => format!("{noun} {set}: removed {}", element_list(&self.remove)),
        }
    }
}

fn element_deltas(b: &Build, live: &LiveTable) -> Vec<Delta> {
    let mut out = Vec::new();
    for set in &b.ruleset.sets {
        let Some(have) = live.sets.iter().find(|s| s.name == set.name) else {
            continue;
        };
        let (add, remove) = element_changes(&set.elements, &have.elements);
        if !remove.is_empty() || !add.is_empty() {
            out.push(Delta {
                set: set.name.clone(),
                kind: set.kind,
                family: set.family,
                remove,
                add,
            });
        }
    }
    out
}

/// One line per name whose addresses changed since the last run.
fn name_changes(b: &Build, old: &Cache) -> Vec<String> {
    let mut out = Vec::new();
    for r in b.resolution.names.values() {
        let now: BTreeSet<std::net::IpAddr> = r.addrs().into_iter().collect();
        let before: BTreeSet<std::net::IpAddr> = old
            .get(&r.name)
            .map(|e| {
                e.v4.addrs
                    .iter()
                    .map(|a| (*a).into())
                    .chain(e.v6.addrs.iter().map(|a| (*a).into()))
                    .collect()
            })
            .unwrap_or_default();
        if now != before {
            let fmt = |s: &BTreeSet<std::net::IpAddr>| {
                if s.is_empty() {
                    "nothing".to_owned()
                } else {
                    s.iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            out.push(format!(
                "{} (account {}): now {} (was {})",
                r.name,
                b.accounts_of(&r.name),
                fmt(&now),
                fmt(&before)
            ));
        }
    }
    out
}

/// The command cron runs: this program as `ipchecker`, with non-default folders.
fn cron_command(ctx: &Ctx) -> Result<String> {
    let exe = std::env::current_exe().context("finding this program's path")?;
    let mut words = vec![cron::sh_quote(&exe.to_string_lossy())];
    if exe.file_name().is_none_or(|n| n != "ipchecker") {
        words.push("ipchecker".into());
    }
    let p = &ctx.paths;
    for (flag, dir, default) in [
        (
            "--config-dir",
            &p.config_dir,
            PathBuf::from(store::DEFAULT_CONFIG_DIR),
        ),
        (
            "--state-dir",
            &p.state_dir,
            PathBuf::from(store::DEFAULT_STATE_DIR),
        ),
        ("--share-dir", &p.share_dir, store::default_share_dir()),
    ] {
        if *dir != default {
            words.push(flag.into());
            words.push(cron::sh_quote(&dir.to_string_lossy()));
        }
    }
    Ok(words.join(" "))
}

fn install_cron(ctx: &Ctx, schedule: &str, file: &Path) -> Result<Outcome> {
    let schedule = CronSchedule::parse(schedule)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    anyhow::ensure!(
        dir.as_os_str().is_empty() || dir.is_dir(),
        "cannot write {}: the folder {} does not exist (is cron installed?)",
        file.display(),
        dir.display()
    );
    let command = cron_command(ctx)?;
    let _lock = ctx.lock()?;
    store::write_atomic(
        file,
        cron::cron_file(&schedule, &command)?.as_bytes(),
        0o644,
    )?;
    ctx.audit(&format!(
        "installed cron file {} ({})",
        file.display(),
        schedule.as_str()
    ));
    let next: Vec<String> = schedule
        .next_runs(Local::now(), 3)
        .iter()
        .map(|t| t.format("%Y-%m-%d %H:%M %Z").to_string())
        .collect();
    if ctx.json {
        let out = serde_json::json!({
            "cron_file": file,
            "schedule": schedule.as_str(),
            "command": command,
            "next_runs": next,
        });
        ctx.print_json(&out)?;
    } else {
        ctx.say(format_args!(
            "installed {}: `{command}` at \"{}\"",
            file.display(),
            schedule.as_str()
        ));
        ctx.say(format_args!("next runs: {}", next.join(", ")));
    }
    Ok(Outcome::Done)
}

fn remove_cron(ctx: &Ctx, file: &Path) -> Result<Outcome> {
    let _lock = ctx.lock()?;
    if file.exists() {
        store::remove_durably(file)?;
        ctx.say(format_args!("removed {}", file.display()));
        ctx.audit(&format!("removed cron file {}", file.display()));
    } else {
        ctx.say(format_args!("no cron file at {}", file.display()));
    }
    Ok(Outcome::Done)
}
