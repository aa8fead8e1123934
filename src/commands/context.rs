//! The context every command runs in ([`Ctx`]: folders, output mode, its name) and what it
//! reports: how it ended ([`Outcome`], [`UsageError`]) and what `--json` prints at the end.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use anyhow::Result;
use serde::Serialize;

use crate::audit;
use crate::store::{Paths, StoreLock};

/// How a command that did its job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything done (exit 0).
    Done,
    /// Applied, but some names were left out or account files skipped (exit 3).
    Degraded,
}

impl Outcome {
    /// The worse of two outcomes: degraded if either is.
    pub fn worst(self, other: Outcome) -> Outcome {
        if self == Outcome::Degraded || other == Outcome::Degraded {
            Outcome::Degraded
        } else {
            Outcome::Done
        }
    }
}

/// A usage error (exit 2): the command line itself is wrong, whatever the state of the
/// system: missing arguments without a terminal to ask on, or a value that is not valid
/// (an address, account name, host name, service, provider id or cron schedule that does not
/// parse, a range too large without `--force`). The same rule as clap's syntax errors, so a
/// script can tell "fix the command line" (2) from "it could not be done now" (1: the account
/// exists, no such account, the kernel or the SSH guard refused, a broken file).
#[derive(Debug)]
pub struct UsageError(pub String);

impl UsageError {
    /// A value given on the command line that does not parse: its error, as a usage error
    /// (the message stays as it is).
    pub fn bad_value(err: impl fmt::Display) -> anyhow::Error {
        UsageError(err.to_string()).into()
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A command run by another user than root that needs root: said in one line instead of the
/// "Permission denied" or "Operation not permitted" of the first file or netlink message
/// the command would have failed on (exit 1, nothing changed).
#[derive(Debug)]
pub struct NeedsRoot(pub String);

impl fmt::Display for NeedsRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NeedsRoot {}

/// The exit status of a command's result, the same in every binary: 0 done, 3 applied but
/// degraded, 2 usage error ([`UsageError`]), 1 any other error (nothing changed).
pub fn exit_code(result: &Result<Outcome>) -> u8 {
    match result {
        Ok(Outcome::Done) => 0,
        Ok(Outcome::Degraded) => 3,
        Err(err) if err.downcast_ref::<UsageError>().is_some() => 2,
        // sync: refused or failed, the last good fleet bundle stays in force.
        Err(err) if err.downcast_ref::<crate::fleet::SyncError>().is_some() => 3,
        Err(_) => 1,
    }
}

impl Ctx {
    /// Warns that a state file could not be written while the firewall was changed anyway:
    /// protection never waits for a full or read-only disk, but the command ends degraded.
    pub fn warn_state_unsaved(&self, what: impl fmt::Display) {
        self.warn(what);
        self.report.borrow_mut().state_unsaved = true;
    }

    /// `outcome`, made [`Outcome::Degraded`] when a state file could not be written.
    pub fn finish(&self, outcome: Outcome) -> Outcome {
        if self.report.borrow().state_unsaved {
            Outcome::Degraded
        } else {
            outcome
        }
    }
}

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
    pub report: Rc<RefCell<CommandReport>>,
    /// Set when the command, as given, needs root and does not run as root: the message of
    /// the [`NeedsRoot`] error [`Ctx::lock`] returns.
    pub needs_root: Option<String>,
    /// Added to every audit log line of this command, in brackets (`sync`: the fleet
    /// bundle's serial).
    pub audit_note: Option<String>,
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
pub struct CommandReport {
    /// Result lines, as printed without `--json`.
    pub messages: Vec<String>,
    /// Warnings (also printed to stderr).
    pub warnings: Vec<String>,
    /// What was applied.
    pub applied: Option<AppliedSummary>,
    /// Set when the command printed its own JSON.
    #[serde(skip)]
    pub printed: bool,
    /// A state file (resolution cache, last applied ruleset) could not be written although
    /// the firewall changed: the command ends degraded (exit 3). Not printed in the JSON.
    #[serde(skip)]
    pub state_unsaved: bool,
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
            needs_root: None,
            audit_note: None,
        }
    }

    /// Records a change in the audit log under this command's name (best effort: a
    /// failure is a warning).
    pub fn audit(&self, what: &str) {
        let noted;
        let what = match &self.audit_note {
            Some(note) => {
                noted = format!("{what} [{note}]");
                noted.as_str()
            }
            None => what,
        };
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

    /// Prints a result line unless `--quiet`; with `--json` it goes into the report.
    pub fn say(&self, line: impl fmt::Display) {
        if self.json {
            self.report.borrow_mut().messages.push(line.to_string());
        } else if !self.quiet {
            outln!("{}", crate::model::printable(&line.to_string()));
        }
    }

    /// Prints a warning to stderr (always), and records it for `--json`.
    pub fn warn(&self, line: impl fmt::Display) {
        let line = line.to_string();
        eprintln!("warning: {}", crate::model::printable(&line));
        self.report.borrow_mut().warnings.push(line);
    }

    /// Takes the store lock, saying so when another command holds it; fails with
    /// [`NeedsRoot`] when the command needs root and runs without.
    pub fn lock(&self) -> Result<StoreLock> {
        if let Some(needs_root) = &self.needs_root {
            return Err(NeedsRoot(needs_root.clone()).into());
        }
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

    /// With `--json`, prints the command's [`CommandReport`] as its whole output, at the end
    /// (unless the command printed its own JSON): with its exit status and, on error, the
    /// error and its causes on one line.
    pub fn print_report(&self, exit: u8, error: Option<String>) {
        let report = self.report.borrow();
        if !self.json || report.printed {
            return;
        }
        let outcome = match exit {
            0 => "ok",
            3 => "degraded",
            _ => "error",
        };
        let out = serde_json::json!({
            "command": self.command,
            "exit": exit,
            "outcome": outcome,
            "error": error,
            "messages": report.messages,
            "warnings": report.warnings,
            "applied": report.applied,
        });
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
}
