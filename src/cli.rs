//! The command line, assembled: the `pbxwall` dispatcher and the one-command binaries
//! (`add-ip`, `restart`, ...) built from the arguments each command module defines
//! (`AddIpArgs` in [`commands::add`], `StatusArgs` in [`commands::status`], ...), the
//! options every command takes ([`Common`]), and the `main` they all run, which makes the
//! command's [`Ctx`] and dispatches to it.
//!
//! Exit codes, the same for every binary, and what cron and monitoring rely on (cron mails
//! on any non-zero status; a check can tell "applied but degraded" from "failed"):
//! 0 success · 1 error, nothing changed · 2 usage error: the command line is wrong (clap's
//! syntax errors, a missing argument, or a value that is not valid: `UsageError`), nothing
//! changed · 3 applied, but degraded.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::commands::add::{AddFqdnArgs, AddIpArgs};
use crate::commands::admitted::AdmittedArgs;
use crate::commands::ban::{BanArgs, BansArgs, UnbanArgs};
use crate::commands::bundle::{self as bundle_cmd, BundleArgs};
use crate::commands::del::DelAcctArgs;
use crate::commands::geo::{self as geo_cmd, GeoArgs};
use crate::commands::grants::{GrantsArgs, RevokeArgs};
use crate::commands::import::{self as import_cmd, ImportArgs};
use crate::commands::init::InitArgs;
use crate::commands::ipchecker::{self, IpcheckerArgs};
use crate::commands::knock::{self as knock_cmd, KnockArgs};
use crate::commands::list::{self as list_cmd, ListArgs};
use crate::commands::providers::EnableTrustedProvidersArgs;
use crate::commands::restart::RestartArgs;
use crate::commands::status::{self, StatusArgs};
use crate::commands::sync::{self as sync_cmd, SyncArgs};
use crate::commands::{self, Ctx, NeedsRoot, Outcome};
use crate::store::{DEFAULT_CONFIG_DIR, DEFAULT_STATE_DIR, Paths};

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Configuration folder (settings, accounts, local profiles)
    #[arg(long, env = "PBXWALL_CONFIG_DIR", default_value = DEFAULT_CONFIG_DIR, global = true, value_name = "DIR")]
    pub config_dir: PathBuf,
    /// State folder (lock, name-resolution cache, last applied ruleset)
    #[arg(long, env = "PBXWALL_STATE_DIR", default_value = DEFAULT_STATE_DIR, global = true, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Shipped data (profiles/, providers.toml) [default: ../share/pbxwall beside the program
    /// if it exists, else /usr/share/pbxwall; built-in copies are used when absent]
    #[arg(long, env = "PBXWALL_SHARE_DIR", global = true, value_name = "DIR")]
    pub share_dir: Option<PathBuf>,
    /// Print only errors and warnings
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print the cause chain of errors, one cause a line
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Print the result as JSON
    #[arg(long, global = true)]
    pub json: bool,
}

impl Common {
    /// The context `command` runs in, with these folders and output options (without
    /// `--share-dir`: ../share/pbxwall beside the program if it exists, else
    /// /usr/share/pbxwall).
    fn ctx(&self, command: &'static str) -> Ctx {
        let paths = Paths {
            config_dir: self.config_dir.clone(),
            state_dir: self.state_dir.clone(),
            share_dir: self
                .share_dir
                .clone()
                .unwrap_or_else(crate::store::default_share_dir),
        };
        Ctx::new(paths, self.quiet, self.json, command)
    }
}

