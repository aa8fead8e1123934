//! `pbxwall geo lookup ADDR` and `pbxwall geo update`: the country of an address and what
//! it may reach; reloading the country database into the kernel as a delta.

use std::net::IpAddr;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

use super::{
    Build, Ctx, Dns, Outcome, UsageError, apply_ruleset, build, end_lost_flows,
    forget_gate_if_changing, guard_ssh_lockout, record_applied_staged, record_gate,
};
use crate::addrset::Family;
use crate::compile::account_sources;
use crate::geo::applied::Delta;
use crate::geo::{Applied, Country, Database, Gate, GeoInfo};
use crate::model::RtpFrom;
use crate::nft::netlink::{self, SetChange};
use crate::nft::render;
use crate::ruleset::{Element, L4Proto, PortRange, SetKind, element_changes};
use crate::state::State;

/// `pbxwall geo --help`: what the gate does, exit codes.
pub const LONG_HELP: &str = "\
The geo gate ([geo] database and allow or deny in pbxwall.toml) lets only addresses of the
allowed countries use the open paths, those open to sources that are not whitelisted: RTP
with [rtp] from = \"any\", SIP admission by REGISTER and open mode of [sip], the first knock
of [knock]. Trusted networks and whitelisted accounts never depend on it.

geo update reloads the database and changes only the elements of the sets geo_v4 and geo_v6
that differ, in one transaction; nothing is written when nothing changed. A database that
cannot be read or parsed, or that has no range for any allowed country, changes nothing:
the gate live now stays (exit 3, with the file and line).

Exit status: 0 success, 1 error (nothing changed), 2 usage error, 3 the database could not
be used and the live gate was kept.";

/// `pbxwall geo`: the country database.
#[derive(Debug, Clone, Args)]
pub struct GeoArgs {
    /// What to do
    #[command(subcommand)]
    pub action: GeoAction,
}

/// The `geo` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum GeoAction {
    /// The country of an address, and which open paths it may use
    Lookup(LookupArgs),
    /// Reload the database into the kernel: only changed elements, in one transaction
    Update(UpdateArgs),
}

/// `geo lookup ADDR`.
#[derive(Debug, Clone, Args)]
pub struct LookupArgs {
    /// IPv4 or IPv6 address, e.g. 192.0.2.7 or 2001:db8::7
    #[arg(value_name = "ADDR")]
    pub address: String,
}

/// `geo update`.
#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    /// Apply even if the result would cut off this SSH session's client
    #[arg(long)]
    pub force: bool,
}

impl GeoAction {
    /// Whether the action changes the kernel.
    pub fn changes_firewall(&self) -> bool {
        matches!(self, GeoAction::Update(_))
    }
}

/// `pbxwall geo ...`.
pub fn geo(ctx: &Ctx, args: GeoArgs) -> Result<Outcome> {
    match args.action {
        GeoAction::Lookup(a) => lookup(ctx, &a),
        GeoAction::Update(a) => update(ctx, &a),
    }
}

/// An open path: a port range open to sources that are not whitelisted, behind the gate.
#[derive(Debug, Clone, Serialize)]
pub struct OpenPath {
    /// Its name (`rtp`).
    pub name: &'static str,
    /// `udp 10000-20000`.
    pub ports: String,
    /// Whether the address may open a connection there (whitelisting included).
    pub open: bool,
}

/// The open paths of the settings: those the gate stands in front of. A new open path
/// (SIP open mode, knock) is listed here too, so `geo lookup` reports it.
fn open_paths(b: &Build) -> Vec<(&'static str, L4Proto, PortRange)> {
    let mut v = Vec::new();
    if b.settings.rtp.from == RtpFrom::Any {
        v.push(("rtp", L4Proto::Udp, b.settings.rtp.ports));
    }
    if let Some(sip) = crate::compile::SipLayer::new(&b.settings, &b.profiles) {
        let name = if b.settings.sip.open {
            "sip (open mode)"
        } else {
            "sip (admission by REGISTER)"
        };
        v.extend(
            sip.ports()
                .iter()
                .map(|&(proto, ports)| (name, proto, ports)),
        );
    }
    if let Some(&first) = b.settings.knock.sequence.first() {
        let port = PortRange { first, last: first };
        v.push(("knock (first port)", b.settings.knock.protocol, port));
    }
    v
}

