//! `add-ip` and `add-fqdn`: create (or replace) an account, then apply.

use std::io::{self, BufRead, IsTerminal, Write};

use anyhow::{Context, Result};
use clap::Args;
use ipnet::IpNet;

use super::{Ctx, Outcome, UsageError, change_then_apply_checked};
use crate::model::{
    Account, AccountName, Fqdn, ModelError, Profiles, display_net, parse_fqdns, parse_sources,
};
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
    #[arg(long, conflicts_with = "append")]
    pub replace: bool,
    /// Add the addresses or names to the existing account NAME, keeping its services,
    /// comment and created time (--allow is then optional: the services it names are added
    /// to the account's, for all its addresses; --comment replaces the comment)
    #[arg(long)]
    pub append: bool,
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
    /// Account name: 1-64 of A-Z a-z 0-9 . _ -; with --append, an existing account (asked
    /// for on a terminal when missing)
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
    /// Account name: 1-64 of A-Z a-z 0-9 . _ -; with --append, an existing account (asked
    /// for on a terminal when missing)
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
#[derive(Debug)]
struct Given {
    name: String,
    values: Vec<String>,
    /// `None` only with `--append` (the account keeps its services).
    allow: Option<String>,
    /// `--comment`, or the answer to the comment question.
    comment: Option<String>,
}

/// What an add command asks for when arguments are missing, and how it checks the answers.
struct Questions<'a> {
    /// The value asked for: "IP address or CIDR", "host name".
    what: &'a str,
    /// The value in a sentence: "an address".
    a_value: &'a str,
    /// The start of an example command line: "add-ip joe-office".
    example: &'a str,
    /// Whether an argument given as the account name is a value (the name was forgotten).
    looks_like_value: fn(&str) -> bool,
    /// Checks values as the command will parse them.
    check_values: &'a dyn Fn(&[String]) -> Result<()>,
}

/// Fills in missing arguments: asks on a terminal (as the original tools did), else a
/// usage error. A name that looks like the value (`add-ip 203.0.113.7 --allow 1`: the account
/// name was forgotten) is taken as the value on a terminal, and named in the error otherwise.
fn complete(
    ctx: &Ctx,
    (mut name, mut values, options): (Option<String>, Vec<String>, &AccountOptions),
    q: &Questions<'_>,
    profiles: &Profiles,
) -> Result<Given> {
    let allow = (!options.allow.is_empty()).then(|| options.allow.join(","));
    let terminal = io::stdin().is_terminal();
    let forgotten_name = values.is_empty() && name.as_deref().is_some_and(q.looks_like_value);
    if forgotten_name && !terminal {
        let value = name.unwrap_or_default();
        let (a_value, example) = (q.a_value, q.example);
        return Err(UsageError(format!(
            "missing arguments: {value:?} looks like {a_value}, not an account name: give the \
             account name first, e.g. {example} {value} --allow SERVICES (see --help)"
        ))
        .into());
    }
    if forgotten_name {
        values = name.take().into_iter().collect();
    }
    if let (Some(name), false) = (&name, values.is_empty())
        && (options.append || allow.is_some())
    {
        return Ok(Given {
            name: name.clone(),
            values,
            allow,
            comment: options.comment.clone(),
        });
    }
    if !terminal {
        let what = q.what;
        let allow = if options.append {
            ""
        } else {
            " and --allow SERVICES"
        };
        return Err(UsageError(format!(
            "missing arguments: give NAME, at least one {what}{allow} (see --help)"
        ))
        .into());
    }
    let exists = |n: &AccountName| store::account_exists(&ctx.paths, n);
    let mut asker = Asker {
        input: io::stdin().lock(),
        output: io::stdout().lock(),
    };
    ask_missing(
        &mut asker,
        (name, values, allow, options),
        q,
        profiles,
        &exists,
    )
}

/// How many answers a question takes before the command gives up.
const ATTEMPTS: usize = 3;

/// Asks questions on `output` and reads the answers from `input`, one a line.
struct Asker<R, W> {
    input: R,
    output: W,
}

