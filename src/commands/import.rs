//! `pbxwall import FILE...`: whitelists of other firewalls (iptables-save files, Travelin'
//! Man 3's account files, CSF's csf.allow) turned into accounts, then applied as add-ip
//! applies (the SSH lockout guard included; if the apply fails, no account file stays).
//! How rules become accounts is in [`crate::import`].

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::{Ctx, Outcome, change_then_apply};
use crate::import::{self, Format, Input};
use crate::state::now_rfc3339;
use crate::store;

/// `pbxwall import`: migrate whitelists into accounts.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// Files to read: iptables-save output (/etc/sysconfig/iptables), Travelin' Man 3
    /// account files, CSF's csf.allow
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Format of the files [default: detected per file: iptables when it has iptables-save
    /// lines, else csf]; tm3 names each file's account after the file
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<Format>,
    /// Print the accounts that would be written; write and apply nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Overwrite existing accounts of the same names
    #[arg(long)]
    pub replace: bool,
    /// Only save the accounts; apply at the next restart
    #[arg(long)]
    pub no_restart: bool,
    /// Allow ranges larger than /8 (IPv4) or /32 (IPv6), and skip the SSH lockout guard
    #[arg(long)]
    pub force: bool,
}

/// The end of `pbxwall import --help`: how rules become accounts.
pub const LONG_HELP: &str = "\
Only ACCEPT rules of the INPUT chain (iptables) and incoming entries (csf.allow) that name a
source are whitelist rules; every other line (DROP, -i lo, RELATED,ESTABLISHED, other chains,
out rules) is listed as skipped, with its line number.

Each source gets the services whose ports its rules open completely (a rule with neither
protocol nor port is \"all\"); a port no such service covers is reported with its line and
is not imported (write a local profile for it and import again). Sources are grouped into one
account per name and set of services; the name is the file's name with --format tm3, else the
rule's comment, else the address.

Existing accounts of the same names are refused unless --replace. Exit status 3 when some
whitelist line was not imported.";

/// `pbxwall import FILE... [--format F] [--dry-run]`.
pub fn import(ctx: &Ctx, args: ImportArgs) -> Result<Outcome> {
    let profiles = store::load_profiles(&ctx.paths)?;
    let mut inputs = Vec::new();
    for path in &args.files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let input = Input::read(path, &text, args.format, args.force)
            .map_err(|e| anyhow::anyhow!("{}:{}: {}", path.display(), e.line, e.message))?;
        inputs.push(input);
    }
    let mut plan = import::plan(&inputs, &profiles);
    let created = now_rfc3339();
    for planned in &mut plan.accounts {
        planned.account.created = Some(created.clone());
    }
    for line in &plan.skipped {
        ctx.say(format_args!("skipped {line}"));
    }
    for line in &plan.not_imported {
        ctx.warn(line);
    }
    let outcome = if plan.not_imported.is_empty() {
        Outcome::Done
    } else {
        Outcome::Degraded
    };
    if plan.accounts.is_empty() {
        anyhow::bail!(
            "no whitelist rule to import in {}",
            args.files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    let exists =
        |planned: &import::Planned| store::account_exists(&ctx.paths, &planned.account.name);
    if args.dry_run {
        for planned in &plan.accounts {
            let a = &planned.account;
            let verb = if exists(planned) { "replace" } else { "write" };
            ctx.say(format_args!(
                "would {verb} account {}: {} (from {})",
                a.name,
                a.summary(),
                planned.from.join(", ")
            ));
            if !ctx.json && !ctx.quiet {
                for text in store::render_account(a).lines() {
                    ctx.say(format_args!("    {text}"));
                }
            }
        }
        if !args.replace {
            refuse_existing(ctx, &plan)?;
        }
        ctx.say("dry run: nothing written, nothing applied");
        return Ok(outcome);
    }

    let lock = ctx.lock()?;
    if !args.replace {
        refuse_existing(ctx, &plan)?;
    }
    let touched: Vec<PathBuf> = plan
        .accounts
        .iter()
        .map(|p| ctx.paths.account_file(&p.account.name))
        .collect();
    let existed: Vec<bool> = touched.iter().map(|p| p.exists()).collect();
    let saved: Vec<String> = plan
        .accounts
        .iter()
        .map(|p| format!("account {} saved", p.account.name))
        .collect();
    let applied = change_then_apply(
        ctx,
        &lock,
        &touched,
        args.no_restart,
        args.force,
        &saved,
        || {
            // All or nothing: a file that cannot be written puts back the ones written before.
            let before: Vec<Option<String>> = touched
                .iter()
                .map(|p| store::read_optional(p))
                .collect::<Result<_, _>>()?;
            for (i, planned) in plan.accounts.iter().enumerate() {
                if let Err(e) =
                    store::save_account(&ctx.paths, &planned.account, args.replace, &lock)
                {
                    for (path, old) in touched.iter().zip(&before).take(i) {
                        let _ = match old {
                            Some(text) => {
                                store::write_atomic(path, text.as_bytes(), store::ACCOUNT_FILE_MODE)
                            }
                            None => store::remove_durably(path),
                        };
                    }
                    return Err(e.into());
                }
            }
            Ok(())
        },
    )
    .context("import")?;
    for (planned, existed) in plan.accounts.iter().zip(existed) {
        let a = &planned.account;
        ctx.audit(&format!(
            "account {} {} by import from {}: {}",
            a.name,
            if existed { "replaced" } else { "added" },
            planned.from.join(", "),
            a.summary()
        ));
    }
    Ok(outcome.worst(applied))
}

/// Refuses accounts whose names exist already, all named in one line.
fn refuse_existing(ctx: &Ctx, plan: &import::Plan) -> Result<()> {
    let clashes: Vec<String> = plan
        .accounts
        .iter()
        .filter(|p| store::account_exists(&ctx.paths, &p.account.name))
        .map(|p| p.account.name.to_string())
        .collect();
    if clashes.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "{} {} exist{} already: pass --replace to overwrite, or change the names in the file",
        if clashes.len() == 1 {
            "account"
        } else {
            "accounts"
        },
        clashes.join(", "),
        if clashes.len() == 1 { "s" } else { "" }
    )
}
