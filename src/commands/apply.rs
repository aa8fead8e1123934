//! The apply pipeline every command that changes the firewall goes through: [`build`] (load
//! the files, resolve names, compile), [`apply`] (one netlink transaction, then
//! [`record_applied`], then [`end_lost_flows`]), and the two ways commands use them,
//! [`rebuild_and_apply`] and [`change_then_apply`].
//!
//! Whatever takes access away goes through here or through `ipchecker`'s element update,
//! and both end the running flows of the sources that lost it ([`end_lost_flows`]): the
//! input chain accepts established flows before it looks at the whitelist, so without that
//! a removed source would keep what it has open. Failing to end them never undoes the
//! apply: it is a warning and exit 3.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::IpAddr;
use std::time::Instant;

use anyhow::{Context, Result};
use chrono::Utc;

use super::context::{AppliedSummary, Ctx, Outcome};
use super::lockout::{guard_ssh_lockout, own_ssh_flow};
use crate::addrset::Family;
use crate::compile;
use crate::geo::{self, Gate, GeoInfo, GeoSettings};
use crate::model::{Account, Fqdn, Profiles, Settings};
use crate::nft::netlink::conntrack;
use crate::nft::{netlink, render};
use crate::resolve::{self, NameState, Resolution};
use crate::ruleset::Ruleset;
use crate::state::{Applied, State, now_rfc3339};
use crate::store::{self, LoadedAccounts, StoreError, StoreLock};

/// How a build gets the addresses of host names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dns {
    /// Ask DNS (restart, ipchecker); with the lock held the cache is updated.
    Query,
    /// Use what the cache holds from the last run (status).
    CacheOnly,
}

/// Everything `restart` derives from the files before applying.
#[derive(Debug)]
pub struct Build {
    /// Settings in force.
    pub settings: Settings,
    /// Profiles in force.
    pub profiles: Profiles,
    /// Accounts that loaded.
    pub accounts: Vec<Account>,
    /// Account files that were skipped, with file and line.
    pub skipped: Vec<StoreError>,
    /// Temporary accounts whose time is up, left out of the ruleset (their files are removed
    /// when the build holds the lock).
    pub expired: Vec<Account>,
    /// What every host name resolved to, and its state.
    pub resolution: Resolution,
    /// The compiled ruleset.
    pub ruleset: Ruleset,
    /// The geo gate: its database and what it holds.
    pub geo: GeoInfo,
    /// The accounts' parse cache being written (under the caller's lock, which outlives
    /// the build: dropping the build waits for it).
    pub cache_write: store::BackgroundWrite,
}

impl Build {
    /// Whether anything was left out or is stale.
    pub fn degraded(&self) -> bool {
        !self.skipped.is_empty()
            || self.resolution.degraded().next().is_some()
            || self.geo.problem.is_some()
    }

    /// The accounts that use a name, for messages.
    pub fn accounts_of(&self, name: &Fqdn) -> String {
        let names: Vec<&str> = self
            .accounts
            .iter()
            .filter(|a| a.fqdns.contains(name))
            .map(|a| a.name.as_str())
            .collect();
        names.join(", ")
    }

    /// One line per problem: skipped files, names left out, stale names, the geo gate's.
    pub fn problems(&self) -> Vec<String> {
        let mut out = self.skipped_problems();
        for r in self.resolution.degraded() {
            out.extend(self.name_problems(r));
        }
        out.extend(self.geo_problems());
        out
    }

