//! `add-ip` and `add-fqdn`: create (or replace) an account, then apply.

use std::io::{self, BufRead, IsTerminal, Write};

use anyhow::{Context, Result};
use clap::Args;
use ipnet::IpNet;

use super::{Ctx, Outcome, UsageError, change_then_apply_checked};
use crate::model::{Account, AccountName, Fqdn, Profiles, display_net, parse_fqdns, parse_sources};
use crate::resolve::NameState;
use crate::state::now_rfc3339;
use crate::store::{self, StoreError};

/// Options shared by `add-ip` and `add-fqdn`.
#[derive(Debug, Clone, Args)]
pub struct AccountOptions {
    /// Services: profile names or TM3 codes, separated by commas or spaces; repeatable, the
    /// lists are merged (0=all 1=sip-udp 2=sip-tcp 3=iax 4=web 5=webmin 6=ftp 7=tftp 8=ssh
    /// 9=fop)
    #[arg(short, long, value_name = "SERVICES", action = clap::ArgAction::Append)]
    pub allow: Vec<String>,
    /// Free text stored with the account
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
    /// Overwrite an existing account of the same name
    #[arg(long)]
    pub replace: bool,
    /// Only save the account; apply at the next restart
    #[arg(long)]
    pub no_restart: bool,
    /// Temporary account: it ends after DUR (90s, 10m, 2h, 7d) or at a time in RFC 3339 form
    /// (2026-12-24T18:00:00Z); the kernel closes it then with no command run, and the next
    /// command removes its file
    #[arg(long, value_name = "DUR|RFC3339")]
    pub expires: Option<String>,
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
    /// Save names that do not exist (NXDOMAIN) too, and skip the SSH lockout guard
    #[arg(long)]
    pub force: bool,
}

/// What an add command was given, after prompting.
struct Given {
    name: String,
    values: Vec<String>,
    allow: String,
}

