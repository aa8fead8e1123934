//! `enable-trusted-providers`: list the providers of `providers.toml`, and create or remove
//! their accounts (`provider-<id>`), then apply.
//!
//! Enabling writes `provider-<id>` with the entry's signalling ranges as addresses, its host
//! names as fqdns, its media ranges as media, its services, and `provider = "<id>"`. A file
//! whose content would not change is not rewritten, and an existing account keeps its
//! `created` time, so running the command again changes nothing, and running it after
//! `providers.toml` was updated updates the accounts. An account called `provider-<id>`
//! that this command did not make (no or another `provider` field) is never overwritten or
//! removed.
//!
//! Every id is checked before anything is written: one unknown id is an error (exit 1) and
//! nothing changes. Files are written and applied through [`change_then_apply`], so a failed
//! apply puts them back.
//!
//! # `--list --json`
//!
//! ```json
//! {
//!   "file": "/usr/share/pbxwall/providers.toml",
//!   "providers": [
//!     {
//!       "id": "telnyx",
//!       "name": "Telnyx",
//!       "website": "https://sip.telnyx.com",
//!       "confidence": "high",
//!       "stale": false,
//!       "checked": "2026-11-27",
//!       "in_all": true,
//!       "account": "provider-telnyx",
//!       "enabled": false,
//!       "up_to_date": null,
//!       "services": ["sip-udp", "sip-tcp"],
//!       "signalling": ["192.76.120.10", "64.16.250.10"],
//!       "media": ["36.255.198.128/25"],
//!       "hostnames": [],
//!       "ports": { "rtp": "16384-32768", "sip_tcp": "5060", "sip_tls": "5061", "sip_udp": "5060" },
//!       "sources": { "signalling": ["..."], "media": ["..."], "hostnames": [], "ports": ["..."] },
//!       "notes": "..."
//!     }
//!   ],
//!   "orphaned": [ { "id": "gone", "account": "provider-gone" } ]
//! }
//! ```
//!
//! `file` is the providers file read (`(built-in providers.toml)` for the compiled-in copy).
//! `in_all`: whether `--all` enables the entry. `enabled`: whether its account exists (made
//! by this command). `up_to_date`: for an enabled entry, whether the account file is what
//! enabling would write now (`false`: run the command again to update it); `null` when not
//! enabled. `signalling` and `media` list IPv4 then IPv6, single addresses without `/32` or
//! `/128`. `orphaned`: provider accounts whose id is no longer in the file (remove them
//! with `--disable ID`). With ids (`--list ID...`) only those entries are shown.
//!
//! Enabling or disabling with `--json` prints
//! `{"created": [ids], "updated": [ids], "unchanged": [ids], "removed": [ids], "not_enabled": [ids], "applied": bool}`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::{Ctx, Outcome, UsageError, change_then_apply};
use crate::model::{Account, AccountName, Profiles};
use crate::providers::{self, ACCOUNT_PREFIX, Provider, ProviderList, Sources};
use crate::state::now_rfc3339;
use crate::store::{self, StoreError, close_names, display_net};