    /// The geo gate's problems: a database that could not be used (the live gate kept), or
    /// allowed countries it has no range for.
    pub fn geo_problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self.geo.problem.iter().cloned().collect();
        if !self.geo.missing.is_empty() {
            let missing: Vec<String> = self.geo.missing.iter().map(|c| c.to_string()).collect();
            out.push(format!(
                "the geo database has no address range for {}",
                missing.join(", ")
            ));
        }
        out
    }

    /// One line per account file that was skipped.
    pub fn skipped_problems(&self) -> Vec<String> {
        self.skipped
            .iter()
            .map(|e| format!("skipped account file {}", crate::error_chain(e)))
            .collect()
    }

    /// The lines of one name's problems: left out or stale, and its notes; none when it
    /// is fine.
    pub fn name_problems(&self, r: &resolve::NameResult) -> Vec<String> {
        let mut out = Vec::new();
        let accounts = self.accounts_of(&r.name);
        match &r.state {
            NameState::Ok => {}
            NameState::LeftOut { reason } => out.push(format!(
                "left out {} (account {accounts}): {reason}",
                r.name
            )),
            state => out.push(format!(
                "{} (account {accounts}) is {state}; keeping {}",
                r.name,
                join_addrs(&r.addrs())
            )),
        }
        for note in &r.notes {
            out.push(format!("{} (account {accounts}): {note}", r.name));
        }
        out
    }

    /// Prints [`Build::problems`] to stderr.
    pub fn report_problems(&self, ctx: &Ctx) {
        for line in self.problems() {
            ctx.warn(line);
        }
    }

    /// The outcome of applying this build.
    pub fn outcome(&self) -> Outcome {
        if self.degraded() {
            Outcome::Degraded
        } else {
            Outcome::Done
        }
    }
}

