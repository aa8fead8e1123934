//! `del-acct`: remove accounts, or some addresses and names of one account (`--address`),
//! then apply. Applying ends the running flows of the sources that lost access.

use anyhow::{Context, Result};
use clap::Args;
use ipnet::IpNet;

use super::{Ctx, Outcome, UsageError, change_then_apply};
use crate::fleet::Origin;
use crate::model::{AccountName, Fqdn, ModelError, display_net, parse_source, split_list};
use crate::store;

/// `del-acct`: remove accounts.
#[derive(Debug, Clone, Args)]
pub struct DelAcctArgs {
    /// Accounts to remove, also comma-separated (all must exist, else nothing is removed)
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
    /// Remove only these addresses, networks or host names of the one account NAME (also
    /// comma-separated; repeatable) and keep the rest; removing all it has is refused (delete
    /// the account instead)
    #[arg(long = "address", value_name = "ADDR", action = clap::ArgAction::Append)]
    pub addresses: Vec<String>,
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
    if !args.addresses.is_empty() {
        let [name] = names.as_slice() else {
            return Err(UsageError(format!(
                "--address removes addresses of one account, and {} were named: name one \
                 account (see --help)",
                names.len()
            ))
            .into());
        };
        return remove_addresses(ctx, name, &args);
    }
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

/// Refuses to edit in place (`--append`, `--address`) an account that only the fleet
/// bundle has: the next sync would put it back as the bundle has it.
pub(super) fn refuse_fleet_only(ctx: &Ctx, name: &AccountName) -> Result<()> {
    if let Origin::Fleet { serial } = crate::fleet::account_origin(&ctx.paths, name) {
        anyhow::bail!(
            "account {name} comes from the fleet bundle (serial {serial}), not from {}: change \
             accounts/{name}.toml in the bundle's folder, run pbxwall bundle create with a \
             higher serial, sign and publish it",
            ctx.paths.accounts_dir().display()
        );
    }
    Ok(())
}

/// One value of `--address`: an address or network, or a host name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Net(IpNet),
    Name(Fqdn),
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Net(n) => f.write_str(&display_net(n)),
            Entry::Name(n) => write!(f, "{n}"),
        }
    }
}

/// Parses the `--address` values (comma- or space-separated): what parses as an address
/// or CIDR is one (any size: the account may hold a large range), else a host name.
fn parse_entries(values: &[String]) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for part in values.iter().flat_map(|v| split_list(v)) {
        let entry = match parse_source(part, true) {
            Ok(net) => Entry::Net(net),
            Err(ModelError::Address(_)) => match part.parse::<Fqdn>() {
                Ok(name) => Entry::Name(name),
                Err(_) => {
                    return Err(UsageError(format!(
                        "invalid address or host name {part:?}: expected an IPv4 or IPv6 \
                         address, a CIDR or a host name of the account"
                    ))
                    .into());
                }
            },
            Err(e) => return Err(UsageError::bad_value(e)),
        };
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    if out.is_empty() {
        return Err(UsageError("no address given to --address (see --help)".into()).into());
    }
    Ok(out)
}

/// `del-acct NAME --address ADDR...`: removes those addresses and names from the account,
/// keeping its services, comment and created time, then applies (which ends the flows of
/// the sources that lost access). Every value must be in the account, and at least one
/// address or name must stay, else nothing changes.
fn remove_addresses(ctx: &Ctx, name: &AccountName, args: &DelAcctArgs) -> Result<Outcome> {
    let entries = parse_entries(&args.addresses)?;
    let lock = ctx.lock()?;
    refuse_fleet_only(ctx, name)?;
    let path = ctx.paths.account_file(name);
    let profiles = store::load_profiles(&ctx.paths)?;
    let Some(text) = store::read_optional(&path)? else {
        let existing = store::account_names(&ctx.paths)?;
        return Err(store::StoreError::NoSuchAccount {
            name: name.to_string(),
            close: store::close_names(name.as_str(), &existing),
        }
        .into());
    };
    let mut account = store::parse_account(&path, &text, &profiles)?;
    for entry in &entries {
        let has = match entry {
            Entry::Net(n) => account.addresses.contains(n),
            Entry::Name(n) => account.fqdns.contains(n),
        };
        if !has {
            let mut all: Vec<String> = account.addresses.iter().map(display_net).collect();
            all.extend(account.fqdns.iter().map(|f| f.to_string()));
            anyhow::bail!(
                "account {name} has no {entry} (it has {}); nothing changed",
                all.join(", ")
            );
        }
    }
    account
        .addresses
        .retain(|n| !entries.contains(&Entry::Net(*n)));
    account
        .fqdns
        .retain(|f| !entries.contains(&Entry::Name(f.clone())));
    if account.addresses.is_empty() && account.fqdns.is_empty() {
        anyhow::bail!(
            "refusing to remove every address and name of account {name}: delete the \
             account instead (del-acct {name})"
        );
    }
    let removed: Vec<String> = entries.iter().map(Entry::to_string).collect();
    let summary = account.summary();
    let done = [
        format!("account {name}: removed {}", removed.join(", ")),
        format!("account {name} saved: {summary}"),
    ];
    let outcome = change_then_apply(
        ctx,
        &lock,
        std::slice::from_ref(&path),
        args.no_restart,
        args.force,
        &done,
        || Ok(store::save_account(&ctx.paths, &account, true, &lock)?),
    )
    .with_context(|| format!("account {name}"))?;
    ctx.audit(&format!(
        "account {name}: removed {}; now {summary}",
        removed.join(", ")
    ));
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_values_are_addresses_networks_or_names() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let got = parse_entries(&v(&["192.0.2.7,2001:db8::/48", "joe.dyndns.example"])).unwrap();
        assert_eq!(
            got.iter().map(Entry::to_string).collect::<Vec<_>>(),
            ["192.0.2.7", "2001:db8::/48", "joe.dyndns.example"]
        );
        // Any size: the account may hold a range only --force could add.
        assert!(parse_entries(&v(&["0.0.0.0/0"])).is_ok());
        let err = parse_entries(&v(&["no way"])).unwrap_err().to_string();
        assert!(err.contains("invalid address or host name \"no\""), "{err}");
        let err = parse_entries(&v(&["192.0.2.7:5060"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("write it without :5060"), "{err}");
        assert!(parse_entries(&v(&[","])).is_err());
    }
}