/// Whether the gate built into `ruleset` lets `addr` through (always when there is none).
fn gate_admits(ruleset: &crate::ruleset::Ruleset, addr: IpAddr) -> bool {
    let family = match addr {
        IpAddr::V4(_) => crate::addrset::Family::V4,
        IpAddr::V6(_) => crate::addrset::Family::V6,
    };
    ruleset
        .set(&crate::geo::Gate::set_name(family))
        .is_none_or(|s| s.elements.iter().any(|e| e.range.contains(addr)))
}

fn ports_text(proto: L4Proto, r: PortRange) -> String {
    if r.first == r.last {
        format!("{} {}", proto.keyword(), r.first)
    } else {
        format!("{} {}-{}", proto.keyword(), r.first, r.last)
    }
}

fn lookup(ctx: &Ctx, args: &LookupArgs) -> Result<Outcome> {
    let addr: IpAddr = args
        .address
        .trim()
        .parse()
        .map_err(|_| {
            UsageError(format!(
                "invalid address {:?}: expected one IPv4 or IPv6 address, e.g. 192.0.2.7 or 2001:db8::7",
                args.address
            ))
        })?;
    let addr = addr.to_canonical();
    let b = build(ctx, None, Dns::CacheOnly)?;
    let Some(path) = b.settings.geo.database.clone() else {
        anyhow::bail!(
            "no country database: set [geo] database in {}",
            ctx.paths.settings_file().display()
        );
    };
    let db = Database::open(&path)?;
    let row = db.lookup(addr)?;
    let country: Option<Country> = row.and_then(|(_, c)| c);
    let gate_on = b.ruleset.set(&Gate::set_name(Family::V4)).is_some();
    let in_gate = b
        .ruleset
        .set(&Gate::set_name(Family::of(addr)))
        .is_some_and(|s| s.element_of(addr).is_some());
    let gate = if !gate_on {
        "off"
    } else if in_gate {
        "allowed"
    } else {
        "refused"
    };
    let trusted = b.settings.trusted.iter().any(|n| n.contains(&addr));
    let resolved = b.resolution.usable();
    let accounts: Vec<String> = b
        .accounts
        .iter()
        .filter(|a| {
            account_sources(a, &resolved)
                .iter()
                .any(|r| r.contains(addr))
        })
        .map(|a| a.name.to_string())
        .collect();
    let paths: Vec<OpenPath> = open_paths(&b)
        .into_iter()
        .map(|(name, proto, ports)| OpenPath {
            name,
            ports: ports_text(proto, ports),
            // RTP is accepted (or not) by a rule `accepts_new` follows; SIP admission and
            // the knock go through sets filled by packets, so whitelisting or the gate
            // decide.
            open: b.ruleset.accepts_new(addr, proto, ports.first)
                || (name != "rtp" && gate_admits(&b.ruleset, addr)),
        })
        .collect();
    if ctx.json {
        ctx.print_json(&serde_json::json!({
            "address": addr.to_string(),
            "country": country,
            "database_range": row.map(|(r, _)| r.to_string()),
            "gate": gate,
            "trusted": trusted,
            "accounts": accounts,
            "open_paths": paths,
        }))?;
        return Ok(Outcome::Done);
    }
    let country_text = match (row, country) {
        (Some((r, Some(c))), _) => format!("{c} (database range {r})"),
        (Some((r, None)), _) => format!("unknown (database range {r} has no country)"),
        (None, _) => "unknown (not in the database)".to_owned(),
    };
    outln!("{addr}: country {country_text}");
    let gate_text = match gate {
        "off" => "off (no [geo] allow or deny)".to_owned(),
        "allowed" => format!("lets it through ({})", b.settings.geo.describe()),
        _ => format!("keeps it out ({})", b.settings.geo.describe()),
    };
    outln!("geo gate: {gate_text}");
    if trusted {
        outln!("trusted network: full access, whatever the country");
    }
    if !accounts.is_empty() {
        outln!(
            "whitelisted by account {}: its services, whatever the country",
            accounts.join(", ")
        );
    }
    if paths.is_empty() {
        outln!("open paths: none (RTP only from whitelisted sources, no [sip] layer, no [knock])");
    }
    for p in &paths {
        outln!(
            "open path {} ({}): {}",
            p.name,
            p.ports,
            if p.open { "may use it" } else { "refused" }
        );
    }
    Ok(Outcome::Done)
}

