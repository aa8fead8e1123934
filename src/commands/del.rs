//! `del-acct`: remove accounts, then apply.

use anyhow::Result;
use clap::Args;

use super::{Ctx, Outcome, UsageError, change_then_apply};
use crate::fleet::Origin;
use crate::model::AccountName;
use crate::store;

/// `del-acct`: remove accounts.
#[derive(Debug, Clone, Args)]
pub struct DelAcctArgs {
    /// Accounts to remove, also comma-separated (all must exist, else nothing is removed)
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
    /// Skip the SSH lockout guard
    #[arg(long)]
    pub force: bool,
    /// Only remove the files; apply at the next restart
    #[arg(long)]
    pub no_restart: bool,
}

/// `del-acct NAME...`: all names must exist, else nothing is removed.
pub fn del_acct(ctx: &Ctx, args: DelAcctArgs) -> Result<Outcome> {
    let names = args
        .names
        .iter()
        .flat_map(|n| n.split(','))
        .filter(|n| !n.is_empty())
        .map(|n| n.parse::<AccountName>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(UsageError::bad_value)?;
    if names.is_empty() {
        return Err(
            UsageError("no account name given: name at least one (see --help)".into()).into(),
        );
    }
    let mut names = names;
    names.dedup();
    let lock = ctx.lock()?;
    refuse_fleet_accounts(ctx, &names)?;
    let files: Vec<_> = names.iter().map(|n| ctx.paths.account_file(n)).collect();
    let profiles = store::load_profiles(&ctx.paths)?;
    let gone: Vec<String> = files
        .iter()
        .zip(&names)
        .map(|(f, n)| {
            let had = store::read_optional(f)
                .ok()
                .flatten()
                .and_then(|t| store::parse_account(f, &t, &profiles).ok())
                .map(|a| format!(" (had {})", a.summary()))
                .unwrap_or_default();
            format!("account {n} removed{had}")
        })
        .collect();
    let outcome = change_then_apply(
        ctx,
        &lock,
        &files,
        args.no_restart,
        args.force,
        &gone,
        || Ok(store::delete_accounts(&ctx.paths, &names, &lock)?),
    )?;
    for line in &gone {
        ctx.audit(line);
    }
    Ok(outcome)
}

/// Refuses to remove an account that comes from the fleet bundle (it would come back at the
/// next sync): says where to change it. A local account that overrides a fleet account can
/// be removed; the fleet's then comes into force, which is said.
fn refuse_fleet_accounts(ctx: &Ctx, names: &[AccountName]) -> Result<()> {
    for name in names {
        match crate::fleet::account_origin(&ctx.paths, name) {
            Origin::Fleet { serial } => {
                let source = store::load_settings(&ctx.paths)
                    .ok()
                    .and_then(|s| s.sync.source)
                    .map(|s| s.url())
                    .unwrap_or_else(|| "[sync] url".into());
                anyhow::bail!(
                    "account {name} comes from the fleet bundle (serial {serial}, {source}), not from {}: remove accounts/{name}.toml from the bundle's folder, run pbxwall bundle create with a higher serial, sign and publish it; every PBX drops it at its next sync",
                    ctx.paths.accounts_dir().display()
                );
            }
            Origin::LocalOverridesFleet { serial } => ctx.warn(format_args!(
                "account {name} is also in the fleet bundle (serial {serial}): once the local file is removed, the bundle's account {name} is in force"
            )),
            Origin::Local | Origin::None => {}
        }
    }
    Ok(())
}
