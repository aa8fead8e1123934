//! `add-ip` and `add-fqdn`: create (or replace) an account, then apply.

use std::io::{self, BufRead, IsTerminal, Write};

use anyhow::{Context, Result};

use super::{Ctx, Outcome, UsageError, change_then_apply};
use crate::cli::{AddFqdnArgs, AddIpArgs};
use crate::model::{Account, AccountName, Fqdn, Profiles, parse_sources};
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
    command: &str,
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
    ctx.audit(command, &what);
    Ok(outcome)
}

/// `add-ip NAME ADDR... --allow SERVICES`.
pub fn add_ip(ctx: &Ctx, args: AddIpArgs) -> Result<Outcome> {
    let profiles = store::load_profiles(&ctx.paths)?;
    let g = complete(
        args.name,
        args.addresses,
        args.allow,
        "IP address or CIDR",
        &profiles,
    )?;
    let name: AccountName = g.name.parse()?;
    let addresses = parse_sources(&g.values, args.force)?;
    let services = profiles.parse_services(&[g.allow])?;
    let account = Account {
        name,
        addresses,
        fqdns: Vec::new(),
        services,
        media: Vec::new(),
        comment: args.comment,
        created: Some(now_rfc3339()),
        provider: None,
    };
    save(
        ctx,
        account,
        args.replace,
        args.no_restart,
        args.force,
        "add-ip",
    )
}

/// `add-fqdn NAME FQDN... --allow SERVICES`.
pub fn add_fqdn(ctx: &Ctx, args: AddFqdnArgs) -> Result<Outcome> {
    let profiles = store::load_profiles(&ctx.paths)?;
    let g = complete(args.name, args.fqdns, args.allow, "host name", &profiles)?;
    let name: AccountName = g.name.parse()?;
    let mut fqdns: Vec<Fqdn> = Vec::new();
    for part in g.values.iter().flat_map(|v| v.split(',')).map(str::trim) {
        if part.is_empty() {
            continue;
        }
        let f: Fqdn = part.parse()?;
        if !fqdns.contains(&f) {
            fqdns.push(f);
        }
    }
    if fqdns.is_empty() {
        return Err(UsageError("no host name given".into()).into());
    }
    let services = profiles.parse_services(&[g.allow])?;
    let account = Account {
        name,
        addresses: Vec::new(),
        fqdns,
        services,
        media: Vec::new(),
        comment: args.comment,
        created: Some(now_rfc3339()),
        provider: None,
    };
    save(
        ctx,
        account,
        args.replace,
        args.no_restart,
        args.force,
        "add-fqdn",
    )
}
