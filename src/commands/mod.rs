//! What each command does, on top of the library modules. The binaries only parse
//! arguments and call into here; errors carry `anyhow` context for the one line the user sees.

pub mod add;
pub mod del;
pub mod init;
pub mod ipchecker;
pub mod providers;
pub mod restart;
pub mod status;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Instant;

use anyhow::{Context, Result};
use chrono::Utc;
use serde::Serialize;

use crate::audit;
use crate::compile;
use crate::model::{Account, Fqdn, Profiles, Settings};
use crate::nft::{netlink, render};
use crate::resolve::{self, NameState, Resolution};
use crate::ruleset::{L4Proto, Ruleset};
use crate::state::{Applied, State, now_rfc3339};
use crate::store::{self, LoadedAccounts, Paths, StoreError, StoreLock};

/// How a command that did its job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything done (exit 0).
    Done,
    /// Applied, but some names were left out or account files skipped (exit 3).
    Degraded,
}

/// A usage error: missing arguments without a terminal to ask on (exit 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// What every command knows: where the files are and how to talk.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Config, state and share folders.
    pub paths: Paths,
    /// Print only errors and warnings.
    pub quiet: bool,
    /// Print results as JSON.
    pub json: bool,
    /// The command's name, as its binary is called: in the audit log and the state.
    pub command: &'static str,
    /// What the command reports, printed as JSON at the end with `--json`; shared by clones.
    pub report: Rc<RefCell<Report>>,
}

/// The result of a command as `--json` prints it (status and ipchecker print their own,
/// documented shapes instead):
///
/// ```json
/// {"command": "add-ip", "exit": 0, "outcome": "ok", "error": null,
///  "messages": ["account joe saved"], "warnings": [],
///  "applied": {"accounts": 2, "address_ranges": 5, "sets": 6, "netlink_messages": 40, "ms": 12.5}}
/// ```
/// `outcome` is "ok", "degraded" or "error"; `applied` is null when nothing was applied.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Result lines, as printed without `--json`.
    pub messages: Vec<String>,
    /// Warnings (also printed to stderr).
    pub warnings: Vec<String>,
    /// What was applied.
    pub applied: Option<AppliedSummary>,
    /// Set when the command printed its own JSON.
    #[serde(skip)]
    pub printed: bool,
}

/// Numbers of one apply.
#[derive(Debug, Clone, Serialize)]
pub struct AppliedSummary {
    /// Accounts that loaded.
    pub accounts: usize,
    /// Address ranges in all sets.
    pub address_ranges: usize,
    /// Sets.
    pub sets: usize,
    /// Netlink messages in the batch.
    pub netlink_messages: usize,
    /// Wall time of the apply, milliseconds.
    pub ms: f64,
}

impl Ctx {
    /// A context for these folders.
    pub fn new(paths: Paths, quiet: bool, json: bool, command: &'static str) -> Ctx {
        Ctx {
            paths,
            quiet,
            json,
            command,
            report: Rc::default(),
        }
    }

    /// Records a change in the audit log under this command's name (best effort: a
    /// failure is a warning).
    pub fn audit(&self, what: &str) {
        if let Err(e) = audit::record(&self.paths, self.command, what) {
            self.warn(format_args!(
                "could not write the audit log: {}",
                crate::error_chain(&e)
            ));
        }
    }

    /// Prints a JSON value as the command's whole output.
    pub fn print_json(&self, value: &impl Serialize) -> Result<()> {
        outln!("{}", serde_json::to_string_pretty(value)?);
        self.report.borrow_mut().printed = true;
        Ok(())
    }
}

impl Ctx {
    /// Prints a result line unless `--quiet`; with `--json` it goes into the report.
    pub fn say(&self, line: impl fmt::Display) {
        if self.json {
            self.report.borrow_mut().messages.push(line.to_string());
        } else if !self.quiet {
            outln!("{line}");
        }
    }

