//! `pbxwall geo lookup ADDR` and `pbxwall geo update`: the country of an address and what
//! it may reach; reloading the country database into the kernel as a delta.

use std::net::IpAddr;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

use super::{
    Build, Ctx, Dns, Outcome, UsageError, apply_ruleset, build, end_lost_flows, guard_ssh_lockout,
    record_applied_staged, record_gate,
};
use crate::addrset::{AddrRange, Family};
use crate::compile::account_sources;
use crate::geo::applied::Delta;
use crate::geo::{Applied, Country, Database, Gate, GeoInfo, difference, elements};
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

geo update reloads the database and changes, in one transaction, only the elements of the
small sets geo_added_v4/_v6 and geo_removed_v4/_v6 that differ (the ranges added to and
taken from the base sets geo_v4/_v6 since restart loaded them); nothing is written when
nothing changed. Once those hold more than a sixteenth of the base (and at least 4,096
ranges), the update loads the base sets in full instead. A database that
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
    crate::geo::ruleset_admits(ruleset, addr).unwrap_or(true)
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
    let gate = match crate::geo::ruleset_admits(&b.ruleset, addr) {
        None => "off",
        Some(true) => "allowed",
        Some(false) => "refused",
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
    /// Ranges the gate gained (both families): with a delta, the elements added to
    /// `geo_added_*` and removed from `geo_removed_*`; with a full load, every range.
    pub added: usize,
    /// Ranges the gate lost: with a delta, the elements removed from `geo_added_*` and
    /// added to `geo_removed_*`.
    pub removed: usize,
    /// The database and the gate.
    pub geo: GeoInfo,
    /// Problems (the database could not be used, countries without ranges).
    pub problems: Vec<String>,
}

fn update(ctx: &Ctx, args: &UpdateArgs) -> Result<Outcome> {
    let lock = ctx.lock()?;
    // The record (10 MiB at 300,000 ranges) is read while the database is parsed; under
    // the lock, so it is the record of the live sets.
    let paths = ctx.paths.clone();
    let record = std::thread::spawn(move || Applied::load(&paths));
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
    // interval set is far too slow to read them back): valid while all the gate's sets are
    // live and the rest of the ruleset is what the files give.
    let live = netlink::read_table().context("reading table inet pbxwall")?;
    let (st, _) = State::load(&ctx.paths);
    let same_skeleton = st.applied.as_ref().map(|a| a.skeleton.as_str())
        == Some(render::skeleton(&b.ruleset).as_str());
    let live_sets = Gate::set_names().iter().all(|name| {
        live.as_ref().is_some_and(|t| {
            t.sets
                .iter()
                .any(|s| s.name == *name && s.kind == Some(SetKind::Addresses))
        })
    });
    let recorded = record
        .join()
        .unwrap_or_else(|_| Applied::load(&ctx.paths))
        .filter(|_| live_sets && same_skeleton);
    let outcome = match recorded {
        // The database and [geo] are those of the record: the gate is what it holds.
        Some(_) if b.geo.cached => unchanged(ctx, &b),
        Some(mut rec) => {
            let plan = DeltaPlan::new(&b, &rec);
            report.added = plan.gate_added();
            report.removed = plan.gate_removed();
            // A delta applied (or nothing to apply), or why the base sets are loaded in
            // full instead.
            let delta: Result<Outcome, &str> = if report.added + report.removed == 0 {
                // Same ranges (the file may have been rewritten): the record follows it.
                journal_gate(ctx, &b, &mut rec, &plan.delta());
                Ok(unchanged(ctx, &b))
            } else if let Some(why) = plan.fold_reason() {
                Err(why)
            } else if rec.append_pending(&ctx.paths).is_err() {
                // Until the delta is journaled, the record is stale; without a journal the
                // base sets are loaded again in full (and the record written anew).
                Err("the journal of the geo record could not be written")
            } else {
                if !args.force {
                    guard_ssh_lockout(&ctx.paths, &b.ruleset)?;
                }
                match netlink::update_sets(&plan.set_changes()) {
                    Ok(_) => {
                        report.apply = "elements";
                        report.netlink_writes = 1;
                        journal_gate(ctx, &b, &mut rec, &plan.delta());
                        // last-applied.nft holds the gate empty: it stays as it is.
                        record_applied_staged(ctx, &b.ruleset, None, &lock, false);
                        let line = format!(
                            "geo gate updated: {} ranges added, {} removed ({} IPv4 and {} IPv6 ranges now)",
                            report.added, report.removed, b.geo.ranges_v4, b.geo.ranges_v6
                        );
                        ctx.say(&line);
                        ctx.audit(&line);
                        Ok(end_lost_flows(&b.ruleset).report(ctx))
                    }
                    Err(e) => {
                        // The kernel's sets are not what was recorded (changed behind
                        // pbxwall's back): nothing of the batch was applied; load in full.
                        ctx.warn(format_args!(
                            "the live geo sets differ from the record of the last apply ({}); applying the full ruleset",
                            crate::error_chain(&e)
                        ));
                        Err(NOT_LIVE)
                    }
                }
            };
            match delta {
                Ok(outcome) => outcome,
                Err(why) => full(ctx, &b, &lock, args.force, &mut report, why)?,
            }
        }
        None => full(ctx, &b, &lock, args.force, &mut report, NOT_LIVE)?,
    };
    finish(ctx, &report, b.outcome().worst(outcome))
}