/// All commands, for the `pbxwall` dispatcher.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Create an account for IPv4/IPv6 addresses or CIDRs, then apply
    AddIp(AddIpArgs),
    /// Create an account for host names, then apply
    AddFqdn(AddFqdnArgs),
    /// Remove accounts, or some addresses of one account, then apply
    DelAcct(DelAcctArgs),
    /// List the accounts, one a line: services, addresses, names, expiry, origin, comment
    #[command(after_long_help = list_cmd::LONG_HELP)]
    List(ListArgs),
    /// Resolve every name, compile every account, apply atomically
    Restart(RestartArgs),
    /// Re-resolve host names; write to the kernel only what changed (for cron)
    #[command(after_long_help = ipchecker::LONG_HELP)]
    Ipchecker(IpcheckerArgs),
    /// Show what is loaded, whether it matches the configuration, and every account
    #[command(after_long_help = status::LONG_HELP)]
    Status(StatusArgs),
    /// First-time setup: settings, detected ports, this server's and the admin's addresses
    #[command(after_long_help = crate::commands::init::LONG_HELP)]
    Init(InitArgs),
    /// List trusted SIP providers, or create/remove their accounts, then apply
    EnableTrustedProviders(EnableTrustedProvidersArgs),
    /// Turn the whitelists of iptables-save files (Travelin' Man 3) or CSF's csf.allow into
    /// accounts, then apply
    #[command(after_long_help = import_cmd::LONG_HELP)]
    Import(ImportArgs),
    /// IP Country: the country of an address, or reload the country database into the kernel
    #[command(after_long_help = geo_cmd::LONG_HELP)]
    Geo(GeoArgs),
    /// Fleets: pack a folder of accounts into a bundle to sign with minisign
    #[command(after_long_help = bundle_cmd::LONG_HELP)]
    Bundle(BundleArgs),
    /// Fleets: fetch the signed bundle of [sync] url, verify it, apply its accounts
    #[command(after_long_help = sync_cmd::LONG_HELP)]
    Sync(SyncArgs),
    /// Port knocking: --setup writes and applies a random sequence (server); HOST sends the
    /// sequence to a server (client)
    #[command(after_long_help = knock_cmd::LONG_HELP)]
    Knock(KnockArgs),
    /// List the sources a knock granted, with the time each has left
    Grants(GrantsArgs),
    /// End the knock grants of addresses now, and their running flows
    Revoke(RevokeArgs),
    /// Drop every packet of some sources for a while (element operation, no restart)
    #[command(after_long_help = crate::commands::ban::LONG_HELP)]
    Ban(BanArgs),
    /// End bans now
    Unban(UnbanArgs),
    /// List the bans with their time left and origin (manual, guard, fail2ban)
    Bans(BansArgs),
    /// List the sources a REGISTER for a [sip] register_domains name admitted
    Admitted(AdmittedArgs),
}

/// The end of every binary's `--help`: exit codes and the failure policy for names.
const AFTER_HELP: &str = "\
Exit status: 0 success, 1 error (nothing changed, the old ruleset stays live),
2 usage error (a missing argument or a value that is not valid on the command line; nothing
changed), 3 applied but degraded (names left out, account files skipped, or running
flows of sources that lost access not ended).

Names that do not resolve (NXDOMAIN) are left out of the ruleset and everything else is
still applied; when DNS fails only for a while (timeout, SERVFAIL) a name keeps its last
addresses for [resolver] stale_grace_s (default 1 hour).

Whatever takes access away also ends the running TCP and UDP flows of the sources that
lost it (their established connections and keepalives); the output says which.";

impl Command {
    /// What this command, as given, does with the kernel's firewall, when it needs root
    /// (CAP_NET_ADMIN) for it: `Some((verb, what else to do without root))`. `None` when it
    /// only reads and writes files (`--dry-run`, `--no-restart`, `--list`, the cron options).
    fn kernel_access(&self) -> Option<(&'static str, &'static str)> {
        let change = "change the firewall";
        match self {
            Command::AddIp(a) if !a.options.no_restart => {
                Some((change, ", or use --no-restart to only save the account"))
            }
            Command::AddFqdn(a) if !a.options.no_restart => {
                Some((change, ", or use --no-restart to only save the account"))
            }
            Command::DelAcct(a) if !a.no_restart => {
                Some((change, ", or use --no-restart to only remove the files"))
            }
            Command::Restart(a) if !a.dry_run => {
                Some((change, ", or use --dry-run to print the ruleset"))
            }
            Command::Ipchecker(a) if a.install_cron.is_none() && !a.remove_cron => {
                Some((change, ""))
            }
            Command::Status(_) | Command::Bans(_) | Command::Admitted(_) => {
                Some(("read the firewall", ""))
            }
            Command::Ban(_) | Command::Unban(_) => Some((change, "")),
            Command::Init(a) if !a.no_restart => Some((change, ", or use --no-restart")),
            Command::EnableTrustedProviders(a) if !a.list && !a.no_restart => {
                Some((change, ", or use --list or --no-restart"))
            }
            Command::Geo(a) if a.action.changes_firewall() => Some((change, "")),
            Command::Sync(a) if a.install_cron.is_none() && !a.remove_cron => Some((change, "")),
            Command::Knock(a) if a.setup && !a.no_restart => {
                Some((change, ", or use --no-restart to only write the settings"))
            }
            Command::Grants(_) => Some(("read the firewall", "")),
            Command::Revoke(_) => Some((change, "")),
            _ => None,
        }
    }