    /// Prints a warning to stderr (always), and records it for `--json`.
    pub fn warn(&self, line: impl fmt::Display) {
        let line = line.to_string();
        eprintln!("warning: {line}");
        self.report.borrow_mut().warnings.push(line);
    }

    /// Takes the store lock, saying so when another command holds it.
    pub fn lock(&self) -> Result<StoreLock> {
        let quiet = self.quiet;
        Ok(StoreLock::acquire(&self.paths, |p| {
            if !quiet {
                eprintln!(
                    "waiting for lock on {} (another pbxwall command is running)",
                    p.display()
                );
            }
        })?)
    }
}

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
    /// What every host name resolved to, and its state.
    pub resolution: Resolution,
    /// The compiled ruleset.
    pub ruleset: Ruleset,
}

impl Build {
    /// Whether anything was left out or is stale.
    pub fn degraded(&self) -> bool {
        !self.skipped.is_empty() || self.resolution.degraded().next().is_some()
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

    /// One line per problem: skipped files, names left out, stale names.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .skipped
            .iter()
            .map(|e| format!("skipped account file {}", crate::error_chain(e)))
            .collect();
        for r in self.resolution.degraded() {
            let accounts = self.accounts_of(&r.name);
            out.push(match &r.state {
                NameState::LeftOut { reason } => {
                    format!("left out {} (account {accounts}): {reason}", r.name)
                }
                state => format!(
                    "{} (account {accounts}) is {state}; keeping {}",
                    r.name,
                    join_addrs(&r.addrs())
                ),
            });
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
    let LoadedAccounts { accounts, skipped } = store::load_accounts(&ctx.paths, &profiles)?;
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
                cache.save(&ctx.paths, lock)?;
            }
            r
        }
    };
    let ruleset = compile::compile(&settings, &profiles, &accounts, &resolution.usable());
    Ok(Build {
        settings,
        profiles,
        accounts,
        skipped,
        resolution,
        ruleset,
    })
}

/// File in the state folder holding the last ruleset applied, in nft syntax (loadable with
/// `nft -f`, which the boot-time unit does before the network is up).
pub const LAST_APPLIED: &str = "last-applied.nft";

/// Records an applied ruleset: `last-applied.nft` and the `applied` part of the state.
/// The ruleset is live already, so a failure here is a warning, never an error: an error
/// would make the command report "nothing changed" (and put its files back) although the
/// kernel has the new ruleset.
pub fn record_applied(ctx: &Ctx, ruleset: &Ruleset, lock: &StoreLock) {
    record_applied_text(ctx, ruleset, &render::render(ruleset), lock);
}

/// [`record_applied`] with the ruleset already rendered as `text`.
fn record_applied_text(ctx: &Ctx, ruleset: &Ruleset, text: &str, lock: &StoreLock) {
    if let Err(e) = write_records(ctx, ruleset, text, lock) {
        ctx.warn(format_args!(
            "the ruleset is applied, but recording it in {} failed: {}",
            ctx.paths.state_dir.display(),
            crate::error_chain(&e)
        ));
    }
}

fn write_records(
    ctx: &Ctx,
    ruleset: &Ruleset,
    text: &str,
    lock: &StoreLock,
) -> Result<(), StoreError> {
    store::write_atomic(
        &ctx.paths.state_dir.join(LAST_APPLIED),
        text.as_bytes(),
        0o600,
    )?;
    let (mut st, _) = State::load(&ctx.paths);
    st.applied = Some(Applied {
        at: now_rfc3339(),
        by: ctx.command.to_owned(),
        skeleton: render::skeleton(ruleset),
        elements: ruleset.element_count(),
    });
    st.save(&ctx.paths, lock)
}