/// The elements to add to and remove from a plain address set holding `have` so that it
/// holds `want` (both sorted and disjoint, as [`differences`] and the record give them; in
/// any other order it is done through [`element_changes`]).
fn range_changes(want: &[AddrRange], have: &[AddrRange]) -> (Vec<Element>, Vec<Element>) {
    if !(want.is_sorted() && have.is_sorted()) {
        return element_changes(&elements(want.to_vec()), &elements(have.to_vec()));
    }
    let (mut add, mut remove) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    loop {
        match (want.get(i), have.get(j)) {
            (Some(w), Some(h)) if w == h => {
                i += 1;
                j += 1;
            }
            (Some(w), Some(h)) if w < h => {
                add.push(Element::address(*w));
                i += 1;
            }
            (Some(w), None) => {
                add.push(Element::address(*w));
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

/// Why `geo update` loaded the gate in full when the live sets were not the record's.
const NOT_LIVE: &str = "the geo gate was not live as recorded";

/// Says that the gate is unchanged and nothing was written.
fn unchanged(ctx: &Ctx, b: &Build) -> Outcome {
    ctx.say(format_args!(
        "geo gate unchanged ({} IPv4 and {} IPv6 ranges); nothing written",
        b.geo.ranges_v4, b.geo.ranges_v6
    ));
    Outcome::Done
}

/// The most ranges the sets `geo_added_*` and `geo_removed_*` hold together before an
/// update loads the base sets in full instead: a sixteenth of the base, and never fewer
/// than this. Their size is what an update costs the kernel (it rebuilds a changed
/// interval set's lookup array whole), so a sixteenth keeps an update well under a tenth
/// of a full load, and the extra lookups of the first packets small.
const MIN_FOLD_RANGES: usize = 4096;

/// A `geo update` as a delta: the database's ranges (the build's, `want`) against the
/// record (what the kernel holds: the base sets, and the ranges removed from and added to
/// them since, in `geo_removed_*` and `geo_added_*`).
struct DeltaPlan {
    /// Per family: the set changes of `geo_added_*` and `geo_removed_*`, and what they hold
    /// after.
    families: Vec<FamilyPlan>,
    /// Ranges in the base sets, both families.
    base_ranges: usize,
}

struct FamilyPlan {
    family: Family,
    added_set: String,
    removed_set: String,
    /// `geo_added_*`: elements to add, to remove.
    added: (Vec<Element>, Vec<Element>),
    /// `geo_removed_*`: elements to add, to remove.
    removed: (Vec<Element>, Vec<Element>),
    /// What `geo_added_*` and `geo_removed_*` hold after: the database's addresses the
    /// base lacks, and the base's addresses the database no longer has.
    after: (Vec<AddrRange>, Vec<AddrRange>),
}

impl DeltaPlan {
    fn new(b: &Build, rec: &Applied) -> DeltaPlan {
        let mut base_ranges = 0;
        let families = [Family::V4, Family::V6]
            .into_iter()
            .map(|family| {
                let want = &b
                    .ruleset
                    .set(&Gate::set_name(family))
                    .expect("the gate's sets")
                    .elements;
                let base = rec.base.of(family);
                base_ranges += base.len();
                let (new_added, new_removed) = differences(want, base);
                FamilyPlan {
                    family,
                    added_set: Gate::added_set_name(family),
                    removed_set: Gate::removed_set_name(family),
                    added: range_changes(&new_added, rec.delta.added(family)),
                    removed: range_changes(&new_removed, rec.delta.removed(family)),
                    after: (new_added, new_removed),
                }
            })
            .collect();
        DeltaPlan {
            families,
            base_ranges,
        }
    }

    /// Ranges the gate gains: added to `geo_added_*`, or no longer in `geo_removed_*`.
    fn gate_added(&self) -> usize {
        self.families
            .iter()
            .map(|f| f.added.0.len() + f.removed.1.len())
            .sum()
    }

    /// Ranges the gate loses: no longer in `geo_added_*`, or added to `geo_removed_*`.
    fn gate_removed(&self) -> usize {
        self.families
            .iter()
            .map(|f| f.added.1.len() + f.removed.0.len())
            .sum()
    }

    /// Why the base sets are to be loaded in full instead of a delta, if they are: the
    /// difference from the base outgrew [`MIN_FOLD_RANGES`] and a sixteenth of the base.
    fn fold_reason(&self) -> Option<&'static str> {
        let delta: usize = self
            .families
            .iter()
            .map(|f| f.after.0.len() + f.after.1.len())
            .sum();
        (delta > MIN_FOLD_RANGES.max(self.base_ranges / 16))
            .then_some("the ranges changed since the geo gate was last loaded in full are many")
    }

    /// The transaction: the elements of `geo_added_*` and `geo_removed_*` that change.
    fn set_changes(&self) -> Vec<SetChange<'_>> {
        self.families
            .iter()
            .flat_map(|f| {
                [(&f.added_set, &f.added), (&f.removed_set, &f.removed)].map(
                    |(set, (add, remove))| SetChange {
                        set,
                        family: f.family,
                        kind: SetKind::Addresses,
                        remove,
                        add,
                    },
                )
            })
            .collect()
    }

    /// What the journal records: what the small sets hold after, per family.
    fn delta(&self) -> Delta {
        let mut d = Delta::default();
        for f in &self.families {
            let (added, removed) = f.after.clone();
            match f.family {
                Family::V4 => (d.v4_added, d.v4_removed) = (added, removed),
                Family::V6 => (d.v6_added, d.v6_removed) = (added, removed),
            }
        }
        d
    }
}

/// `(want − base, base − want)`, address by address, of two sorted, disjoint lists: what
/// `geo_added_*` and `geo_removed_*` hold for a gate of `want` over a base set of `base`.
/// Ranges found in both lists, most of them, are passed over in one step.
fn differences(want: &[Element], base: &[AddrRange]) -> (Vec<AddrRange>, Vec<AddrRange>) {
    let same = |i: usize, j: usize| matches!((want.get(i), base.get(j)), (Some(w), Some(h)) if w.range == *h);
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < want.len() || j < base.len() {
        if same(i, j) {
            i += 1;
            j += 1;
            continue;
        }
        // A run of ranges that differ, to the next pair of equal ranges (nothing before
        // that pair reaches into it: both lists are sorted and disjoint).
        let (i0, j0) = (i, j);
        loop {
            match (want.get(i), base.get(j)) {
                (Some(w), Some(h)) if w.range.end <= h.end => i += 1,
                (_, Some(_)) => j += 1,
                (Some(_), None) => i += 1,
                (None, None) => break,
            }
            if same(i, j) {
                break;
            }
        }
        added.extend(difference(&want[i0..i], &base[j0..j]));
        removed.extend(difference(&base[j0..j], &want[i0..i]));
    }
    (added, removed)
}

/// Records a delta the kernel has (or a new key for the same ranges) in the journal of the
/// record. Nothing is written when neither the small sets nor the key changed. A journal
/// grown to a quarter of the record is written again with this delta alone (the base
/// record, like the kernel's base sets, stays). A failure removes the record (the next
/// update applies in full) with a warning, as [`record_gate`] does.
fn journal_gate(ctx: &Ctx, b: &Build, rec: &mut Applied, delta: &Delta) {
    let Some(key) = b.geo.key.as_deref() else {
        return record_gate(ctx, b);
    };
    if *delta == rec.delta && rec.key == key {
        return;
    }
    let (rows, missing) = (b.geo.rows as u64, &b.geo.missing);
    if let Err(e) = rec.append_delta(&ctx.paths, key, rows, missing, delta) {
        let _ = Applied::remove(&ctx.paths);
        ctx.warn_state_unsaved(format_args!(
            "could not record the geo gate: {}",
            crate::error_chain(&e)
        ));
    }
}

/// Applies the whole ruleset: the base sets get the database's ranges, the sets of ranges
/// added and removed since are emptied, and the record is written anew. `why` says why it
/// was not a delta.
fn full(
    ctx: &Ctx,
    b: &Build,
    lock: &crate::store::StoreLock,
    force: bool,
    report: &mut UpdateReport,
    why: &str,
) -> Result<Outcome> {
    let flows = apply_ruleset(ctx, b, lock, force)?;
    report.apply = "full";
    report.netlink_writes = 1;
    report.added = b.geo.ranges_v4 + b.geo.ranges_v6;
    ctx.say(format_args!("{why}; applied the full ruleset"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::merge_in_place;

    fn r(a: u128, b: u128) -> AddrRange {
        AddrRange {
            family: Family::V4,
            start: a,
            end: b,
        }
    }

    #[test]
    fn differences_of_a_gate_and_its_base_are_the_two_differences() {
        // Shared ranges around runs that differ, and lists that end unevenly.
        let base = [r(0, 10), r(20, 30), r(40, 50), r(60, 70)];
        let want = [r(0, 10), r(20, 25), r(27, 35), r(40, 50), r(80, 90)];
        assert_eq!(
            differences(&elements_of(&want), &base),
            (vec![r(31, 35), r(80, 90)], vec![r(26, 26), r(60, 70)])
        );
        assert_eq!(differences(&[], &base), (vec![], base.to_vec()));
        // Against `difference` both ways, on random gates made from a random base by
        // dropping, moving and adding ranges (most ranges shared, as in an update).
        let mut rng = crate::compile::tests::Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2_000 {
            let base = crate::geo::tests::random_ranges(&mut rng, 400, 6);
            let mut next = |n: u64| rng.below(n);
            let mut want: Vec<AddrRange> = Vec::new();
            for b in &base {
                match next(8) {
                    0 => {}
                    1 => want.push(r(b.start, b.end + 1 + next(3) as u128)),
                    2 if b.end > b.start => want.push(r(b.start + 1, b.end)),
                    _ => want.push(*b),
                }
                if next(6) == 0 {
                    let s = b.end + 3 + next(3) as u128;
                    want.push(r(s, s + next(2) as u128));
                }
            }
            merge_in_place(&mut want);
            let (added, removed) = differences(&elements_of(&want), &base);
            assert_eq!(added, difference(&want, &base), "{want:?} over {base:?}");
            assert_eq!(removed, difference(&base, &want), "{want:?} over {base:?}");
        }
    }

    #[test]
    fn range_changes_are_the_elements_to_add_and_remove() {
        let (add, remove) = range_changes(&[r(0, 1), r(5, 6), r(9, 9)], &[r(0, 1), r(4, 6)]);
        assert_eq!(add, elements_of(&[r(5, 6), r(9, 9)]));
        assert_eq!(remove, elements_of(&[r(4, 6)]));
        // Unsorted input is compared as sets.
        let (add, remove) = range_changes(&[r(9, 9), r(0, 1)], &[r(0, 1)]);
        assert_eq!((add, remove), (elements_of(&[r(9, 9)]), vec![]));
    }

    fn elements_of(v: &[AddrRange]) -> Vec<Element> {
        elements(v.to_vec())
    }
}
