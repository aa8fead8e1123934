//! `add-ip` and `add-fqdn`: create (or replace) an account, then apply.

use std::io::{self, BufRead, IsTerminal, Write};

use anyhow::{Context, Result};
use ipnet::IpNet;

use super::{Ctx, Outcome, UsageError, change_then_apply};
use crate::cli::{AccountOptions, AddFqdnArgs, AddIpArgs};
use crate::model::{Account, AccountName, Fqdn, Profiles, parse_fqdns, parse_sources};
use crate::state::now_rfc3339;
use crate::store::{self, StoreError};

/// What an add command was given, after prompting.
struct Given {
    name: String,
    values: Vec<String>,
    allow: String,
}

/// Fills in missing arguments: asks on a terminal (as the original tools did), else a
/// usage error.
fn complete(
    name: Option<String>,
    values: Vec<String>,
    allow: Option<String>,
    what: &str,
    profiles: &Profiles,
) -> Result<Given> {
    if let (Some(name), false, Some(allow)) = (&name, values.is_empty(), &allow) {
        return Ok(Given {
            name: name.clone(),
            values,
            allow: allow.clone(),
        });
    }
    if !io::stdin().is_terminal() {
        return Err(UsageError(format!(
            "missing arguments: give NAME, at least one {what} and --allow SERVICES (see --help)"
        ))
        .into());
    }
    let name = match name {
        Some(n) => n,
        None => ask("Account name")?,
    };
    let values = if values.is_empty() {
        vec![ask(what)?]
    } else {
        values
    };
    let allow = match allow {
        Some(a) => a,
        None => {
            println!("Services:");
            for p in profiles.ordered() {
                let code = p.code.map(|c| c.to_string()).unwrap_or_default();
                println!("  {code:>2}  {:<10} {}", p.name, p.description);
            }
            ask("Services (numbers or names, comma-separated)")?
        }
    };
    Ok(Given {
        name,
        values,
        allow,
    })
}

fn ask(prompt: &str) -> Result<String> {
    print!("{prompt}: ");
    io::stdout().flush()?;
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    let line = line.trim().to_owned();
    if line.is_empty() {
        return Err(UsageError(format!("no {prompt} given")).into());
    }
    Ok(line)
}

fn save(
    ctx: &Ctx,
    account: Account,
    replace: bool,
    no_restart: bool,
    force: bool,
) -> Result<Outcome> {
    let lock = ctx.lock()?;
    let path = ctx.paths.account_file(&account.name);
    if !replace && path.exists() {
        return Err(StoreError::AccountExists(account.name).into());
    }
    let name = account.name.clone();
    let what = format!(
        "account {name} {}: {}",
        if path.exists() { "replaced" } else { "added" },
        account.summary()
    );
    let outcome = change_then_apply(
        ctx,
        &lock,
        std::slice::from_ref(&path),
        no_restart,
        force,
        || Ok(store::save_account(&ctx.paths, &account, replace, &lock)?),
    )
    .with_context(|| format!("account {name}"))?;
    ctx.say(format_args!("account {name} saved"));
    ctx.audit(&what);
    Ok(outcome)
}

/// `add-ip NAME ADDR... --allow SERVICES`.
pub fn add_ip(ctx: &Ctx, args: AddIpArgs) -> Result<Outcome> {
    let force = args.force;
    add(
        ctx,
        (args.name, args.addresses, args.options),
        "IP address or CIDR",
        force,
        |values| Ok((parse_sources(values, force)?, Vec::new())),
    )
}

/// `add-fqdn NAME FQDN... --allow SERVICES`.
pub fn add_fqdn(ctx: &Ctx, args: AddFqdnArgs) -> Result<Outcome> {
    add(
        ctx,
        (args.name, args.fqdns, args.options),
        "host name",
        args.force,
        |values| Ok((Vec::new(), parse_fqdns(values)?)),
    )
}

/// The flow both add commands share: complete the arguments, validate, save, apply.
fn add(
    ctx: &Ctx,
    (name, values, options): (Option<String>, Vec<String>, AccountOptions),
    prompt: &str,
    force: bool,
    parse: impl FnOnce(&[String]) -> Result<(Vec<IpNet>, Vec<Fqdn>)>,
) -> Result<Outcome> {
    let profiles = store::load_profiles(&ctx.paths)?;
    let g = complete(name, values, options.allow, prompt, &profiles)?;
    let name: AccountName = g.name.parse()?;
    let (addresses, fqdns) = parse(&g.values)?;
    let services = profiles.parse_services(&[g.allow])?;
    let account = Account {
        name,
        addresses,
        fqdns,
        services,
        media: Vec::new(),
        comment: options.comment,
        created: Some(now_rfc3339()),
        provider: None,
    };
    save(ctx, account, options.replace, options.no_restart, force)
}