/// What `geo update` did, as printed with `--json`.
#[derive(Debug, Serialize)]
pub struct UpdateReport {
    /// "none", "elements" (geo set elements changed) or "full" (the whole table applied,
    /// when the gate was not live as the files want it).
    pub apply: &'static str,
    /// Netlink transactions sent.
    pub netlink_writes: u32,
    /// Elements added (both families).
    pub added: usize,
    /// Elements removed.
    pub removed: usize,
    /// The database and the gate.
    pub geo: GeoInfo,
    /// Problems (the database could not be used, countries without ranges).
    pub problems: Vec<String>,
}

fn update(ctx: &Ctx, args: &UpdateArgs) -> Result<Outcome> {
    let lock = ctx.lock()?;
    let b = build(ctx, Some(&lock), Dns::CacheOnly)?;
    if !b.settings.geo.enabled() {
        anyhow::bail!(
            "no geo gate to update: set [geo] database and allow (or deny) in {}",
            ctx.paths.settings_file().display()
        );
    }
    let problems = b.problems();
    let mut report = UpdateReport {
        apply: "none",
        netlink_writes: 0,
        added: 0,
        removed: 0,
        geo: b.geo.clone(),
        problems: problems.clone(),
    };
    if b.geo.problem.is_some() {
        // The live gate was kept by the build: nothing to write.
        return finish(ctx, &report, Outcome::Degraded);
    }
    // The live geo elements are what the last apply recorded (the kernel's dump of a large
    // interval set is far too slow to read them back): valid while both sets are live and
    // the rest of the ruleset is what the files give.
    let live = netlink::read_table().context("reading table inet pbxwall")?;
    let (st, _) = State::load(&ctx.paths);
    let same_skeleton = st.applied.as_ref().map(|a| a.skeleton.as_str())
        == Some(render::skeleton(&b.ruleset).as_str());
    let live_sets = [Family::V4, Family::V6].iter().all(|f| {
        let name = Gate::set_name(*f);
        live.as_ref().is_some_and(|t| {
            t.sets
                .iter()
                .any(|s| s.name == name && s.kind == Some(SetKind::Addresses))
        })
    });
    let recorded = Applied::load(&ctx.paths).filter(|_| live_sets && same_skeleton);
    let outcome = match recorded {
        Some(mut rec) => {
            let have_v4 = std::mem::take(&mut rec.v4);
            let have_v6 = std::mem::take(&mut rec.v6);
            let changes: Vec<(String, Family, Vec<Element>, Vec<Element>)> =
                [(Family::V4, have_v4), (Family::V6, have_v6)]
                    .into_iter()
                    .map(|(family, have)| {
                        let name = Gate::set_name(family);
                        let want = &b.ruleset.set(&name).expect("the gate's sets").elements;
                        let (add, remove) = range_changes(want, &have);
                        (name, family, add, remove)
                    })
                    .collect();
            report.added = changes.iter().map(|c| c.2.len()).sum();
            report.removed = changes.iter().map(|c| c.3.len()).sum();
            if report.added + report.removed == 0 {
                // Same ranges (the file may have been rewritten): the record follows it.
                journal_gate(ctx, &b, &mut rec, &Delta::default());
                ctx.say(format_args!(
                    "geo gate unchanged ({} IPv4 and {} IPv6 ranges); nothing written",
                    b.geo.ranges_v4, b.geo.ranges_v6
                ));
                Outcome::Done
            } else {
                if !args.force {
                    guard_ssh_lockout(&ctx.paths, &b.ruleset)?;
                }
                let set_changes: Vec<SetChange<'_>> = changes
                    .iter()
                    .map(|(set, family, add, remove)| SetChange {
                        set,
                        family: *family,
                        kind: SetKind::Addresses,
                        remove,
                        add,
                    })
                    .collect();
                // Until the delta is journaled, the record is stale: a command stopped
                // after the kernel took it leaves a record the next update does not trust.
                let journaled = rec.append_pending(&ctx.paths).is_ok();
                if !journaled {
                    forget_gate_if_changing(&ctx.paths, &b.geo);
                }
                match netlink::update_sets(&set_changes) {
                    Ok(_) => {
                        report.apply = "elements";
                        report.netlink_writes = 1;
                        if journaled {
                            // The sorted ranges the delta added (or removed) in `family`.
                            let ranges =
                                |family: Family, added: bool| -> Vec<crate::addrset::AddrRange> {
                                    let mut v: Vec<_> = changes
                                        .iter()
                                        .filter(|c| c.1 == family)
                                        .flat_map(|c| if added { &c.2 } else { &c.3 })
                                        .map(|e| e.range)
                                        .collect();
                                    v.sort_unstable();
                                    v
                                };
                            let delta = Delta {
                                v4_removed: ranges(Family::V4, false),
                                v4_added: ranges(Family::V4, true),
                                v6_removed: ranges(Family::V6, false),
                                v6_added: ranges(Family::V6, true),
                            };
                            journal_gate(ctx, &b, &mut rec, &delta);
                        } else {
                            record_gate(ctx, &b);
                        }
                        // last-applied.nft holds the gate empty: it stays as it is.
                        record_applied_staged(ctx, &b.ruleset, None, &lock, false);
                        let line = format!(
                            "geo gate updated: {} ranges added, {} removed ({} IPv4 and {} IPv6 ranges now)",
                            report.added, report.removed, b.geo.ranges_v4, b.geo.ranges_v6
                        );
                        ctx.say(&line);
                        ctx.audit(&line);
                        end_lost_flows(&b.ruleset).report(ctx)
                    }
                    Err(e) => {
                        // The kernel's sets are not what was recorded (changed behind
                        // pbxwall's back): nothing of the batch was applied; load in full.
                        ctx.warn(format_args!(
                            "the live geo sets differ from the record of the last apply ({}); applying the full ruleset",
                            crate::error_chain(&e)
                        ));
                        full(ctx, &b, &lock, args.force, &mut report)?
                    }
                }
            }
        }
        None => full(ctx, &b, &lock, args.force, &mut report)?,
    };
    finish(ctx, &report, b.outcome().worst(outcome))
}