/// Fills in missing arguments: asks on a terminal (as the original tools did), else a
/// usage error. A name that looks like the value (`add-ip 203.0.113.7 --allow 1`: the account
/// name was forgotten) is taken as the value on a terminal, and named in the error otherwise.
fn complete(
    mut name: Option<String>,
    mut values: Vec<String>,
    allow: Vec<String>,
    (what, a_value, example): (&str, &str, &str),
    looks_like_value: fn(&str) -> bool,
    profiles: &Profiles,
) -> Result<Given> {
    let allow = (!allow.is_empty()).then(|| allow.join(","));
    let forgotten_name = values.is_empty() && name.as_deref().is_some_and(looks_like_value);
    if forgotten_name && !io::stdin().is_terminal() {
        let value = name.unwrap_or_default();
        return Err(UsageError(format!(
            "missing arguments: {value:?} looks like {a_value}, not an account name: give the \
             account name first, e.g. {example} {value} --allow SERVICES (see --help)"
        ))
        .into());
    }
    if forgotten_name {
        values = name.take().into_iter().collect();
    }
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

/// Refuses a new account whose name differs from an existing one only in case (`Joe-Office`
/// beside `joe-office`: two files a person reads as one account, and one file on a
/// case-insensitive copy or backup). Replacing the account of exactly that name is fine.
fn refuse_case_clash(ctx: &Ctx, name: &AccountName) -> Result<()> {
    if ctx.paths.account_file(name).exists() {
        return Ok(());
    }
    let existing = store::account_names(&ctx.paths)?;
    if let Some(other) = existing
        .iter()
        .find(|e| e.eq_ignore_ascii_case(name.as_str()))
    {
        anyhow::bail!(
            "account {other} exists already, and {name} differs from it only in case: \
             choose another name, or change {other} with --replace"
        );
    }
    Ok(())
}

/// Warns about addresses of `account` that another account also whitelists (the same
/// address, or a network holding or inside it): one of them is most often a mistake, and
/// removing one account then leaves the address open through the other.
fn warn_shared_addresses(ctx: &Ctx, account: &Account, profiles: &Profiles) {
    if account.addresses.is_empty() {
        return;
    }
    let Ok(loaded) = store::load_accounts(&ctx.paths, profiles) else {
        return;
    };
    for other in loaded.accounts.iter().filter(|o| o.name != account.name) {
        for net in &account.addresses {
            let shared = other
                .addresses
                .iter()
                .find(|o| o.contains(net) || net.contains(*o));
            if let Some(o) = shared {
                let (net_text, o_text) = (display_net(net), display_net(o));
                let what = if o == net {
                    format!("{net_text} is also in account {}", other.name)
                } else {
                    format!("{net_text} overlaps {o_text} of account {}", other.name)
                };
                ctx.warn(format_args!(
                    "{what}; removing one account leaves it open through the other"
                ));
            }
        }
    }
}

/// Refuses an account with a host name that does not exist (NXDOMAIN in the resolution the
/// apply made): most often a typo. A name that fails only for a while (timeout, SERVFAIL)
/// is saved, with the warning every apply gives; `--force` saves a missing one too.
fn refuse_names_that_do_not_exist(account: &Account, build: &super::Build) -> Result<()> {
    for name in &account.fqdns {
        if let Some(result) = build.resolution.names.get(name)
            && let NameState::LeftOut { reason } = &result.state
            && reason.contains("NXDOMAIN")
        {
            anyhow::bail!(
                "refusing to add {name}: it does not exist (NXDOMAIN); check the spelling, or \
                 pass --force to save it anyway (it is resolved again at every restart and \
                 by ipchecker)"
            );
        }
    }
    Ok(())
}

fn save(
    ctx: &Ctx,
    (account, profiles): (Account, &Profiles),
    replace: bool,
    no_restart: bool,
    force: bool,
) -> Result<Outcome> {
    let lock = ctx.lock()?;
    let path = ctx.paths.account_file(&account.name);
    if !replace && path.exists() {
        return Err(StoreError::AccountExists(account.name).into());
    }
    refuse_case_clash(ctx, &account.name)?;
    warn_shared_addresses(ctx, &account, profiles);
    let name = account.name.clone();
    let what = format!(
        "account {name} {}: {}",
        if path.exists() { "replaced" } else { "added" },
        account.summary()
    );
    let outcome = change_then_apply_checked(
        ctx,
        &lock,
        std::slice::from_ref(&path),
        (no_restart, force),
        &[format!("account {name} saved")],
        || Ok(store::save_account(&ctx.paths, &account, replace, &lock)?),
        |build| match force {
            true => Ok(()),
            false => refuse_names_that_do_not_exist(&account, build),
        },
    )
    .with_context(|| format!("account {name}"))?;
    ctx.audit(&what);
    Ok(outcome)
}

/// Whether an argument given as the account name is an address (or an address with a port):
/// the name was forgotten.
fn looks_like_address(s: &str) -> bool {
    matches!(
        crate::model::parse_source(s, true),
        Ok(_)
            | Err(crate::model::ModelError::AddressWithPort { .. }
                | crate::model::ModelError::HostBits { .. }
                | crate::model::ModelError::NotUnicast { .. })
    )
}

/// Whether an argument given as the account name is a host name (it has a dot and a last
/// label that is not all digits): the name was forgotten.
fn looks_like_host_name(s: &str) -> bool {
    s.contains('.') && s.parse::<Fqdn>().is_ok()
}

/// `add-ip NAME ADDR... --allow SERVICES`.
pub fn add_ip(ctx: &Ctx, args: AddIpArgs) -> Result<Outcome> {
    let force = args.force;
    add(
        ctx,
        (args.name, args.addresses, args.options),
        ("IP address or CIDR", "an address", "add-ip joe-office"),
        looks_like_address,
        force,
        |values| {
            let sources = parse_sources(values, force).map_err(UsageError::bad_value)?;
            Ok((sources, Vec::new()))
        },
    )
}

/// `add-fqdn NAME FQDN... --allow SERVICES`.
pub fn add_fqdn(ctx: &Ctx, args: AddFqdnArgs) -> Result<Outcome> {
    add(
        ctx,
        (args.name, args.fqdns, args.options),
        ("host name", "a host name", "add-fqdn joe-mobile"),
        looks_like_host_name,
        args.force,
        |values| {
            Ok((
                Vec::new(),
                parse_fqdns(values).map_err(UsageError::bad_value)?,
            ))
        },
    )
}

/// The flow both add commands share: complete the arguments, validate, save, apply.
fn add(
    ctx: &Ctx,
    (name, values, options): (Option<String>, Vec<String>, AccountOptions),
    prompt: (&str, &str, &str),
    looks_like_value: fn(&str) -> bool,
    force: bool,
    parse: impl FnOnce(&[String]) -> Result<(Vec<IpNet>, Vec<Fqdn>)>,
) -> Result<Outcome> {
    let profiles = store::load_profiles(&ctx.paths)?;
    let g = complete(
        name,
        values,
        options.allow,
        prompt,
        looks_like_value,
        &profiles,
    )?;
    let name: AccountName = g.name.parse().map_err(UsageError::bad_value)?;
    let (addresses, fqdns) = parse(&g.values)?;
    let services = profiles
        .parse_services(&[g.allow])
        .map_err(UsageError::bad_value)?;
    let expires = options
        .expires
        .as_deref()
        .map(|e| crate::model::parse_expires(e, chrono::Utc::now()))
        .transpose()
        .map_err(UsageError::bad_value)?;
    if expires.is_some() {
        crate::model::check_temporary(&addresses).map_err(UsageError::bad_value)?;
    }
    let account = Account {
        name,
        addresses,
        fqdns,
        services,
        media: Vec::new(),
        comment: options.comment,
        created: Some(now_rfc3339()),
        provider: None,
        expires,
    };
    save(
        ctx,
        (account, &profiles),
        options.replace,
        options.no_restart,
        force,
    )
}
