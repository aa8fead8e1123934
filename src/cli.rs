//! Command-line definitions (clap derive), shared by the `pbxwall` dispatcher and the
//! one-command binaries (`add-ip`, `restart`, ...), and the `main` they all run.
//!
//! Exit codes (DESIGN.md §1), relied on by cron and monitoring:
//! 0 success · 1 error, nothing changed · 2 usage error · 3 applied, but degraded.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::commands::{self, Ctx, Outcome, UsageError};
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

/// Options shared by `add-ip` and `add-fqdn`.
#[derive(Debug, Clone, Args)]
pub struct AccountOptions {
    /// Services: profile names or TM3 codes, comma-separated (0=all 1=sip-udp 2=sip-tcp
    /// 3=iax 4=web 5=webmin 6=ftp 7=tftp 8=ssh 9=fop)
    #[arg(short, long, value_name = "SERVICES")]
    pub allow: Option<String>,
    /// Free text stored with the account
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
    /// Overwrite an existing account of the same name
    #[arg(long)]
    pub replace: bool,
    /// Only save the account; apply at the next restart
    #[arg(long)]
    pub no_restart: bool,
}

/// `add-ip`: create an account for addresses or networks.
#[derive(Debug, Clone, Args)]
pub struct AddIpArgs {
    /// Account name: 1-64 of A-Z a-z 0-9 . _ - (asked for on a terminal when missing)
    pub name: Option<String>,
    /// IPv4/IPv6 addresses or CIDRs, also comma-separated
    #[arg(value_name = "ADDR")]
    pub addresses: Vec<String>,
    #[command(flatten)]
    pub options: AccountOptions,
    /// Allow ranges larger than /8 (IPv4) or /32 (IPv6), and skip the SSH lockout guard
    #[arg(long)]
    pub force: bool,
}

/// `add-fqdn`: create an account for host names (resolved at every restart and by ipchecker).
#[derive(Debug, Clone, Args)]
pub struct AddFqdnArgs {
    /// Account name: 1-64 of A-Z a-z 0-9 . _ - (asked for on a terminal when missing)
    pub name: Option<String>,
    /// Host names, also comma-separated; internationalised names are stored in ASCII form
    #[arg(value_name = "FQDN")]
    pub fqdns: Vec<String>,
    #[command(flatten)]
    pub options: AccountOptions,
    /// Skip the SSH lockout guard
    #[arg(long)]
    pub force: bool,
}

/// `del-acct`: remove accounts.
#[derive(Debug, Clone, Args)]
pub struct DelAcctArgs {
    /// Accounts to remove (all must exist, else nothing is removed)
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
    /// Skip the SSH lockout guard
    #[arg(long)]
    pub force: bool,
    /// Only remove the files; apply at the next restart
    #[arg(long)]
    pub no_restart: bool,
}

/// `restart`: resolve every name, compile every account, apply as one transaction.
#[derive(Debug, Clone, Args)]
pub struct RestartArgs {
    /// Print the nftables ruleset instead of applying it (no root needed)
    #[arg(long)]
    pub dry_run: bool,
    /// Apply even if the ruleset would cut off this SSH session's client
    #[arg(long)]
    pub force: bool,
}

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
}

/// `enable-trusted-providers`: create or remove provider accounts from providers.toml.
#[derive(Debug, Clone, Args)]
pub struct EnableTrustedProvidersArgs {
    /// Providers to enable, by id (see --list); with --list, show their details
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// List the providers: what each opens, confidence, date checked, whether it is enabled
    /// and whether --all enables it (--json: see README)
    #[arg(long, conflicts_with_all = ["all", "disable", "no_restart", "force"])]
    pub list: bool,
    /// Enable every provider whose data is well sourced (confidence high or medium, not stale)
    #[arg(long)]
    pub all: bool,
    /// Remove the accounts of these providers
    #[arg(long, value_name = "ID", num_args = 1.., conflicts_with_all = ["ids", "all"])]
    pub disable: Vec<String>,
    /// Read the providers from PATH instead of SHARE_DIR/providers.toml (the built-in copy
    /// is used when neither is given nor installed)
    #[arg(long, value_name = "PATH")]
    pub providers_file: Option<PathBuf>,
    /// Apply even if the ruleset would cut off this SSH session's client
    #[arg(long)]
    pub force: bool,
    /// Only write the account files; apply at the next restart
    #[arg(long)]
    pub no_restart: bool,
}

