//! What each command does, on top of the library modules. The binaries only parse
//! arguments and call into here; errors carry `anyhow` context for the one line the user sees.
//!
//! One module per command (`add`, `ban`, `bundle`, `del`, `geo`, `grants`, `import`, `init`,
//! `ipchecker`, `knock`, `list`, `providers`, `restart`, `status`, `sync`), each with its clap arguments and its function; and what they share:
//! - `context`: [`Ctx`], what every command knows and how it talks, and its report;
//! - `apply`: the pipeline from files to the kernel ([`build`], [`apply()`],
//!   [`change_then_apply`], ...);
//! - `lockout`: the guard against cutting off this SSH session's client.

pub mod add;
pub mod admitted;
pub mod ban;
pub mod bundle;
pub mod del;
pub mod geo;
pub mod grants;
pub mod import;
pub mod init;
pub mod ipchecker;
pub mod knock;
pub mod list;
pub mod providers;
pub mod restart;
pub mod status;
pub mod sync;

mod apply;
mod context;
mod lockout;

pub use apply::{
    Build, Dns, FlowsEnded, LAST_APPLIED, apply, apply_ruleset, build, change_then_apply,
    change_then_apply_checked, end_lost_flows, forget_gate_if_changing, join_addrs, load_gate,
    rebuild_and_apply, record_applied, record_applied_staged, record_gate, stage_boot_file,
    with_dynamic_elements,
};
pub use context::{AppliedSummary, CommandReport, Ctx, NeedsRoot, Outcome, UsageError, exit_code};
pub(crate) use lockout::guard_ssh_lockout;
pub use lockout::ssh_session;