/// Addresses as a comma-separated list.
pub fn join_addrs(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Loads settings, profiles and accounts, resolves names and compiles. A bad settings or
/// profile file is an error; a bad account file is skipped and reported. With `lock`, the
/// resolution cache is saved.
pub fn build(ctx: &Ctx, lock: Option<&StoreLock>, dns: Dns) -> Result<Build> {
    let settings = store::load_settings(&ctx.paths)?;
    let profiles = store::load_profiles(&ctx.paths)?;
    crate::model::check_rtp_ports(settings.rtp.ports, &profiles)
        .with_context(|| ctx.paths.settings_file().display().to_string())?;
    store::check_knock(&ctx.paths.settings_file(), &settings, &profiles)?;
    let LoadedAccounts {
        accounts,
        mut skipped,
        cache_write,
    } = match lock {
        Some(lock) => store::load_accounts_locked(&ctx.paths, &profiles, lock)?,
        None => store::load_accounts(&ctx.paths, &profiles)?,
    };
    let now = Utc::now();
    let (expired, mut accounts): (Vec<Account>, Vec<Account>) = accounts
        .into_iter()
        .partition(|a| a.expires.is_some_and(|t| t <= now));
    if let Some(lock) = lock {
        remove_expired(ctx, &expired, lock);
    }
    // The fleet bundle's accounts (`pbxwall sync`), beside the local ones; a local account
    // of the same name wins.
    let (fleet, fleet_skipped, shadowed) =
        crate::fleet::load_accounts(&ctx.paths, &profiles, &accounts);
    for (name, serial) in shadowed {
        ctx.warn(format_args!(
            "account {name}: the local file {} is in force, not the fleet bundle's (serial {serial})",
            ctx.paths.account_file(&name).display()
        ));
    }
    skipped.extend(fleet_skipped);
    if !fleet.is_empty() {
        accounts.extend(
            fleet
                .into_iter()
                .filter(|a| a.expires.is_none_or(|t| t > now)),
        );
        accounts.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let names: BTreeSet<Fqdn> = accounts
        .iter()
        .flat_map(|a| a.fqdns.iter().cloned())
        .collect();
    let (mut cache, warning) = resolve::Cache::load(&ctx.paths);
    if let Some(w) = warning {
        ctx.warn(w);
    }
    let resolution = match dns {
        Dns::CacheOnly => resolve::from_cache(&names, &cache),
        Dns::Query => {
            let r = resolve::resolve_all(&names, &settings.resolver, &mut cache, Utc::now());
            if let Some(lock) = lock {
                cache.retain_names(&names);
                // The answers are in hand: a full or read-only state folder must not stop
                // them from reaching the kernel (the next run asks again).
                if let Err(e) = cache.save(&ctx.paths, lock) {
                    ctx.warn_state_unsaved(format_args!(
                        "could not save the resolution cache: {}",
                        crate::error_chain(&e)
                    ));
                }
            }
            r
        }
    };
    let (gate, geo) = load_gate(&settings.geo, &ctx.paths)?;
    let mut ruleset =
        compile::compile_gated(&settings, &profiles, &accounts, &resolution.usable(), gate);
    // Temporary accounts' elements get the time each has left.
    compile::set_temporary_timeouts(&mut ruleset, &accounts, Utc::now());
    // The dynamic sets' elements (bans, admissions, grants) are kernel state: with the
    // lock, what is live is recorded with its expiry, and what was recorded is handed to
    // the apply to restore when the table was created from nothing.
    if let Some(lock) = lock {
        for w in crate::dynstate::sync(&ctx.paths, lock, &mut ruleset) {
            ctx.warn_state_unsaved(w);
        }
    }
    Ok(Build {
        settings,
        profiles,
        accounts,
        skipped,
        expired,
        resolution,
        ruleset,
        geo,
        cache_write,
    })
}

/// The geo gate of `[geo]`, from the database, or from the record of the last apply while
/// the database is unchanged ([`geo::Applied`]). A database that cannot be used
/// (unreadable, corrupt, or empty for every allowed country) leaves the gate as it is live:
/// the recorded ranges are kept, and the build is degraded (exit 3) with the reason.
/// Without a live gate to keep, it is an error: nothing is applied.
pub fn load_gate(settings: &GeoSettings, paths: &store::Paths) -> Result<(Gate, GeoInfo)> {
    if !settings.enabled() {
        return Ok((Gate::Off, GeoInfo::default()));
    }
    // The record's ranges are read only when its key says they are the database's.
    let cached = geo::Applied::load_key(paths)
        .filter(|k| Some(k) == geo::applied::source_key_of(settings).as_ref())
        .and_then(|_| geo::Applied::load(paths));
    let err = match geo::load(settings, cached) {
        Ok(loaded) => return Ok(loaded),
        Err(e) => e,
    };
    // Live means: both sets are in the kernel, and pbxwall recorded what it put there.
    let live = netlink::read_table().ok().flatten();
    let live_sets = [Family::V4, Family::V6].iter().all(|f| {
        let name = Gate::set_name(*f);
        live.as_ref()
            .is_some_and(|t| t.sets.iter().any(|s| s.name == name))
    });
    match geo::Applied::load(paths).filter(|_| live_sets) {
        Some(rec) => {
            let (key, rows, missing) = (rec.key.clone(), rec.rows, rec.missing.clone());
            let gate = rec.into_gate();
            let (ranges_v4, ranges_v6) = gate.ranges_len();
            let info = GeoInfo {
                database: settings.database.clone(),
                countries: settings.describe(),
                rows: rows as usize,
                ranges_v4,
                ranges_v6,
                problem: Some(format!(
                    "cannot use the geo database: {}; the geo gate keeps the {} ranges live now",
                    crate::error_chain(&err),
                    ranges_v4 + ranges_v6
                )),
                // Recorded again as it was: the same key, so the record stays the same.
                key: Some(key),
                cached: true,
                missing,
                ..GeoInfo::default()
            };
            Ok((gate, info))
        }
        None => Err(anyhow::Error::new(err).context(
            "cannot build the geo gate ([geo] in the settings), and none is live to keep",
        )),
    }
}

/// Removes the files of temporary accounts whose time is up (the kernel has dropped their
/// addresses already) and says so in the output and the audit log. A file that cannot be
/// removed is a warning: the account stays out of the ruleset anyway.
fn remove_expired(ctx: &Ctx, expired: &[Account], _lock: &StoreLock) {
    for a in expired {
        let path = ctx.paths.account_file(&a.name);
        let at = a.expires.map(crate::model::format_time).unwrap_or_default();
        match store::remove_durably(&path) {
            Ok(()) => {
                let line = format!(
                    "account {} expired at {at}: removed ({})",
                    a.name,
                    a.summary()
                );
                ctx.say(&line);
                ctx.audit(&line);
            }
            Err(e) => ctx.warn(format_args!(
                "account {} expired at {at}, but its file could not be removed: {}",
                a.name,
                crate::error_chain(&e)
            )),
        }
    }
}

/// Saves the record of the gate just applied (or removes it when the gate is off); a
/// failure is a warning (the ruleset is live), and the record is removed if it can be, so
/// that a stale one is never trusted. Nothing is written when the record holds the same
/// key (the same database files and settings: the same ranges).
pub fn record_gate(ctx: &Ctx, build: &Build) {
    let sets = [Family::V4, Family::V6].map(|f| build.ruleset.set(&Gate::set_name(f)));
    let result = match (sets, &build.geo.key) {
        ([Some(v4), Some(v6)], Some(key)) => {
            if geo::Applied::load_key(&ctx.paths).as_ref() == Some(key) {
                Ok(())
            } else {
                geo::Applied::save_ranges(
                    &ctx.paths,
                    key,
                    build.geo.rows as u64,
                    &build.geo.missing,
                    v4.elements.iter().map(|e| e.range),
                    v6.elements.iter().map(|e| e.range),
                )
            }
        }
        _ => geo::Applied::remove(&ctx.paths),
    };
    if let Err(e) = result {
        let _ = geo::Applied::remove(&ctx.paths);
        ctx.warn_state_unsaved(format_args!(
            "could not record the geo gate: {}",
            crate::error_chain(&e)
        ));
    }
}

/// Removes the record of the gate before an apply that may change the live gate (its key
/// differs from the build's): a command stopped between the apply and [`record_gate`] must
/// leave no record rather than a stale one, which `geo update` would take for the live
/// sets (it then applies in full).
pub fn forget_gate_if_changing(paths: &store::Paths, geo: &GeoInfo) {
    if geo::Applied::load_key(paths) != geo.key {
        let _ = geo::Applied::remove(paths);
    }
}

/// File in the state folder holding the last ruleset applied, in nft syntax (loadable with
/// `nft -f`, which the boot-time unit does before the network is up).
pub const LAST_APPLIED: &str = "last-applied.nft";

/// Records an applied ruleset: `last-applied.nft` and the `applied` part of the state.
/// The ruleset is live already, so a failure here is a warning (exit 3), never an error: an
/// error would make the command report "nothing changed" (and put its files back) although
/// the kernel has the new ruleset. When the new `last-applied.nft` cannot be written, the
/// old one is removed if it can be: loaded at boot, it could admit a source the live
/// ruleset no longer admits (the boot then waits for `pbxwall-restart.service` instead).
///
/// This is for an update of set elements only (ipchecker): the table and its rules stay, so
/// the recorded time of the last full load (where the drop counter starts) is kept.
pub fn record_applied(ctx: &Ctx, ruleset: &Ruleset, lock: &StoreLock) {
    record_applied_staged(
        ctx,
        ruleset,
        Some(stage_boot_file(&ctx.paths, ruleset)),
        lock,
        false,
    );
}

/// The ruleset rendered into the temporary file of `last-applied.nft`, to be put in place by
/// [`record_applied_staged`] once it is live (rendered while the kernel works through the
/// batch, and never held in memory as a whole: 15 MiB of text for 300,000 geo ranges).
///
/// The geo gate's sets are written empty: the boot file is loaded before the network is up
/// and the restart unit loads the gate right after, and an empty gate admits less, never
/// more, than the live one. So the file does not change when only the gate does (`geo
/// update` leaves it), and a restart does not write 300,000 ranges to it.
pub fn stage_boot_file(
    paths: &store::Paths,
    ruleset: &Ruleset,
) -> Result<store::Staged, StoreError> {
    let path = paths.state_dir.join(LAST_APPLIED);
    let mut staged = store::Staged::create(&path)?;
    let w = staged.writer();
    let written = if ruleset
        .sets
        .iter()
        .all(|s| netlink::dumps_elements(&s.name))
    {
        write!(w, "{ruleset}")
    } else {
        let boot = Ruleset {
            sets: ruleset
                .sets
                .iter()
                .map(|s| {
                    if netlink::dumps_elements(&s.name) {
                        s.clone()
                    } else {
                        s.clone_empty()
                    }
                })
                .collect(),
            chains: ruleset.chains.clone(),
        };
        write!(w, "{boot}")
    };
    written
        .and_then(|()| w.flush())
        .map_err(|source| StoreError::Io { path, source })?;
    // Durable now (while the kernel works through the batch, when called beside it): the
    // commit once the ruleset is live is only the rename and the folder's fsync.
    staged.sync()?;
    Ok(staged)
}

/// [`record_applied`] with the ruleset already rendered into `staged`; `full`: the whole
/// table was loaded (its rules, and so the drop counter, are new).
///
/// `staged` is `None` when the boot file stays as it is (only the geo gate changed: the
/// boot file holds it empty).
pub fn record_applied_staged(
    ctx: &Ctx,
    ruleset: &Ruleset,
    staged: Option<Result<store::Staged, StoreError>>,
    lock: &StoreLock,
    full: bool,
) {
    if let Err(e) = write_records(ctx, ruleset, staged, lock, full) {
        ctx.warn_state_unsaved(format_args!(
            "the ruleset is applied, but recording it in {} failed: {}",
            ctx.paths.state_dir.display(),
            crate::error_chain(&e)
        ));
    }
}

fn write_records(
    ctx: &Ctx,
    ruleset: &Ruleset,
    staged: Option<Result<store::Staged, StoreError>>,
    lock: &StoreLock,
    full: bool,
) -> Result<(), StoreError> {
    let boot_file = ctx.paths.state_dir.join(LAST_APPLIED);
    if let Some(Err(e)) = staged.map(|s| s.and_then(store::Staged::commit)) {
        if store::remove_durably(&boot_file).is_err() && boot_file.exists() {
            ctx.warn(format_args!(
                "{} still holds an older ruleset and could not be removed",
                boot_file.display()
            ));
        }
        return Err(e);
    }
    let (mut st, _) = State::load(&ctx.paths);
    let at = now_rfc3339();
    let loaded_at = if full {
        Some(at.clone())
    } else {
        st.applied.as_ref().and_then(|a| a.loaded_at.clone())
    };
    st.applied = Some(Applied {
        at,
        by: ctx.command.to_owned(),
        skeleton: render::skeleton(ruleset),
        elements: ruleset.element_count(),
        loaded_at,
    });
    st.save(&ctx.paths, lock)
}

/// `ruleset` with the elements of its dynamic sets (bans, knock grants, temporary
/// accounts) filled in as plain elements: those live in the kernel now, and those the
/// apply adds (to restore, or a temporary account's), so [`Ruleset::accepts_new`] sees
/// whom they admit or drop. A set that cannot be read counts only what the apply adds.
/// Borrowed when no dynamic set has an element.
pub fn with_dynamic_elements(ruleset: &Ruleset) -> std::borrow::Cow<'_, Ruleset> {
    let mut fills = Vec::new();
    for (i, set) in ruleset.sets.iter().enumerate() {
        let Some(d) = &set.dynamic else {
            continue;
        };
        let mut addrs: Vec<IpAddr> = match netlink::list_timed_elements(&set.name) {
            Ok(Some(live)) => live.into_iter().map(|e| e.addr).collect(),
            _ => Vec::new(),
        };
        addrs.extend(d.restore.iter().map(|e| e.addr));
        if !addrs.is_empty() {
            addrs.sort_unstable();
            addrs.dedup();
            fills.push((i, addrs));
        }
    }
    if fills.is_empty() {
        return std::borrow::Cow::Borrowed(ruleset);
    }
    let mut rs = ruleset.clone();
    for (i, addrs) in fills {
        rs.sets[i].elements = addrs
            .into_iter()
            .map(|a| crate::ruleset::Element::address(crate::addrset::AddrRange::from_addr(a)))
            .collect();
    }
    std::borrow::Cow::Owned(rs)
}

/// What [`end_lost_flows`] did, for the command's output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowsEnded {
    /// Result lines: the flows ended (`ended 2 flows of sources that lost access:
    /// 192.0.2.10 tcp/22, ...`) and the SSH connection kept; empty when nothing was ended.
    pub lines: Vec<String>,
    /// Warnings: flows that could not be ended, or why none could.
    pub problems: Vec<String>,
}