/// `status`: what is loaded, whether it matches the configuration, per account.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The cron.d file whose schedule tells when ipchecker runs next
    #[arg(long, value_name = "PATH", default_value = crate::cron::DEFAULT_CRON_FILE)]
    pub cron_file: PathBuf,
}

/// `pbxwall init`: first-time setup.
#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Trust no private range (for cloud servers, where other customers may use them)
    #[arg(long)]
    pub cloud: bool,
    /// The administrator's address or network (also taken from SSH_CONNECTION); repeatable
    #[arg(long, value_name = "ADDR")]
    pub admin: Vec<String>,
    /// sshd configuration to read the SSH port from
    #[arg(long, value_name = "PATH", default_value = "/etc/ssh/sshd_config")]
    pub sshd_config: PathBuf,
    /// Asterisk configuration folder to read SIP, IAX2 and RTP ports from
    #[arg(long, value_name = "DIR", default_value = "/etc/asterisk")]
    pub asterisk_dir: PathBuf,
    /// Apply even if the ruleset would cut off this SSH session's client
    #[arg(long)]
    pub force: bool,
    /// Only write the files; apply at the next restart
    #[arg(long)]
    pub no_restart: bool,
}

/// All commands, for the `pbxwall` dispatcher.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Create an account for IPv4/IPv6 addresses or CIDRs, then apply
    AddIp(AddIpArgs),
    /// Create an account for host names, then apply
    AddFqdn(AddFqdnArgs),
    /// Remove accounts, then apply
    DelAcct(DelAcctArgs),
    /// Resolve every name, compile every account, apply atomically
    Restart(RestartArgs),
    /// Re-resolve host names; write to the kernel only what changed (for cron)
    #[command(after_long_help = IPCHECKER_LONG_HELP)]
    Ipchecker(IpcheckerArgs),
    /// Show what is loaded, whether it matches the configuration, and every account
    #[command(after_long_help = STATUS_LONG_HELP)]
    Status(StatusArgs),
    /// First-time setup: settings, detected ports, this server's and the admin's addresses
    Init(InitArgs),
    /// List trusted SIP providers, or create/remove their accounts, then apply
    EnableTrustedProviders(EnableTrustedProvidersArgs),
}

const AFTER_HELP: &str = "\
Exit status: 0 success, 1 error (nothing changed, the old ruleset stays live),
2 usage error, 3 applied but degraded (names left out or account files skipped).

Names that do not resolve (NXDOMAIN) are left out of the ruleset and everything else is
still applied; when DNS fails only for a while (timeout, SERVFAIL) a name keeps its last
addresses for [resolver] stale_grace_s (default 1 hour).";

/// `ipchecker --help`: the failure policy, exit codes and the `--json` shape.
const IPCHECKER_LONG_HELP: &str = "\
Exit status: 0 success, 1 error (nothing changed, the old ruleset stays live),
2 usage error, 3 applied but degraded (names left out or stale, account files skipped).

Names that do not resolve (NXDOMAIN) are left out of the ruleset and everything else is
still applied; when DNS fails only for a while (timeout, SERVFAIL) a name keeps its last
addresses for [resolver] stale_grace_s (default 1 hour).

