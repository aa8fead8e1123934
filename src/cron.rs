//! The cron.d entry that runs `ipchecker` every few minutes.
//!
//! Schedules are validated with `cron-parser` before anything is written, and the next run
//! times are computed in local time, as cron runs them.

use std::path::Path;

use chrono::{DateTime, Local};
use cron_parser::Schedule;
use thiserror::Error;

/// Where `ipchecker --install-cron` writes by default.
pub const DEFAULT_CRON_FILE: &str = "/etc/cron.d/pbxwall";

/// The first line of every cron file pbxwall writes. The package's postrm (on purge) and
/// `make uninstall` remove the cron file only when it starts with this line, so a file of
/// the same name that the administrator wrote stays; keep them in step when it changes.
pub const CRON_FILE_MARKER: &str =
    "# pbxwall: re-resolve dynamic DNS names and update the firewall.";

/// A schedule that cron-parser refused.
#[derive(Debug, Error)]
#[error(
    "invalid cron schedule {schedule:?}: {reason}; expected five fields (minute hour day-of-month month day-of-week), e.g. \"*/5 * * * *\""
)]
pub struct ScheduleError {
    /// What was given.
    pub schedule: String,
    /// Why it is invalid.
    pub reason: String,
}

/// A validated five-field cron schedule.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expr: String,
    schedule: Schedule,
}

impl CronSchedule {
    /// Parses and validates a five-field schedule.
    pub fn parse(s: &str) -> Result<CronSchedule, ScheduleError> {
        let err = |reason: String| ScheduleError {
            schedule: s.to_owned(),
            reason,
        };
        let expr = s.split_whitespace().collect::<Vec<_>>().join(" ");
        // cron.d lines: a newline or % would change the meaning of the file.
        if s.contains(['\n', '\r', '%']) {
            return Err(err("newlines and % are not allowed".into()));
        }
        if expr.split(' ').count() != 5 {
            return Err(err(format!(
                "it has {} fields",
                expr.split(' ').filter(|f| !f.is_empty()).count()
            )));
        }
        let schedule: Schedule = expr.parse().map_err(|e| err(format!("{e}")))?;
        if schedule.next_after(&Local::now()).is_none() {
            return Err(err("it never runs".into()));
        }
        Ok(CronSchedule { expr, schedule })
    }

    /// The schedule as written to the cron file.
    pub fn as_str(&self) -> &str {
        &self.expr
    }

    /// The next `n` run times after `after`.
    pub fn next_runs(&self, after: DateTime<Local>, n: usize) -> Vec<DateTime<Local>> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            match self.schedule.next_after(&t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }
}

/// A command that cannot be written to a cron.d line.
#[derive(Debug, Error)]
#[error(
    "cannot write the command {command:?} to a cron file: it contains a control character (a newline would start a new cron line); use folder names without them"
)]
pub struct CronCommandError {
    /// The command line, as it would have been written.
    pub command: String,
}

/// The text of the cron.d file: runs `command` as root on `schedule`.
///
/// cron ends the line at a newline and turns an unescaped `%` into one (crontab(5)), so a
/// control character in `command` is refused and `%` is written as `\%`.
pub fn cron_file(schedule: &CronSchedule, command: &str) -> Result<String, CronCommandError> {
    if command.chars().any(char::is_control) {
        return Err(CronCommandError {
            command: command.to_owned(),
        });
    }
    let command = command.replace('%', "\\%");
    Ok(format!(
        "{CRON_FILE_MARKER}\n\
         # Installed by `ipchecker --install-cron`; remove with `ipchecker --remove-cron`.\n\
         # ipchecker is quiet unless something changed or failed, so cron mails only then.\n\
         SHELL=/bin/sh\n\
         PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         {} root {command}\n",
        schedule.as_str()
    ))
}

/// The first line of the cron file `sync --install-cron` writes (`make uninstall` and the
/// package's purge remove it only when it starts with this line).
pub const SYNC_CRON_FILE_MARKER: &str = "# pbxwall: pull the signed fleet bundle and apply it.";

/// The text of the cron.d file running `pbxwall sync` as root on `schedule` (the same
/// rules as [`cron_file`]).
pub fn sync_cron_file(schedule: &CronSchedule, command: &str) -> Result<String, CronCommandError> {
    let text = cron_file(schedule, command)?;
    let body: Vec<&str> = text.lines().skip(3).collect();
    Ok(format!(
        "{SYNC_CRON_FILE_MARKER}\n\
         # Installed by `pbxwall sync --install-cron`; remove with `pbxwall sync --remove-cron`.\n\
         # sync prints only changes and problems, so cron mails only then.\n\
         {}\n",
        body.join("\n")
    ))
}

/// The schedule of an installed pbxwall cron file, if it has one.
pub fn installed_schedule(path: &Path) -> Option<CronSchedule> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.contains('='))
        .find_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.len() > 6).then(|| CronSchedule::parse(&fields[..5].join(" ")).ok())?
        })
}

/// Quotes a word for /bin/sh if it needs it.
pub fn sh_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn valid_schedules_and_next_runs() {
        let s = CronSchedule::parse(" */5  * * * * ").unwrap();
        assert_eq!(s.as_str(), "*/5 * * * *");
        let t = Local.with_ymd_and_hms(2026, 11, 27, 10, 2, 0).unwrap();
        let runs: Vec<String> = s
            .next_runs(t, 3)
            .iter()
            .map(|d| d.format("%H:%M").to_string())
            .collect();
        assert_eq!(runs, ["10:05", "10:10", "10:15"]);
        assert!(CronSchedule::parse("0 3 * * 1-5").is_ok());
    }

    #[test]
    fn invalid_schedules() {
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "61 * * * *",
            "*/0 * * * *",
            "* 25 * * *",
            "a b c d e",
            "* * * * *\n* * * * * root rm -rf /",
            "* * * * % ",
        ] {
            let e = CronSchedule::parse(bad).expect_err(bad).to_string();
            assert!(e.starts_with("invalid cron schedule"), "{e}");
        }
    }

    #[test]
    fn cron_file_round_trip() {
        let s = CronSchedule::parse("*/10 * * * *").unwrap();
        let text = cron_file(&s, "/usr/sbin/ipchecker --quiet").unwrap();
        assert!(text.contains("\n*/10 * * * * root /usr/sbin/ipchecker --quiet\n"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pbxwall");
        std::fs::write(&f, text).unwrap();
        assert_eq!(installed_schedule(&f).unwrap().as_str(), "*/10 * * * *");
        assert!(installed_schedule(&dir.path().join("none")).is_none());
    }

    #[test]
    fn cron_commands_cannot_add_lines() {
        let s = CronSchedule::parse("*/5 * * * *").unwrap();
        let cmd = format!(
            "ipchecker --config-dir {}",
            sh_quote("/etc/x\n* * * * * root evil")
        );
        let e = cron_file(&s, &cmd).unwrap_err().to_string();
        assert!(e.starts_with("cannot write the command"), "{e}");
        assert!(cron_file(&s, "ipchecker --config-dir '/a\tb'").is_err());
        let text = cron_file(&s, "ipchecker --config-dir '/etc/50%'").unwrap();
        assert!(
            text.ends_with("root ipchecker --config-dir '/etc/50\\%'\n"),
            "{text}"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("/usr/sbin/ipchecker"), "/usr/sbin/ipchecker");
        assert_eq!(sh_quote("/tmp/my dir"), "'/tmp/my dir'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }
}