/// Applies a build in one netlink transaction and records it in the state folder.
/// On error the previous ruleset is still live.
pub fn apply(ctx: &Ctx, build: &Build, lock: &StoreLock, force: bool) -> Result<()> {
    if !force {
        guard_ssh_lockout(&build.ruleset)?;
    }
    let started = Instant::now();
    // The kernel works through the batch inside one sendmsg; meanwhile another thread
    // renders the text recorded in last-applied.nft (a large share of a big restart).
    let (stats, text) = std::thread::scope(|s| {
        let text = s.spawn(|| render::render(&build.ruleset));
        let stats = netlink::apply(&build.ruleset);
        (stats, text.join())
    });
    let stats = stats
        .context("applying table inet pbxwall failed; the previous ruleset is still in place")?;
    let text = text.unwrap_or_else(|_| render::render(&build.ruleset));
    record_applied_text(ctx, &build.ruleset, &text, lock);
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
    Ok(())
}

/// Builds and applies under the caller's lock; prints problems. Used after every change.
pub fn rebuild_and_apply(ctx: &Ctx, lock: &StoreLock, force: bool) -> Result<Outcome> {
    let b = build(ctx, Some(lock), Dns::Query)?;
    b.report_problems(ctx);
    apply(ctx, &b, lock, force)?;
    Ok(b.outcome())
}

/// Runs `change` (which writes files), then rebuilds and applies; if applying fails, puts
/// the files `change` touched back as they were, so an error means nothing changed.
pub fn change_then_apply(
    ctx: &Ctx,
    lock: &StoreLock,
    touched: &[std::path::PathBuf],
    no_restart: bool,
    force: bool,
    change: impl FnOnce() -> Result<()>,
) -> Result<Outcome> {
    let before: Vec<(std::path::PathBuf, Option<String>)> = touched
        .iter()
        .map(|p| Ok((p.clone(), store::read_optional(p)?)))
        .collect::<Result<_, StoreError>>()?;
    change()?;
    if no_restart {
        ctx.say("saved; run restart to apply");
        return Ok(Outcome::Done);
    }
    match rebuild_and_apply(ctx, lock, force) {
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

/// The SSH session this command runs in: the client's address and the server's port, from
/// `SSH_CONNECTION` ("client_ip client_port server_ip server_port").
pub fn ssh_session() -> Option<(IpAddr, u16)> {
    parse_ssh_connection(&std::env::var("SSH_CONNECTION").ok()?)
}

fn parse_ssh_connection(s: &str) -> Option<(IpAddr, u16)> {
    let mut parts = s.split_whitespace();
    let client: IpAddr = parts.next()?.parse().ok()?;
    let _client_port = parts.next()?;
    let _server = parts.next()?;
    let port: u16 = parts.next()?.parse().ok()?;
    Some((client.to_canonical(), port))
}

/// Refuses a ruleset that would stop this SSH session's client from opening a new
/// connection to the SSH port (the running session itself would survive as established,
/// but the next login would not).
fn guard_ssh_lockout(ruleset: &Ruleset) -> Result<()> {
    if let Some((client, port)) = ssh_session()
        && !ruleset.accepts_new(client, L4Proto::Tcp, port)
    {
        anyhow::bail!(
            "refusing to apply: your SSH client {client} could no longer reach tcp port {port}; \
             whitelist it first (add-ip admin {client} --allow ssh) or pass --force"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_connection_parsing() {
        assert_eq!(
            parse_ssh_connection("203.0.113.7 52314 192.0.2.1 22"),
            Some(("203.0.113.7".parse().unwrap(), 22))
        );
        assert_eq!(
            parse_ssh_connection("::ffff:203.0.113.7 52314 ::ffff:192.0.2.1 2222"),
            Some(("203.0.113.7".parse().unwrap(), 2222))
        );
        assert_eq!(
            parse_ssh_connection("2001:db8::7 1 2001:db8::1 22"),
            Some(("2001:db8::7".parse().unwrap(), 22))
        );
        assert_eq!(parse_ssh_connection(""), None);
        assert_eq!(parse_ssh_connection("garbage here"), None);
    }
}