    /// The command's name, as its binary is called.
    pub fn name(&self) -> &'static str {
        match self {
            Command::AddIp(_) => "add-ip",
            Command::AddFqdn(_) => "add-fqdn",
            Command::DelAcct(_) => "del-acct",
            Command::List(_) => "list",
            Command::Restart(_) => "restart",
            Command::Ipchecker(_) => "ipchecker",
            Command::Status(_) => "status",
            Command::Init(_) => "init",
            Command::EnableTrustedProviders(_) => "enable-trusted-providers",
            Command::Import(_) => "import",
            Command::Knock(_) => "knock",
            Command::Grants(_) => "grants",
            Command::Revoke(_) => "revoke",
            Command::Ban(_) => "ban",
            Command::Unban(_) => "unban",
            Command::Bans(_) => "bans",
            Command::Admitted(_) => "admitted",
            Command::Geo(_) => "geo",
            Command::Bundle(_) => "bundle",
            Command::Sync(_) => "sync",
        }
    }
}

/// `pbxwall COMMAND ...`
#[derive(Debug, Parser)]
#[command(name = "pbxwall", version, about = "Whitelist firewall manager for VoIP PBX servers on nftables", after_help = AFTER_HELP)]
pub struct PbxwallCli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

/// Defines the parser of a one-command binary: the common options plus that command's
/// arguments, converted to the same `(Common, Command)` the dispatcher yields.
macro_rules! single_command {
    ($ty:ident, $bin:literal, $args:ident, $variant:ident, $about:literal) => {
        single_command!($ty, $bin, $args, $variant, $about, AFTER_HELP);
    };
    ($ty:ident, $bin:literal, $args:ident, $variant:ident, $about:literal, $long:expr) => {
        #[doc = concat!("The `", $bin, "` binary.")]
        #[derive(Debug, Parser)]
        #[command(name = $bin, version, about = $about, after_help = AFTER_HELP, after_long_help = $long)]
        pub struct $ty {
            #[command(flatten)]
            common: Common,
            #[command(flatten)]
            args: $args,
        }

        impl From<$ty> for (Common, Command) {
            fn from(c: $ty) -> Self {
                (c.common, Command::$variant(c.args))
            }
        }
    };
}

single_command!(
    AddIpCli,
    "add-ip",
    AddIpArgs,
    AddIp,
    "Create an account for IPv4/IPv6 addresses or CIDRs, then apply"
);
single_command!(
    AddFqdnCli,
    "add-fqdn",
    AddFqdnArgs,
    AddFqdn,
    "Create an account for host names, then apply"
);
single_command!(
    DelAcctCli,
    "del-acct",
    DelAcctArgs,
    DelAcct,
    "Remove accounts, or some addresses of one account, then apply"
);
single_command!(
    RestartCli,
    "restart",
    RestartArgs,
    Restart,
    "Resolve every name, compile every account, apply as one nftables transaction"
);

single_command!(
    IpcheckerCli,
    "ipchecker",
    IpcheckerArgs,
    Ipchecker,
    "Re-resolve host names and write to the kernel only what changed (run it from cron)",
    ipchecker::LONG_HELP
);

single_command!(
    EnableTrustedProvidersCli,
    "enable-trusted-providers",
    EnableTrustedProvidersArgs,
    EnableTrustedProviders,
    "List trusted SIP providers (providers.toml), or create/remove their accounts, then apply"
);

single_command!(
    StatusCli,
    "status",
    StatusArgs,
    Status,
    "Show what is loaded, whether it matches the configuration, and what every account opens",
    status::LONG_HELP
);

impl From<PbxwallCli> for (Common, Command) {
    fn from(c: PbxwallCli) -> Self {
        (c.common, c.command)
    }
}