/// `enable-trusted-providers`: create or remove provider accounts from providers.toml.
#[derive(Debug, Clone, Args)]
pub struct EnableTrustedProvidersArgs {
    /// Providers to enable, by id (see --list); with --list, show their details
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// List the providers: what each opens, confidence, date checked, whether it is enabled
    /// and whether --all enables it (--json: see /usr/share/doc/pbxwall/README.md)
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

/// What is on disk under a provider's account name.
#[derive(Debug)]
enum Existing {
    /// No file.
    Absent,
    /// An account made by this command for this provider, with its file's text.
    Ours(Box<Account>, String),
    /// An account of the same name that this command did not make for this provider.
    NotOurs(Box<Account>),
    /// A file that does not parse.
    Broken(StoreError),
}

fn existing(ctx: &Ctx, profiles: &Profiles, id: &str, name: &AccountName) -> Result<Existing> {
    let path = ctx.paths.account_file(name);
    let Some(text) = store::read_optional(&path)? else {
        return Ok(Existing::Absent);
    };
    Ok(match store::parse_account(&path, &text, profiles) {
        Ok(a) if a.provider.as_deref() == Some(id) => Existing::Ours(Box::new(a), text),
        Ok(a) => Existing::NotOurs(Box::new(a)),
        Err(e) => Existing::Broken(e),
    })
}

/// `enable-trusted-providers`.
pub fn enable_trusted_providers(ctx: &Ctx, args: EnableTrustedProvidersArgs) -> Result<Outcome> {
    if !args.list && !args.all && args.ids.is_empty() && args.disable.is_empty() {
        return Err(UsageError(
            "nothing to do: give provider ids, --all, --disable ID... or --list (see --help)"
                .into(),
        )
        .into());
    }
    let profiles = store::load_profiles(&ctx.paths)?;
    let list = providers::load_providers(&ctx.paths, args.providers_file.as_deref(), &profiles)?;
    if args.list {
        return list_providers(ctx, &profiles, &list, &args.ids);
    }
    let lock = ctx.lock()?;
    let plan = plan(ctx, &profiles, &list, &args)?;
    for p in &plan.writes {
        if !p.provider.in_all() {
            ctx.warn(format_args!(
                "provider {} is {}: check its entry ({}:{}) before relying on it",
                p.provider.id,
                caveats(p.provider),
                list.origin,
                p.provider.line
            ));
        }
    }
    let changes = plan.writes.iter().filter(|w| w.change != Change::Unchanged);
    let mut touched: Vec<PathBuf> = changes
        .map(|w| ctx.paths.account_file(&w.account.name))
        .collect();
    touched.extend(plan.removes.iter().map(|(_, n)| ctx.paths.account_file(n)));
    let changed = if touched.is_empty() {
        ctx.say("providers are up to date; nothing changed");
        None
    } else {
        let outcome = change_then_apply(
            ctx,
            &lock,
            &touched,
            args.no_restart,
            args.force,
            &[],
            || {
                for w in plan.writes.iter().filter(|w| w.change != Change::Unchanged) {
                    store::save_account(&ctx.paths, &w.account, true, &lock)?;
                }
                for (_, n) in &plan.removes {
                    store::remove_durably(&ctx.paths.account_file(n))?;
                }
                Ok(())
            },
        )?;
        Some(outcome)
    };
    if changed.is_some() {
        for w in plan.writes.iter().filter(|w| w.change != Change::Unchanged) {
            let verb = if w.change == Change::Create {
                "added"
            } else {
                "updated"
            };
            ctx.audit(&format!(
                "account {} {verb} (provider {}): {}",
                w.account.name,
                w.provider.id,
                w.account.summary()
            ));
        }
        for (id, n) in &plan.removes {
            ctx.audit(&format!("account {n} removed (provider {id} disabled)"));
        }
    }
    let mut summary = EnableSummary::default();
    for w in &plan.writes {
        let id = w.provider.id.clone();
        let verb = match w.change {
            Change::Create => {
                summary.created.push(id);
                "enabled"
            }
            Change::Update => {
                summary.updated.push(id);
                "updated"
            }
            Change::Unchanged => {
                summary.unchanged.push(id);
                "unchanged"
            }
        };
        ctx.say(format_args!(
            "{verb} {} ({}): {}",
            w.provider.id,
            w.account.name,
            w.provider.opens()
        ));
    }
    for (id, n) in &plan.removes {
        ctx.say(format_args!("disabled {id} (account {n} removed)"));
        summary.removed.push(id.clone());
    }
    for id in &plan.not_enabled {
        ctx.say(format_args!("{id} is not enabled; nothing to remove"));
        summary.not_enabled.push(id.clone());
    }
    summary.applied = changed.is_some() && !args.no_restart;
    if ctx.json {
        ctx.print_json(&summary)?;
    }
    Ok(changed.unwrap_or(Outcome::Done))
}

/// Why an entry is not in `--all`: "low confidence", "marked stale" or both.
fn caveats(p: &Provider) -> String {
    let mut why = Vec::new();
    if p.confidence == providers::Confidence::Low {
        why.push("low confidence");
    }
    if p.stale {
        why.push("marked stale");
    }
    why.join(" and ")
}

/// What an enable or disable run did, by provider id: printed with `--json` (the shape is in
/// the module documentation).
#[derive(Debug, Default, Serialize)]
struct EnableSummary {
    created: Vec<String>,
    updated: Vec<String>,
    unchanged: Vec<String>,
    removed: Vec<String>,
    not_enabled: Vec<String>,
    applied: bool,
}

/// What enabling a provider does to its account file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// The account does not exist yet.
    Create,
    /// The account exists, made by this command, but differs from what enabling writes now.
    Update,
    /// The account is already what enabling writes.
    Unchanged,
}