impl<R: BufRead, W: Write> Asker<R, W> {
    /// Asks `prompt` until `check` accepts the answer, at most [`ATTEMPTS`] times, saying
    /// after each refused answer what is wrong with it. An empty answer is `None` when
    /// `optional`, else refused. The end of the input (Ctrl-D), or the last refused answer,
    /// ends the command with a usage error: nothing was changed.
    fn ask<T>(
        &mut self,
        prompt: &str,
        optional: bool,
        check: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>> {
        let mut problem = String::new();
        for attempt in 1..=ATTEMPTS {
            write!(self.output, "{prompt}: ")?;
            self.output.flush()?;
            let mut line = String::new();
            if self.input.read_line(&mut line)? == 0 {
                writeln!(self.output)?;
                return Err(UsageError(format!(
                    "no answer to {prompt:?} (end of input); nothing changed"
                ))
                .into());
            }
            let answer = line.trim();
            if answer.is_empty() && optional {
                return Ok(None);
            }
            problem = if answer.is_empty() {
                "an answer is needed".to_owned()
            } else {
                match check(answer) {
                    Ok(value) => return Ok(Some(value)),
                    Err(e) => crate::model::printable(&e).into_owned(),
                }
            };
            let left = ATTEMPTS - attempt;
            if left > 0 {
                let tries = if left == 1 { "try" } else { "tries" };
                writeln!(self.output, "  {problem}; try again ({left} {tries} left)")?;
            }
        }
        Err(UsageError(format!(
            "{problem}; gave up after {ATTEMPTS} answers to {prompt:?}, nothing changed"
        ))
        .into())
    }

    /// [`Asker::ask`] for an answer that is needed.
    fn ask_needed<T>(
        &mut self,
        prompt: &str,
        check: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T> {
        Ok(self
            .ask(prompt, false, check)?
            .expect("a needed answer is never empty"))
    }
}

/// Asks for what the command line left out, checking each answer as it is given: the
/// account name (free for a new account, existing for `--append`), the values, the services
/// (a numbered menu; not with `--append`: the account keeps its own) and a comment
/// (optional; not asked with `--comment` or `--append`).
fn ask_missing<R: BufRead, W: Write>(
    asker: &mut Asker<R, W>,
    (name, values, allow, options): (Option<String>, Vec<String>, Option<String>, &AccountOptions),
    q: &Questions<'_>,
    profiles: &Profiles,
    exists: &dyn Fn(&AccountName) -> bool,
) -> Result<Given> {
    let check_name = |answer: &str| {
        let n: AccountName = answer.parse().map_err(|e: ModelError| e.to_string())?;
        match (exists(&n), options.append, options.replace) {
            (true, false, false) => Err(format!(
                "account {n} exists already: choose another name (or run the command with \
                 --append to add to it, or --replace)"
            )),
            (false, true, _) => Err(format!("no account named {n} to append to")),
            _ => Ok(answer.to_owned()),
        }
    };
    let name = match name {
        // Given on the command line: said at once, before any question.
        Some(n) => check_name(&n).map_err(|e| match n.parse::<AccountName>() {
            Err(_) => UsageError(e).into(),
            Ok(_) => anyhow::anyhow!(e),
        })?,
        None => asker.ask_needed("Account name", check_name)?,
    };
    let values = if values.is_empty() {
        let prompt = format!("{} (several: separated by commas)", q.what);
        vec![asker.ask_needed(&prompt, |answer| {
            let values = [answer.to_owned()];
            (q.check_values)(&values).map_err(|e| format!("{e:#}"))?;
            Ok(answer.to_owned())
        })?]
    } else {
        values
    };
    let allow = match allow {
        Some(a) => Some(a),
        None if options.append => None,
        None => {
            writeln!(asker.output, "Services:")?;
            for p in profiles.ordered() {
                let code = p.code.map(|c| c.to_string()).unwrap_or_default();
                writeln!(
                    asker.output,
                    "  {code:>2}  {:<10} {}",
                    p.name, p.description
                )?;
            }
            Some(
                asker.ask_needed("Services (numbers or names, comma-separated)", |answer| {
                    profiles
                        .parse_services(&[answer])
                        .map_err(|e| e.to_string())?;
                    Ok(answer.to_owned())
                })?,
            )
        }
    };
    let comment = match &options.comment {
        Some(c) => Some(c.clone()),
        None if options.append => None,
        None => asker.ask("Comment (optional, Enter for none)", true, |answer| {
            Ok(answer.to_owned())
        })?,
    };
    Ok(Given {
        name,
        values,
        allow,
        comment,
    })
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
    parse: impl Fn(&[String]) -> Result<(Vec<IpNet>, Vec<Fqdn>)>,
) -> Result<Outcome> {
    let profiles = store::load_profiles(&ctx.paths)?;
    let (what, a_value, example) = prompt;
    let check_values = |values: &[String]| parse(values).map(|_| ());
    let questions = Questions {
        what,
        a_value,
        example,
        looks_like_value,
        check_values: &check_values,
    };
    let g = complete(ctx, (name, values, &options), &questions, &profiles)?;
    let name: AccountName = g.name.parse().map_err(UsageError::bad_value)?;
    let (addresses, fqdns) = parse(&g.values)?;
    let services = g
        .allow
        .map(|allow| profiles.parse_services(&[allow]))
        .transpose()
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
        services: services.unwrap_or_default(),
        media: Vec::new(),
        comment: g.comment,
        created: Some(now_rfc3339()),
        provider: None,
        expires,
    };
    if options.append {
        return append(ctx, (account, &profiles), options.no_restart, force);
    }
    save(
        ctx,
        (account, &profiles),
        options.replace,
        options.no_restart,
        force,
    )
}

/// `--append`: adds the addresses and names of `given` (an account of the same name) to the
/// existing account, and its services if any; a comment replaces the account's. Everything
/// else of the account (services without `--allow`, comment without `--comment`, created
/// time, media, provider) stays as it is. Values the account already has (or an address
/// one of its networks holds) are skipped and said; when nothing is left to change, nothing
/// is written or applied.
fn append(
    ctx: &Ctx,
    (given, profiles): (Account, &Profiles),
    no_restart: bool,
    force: bool,
) -> Result<Outcome> {
    let lock = ctx.lock()?;
    let name = given.name.clone();
    super::del::refuse_fleet_only(ctx, &name)?;
    let path = ctx.paths.account_file(&name);
    let Some(text) = store::read_optional(&path)? else {
        let existing = store::account_names(&ctx.paths)?;
        let close = store::close_names(name.as_str(), &existing);
        let hint = if close.is_empty() {
            String::new()
        } else {
            format!(" (did you mean {}?)", close.join(" or "))
        };
        anyhow::bail!(
            "no account named {name} to append to{hint}; to create it, run the command \
             without --append (and with --allow SERVICES)"
        );
    };
    let mut account = store::parse_account(&path, &text, profiles)?;
    let mut added: Vec<String> = Vec::new();
    let mut kept: Vec<String> = Vec::new();
    let mut new_nets: Vec<IpNet> = Vec::new();
    for net in &given.addresses {
        if let Some(holder) = account.addresses.iter().find(|a| a.contains(net)) {
            kept.push(if holder == net {
                display_net(net)
            } else {
                format!("{} (in {})", display_net(net), display_net(holder))
            });
        } else if !new_nets.contains(net) {
            new_nets.push(*net);
            added.push(display_net(net));
        }
    }
    let mut new_names: Vec<Fqdn> = Vec::new();
    for fqdn in &given.fqdns {
        if account.fqdns.contains(fqdn) {
            kept.push(fqdn.to_string());
        } else if !new_names.contains(fqdn) {
            new_names.push(fqdn.clone());
            added.push(fqdn.to_string());
        }
    }
    let services = if given.services.is_empty() {
        account.services.clone()
    } else {
        let all: Vec<&String> = account.services.iter().chain(&given.services).collect();
        profiles.parse_services(&all)?
    };
    let new_services: Vec<String> = services
        .iter()
        .filter(|s| !account.services.contains(s))
        .cloned()
        .collect();
    let comment_changes = given.comment.is_some() && given.comment != account.comment;
    // `--expires` with `--append` sets the whole account's expiry (a later or earlier end).
    let expiry_changes = given.expires.is_some() && given.expires != account.expires;
    let nothing =
        added.is_empty() && new_services.is_empty() && !comment_changes && !expiry_changes;
    if !kept.is_empty() {
        let end = if nothing { "; nothing to change" } else { "" };
        ctx.say(format_args!(
            "account {name} has {} already{end}",
            kept.join(", ")
        ));
    }
    if nothing {
        if kept.is_empty() {
            ctx.say(format_args!("account {name}: nothing to change"));
        }
        return Ok(Outcome::Done);
    }
    let fresh = Account {
        addresses: new_nets.clone(),
        ..account.clone()
    };
    warn_shared_addresses(ctx, &fresh, profiles);
    if account.provider.is_some() {
        ctx.warn(format_args!(
            "account {name} was written by enable-trusted-providers, which may write it again \
             without what you append; a separate account keeps it"
        ));
    }
    account.addresses.extend(new_nets);
    account.fqdns.extend(new_names.iter().cloned());
    account.services = services;
    if comment_changes {
        account.comment = given.comment;
    }
    if expiry_changes {
        account.expires = given.expires;
    }
    let mut what = Vec::new();
    if !added.is_empty() {
        what.push(format!("appended {}", added.join(", ")));
    }
    if !new_services.is_empty() {
        what.push(format!(
            "added services {} (for all its addresses and names)",
            new_services.join(", ")
        ));
    }
    if comment_changes {
        what.push("replaced the comment".to_owned());
    }
    if let Some(at) = account.expires.filter(|_| expiry_changes) {
        what.push(format!("expires {}", crate::model::format_time(at)));
    }
    let summary = account.summary();
    let done = [
        format!("account {name}: {}", what.join("; ")),
        format!("account {name} saved: {summary}"),
    ];
    let check_names = Account {
        fqdns: new_names,
        ..account.clone()
    };
    let outcome = change_then_apply_checked(
        ctx,
        &lock,
        std::slice::from_ref(&path),
        (no_restart, force),
        &done,
        || Ok(store::save_account(&ctx.paths, &account, true, &lock)?),
        |build| match force {
            true => Ok(()),
            false => refuse_names_that_do_not_exist(&check_names, build),
        },
    )
    .with_context(|| format!("account {name}"))?;
    ctx.audit(&format!(
        "account {name} {}: now {summary}",
        what.join("; ")
    ));
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(append: bool) -> AccountOptions {
        AccountOptions {
            allow: Vec::new(),
            comment: None,
            replace: false,
            append,
            expires: None,
            no_restart: true,
        }
    }

    /// Runs the questions of add-ip with `input` as the answers; returns the result and
    /// what was printed. `joe` exists.
    fn interview(input: &str, append: bool) -> (Result<Given>, String) {
        let profiles = store::builtin_profiles();
        let check = |values: &[String]| {
            parse_sources(values, false).map_err(UsageError::bad_value)?;
            Ok(())
        };
        let q = Questions {
            what: "IP address or CIDR",
            a_value: "an address",
            example: "add-ip joe-office",
            looks_like_value: looks_like_address,
            check_values: &check,
        };
        let mut asker = Asker {
            input: input.as_bytes(),
            output: Vec::new(),
        };
        let exists = |n: &AccountName| n.as_str() == "joe";
        let opts = options(append);
        let result = ask_missing(
            &mut asker,
            (None, Vec::new(), None, &opts),
            &q,
            &profiles,
            &exists,
        );
        (result, String::from_utf8(asker.output).unwrap())
    }

    #[test]
    fn each_answer_is_checked_and_asked_again() {
        let (given, out) = interview(
            "joe\n../x\nann\n203.0.113.7:5060\n203.0.113.7\nsipudp\n1,3\n  Ann's phone \n",
            false,
        );
        let given = given.unwrap();
        assert_eq!(given.name, "ann");
        assert_eq!(given.values, ["203.0.113.7"]);
        assert_eq!(given.allow.as_deref(), Some("1,3"));
        assert_eq!(given.comment.as_deref(), Some("Ann's phone"));
        assert!(
            out.contains(
                "Account name:   account joe exists already: choose another name (or run the \
                 command with --append to add to it, or --replace); try again (2 tries left)\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("invalid account name \"../x\"") && out.contains("(1 try left)"),
            "{out}"
        );
        assert!(
            out.contains("IP address or CIDR (several: separated by commas):   invalid address \"203.0.113.7:5060\": write it without :5060"),
            "{out}"
        );
        assert!(out.contains("did you mean sip-udp?; try again"), "{out}");
        assert!(out.contains("   3  iax "), "{out}");
        assert!(
            out.ends_with("Comment (optional, Enter for none): "),
            "{out}"
        );
    }

    #[test]
    fn a_name_on_the_command_line_is_checked_before_any_question() {
        let profiles = store::builtin_profiles();
        let check = |_: &[String]| Ok(());
        let q = Questions {
            what: "IP address or CIDR",
            a_value: "an address",
            example: "add-ip joe-office",
            looks_like_value: looks_like_address,
            check_values: &check,
        };
        let mut asker = Asker {
            input: "192.0.2.7\n".as_bytes(),
            output: Vec::new(),
        };
        let exists = |n: &AccountName| n.as_str() == "joe";
        let opts = options(false);
        let err = ask_missing(
            &mut asker,
            (Some("joe".into()), Vec::new(), None, &opts),
            &q,
            &profiles,
            &exists,
        )
        .unwrap_err();
        assert!(err.downcast_ref::<UsageError>().is_none(), "exit 1: {err}");
        assert!(
            err.to_string().starts_with("account joe exists already"),
            "{err}"
        );
        assert!(asker.output.is_empty(), "nothing asked");
    }

    #[test]
    fn an_empty_comment_is_none_and_append_asks_no_services() {
        let (given, _) = interview("ann\n192.0.2.7\n1\n\n", false);
        assert_eq!(given.unwrap().comment, None);
        let (given, out) = interview("ann\njoe\n192.0.2.8\n", true);
        let given = given.unwrap();
        assert_eq!((given.name.as_str(), given.allow), ("joe", None));
        assert!(
            out.contains("no account named ann to append to; try again"),
            "{out}"
        );
        assert!(
            !out.contains("Services") && !out.contains("Comment"),
            "{out}"
        );
    }

    #[test]
    fn end_of_input_and_too_many_wrong_answers_end_cleanly() {
        let (result, out) = interview("ann\n", false);
        let err = result.unwrap_err();
        assert!(err.downcast_ref::<UsageError>().is_some());
        assert_eq!(
            err.to_string(),
            "no answer to \"IP address or CIDR (several: separated by commas)\" (end of \
             input); nothing changed"
        );
        assert!(out.ends_with("separated by commas): \n"), "{out}");
        let (result, out) = interview("x/y\n\n.z\nann\n", false);
        let err = result.unwrap_err();
        assert!(err.downcast_ref::<UsageError>().is_some());
        assert_eq!(
            err.to_string(),
            "invalid account name \".z\": use 1-64 characters of A-Z a-z 0-9 . _ -, not \
             starting with . or -; gave up after 3 answers to \"Account name\", nothing changed"
        );
        assert!(
            out.contains("an answer is needed; try again (1 try left)"),
            "{out}"
        );
        let (result, _) = interview("", false);
        assert!(
            result
                .unwrap_err()
                .to_string()
                .starts_with("no answer to \"Account name\"")
        );
    }
}