Quiet unless something changed or failed. Changed addresses go in as set-element updates
in one transaction; the whole table is applied only when it is missing or its rules
changed. With --json it prints one object:
  {\"apply\": \"none\" | \"elements\" | \"full\", \"netlink_writes\": 0,
   \"changes\": [\"...\"], \"problems\": [\"...\"]}";

/// `status --help`: exit codes and the `--json` shape.
const STATUS_LONG_HELP: &str = "\
Exit status: 0 loaded and in sync with the configuration, nothing degraded; 1 error;
3 drifted (the kernel differs from what restart would apply), not loaded, or degraded
(names left out or stale, account files skipped).

With --json it prints one object:
  {\"table\": \"loaded\" | \"missing\", \"in_sync\": true, \"differences\": [\"...\"],
   \"degraded\": false, \"problems\": [\"...\"],
   \"last_apply\": {\"at\", \"by\"} | null,
   \"ipchecker\": {\"last_run\", \"outcome\", \"netlink_writes\", \"cron_schedule\", \"next_run\"},
   \"dropped\": {\"packets\", \"bytes\"} | null,
   \"accounts\": [{\"name\", \"services\", \"comment\", \"provider\",
                 \"addresses\": [{\"address\", \"applied\"}],
                 \"fqdns\": [{\"name\", \"state\": \"ok\" | \"stale\" | \"left_out\",
                            \"since\", \"error\", \"reason\", \"v4\", \"v6\", \"resolved_at\", \"applied\"}],
                 \"media\"}],
   \"recent_changes\": [{\"at\", \"user\", \"command\", \"what\"}]}";

impl Command {
    /// The command's name, as its binary is called.
    pub fn name(&self) -> &'static str {
        match self {
            Command::AddIp(_) => "add-ip",
            Command::AddFqdn(_) => "add-fqdn",
            Command::DelAcct(_) => "del-acct",
            Command::Restart(_) => "restart",
            Command::Ipchecker(_) => "ipchecker",
            Command::Status(_) => "status",
            Command::Init(_) => "init",
            Command::EnableTrustedProviders(_) => "enable-trusted-providers",
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
    "Remove accounts, then apply"
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
    IPCHECKER_LONG_HELP
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
    STATUS_LONG_HELP
);

impl From<PbxwallCli> for (Common, Command) {
    fn from(c: PbxwallCli) -> Self {
        (c.common, c.command)
    }
}

/// The `main` of every binary: parse arguments as `C`, run, map the result to an exit code.
pub fn main<C: Parser + Into<(Common, Command)>>() -> ExitCode {
    let (common, command) = C::parse().into();
    let name = command.name();
    let ctx = common.ctx(name);
    let result = match command {
        Command::AddIp(a) => commands::add::add_ip(&ctx, a),
        Command::AddFqdn(a) => commands::add::add_fqdn(&ctx, a),
        Command::DelAcct(a) => commands::del::del_acct(&ctx, a),
        Command::Restart(a) => commands::restart::restart(&ctx, a),
        Command::Ipchecker(a) => commands::ipchecker::ipchecker(&ctx, a),
        Command::Status(a) => commands::status::status(&ctx, a),
        Command::Init(a) => commands::init::init(&ctx, a),
        Command::EnableTrustedProviders(a) => {
            commands::providers::enable_trusted_providers(&ctx, a)
        }
    };
    let (code, error) = match &result {
        Ok(Outcome::Done) => (0u8, None),
        Ok(Outcome::Degraded) => (3, None),
        Err(err) => {
            let prog = std::env::args()
                .next()
                .and_then(|a| {
                    std::path::Path::new(&a)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                })
                .unwrap_or_else(|| "pbxwall".into());
            if common.verbose {
                eprintln!("{prog}: error: {err}");
                for cause in err.chain().skip(1) {
                    eprintln!("  caused by: {cause}");
                }
            } else {
                eprintln!("{prog}: error: {err:#}");
            }
            let code = if err.downcast_ref::<UsageError>().is_some() {
                2
            } else {
                1
            };
            (code, Some(format!("{err:#}")))
        }
    };
    let report = ctx.report.borrow();
    if common.json && !report.printed {
        let outcome = match code {
            0 => "ok",
            3 => "degraded",
            _ => "error",
        };
        let out = serde_json::json!({
            "command": name,
            "exit": code,
            "outcome": outcome,
            "error": error,
            "messages": report.messages,
            "warnings": report.warnings,
            "applied": report.applied,
        });
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    ExitCode::from(code)
}
