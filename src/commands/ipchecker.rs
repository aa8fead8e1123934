//! `ipchecker`: re-resolve every host name and write to the kernel only what changed.
//!
//! Meant for cron every few minutes: it prints nothing when nothing changed, one line per
//! change, and one line per new problem (so cron mails only then): a name that stays
//! unresolvable is reported when it breaks and when it recovers, not at every run. When
//! the addresses behind a name change, only the affected set elements are deleted and
//! added, in one transaction; the rules and every other element stay as they are. A full apply happens only when the
//! table is missing (after a reboot, or someone's `nft flush ruleset`), when anything but set
//! elements differs from what the files give ([`crate::diff`]: table flags, sets, chains,
//! hooks, policies, rules changed behind pbxwall's back), or when the ruleset without its
//! elements changed since the last apply (accounts or settings edited without a restart).
//! After either kind of apply the running flows of the addresses that lost access are ended
//! ([`end_lost_flows`]) and reported as one more change line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::Local;
use clap::Args;
use serde::Serialize;

use super::{
    Build, Ctx, Dns, FlowsEnded, Outcome, UsageError, apply_ruleset, build, end_lost_flows,
    guard_ssh_lockout, record_applied,
};
use crate::cron::{self, CronSchedule};
use crate::diff::{self, SetElements};
use crate::model::Fqdn;
use crate::nft::netlink::{self, SetChange};
use crate::nft::render;
use crate::resolve::Cache;
use crate::state::{IpcheckerRun, State, now_rfc3339};
use crate::store::{self, StoreLock};

/// `ipchecker --help`: the failure policy, exit codes and the `--json` shape.
pub const LONG_HELP: &str = "\
Exit status: 0 success, 1 error (nothing changed, the old ruleset stays live),
2 usage error, 3 applied but degraded (names left out or stale, account files skipped,
running flows of addresses that lost access not ended).

Names that do not resolve (NXDOMAIN) are left out of the ruleset and everything else is
still applied; when DNS fails only for a while (timeout, SERVFAIL) a name keeps its last
addresses for [resolver] stale_grace_s (default 1 hour).

Quiet unless something changed or failed (cron mails whatever it prints). A name that
does not resolve is reported when it breaks, when its problem changes kind (stale, left
out) and when it resolves again, not at every run; the exit status says degraded (3) as
long as it lasts. Changed addresses go in as set-element updates in one transaction; the
whole table is applied only when it is missing or its rules changed. After either, the
running flows of addresses that lost access (the old address of a name that moved) are
ended, and a change line says which. With --json it prints one object (\"ongoing\": the
problems reported by an earlier run and still there):
  {\"apply\": \"none\" | \"elements\" | \"full\", \"netlink_writes\": 0,
   \"changes\": [\"...\"], \"problems\": [\"...\"], \"ongoing\": [\"...\"]}";

/// `ipchecker`: re-resolve names and write to the kernel only what changed.
#[derive(Debug, Clone, Args)]
pub struct IpcheckerArgs {
    /// Install a cron.d entry running ipchecker as root on this five-field schedule,
    /// e.g. '*/5 * * * *'
    #[arg(long, value_name = "SCHEDULE", conflicts_with = "remove_cron")]
    pub install_cron: Option<String>,
    /// Remove the cron.d entry
    #[arg(long)]
    pub remove_cron: bool,
    /// The cron.d file to write or remove
    #[arg(long, value_name = "PATH", default_value = crate::cron::DEFAULT_CRON_FILE)]
    pub cron_file: PathBuf,
    /// Apply even if the new addresses would cut off this SSH session's client
    #[arg(long)]
    pub force: bool,
    /// Only record the kernel's bans, admissions and knock grants in the state folder: no
    /// DNS, no change to the firewall (pbxwall.service runs it at shutdown)
    #[arg(long, conflicts_with_all = ["install_cron", "remove_cron", "force"])]
    pub record_only: bool,
}

/// What one run did, as printed with `--json`.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// "none", "elements" (set elements updated) or "full" (whole table applied).
    pub apply: &'static str,
    /// Netlink transactions sent (0 when nothing changed).
    pub netlink_writes: u32,
    /// One line per change.
    pub changes: Vec<String>,
    /// One line per problem to report: account files skipped, and names whose problem is
    /// new or changed kind since the last run.
    pub problems: Vec<String>,
    /// One line per problem of a name reported by an earlier run and still there (not
    /// printed without `--json`).
    pub ongoing: Vec<String>,
}

