//! pbxwall: a whitelist firewall manager for VoIP PBX servers on nftables.
#![deny(unsafe_code)]

/// `println!` to stdout that ignores write errors: output piped into a reader that stops
/// early (`status | head`) must not make the command panic (broken pipe counts as success).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` with the same behaviour as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

pub mod account_cache;
pub mod addrset;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod compile;
pub mod complete;
pub mod cron;
pub mod detect;
pub mod diff;
pub mod dynstate;
pub mod fleet;
pub mod geo;
pub mod import;
pub mod knock;
pub mod manpages;
pub mod model;
pub mod nft;
pub mod providers;
pub mod resolve;
pub mod ruleset;
pub mod state;
pub mod store;

/// An error and its causes on one line, `outer: cause: cause` (what anyhow's `{:#}` prints),
/// for errors shown without anyhow: warnings, skipped files, status lines.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
