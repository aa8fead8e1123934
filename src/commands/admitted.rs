//! `pbxwall admitted`: the sources a REGISTER for a `[sip] register_domains` name admitted,
//! with the time each has left (each matching REGISTER renews it, in the kernel).

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use super::{Ctx, Outcome};
use crate::addrset::Family;
use crate::compile::{ADMITTED_SET, set_name};
use crate::nft::netlink;
use crate::store;

/// `pbxwall admitted`: list admitted sources.
#[derive(Debug, Clone, Args)]
pub struct AdmittedArgs {}

/// One admitted source as `admitted --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct AdmittedEntry {
    /// The source address.
    pub address: std::net::IpAddr,
    /// Seconds left until it must REGISTER again (`null`: no timeout).
    pub expires_in_s: Option<u64>,
}

/// The live admitted sources, sorted by address; empty when the SIP layer is off or the
/// table is not loaded.
pub fn admitted_entries() -> Result<Vec<AdmittedEntry>> {
    let mut out = Vec::new();
    for family in [Family::V4, Family::V6] {
        let set = set_name(ADMITTED_SET, family);
        let live =
            netlink::list_timed_elements(&set).with_context(|| format!("cannot read set {set}"))?;
        out.extend(live.unwrap_or_default().into_iter().map(|e| AdmittedEntry {
            address: e.addr,
            expires_in_s: e.expires.map(|d| d.as_secs()),
        }));
    }
    Ok(out)
}

/// `pbxwall admitted [--json]`.
pub fn admitted(ctx: &Ctx, _args: AdmittedArgs) -> Result<Outcome> {
    let settings = store::load_settings(&ctx.paths)?;
    let entries = admitted_entries()?;
    let domains: Vec<&str> = settings
        .sip
        .register_domains
        .iter()
        .map(|d| d.as_str())
        .collect();
    if ctx.json {
        ctx.print_json(&serde_json::json!({
            "register_domains": domains,
            "admit_for": settings.sip.admit_for.to_string(),
            "admitted": entries,
        }))?;
        return Ok(Outcome::Done);
    }
    if domains.is_empty() {
        ctx.say("no [sip] register_domains: no source is admitted by a REGISTER");
    } else if entries.is_empty() {
        ctx.say(format_args!(
            "no source admitted (a REGISTER for {} admits its source for {})",
            domains.join(", "),
            settings.sip.admit_for
        ));
    }
    for e in &entries {
        ctx.say(format_args!(
            "{:<39} {:>10} left",
            e.address,
            super::ban::left_text(e.expires_in_s)
        ));
    }
    Ok(Outcome::Done)
}
