//! `pbxwall grants` and `pbxwall revoke`: the sources a knock granted (elements of the
//! kernel's grant sets, with the time each has left), and ending a grant.
//!
//! `grants --json` prints `[{"address": "192.0.2.10", "expires_in_s": 3540,
//! "expires": "2026-12-03T07:00:00Z"}]`, sorted by address.

use std::net::IpAddr;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use super::{Ctx, Dns, Outcome, UsageError, build, end_lost_flows};
use crate::addrset::Family;
use crate::compile::{KNOCK_GRANT_SET, set_name};
use crate::dynstate::DynamicState;
use crate::nft::netlink;

/// `pbxwall grants`.
#[derive(Debug, Clone, Args)]
pub struct GrantsArgs {}

/// `pbxwall revoke`.
#[derive(Debug, Clone, Args)]
pub struct RevokeArgs {
    /// Addresses whose knock grant ends now (also comma-separated)
    #[arg(value_name = "ADDR", required = true)]
    pub addresses: Vec<String>,
}

/// One grant, as `grants` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// The source.
    pub address: IpAddr,
    /// Seconds it has left.
    pub expires_in_s: u64,
    /// When it ends (RFC 3339, UTC).
    pub expires: String,
}

/// The live grants of both families, sorted by address; empty when knocking is off or the
/// table is not loaded.
pub fn live_grants() -> Result<Vec<Grant>> {
    let now = chrono::Utc::now();
    let mut out = Vec::new();
    for family in [Family::V4, Family::V6] {
        let set = set_name(KNOCK_GRANT_SET, family);
        let live = netlink::list_timed_elements(&set)
            .with_context(|| format!("cannot read set {set} (grants needs root)"))?
            .unwrap_or_default();
        for e in live {
            let left = e.expires.unwrap_or_default();
            out.push(Grant {
                address: e.addr,
                expires_in_s: left.as_secs(),
                expires: crate::model::format_time(
                    now + chrono::TimeDelta::from_std(left).unwrap_or_default(),
                ),
            });
        }
    }
    out.sort_by_key(|g| g.address);
    Ok(out)
}

/// `pbxwall grants [--json]`.
pub fn grants(ctx: &Ctx, _args: GrantsArgs) -> Result<Outcome> {
    let grants = live_grants()?;
    if ctx.json {
        ctx.print_json(&grants)?;
        return Ok(Outcome::Done);
    }
    if grants.is_empty() {
        ctx.say("no knock grants");
    }
    for g in &grants {
        let left = crate::model::Duration::from_secs(g.expires_in_s)
            .map_or_else(|| "0s".to_owned(), |d| d.to_string());
        ctx.say(format_args!(
            "{}  expires in {left} ({})",
            g.address, g.expires
        ));
    }
    Ok(Outcome::Done)
}

/// `pbxwall revoke ADDR...`: removes the grants (the kernel's elements and the record in
/// the state folder, under the lock), then ends the running flows of those sources.
pub fn revoke(ctx: &Ctx, args: RevokeArgs) -> Result<Outcome> {
    let mut addrs: Vec<IpAddr> = Vec::new();
    for arg in &args.addresses {
        for part in crate::model::split_list(arg) {
            let ip: IpAddr = part.parse().map_err(|_| {
                UsageError(format!(
                    "invalid address {part:?}: expected an IPv4 or IPv6 address such as 203.0.113.7 or 2001:db8::7"
                ))
            })?;
            addrs.push(ip.to_canonical());
        }
    }
    addrs.sort_unstable();
    addrs.dedup();
    let lock = ctx.lock()?;
    let granted: Vec<IpAddr> = live_grants()?.into_iter().map(|g| g.address).collect();
    if let Some(missing) = addrs.iter().find(|a| !granted.contains(a)) {
        anyhow::bail!(
            "{missing} has no knock grant (pbxwall grants lists them); nothing was revoked"
        );
    }
    let (mut state, warning) = DynamicState::load(&ctx.paths);
    if let Some(w) = warning {
        ctx.warn(w);
    }
    for family in [Family::V4, Family::V6] {
        let set = set_name(KNOCK_GRANT_SET, family);
        let mine: Vec<IpAddr> = addrs
            .iter()
            .copied()
            .filter(|a| Family::of(*a) == family)
            .collect();
        if mine.is_empty() {
            continue;
        }
        state.remove(&set, &mine);
        netlink::update_timed_elements(&set, family, &mine, &[])
            .with_context(|| format!("revoking failed; the grants in {set} are unchanged"))?;
    }
    if let Err(e) = state.save(&ctx.paths, &lock) {
        ctx.warn_state_unsaved(format_args!(
            "the grants are revoked, but the record in the state folder could not be \
             updated (a reboot would restore them until they expire): {}",
            crate::error_chain(&e)
        ));
    }
    let list = super::join_addrs(&addrs);
    ctx.say(format_args!("revoked the knock grant of {list}"));
    ctx.audit(&format!("revoked the knock grant of {list}"));
    // The running flows of those sources: whatever the ruleset no longer admits.
    let b = build(ctx, Some(&lock), Dns::CacheOnly)?;
    Ok(end_lost_flows(&b.ruleset).report(ctx))
}