impl FlowsEnded {
    /// Degraded when anything could not be ended.
    pub fn outcome(&self) -> Outcome {
        if self.problems.is_empty() {
            Outcome::Done
        } else {
            Outcome::Degraded
        }
    }

    /// Prints the lines (and records them in the audit log) and the warnings; returns
    /// [`FlowsEnded::outcome`].
    pub fn report(&self, ctx: &Ctx) -> Outcome {
        for line in &self.lines {
            ctx.say(line);
            ctx.audit(line);
        }
        for p in &self.problems {
            ctx.warn(p);
        }
        self.outcome()
    }
}

/// Ends the running flows of the sources that `ruleset`, live now, no longer admits: every
/// TCP or UDP flow into this host whose source could not open it again (see
/// [`conntrack`]). This command's own SSH connection is left open and reported. Never an
/// error: what fails is in [`FlowsEnded::problems`].
pub fn end_lost_flows(ruleset: &Ruleset) -> FlowsEnded {
    let keep = own_ssh_flow();
    let mut out = FlowsEnded::default();
    let ruleset = with_dynamic_elements(ruleset);
    match conntrack::end_revoked_flows(&ruleset, keep.as_ref()) {
        Ok(ended) => {
            out.lines.extend(ended.summary());
            if let Some(kept) = ended.kept {
                out.lines.push(format!(
                    "kept this SSH session's connection ({kept}) although its source lost \
                     access; it ends with the session"
                ));
            }
            out.problems = ended.problems;
        }
        Err(e) => out.problems.push(format!(
            "the ruleset is applied, but the running flows of sources that lost access could \
             not be ended: {}; they stay open until they go quiet",
            crate::error_chain(&e)
        )),
    }
    out
}