/// `ipchecker [--install-cron SCHEDULE | --remove-cron] [--cron-file PATH]`.
pub fn ipchecker(ctx: &Ctx, args: IpcheckerArgs) -> Result<Outcome> {
    if let Some(schedule) = &args.install_cron {
        return install_cron_for(ctx, "ipchecker", schedule, &args.cron_file);
    }
    if args.remove_cron {
        return remove_cron_file(ctx, &args.cron_file);
    }
    let lock = ctx.lock()?;
    if args.record_only {
        let count = crate::dynstate::record_live(&ctx.paths, &lock)?;
        if ctx.json {
            ctx.print_json(&serde_json::json!({ "recorded_elements": count }))?;
        } else {
            ctx.say(format_args!(
                "recorded {count} live elements of the bans, admissions and knock grants"
            ));
        }
        return Ok(Outcome::Done);
    }
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
                .chain(&report.ongoing)
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
    if let Err(e) = st.save(&ctx.paths, &lock) {
        ctx.warn_state_unsaved(format_args!(
            "could not record this run: {}",
            crate::error_chain(&e)
        ));
    }
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

fn check(
    ctx: &Ctx,
    lock: &StoreLock,
    old_cache: &Cache,
    force: bool,
) -> Result<(CheckReport, Outcome)> {
    let b = build(ctx, Some(lock), Dns::Query)?;
    let mut changes = name_changes(&b, old_cache);
    let reports = NameReports::sort(&b, old_cache);
    changes.extend(reports.recovered.iter().cloned());
    let mut problems = b.skipped_problems();
    problems.extend(b.geo_problems());
    problems.extend(reports.new.iter().cloned());
    let live = netlink::read_table().context("reading table inet pbxwall")?;
    let (st, _) = State::load(&ctx.paths);
    let recorded = st.applied.as_ref().map(|a| a.skeleton.as_str());
    let want_rules = netlink::rule_fingerprints(&b.ruleset);
    let diff = diff::diff(&b.ruleset, want_rules.as_deref(), live.as_ref());
    // The files' skeleton (the ruleset without elements) as recorded at the last apply: if
    // it changed, apply in full even when the live table happens to match.
    let same_skeleton = recorded == Some(render::skeleton(&b.ruleset).as_str());
    // What ending the flows of sources that lost access did, after any apply.
    let mut flows = FlowsEnded::default();
    // Temporary accounts' sets are refilled by a full apply: when one holds other
    // addresses than the accounts have now (a name of a temporary account moved).
    let temporary_moved = configured_sets_differ(&b.ruleset);
    let (apply_kind, writes) = if diff.missing {
        changes.push("table inet pbxwall was missing; applied the full ruleset".into());
        full_apply(ctx, &b, lock, force, &mut flows)?
    } else if diff.is_in_sync() && same_skeleton && !temporary_moved {
        // Knock grants and temporary accounts end in the kernel at their timeouts; their
        // sources' running flows end here, at the next run at the latest.
        if expiring_access(&b.ruleset) {
            flows = end_lost_flows(&b.ruleset);
        }
        ("none", 0)
    } else if diff.elements_only() && same_skeleton && !temporary_moved {
        if !force {
            guard_ssh_lockout(&ctx.paths, &super::with_dynamic_elements(&b.ruleset))?;
        }
        let set_changes: Vec<SetChange<'_>> =
            diff.elements.iter().map(SetElements::change).collect();
        netlink::update_sets(&set_changes).context(
            "updating set elements of table inet pbxwall failed; the previous ruleset is still in place",
        )?;
        record_applied(ctx, &b.ruleset, lock);
        changes.extend(diff.elements.iter().map(SetElements::update_line));
        flows = end_lost_flows(&b.ruleset);
        ("elements", 1)
    } else {
        changes.push(
            "the ruleset changed beyond addresses since the last apply; applied it in full".into(),
        );
        full_apply(ctx, &b, lock, force, &mut flows)?
    };
    // Bans and admissions recorded but missing from a live table (loaded from the boot
    // file, or flushed): added back with the time they have left, one small batch.
    let (apply_kind, writes) = if apply_kind == "full" {
        (apply_kind, writes)
    } else {
        let restored = restore_missing(&b.ruleset, live.as_ref())?;
        if restored.is_empty() {
            (apply_kind, writes)
        } else {
            changes.extend(restored);
            ("elements", writes + 1)
        }
    };
    let outcome = b.outcome().worst(flows.outcome());
    changes.extend(flows.lines);
    problems.extend(flows.problems);
    reports.remember(ctx, lock);
    let report = CheckReport {
        apply: apply_kind,
        netlink_writes: writes,
        changes,
        problems,
        ongoing: reports.ongoing,
    };
    Ok((report, outcome))
}

/// Whether the ruleset has sets whose elements end by themselves (knock grants, temporary
/// accounts).
fn expiring_access(ruleset: &crate::ruleset::Ruleset) -> bool {
    ruleset.sets.iter().any(|s| {
        s.name.starts_with(crate::compile::TEMP_PREFIX)
            || s.name.starts_with(crate::compile::KNOCK_GRANT_SET)
    })
}

/// Whether a temporary accounts' set holds other addresses live than the accounts give it
/// now (an unreadable set counts as different).
fn configured_sets_differ(ruleset: &crate::ruleset::Ruleset) -> bool {
    ruleset.sets.iter().any(|s| {
        let Some(d) = s.dynamic.as_ref().filter(|d| d.configured) else {
            return false;
        };
        let mut want: Vec<std::net::IpAddr> = d.restore.iter().map(|e| e.addr).collect();
        want.sort_unstable();
        match netlink::list_timed_elements(&s.name) {
            Ok(Some(live)) => {
                let mut have: Vec<std::net::IpAddr> = live.iter().map(|e| e.addr).collect();
                have.sort_unstable();
                have != want
            }
            Ok(None) | Err(_) => true,
        }
    })
}

/// The problems of the names in one run, sorted by what was reported before (the
/// `reported` kind in the resolution cache): cron mails whatever ipchecker prints, so a name
/// that stays broken is reported when it breaks or its problem changes kind
/// ([`crate::resolve::NameResult::problem_kind`]), and once more when it recovers, not at
/// every run.
#[derive(Debug, Default)]
struct NameReports {
    /// Problem lines of names whose problem is new or of another kind.
    new: Vec<String>,
    /// Problem lines of names whose problem is the kind reported before.
    ongoing: Vec<String>,
    /// A change line per name reported before that is fine now.
    recovered: Vec<String>,
    /// The kind of problem to remember for each name (`None`: fine).
    kinds: Vec<(Fqdn, Option<String>)>,
}

impl NameReports {
    fn sort(b: &Build, old: &Cache) -> NameReports {
        let mut out = NameReports::default();
        for r in b.resolution.names.values() {
            let kind = r.problem_kind();
            let before = old.get(&r.name).and_then(|e| e.reported.clone());
            match (&kind, &before) {
                (None, None) => {}
                (None, Some(was)) => out.recovered.push(format!(
                    "{} (account {}) resolves again (was {was})",
                    r.name,
                    b.accounts_of(&r.name)
                )),
                (Some(_), _) if kind == before => out.ongoing.extend(b.name_problems(r)),
                (Some(_), _) => out.new.extend(b.name_problems(r)),
            }
            out.kinds.push((r.name.clone(), kind));
        }
        out
    }

    /// Writes the kinds into the resolution cache (saved by the build just before), so the
    /// next run knows what was reported; a failure is a warning (the next run then reports
    /// again).
    fn remember(&self, ctx: &Ctx, lock: &StoreLock) {
        let (mut cache, _) = Cache::load(&ctx.paths);
        let mut changed = false;
        for (name, kind) in &self.kinds {
            if let Some(entry) = cache.get(name)
                && entry.reported != *kind
            {
                let mut entry = entry.clone();
                entry.reported = kind.clone();
                cache.insert(name.clone(), entry);
                changed = true;
            }
        }
        if changed && let Err(e) = cache.save(&ctx.paths, lock) {
            ctx.warn_state_unsaved(format_args!(
                "could not record which problems were reported: {}",
                crate::error_chain(&e)
            ));
        }
    }
}

/// Adds the recorded elements of the persisted dynamic sets (bans, admissions) that the
/// live table lacks, with the time they have left, in one batch; one line per set.
fn restore_missing(
    ruleset: &crate::ruleset::Ruleset,
    live: Option<&netlink::LiveTable>,
) -> Result<Vec<String>> {
    let Some(live) = live else {
        return Ok(Vec::new());
    };
    let mut missing: Vec<(
        &str,
        crate::addrset::Family,
        Vec<crate::ruleset::TimedElement>,
    )> = Vec::new();
    for set in &ruleset.sets {
        let Some(d) = set.dynamic.as_ref().filter(|d| d.persist) else {
            continue;
        };
        let Some(have) = live.sets.iter().find(|s| s.name == set.name) else {
            continue;
        };
        let lacking: Vec<_> = d
            .restore
            .iter()
            .filter(|e| !have.elements.iter().any(|h| h.range.contains(e.addr)))
            .cloned()
            .collect();
        if !lacking.is_empty() {
            missing.push((&set.name, set.family, lacking));
        }
    }
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let changes: Vec<netlink::TimedChange<'_>> = missing
        .iter()
        .map(|(set, family, add)| netlink::TimedChange {
            set,
            family: *family,
            remove: &[],
            add,
        })
        .collect();
    netlink::update_timed_sets(&changes)
        .context("restoring the recorded elements of the dynamic sets failed")?;
    Ok(missing
        .iter()
        .map(|(set, _, add)| {
            format!(
                "restored {} recorded element{} of set {set}",
                add.len(),
                if add.len() == 1 { "" } else { "s" }
            )
        })
        .collect())
}

/// Applies the whole build quietly; what ending the flows did goes into `flows`, for the
/// report's change lines and problems.
fn full_apply(
    ctx: &Ctx,
    b: &Build,
    lock: &StoreLock,
    force: bool,
    flows: &mut FlowsEnded,
) -> Result<(&'static str, u32)> {
    let quiet = Ctx {
        quiet: true,
        ..ctx.clone()
    };
    *flows = apply_ruleset(&quiet, b, lock, force)?;
    Ok(("full", 1))
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

/// The command cron runs: this program as `name` (`ipchecker`, `sync`), with non-default
/// folders, behind `test -x PROGRAM &&`: after the package is removed (not purged) the
/// cron file stays, and the job then ends quietly instead of mailing "not found" every
/// run (the idiom of Debian's cron jobs).
fn cron_command(ctx: &Ctx, name: &str) -> Result<String> {
    let exe = std::env::current_exe().context("finding this program's path")?;
    let program = cron::sh_quote(&exe.to_string_lossy());
    let mut words = vec![format!("test -x {program} &&"), program];
    if exe.file_name().is_none_or(|n| n != name) {
        words.push(name.into());
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

/// `--install-cron SCHEDULE`: writes the cron.d `file` running `name` (`ipchecker` or
/// `sync`) as root on `schedule`.
pub(crate) fn install_cron_for(
    ctx: &Ctx,
    name: &str,
    schedule: &str,
    file: &Path,
) -> Result<Outcome> {
    let schedule = CronSchedule::parse(schedule).map_err(UsageError::bad_value)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    anyhow::ensure!(
        dir.as_os_str().is_empty() || dir.is_dir(),
        "cannot write {}: the folder {} does not exist (is cron installed?)",
        file.display(),
        dir.display()
    );
    let command = cron_command(ctx, name)?;
    let _lock = ctx.lock()?;
    let text = if name == "sync" {
        cron::sync_cron_file(&schedule, &command)?
    } else {
        cron::cron_file(&schedule, &command)?
    };
    store::write_atomic(file, text.as_bytes(), 0o644)?;
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

/// `--remove-cron`: removes the cron.d `file`.
pub(crate) fn remove_cron_file(ctx: &Ctx, file: &Path) -> Result<Outcome> {
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