/// The account file one provider to enable gets.
struct AccountWrite<'a> {
    /// The provider's entry in providers.toml.
    provider: &'a Provider,
    /// The account enabling writes.
    account: Account,
    /// What writing it changes.
    change: Change,
}

/// Everything one run will change, decided (and every id checked) before any file is touched.
struct ProviderChanges<'a> {
    /// Accounts of the providers to enable.
    writes: Vec<AccountWrite<'a>>,
    /// Provider ids to disable, and their accounts, to remove.
    removes: Vec<(String, AccountName)>,
    /// Ids given to `--disable` that are in providers.toml but not enabled.
    not_enabled: Vec<String>,
}

/// The error for an id that is neither in the file nor an enabled provider account.
fn unknown(id: &str, known: &[String], origin: &str) -> anyhow::Error {
    let wanted = id.strip_prefix(ACCOUNT_PREFIX).unwrap_or(id);
    let close = close_names(wanted, known);
    let hint = if close.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", close.join(" or "))
    };
    UsageError::bad_value(format_args!(
        "unknown provider {id:?} in {origin}{hint} (--list shows them all)"
    ))
}

fn not_ours(a: &Account, id: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "account {} exists and was not made by enable-trusted-providers for {id} (its provider field is {}); rename or remove it with del-acct first",
        a.name,
        a.provider
            .as_deref()
            .map(|p| format!("{p:?}"))
            .unwrap_or_else(|| "not set".into())
    )
}

fn broken(name: &AccountName, e: &StoreError) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot tell whether account {name} is a provider account: {}; fix it or remove it with del-acct {name}",
        crate::error_chain(e)
    )
}

/// Checks every id and decides what to write and remove; touches nothing.
fn plan<'a>(
    ctx: &Ctx,
    profiles: &Profiles,
    list: &'a ProviderList,
    args: &EnableTrustedProvidersArgs,
) -> Result<ProviderChanges<'a>> {
    let known = list.ids();
    let mut wanted: Vec<&Provider> = Vec::new();
    for id in &args.ids {
        let p = list
            .get(id)
            .ok_or_else(|| unknown(id, &known, &list.origin))?;
        if !wanted.iter().any(|q| q.id == p.id) {
            wanted.push(p);
        }
    }
    if args.all {
        for p in list.providers.iter().filter(|p| p.in_all()) {
            if !wanted.iter().any(|q| q.id == p.id) {
                wanted.push(p);
            }
        }
    }
    let mut writes = Vec::new();
    for p in wanted {
        let name = p.account_name();
        let w = match existing(ctx, profiles, &p.id, &name)? {
            Existing::Absent => AccountWrite {
                provider: p,
                account: p.account(Some(now_rfc3339())),
                change: Change::Create,
            },
            Existing::Ours(old, text) => {
                let account = p.account(old.created.clone());
                let change = if store::render_account(&account) == text {
                    Change::Unchanged
                } else {
                    Change::Update
                };
                AccountWrite {
                    provider: p,
                    account,
                    change,
                }
            }
            Existing::NotOurs(a) => return Err(not_ours(&a, &p.id)),
            Existing::Broken(e) => return Err(broken(&name, &e)),
        };
        writes.push(w);
    }

    let mut removes: Vec<(String, AccountName)> = Vec::new();
    let mut not_enabled = Vec::new();
    let enabled = enabled_ids(ctx, profiles)?;
    for id in &args.disable {
        let mut candidates = known.clone();
        candidates.extend(enabled.iter().filter(|e| !known.contains(e)).cloned());
        let Some(name) = providers::account_name(id) else {
            return Err(unknown(id, &candidates, &list.origin));
        };
        match existing(ctx, profiles, id, &name)? {
            Existing::Ours(..) => {
                if !removes.iter().any(|(_, n)| *n == name) {
                    removes.push((id.clone(), name));
                }
            }
            Existing::NotOurs(a) => return Err(not_ours(&a, id)),
            Existing::Broken(e) => return Err(broken(&name, &e)),
            Existing::Absent if list.get(id).is_some() => {
                if !not_enabled.contains(id) {
                    not_enabled.push(id.clone());
                }
            }
            Existing::Absent => return Err(unknown(id, &candidates, &list.origin)),
        }
    }
    Ok(ProviderChanges {
        writes,
        removes,
        not_enabled,
    })
}