/// [`element_changes`] of a plain address set against recorded ranges, without turning
/// 300,000 ranges into elements first (both sides are sorted; else it is done anyway).
fn range_changes(
    want: &[Element],
    have: &[crate::addrset::AddrRange],
) -> (Vec<Element>, Vec<Element>) {
    if !(want.iter().all(|e| e.jump.is_none())
        && want.is_sorted_by(|a, b| a.range < b.range)
        && have.is_sorted_by(|a, b| a < b))
    {
        let have: Vec<Element> = have.iter().copied().map(Element::address).collect();
        return element_changes(want, &have);
    }
    let (mut add, mut remove) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < want.len() || j < have.len() {
        match (want.get(i), have.get(j)) {
            (Some(w), Some(h)) if w.range == *h => {
                i += 1;
                j += 1;
            }
            (Some(w), Some(h)) if w.range < *h => {
                add.push(w.clone());
                i += 1;
            }
            (Some(w), None) => {
                add.push(w.clone());
                i += 1;
            }
            (_, Some(h)) => {
                remove.push(Element::address(*h));
                j += 1;
            }
            (None, None) => break,
        }
    }
    (add, remove)
}

/// Records a delta the kernel has (or a new key for the same ranges) in the journal of the
/// record; a journal grown to a quarter of the record is folded into a new record. Nothing
/// is written when neither the ranges nor the key changed. A failure is handled as
/// [`record_gate`] does (a warning; the record is removed, never left stale).
fn journal_gate(ctx: &Ctx, b: &Build, rec: &mut Applied, delta: &Delta) {
    let Some(key) = b.geo.key.as_deref() else {
        return record_gate(ctx, b);
    };
    if *delta == Delta::default() && rec.key == key {
        return;
    }
    let appended = rec.append_delta(&ctx.paths, key, b.geo.rows as u64, &b.geo.missing, delta);
    if appended.is_err() || rec.needs_compaction() {
        // record_gate writes the whole record (a new generation, no journal).
        let _ = Applied::remove(&ctx.paths);
        record_gate(ctx, b);
    }
}

/// Applies the whole ruleset (the gate was not live as recorded).
fn full(
    ctx: &Ctx,
    b: &Build,
    lock: &crate::store::StoreLock,
    force: bool,
    report: &mut UpdateReport,
) -> Result<Outcome> {
    let flows = apply_ruleset(ctx, b, lock, force)?;
    report.apply = "full";
    report.netlink_writes = 1;
    report.added = b.geo.ranges_v4 + b.geo.ranges_v6;
    ctx.say("the geo gate was not live as recorded; applied the full ruleset");
    Ok(flows.report(ctx))
}

fn finish(ctx: &Ctx, report: &UpdateReport, outcome: Outcome) -> Result<Outcome> {
    if ctx.json {
        ctx.print_json(report)?;
    } else {
        for p in &report.problems {
            ctx.warn(p);
        }
    }
    Ok(outcome)
}