/// The `main` of every binary: parse arguments as `C`, run, map the result to an exit code.
pub fn main<C: Parser + Into<(Common, Command)>>() -> ExitCode {
    // A completion script asking for services, account names or provider ids.
    if crate::complete::answer_if_asked() {
        return ExitCode::SUCCESS;
    }
    let (common, command) = C::parse().into();
    let mut ctx = common.ctx(command.name());
    let not_root = effective_uid().is_some_and(|uid| uid != 0);
    if not_root && let Some((verb, otherwise)) = command.kernel_access() {
        // Said when the command takes the lock, after its values were checked (a bad value
        // is still a usage error), before anything is read from or written to the kernel.
        ctx.needs_root = Some(format!(
            "needs root (CAP_NET_ADMIN) to {verb}; run it with sudo{otherwise}"
        ));
    }
    // What a command that only reads pbxwall's files does with them, for the root message.
    let files_verb = if matches!(command, Command::List(_)) {
        "read"
    } else {
        "change"
    };
    let result = match (&command, &ctx.needs_root) {
        // status and the listings take no lock and have no values to check.
        (
            Command::Status(_) | Command::Bans(_) | Command::Admitted(_) | Command::Grants(_),
            Some(needs_root),
        ) => Err(NeedsRoot(needs_root.clone()).into()),
        _ => run(&ctx, command).map(|outcome| ctx.finish(outcome)),
    };
    let result = result.map_err(|err| {
        if not_root && permission_denied(&err) {
            NeedsRoot(format!(
                "needs root to {files_verb} pbxwall's files ({err:#}); run it with sudo"
            ))
            .into()
        } else {
            err
        }
    });
    if let Err(err) = &result {
        print_error(err, common.verbose);
    }
    let code = commands::exit_code(&result);
    ctx.print_report(code, result.as_ref().err().map(|e| format!("{e:#}")));
    ExitCode::from(code)
}

/// The effective user id of this process, from the `Uid:` line of `/proc/self/status`
/// (real, effective, saved, file system); `None` when it cannot be read.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Whether an error was caused by the system refusing access (EACCES or EPERM).
fn permission_denied(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
    })
}

/// Runs one command.
fn run(ctx: &Ctx, command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::AddIp(a) => commands::add::add_ip(ctx, a),
        Command::AddFqdn(a) => commands::add::add_fqdn(ctx, a),
        Command::DelAcct(a) => commands::del::del_acct(ctx, a),
        Command::List(a) => commands::list::list(ctx, a),
        Command::Restart(a) => commands::restart::restart(ctx, a),
        Command::Ipchecker(a) => commands::ipchecker::ipchecker(ctx, a),
        Command::Status(a) => commands::status::status(ctx, a),
        Command::Init(a) => commands::init::init(ctx, a),
        Command::EnableTrustedProviders(a) => commands::providers::enable_trusted_providers(ctx, a),
        Command::Import(a) => commands::import::import(ctx, a),
        Command::Knock(a) => commands::knock::knock(ctx, a),
        Command::Grants(a) => commands::grants::grants(ctx, a),
        Command::Revoke(a) => commands::grants::revoke(ctx, a),
        Command::Ban(a) => commands::ban::ban(ctx, a),
        Command::Unban(a) => commands::ban::unban(ctx, a),
        Command::Bans(a) => commands::ban::bans(ctx, a),
        Command::Admitted(a) => commands::admitted::admitted(ctx, a),
        Command::Geo(a) => commands::geo::geo(ctx, a),
        Command::Bundle(a) => commands::bundle::bundle(ctx, a),
        Command::Sync(a) => commands::sync::sync(ctx, a),
    }
}

/// Prints a command's error to stderr as `PROG: error: ...`, PROG being the name this
/// program was called by: the whole cause chain on one line, or one cause a line with
/// `--verbose`.
fn print_error(err: &anyhow::Error, verbose: bool) {
    let prog = std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "pbxwall".into());
    let printable = |text: String| crate::model::printable(&text).into_owned();
    if verbose {
        eprintln!("{prog}: error: {}", printable(err.to_string()));
        for cause in err.chain().skip(1) {
            eprintln!("  caused by: {}", printable(cause.to_string()));
        }
    } else {
        eprintln!("{prog}: error: {}", printable(format!("{err:#}")));
    }
}