/// Ids of the provider accounts present (`provider-<id>` with `provider = "<id>"`).
fn enabled_ids(ctx: &Ctx, profiles: &Profiles) -> Result<Vec<String>> {
    Ok(enabled_accounts(ctx, profiles)?.into_keys().collect())
}

fn enabled_accounts(ctx: &Ctx, profiles: &Profiles) -> Result<BTreeMap<String, Account>> {
    let loaded = store::load_accounts(&ctx.paths, profiles)?;
    Ok(loaded
        .accounts
        .into_iter()
        .filter_map(|a| {
            let id = a.provider.clone()?;
            (providers::account_name(&id).as_ref() == Some(&a.name)).then_some((id, a))
        })
        .collect())
}

// ---------------------------------------------------------------------------------------
// --list

#[derive(Debug, Serialize)]
struct ListJson<'a> {
    file: &'a str,
    providers: Vec<ProviderJson<'a>>,
    orphaned: Vec<OrphanJson>,
}

#[derive(Debug, Serialize)]
struct ProviderJson<'a> {
    id: &'a str,
    name: &'a str,
    website: Option<&'a str>,
    confidence: providers::Confidence,
    stale: bool,
    checked: &'a str,
    in_all: bool,
    account: String,
    enabled: bool,
    up_to_date: Option<bool>,
    services: &'a [String],
    signalling: Vec<String>,
    media: Vec<String>,
    hostnames: Vec<&'a str>,
    ports: &'a BTreeMap<String, String>,
    sources: &'a Sources,
    notes: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct OrphanJson {
    id: String,
    account: String,
}

/// Whether a provider is enabled, and whether its account is what enabling writes now.
fn enabled_state(ctx: &Ctx, profiles: &Profiles, p: &Provider) -> Result<(bool, Option<bool>)> {
    Ok(match existing(ctx, profiles, &p.id, &p.account_name())? {
        Existing::Ours(a, text) => (
            true,
            Some(store::render_account(&p.account(a.created.clone())) == text),
        ),
        _ => (false, None),
    })
}

fn list_providers(
    ctx: &Ctx,
    profiles: &Profiles,
    list: &ProviderList,
    ids: &[String],
) -> Result<Outcome> {
    let known = list.ids();
    let mut shown: Vec<&Provider> = Vec::new();
    for id in ids {
        let p = list
            .get(id)
            .ok_or_else(|| unknown(id, &known, &list.origin))?;
        shown.push(p);
    }
    let detailed = !shown.is_empty();
    if !detailed {
        shown = list.providers.iter().collect();
    }
    let mut rows = Vec::new();
    for p in &shown {
        let (enabled, up_to_date) = enabled_state(ctx, profiles, p)?;
        rows.push(ProviderJson {
            id: &p.id,
            name: &p.name,
            website: p.website.as_deref(),
            confidence: p.confidence,
            stale: p.stale,
            checked: &p.checked,
            in_all: p.in_all(),
            account: p.account_name().to_string(),
            enabled,
            up_to_date,
            services: &p.services,
            signalling: p.signalling.iter().map(display_net).collect(),
            media: p.media.iter().map(display_net).collect(),
            hostnames: p.hostnames.iter().map(|h| h.as_str()).collect(),
            ports: &p.ports,
            sources: &p.sources,
            notes: p.notes.as_deref(),
        });
    }
    let orphaned: Vec<OrphanJson> = if detailed {
        Vec::new()
    } else {
        enabled_accounts(ctx, profiles)?
            .into_iter()
            .filter(|(id, _)| list.get(id).is_none())
            .map(|(id, a)| OrphanJson {
                id,
                account: a.name.to_string(),
            })
            .collect()
    };
    if ctx.json {
        let out = ListJson {
            file: &list.origin,
            providers: rows,
            orphaned,
        };
        ctx.print_json(&out)?;
        return Ok(Outcome::Done);
    }
    if detailed {
        for (p, row) in shown.iter().zip(&rows) {
            print_details(p, row);
        }
        return Ok(Outcome::Done);
    }
    print_table(&shown, &rows);
    for o in &orphaned {
        outln!(
            "{} is enabled (account {}) but no longer in {}: remove it with --disable {}",
            o.id,
            o.account,
            list.origin,
            o.id
        );
    }
    if !ctx.quiet {
        outln!(
            "\n{} providers in {}. --all enables those marked yes: confidence high or medium, not stale.\nDetails, sources and notes: enable-trusted-providers --list ID",
            list.providers.len(),
            list.origin
        );
    }
    Ok(Outcome::Done)
}