/// Applies a build as [`apply_ruleset`] does and prints what ending the flows did; the
/// outcome is degraded when some could not be ended.
pub fn apply(ctx: &Ctx, build: &Build, lock: &StoreLock, force: bool) -> Result<Outcome> {
    Ok(apply_ruleset(ctx, build, lock, force)?.report(ctx))
}

/// Applies a build in one netlink transaction, records it in the state folder, then ends
/// the flows of the sources that lost access ([`end_lost_flows`]) and returns what that did
/// for the caller to report. On error the previous ruleset is still live and no flow was
/// touched.
pub fn apply_ruleset(
    ctx: &Ctx,
    build: &Build,
    lock: &StoreLock,
    force: bool,
) -> Result<FlowsEnded> {
    if !force {
        guard_ssh_lockout(&ctx.paths, &with_dynamic_elements(&build.ruleset))?;
    }
    forget_gate_if_changing(&ctx.paths, &build.geo);
    let started = Instant::now();
    // The kernel works through the batch inside one sendmsg; meanwhile another thread
    // renders the text recorded in last-applied.nft (a large share of a big restart) into
    // its temporary file, put in place only once the batch is live.
    let paths = &ctx.paths;
    let (stats, staged) = std::thread::scope(|s| {
        let staged = s.spawn(|| stage_boot_file(paths, &build.ruleset));
        let stats = netlink::apply(&build.ruleset);
        (stats, staged.join())
    });
    let stats = stats
        .context("applying table inet pbxwall failed; the previous ruleset is still in place")?;
    let staged = staged.unwrap_or_else(|_| stage_boot_file(&ctx.paths, &build.ruleset));
    record_applied_staged(ctx, &build.ruleset, Some(staged), lock, true);
    record_gate(ctx, build);
    let summary = AppliedSummary {
        accounts: build.accounts.len(),
        address_ranges: build.ruleset.element_count(),
        sets: build.ruleset.sets.len(),
        netlink_messages: stats.messages,
        ms: (started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0,
    };
    ctx.say(format_args!(
        "applied table inet pbxwall: {} accounts, {} address ranges in {} sets, {} netlink messages in {:.1} ms",
        summary.accounts, summary.address_ranges, summary.sets, summary.netlink_messages, summary.ms
    ));
    ctx.audit(&format!(
        "applied table inet pbxwall: {} accounts, {} address ranges",
        summary.accounts, summary.address_ranges
    ));
    ctx.report.borrow_mut().applied = Some(summary);
    Ok(end_lost_flows(&build.ruleset))
}

/// Builds and applies under the caller's lock; prints problems. Used after every change.
pub fn rebuild_and_apply(ctx: &Ctx, lock: &StoreLock, force: bool) -> Result<Outcome> {
    rebuild_and_apply_checked(ctx, lock, force, |_| Ok(()))
}

/// [`rebuild_and_apply`], refusing the build when `check` finds something wrong with it
/// (before anything is printed or applied).
fn rebuild_and_apply_checked(
    ctx: &Ctx,
    lock: &StoreLock,
    force: bool,
    check: impl FnOnce(&Build) -> Result<()>,
) -> Result<Outcome> {
    let b = build(ctx, Some(lock), Dns::Query)?;
    check(&b)?;
    b.report_problems(ctx);
    let applied = apply(ctx, &b, lock, force)?;
    Ok(b.outcome().worst(applied))
}

/// Runs `change` (which writes files), then rebuilds and applies; if applying fails, puts
/// the files `change` touched back as they were, so an error means nothing changed. `done`
/// says what `change` did ("account joe saved"): printed once the files are written, before
/// the apply's own lines; with `no_restart` its last line ends "; run restart to apply".
pub fn change_then_apply(
    ctx: &Ctx,
    lock: &StoreLock,
    touched: &[std::path::PathBuf],
    no_restart: bool,
    force: bool,
    done: &[String],
    change: impl FnOnce() -> Result<()>,
) -> Result<Outcome> {
    change_then_apply_checked(
        ctx,
        lock,
        touched,
        (no_restart, force),
        done,
        change,
        |_| Ok(()),
    )
}

/// [`change_then_apply`], with a `check` of the build made after the change: when it fails
/// the files are put back as they were, `done` is not said and nothing is applied (add-fqdn
/// refuses a name that does not exist this way, with the answer of the one resolution the
/// apply makes).
pub fn change_then_apply_checked(
    ctx: &Ctx,
    lock: &StoreLock,
    touched: &[std::path::PathBuf],
    (no_restart, force): (bool, bool),
    done: &[String],
    change: impl FnOnce() -> Result<()>,
    check: impl FnOnce(&Build) -> Result<()>,
) -> Result<Outcome> {
    let before: Vec<(std::path::PathBuf, Option<String>)> = touched
        .iter()
        .map(|p| Ok((p.clone(), store::read_optional(p)?)))
        .collect::<Result<_, StoreError>>()?;
    change()?;
    // What changed is said before the apply reports (and with `--no-restart`, the last line
    // says that nothing was applied yet).
    let say_done = || {
        for (i, line) in done.iter().enumerate() {
            if no_restart && i + 1 == done.len() {
                ctx.say(format_args!("{line}; run restart to apply"));
            } else {
                ctx.say(line);
            }
        }
    };
    if no_restart {
        say_done();
        if done.is_empty() {
            ctx.say("saved; run restart to apply");
        }
        return Ok(Outcome::Done);
    }
    let checked = |b: &Build| {
        check(b)?;
        say_done();
        Ok(())
    };
    match rebuild_and_apply_checked(ctx, lock, force, checked) {
        Ok(o) => Ok(o),
        Err(e) => {
            for (path, old) in &before {
                let restored = match old {
                    Some(text) => store::write_atomic(path, text.as_bytes(), 0o644),
                    None => store::remove_durably(path),
                };
                if let Err(r) = restored {
                    ctx.warn(format_args!(
                        "could not restore {}: {}",
                        path.display(),
                        crate::error_chain(&r)
                    ));
                }
            }
            Err(e.context("the change was not saved"))
        }
    }
}