fn enabled_text(row: &ProviderJson<'_>) -> &'static str {
    match (row.enabled, row.up_to_date) {
        (false, _) => "no",
        (true, Some(false)) => "outdated",
        (true, _) => "yes",
    }
}

fn confidence_text(p: &Provider) -> String {
    if p.stale {
        format!("{}, stale", p.confidence)
    } else {
        p.confidence.to_string()
    }
}

fn print_table(shown: &[&Provider], rows: &[ProviderJson<'_>]) {
    let header = [
        "ID",
        "NAME",
        "CONFIDENCE",
        "CHECKED",
        "ENABLED",
        "--ALL",
        "OPENS",
    ];
    let mut table: Vec<[String; 7]> = vec![header.map(str::to_owned)];
    for (p, row) in shown.iter().zip(rows) {
        table.push([
            p.id.clone(),
            p.name.clone(),
            confidence_text(p),
            p.checked.clone(),
            enabled_text(row).to_owned(),
            if p.in_all() { "yes" } else { "no" }.to_owned(),
            p.opens(),
        ]);
    }
    let mut widths = [0usize; 7];
    for r in &table {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for r in &table {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        outln!("{}", line.trim_end());
    }
}

fn print_details(p: &Provider, row: &ProviderJson<'_>) {
    let field = |k: &str, v: &str| outln!("  {k:<11} {v}");
    let many = |k: &str, vs: &[String]| {
        if vs.is_empty() {
            return;
        }
        field(k, &vs[0]);
        for v in &vs[1..] {
            field("", v);
        }
    };
    outln!("{}: {}", p.id, p.name);
    if let Some(w) = &p.website {
        field("website", w);
    }
    field("confidence", &confidence_text(p));
    field("checked", &p.checked);
    field(
        "enabled",
        &format!("{} (account {})", enabled_text(row), row.account),
    );
    field("--all", if p.in_all() { "yes" } else { "no" });
    field("opens", &p.opens());
    field("services", &p.services.join(", "));
    many("signalling", &row.signalling);
    many("media", &row.media);
    let hosts: Vec<String> = row.hostnames.iter().map(|h| h.to_string()).collect();
    many("hostnames", &hosts);
    let ports: Vec<String> = providers::PORT_KEYS
        .iter()
        .filter_map(|k| p.ports.get(*k).map(|v| format!("{k} {v}")))
        .collect();
    if !ports.is_empty() {
        field("ports", &ports.join(", "));
    }
    let mut sources = Vec::new();
    for (fact, list) in [
        ("signalling", &p.sources.signalling),
        ("media", &p.sources.media),
        ("hostnames", &p.sources.hostnames),
        ("ports", &p.sources.ports),
    ] {
        sources.extend(list.iter().map(|s| format!("{fact}: {s}")));
    }
    many("sources", &sources);
    if let Some(n) = &p.notes {
        let lines: Vec<String> = n.lines().map(str::to_owned).collect();
        many("notes", &lines);
    }
    outln!();
}
