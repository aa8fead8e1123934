//! `pbxwall ban`, `unban`, `bans`: sources dropped before anything else looks at them.
//!
//! A ban is an element of the dynamic set `ban_v4` or `ban_v6` with a timeout: the input
//! chain drops its packets right after loopback, before the conntrack rule (so its running
//! flows die too) and before trusted networks and accounts (a ban beats an account). These
//! commands are element operations only (one small netlink batch; a long `ban --stdin`
//! list in pieces, see [`ban`]), never a full apply; the banned sources' conntrack entries
//! are ended at once, and every change is recorded in the state folder with its absolute
//! expiry, so a ban survives `restart`, `ipchecker` and a reboot ([`crate::dynstate`]). The kernel removes an element when its timeout runs out,
//! with no process involved.
//!
//! Where a ban came from is its comment: `f2b:JAIL` is fail2ban (the shipped action),
//! none is the guard (the kernel adds those itself), anything else was given by hand
//! (`manual` when no `--comment` was given).

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::BufRead;
use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;

use super::{Ctx, Outcome, UsageError, ssh_session};
use crate::addrset::Family;
use crate::compile::{BAN_SET, set_name};
use crate::dynstate::DynamicState;
use crate::model::{self, Duration, Settings};
use crate::nft::netlink::{self, TimedChange, conntrack};
use crate::ruleset::{MAX_ELEMENT_COMMENT, TimedElement};
use crate::store;

/// The end of `pbxwall ban --help`.
pub const LONG_HELP: &str = "\
A ban drops every packet of the source right after loopback: before established flows (its
running calls and connections end too; their conntrack entries are removed at once), before
trusted networks and accounts (a ban beats an account). It is an element of the kernel set
ban_v4 or ban_v6 with a timeout: no restart, and the kernel lets the source in again when
the time runs out. Bans survive restart, ipchecker and a reboot (recorded in the state
folder with their expiry). Banning an address of a trusted network, of the account
pbx-self or this SSH session's client needs --force.

fail2ban: the shipped action pbxwall.conf calls `pbxwall ban --for <bantime> --comment
f2b:<jail>` and `pbxwall unban`; `pbxwall bans` shows each ban's origin: manual, guard (the
[guard] meters of the SIP layer) or fail2ban.

Exit status: 0 done, 1 nothing changed (the table is not loaded, the kernel refused), 2 a
bad address, duration or comment, or a protected address without --force (nothing
changed), 3 banned but their flows could not all be ended or the state not recorded.";

/// `pbxwall ban`: drop every packet of some sources for a while.
#[derive(Debug, Clone, Args)]
pub struct BanArgs {
    /// IPv4 or IPv6 addresses to ban, also comma-separated (single addresses, not networks)
    #[arg(value_name = "ADDR")]
    pub addrs: Vec<String>,
    /// How long, e.g. 90s, 10m, 2h, 7d, 1h30m (1s to 365d) [default: [guard] ban_for, 1h]
    #[arg(long = "for", value_name = "DUR")]
    pub duration: Option<String>,
    /// Why, shown by `bans` (at most 128 bytes); `f2b:JAIL` marks a ban by fail2ban
    #[arg(long, value_name = "T")]
    pub comment: Option<String>,
    /// Ban even an address of a trusted network, of the account pbx-self, or this SSH
    /// session's client
    #[arg(long)]
    pub force: bool,
    /// Also read addresses from standard input, one a line (blank lines and # comments
    /// skipped)
    #[arg(long)]
    pub stdin: bool,
}

/// `pbxwall unban`: end bans now.
#[derive(Debug, Clone, Args)]
pub struct UnbanArgs {
    /// Banned addresses to let in again, also comma-separated
    #[arg(value_name = "ADDR", required = true)]
    pub addrs: Vec<String>,
}

/// `pbxwall bans`: list the bans.
#[derive(Debug, Clone, Args)]
pub struct BansArgs {}

/// Where a ban came from, by its comment.
pub fn origin(comment: Option<&str>) -> &'static str {
    match comment {
        None => "guard",
        Some(c) if c.starts_with("f2b:") => "fail2ban",
        Some(_) => "manual",
    }
}

/// Addresses from the command line (comma-separated too) and, with `stdin`, one a line
/// from `input`; a bad one is a usage error naming it (and its line). Each address once,
/// canonical, in order.
fn parse_addrs(args: &[String], stdin: Option<&mut dyn BufRead>) -> Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for a in args
        .iter()
        .flat_map(|a| a.split(','))
        .filter(|a| !a.is_empty())
    {
        out.push(model::parse_ban_address(a).map_err(UsageError::bad_value)?);
    }
    if let Some(input) = stdin {
        let text = read_all(input)?;
        scan_lines(&text, |a| {
            out.push(a);
            Ok(())
        })
        .map_err(Stop::into_error)?;
    }
    let mut seen = AddrSet::with_capacity_and_hasher(out.len(), Default::default());
    out.retain_mut(|a| {
        *a = a.to_canonical();
        seen.insert(*a)
    });
    Ok(out)
}

/// Standard input, read at once (a block list of 100,000 lines, without a String per
/// line).
fn read_all(input: &mut dyn BufRead) -> Result<String> {
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .context("cannot read standard input")?;
    Ok(text)
}

/// Why [`scan_lines`] or the parsing side of a bulk ban stopped.
enum Stop {
    /// A bad line, or an address that needs `--force`: a usage error.
    Bad(UsageError),
    /// The sending side gave up (the kernel refused a piece).
    Hung,
}

impl Stop {
    fn into_error(self) -> anyhow::Error {
        match self {
            Stop::Bad(e) => e.into(),
            Stop::Hung => anyhow::anyhow!("the ban stopped"),
        }
    }
}

/// Calls `each` with the address of every line of `text` in order (blank lines and #
/// comments skipped); a bad line stops it with a usage error naming the line.
fn scan_lines(text: &str, mut each: impl FnMut(IpAddr) -> Result<(), Stop>) -> Result<(), Stop> {
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        // Most lines are plain unicast addresses: those skip the checks for a port, a
        // prefix length and the special-purpose blocks; anything else goes the full way.
        let addr = match crate::addrset::parse_plain(t.as_bytes())
            .map_or_else(|| t.parse::<IpAddr>(), Ok)
        {
            Ok(a) if plainly_unicast(a) => a,
            _ => model::parse_ban_address(t).map_err(|e| {
                Stop::Bad(UsageError(format!("line {} of standard input: {e}", i + 1)))
            })?,
        };
        each(addr)?;
    }
    Ok(())
}

/// A set of addresses hashed by [`AddrHasher`].
type AddrSet = HashSet<IpAddr, BuildHasherDefault<AddrHasher>>;

/// A hasher for a set of addresses: the bits of the address multiplied and mixed, a few
/// nanoseconds against SipHash's 20 (a bulk ban puts 100,000 addresses in a set). Not
/// keyed: the addresses come from root's own command line or list.
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_ne_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(n.into());
    }

    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }

    fn write_isize(&mut self, n: isize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        // The finalizer of MurmurHash3: every input bit reaches the high bits, which the
        // table's control bytes use.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// Whether `addr` lies outside every special-purpose block ([`model::check_unicast`]) by
/// its first bits alone: IPv4 not in 0/8, 127/8, 169.254/16 (all of 169/8 here), 224/4
/// or 255.255.255.255; IPv6 not in ::/96, ::ffff:0:0/96, ::ffff:0:0:0/96 (all of 0::/16
/// here), 64:ff9b::/96, 64:ff9b:1::/48 (all of 64::/16), fe80::/10 or ff00::/8. `false`
/// means "not sure": [`model::parse_ban_address`] decides.
fn plainly_unicast(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => !matches!(a.octets()[0], 0 | 127 | 169 | 224..),
        IpAddr::V6(a) => !matches!(a.segments()[0], 0 | 0x64 | 0xfe80..=0xfebf | 0xff00..),
    }
}

/// Why banning `addr` needs `--force`, if it does: a trusted network, the account
/// pbx-self, or this SSH session's client.
fn protected(
    addr: IpAddr,
    settings: &Settings,
    pbx_self: &[ipnet::IpNet],
    ssh: Option<IpAddr>,
) -> Option<String> {
    if let Some(net) = settings.trusted.iter().find(|n| n.contains(&addr)) {
        return Some(format!(
            "it is in the trusted network {}",
            model::display_net(net)
        ));
    }
    if pbx_self.iter().any(|n| n.contains(&addr)) {
        return Some(format!(
            "it is an address of this server (account {})",
            super::init::SELF_ACCOUNT
        ));
    }
    if ssh.is_some_and(|s| s.to_canonical() == addr) {
        return Some("it is the client of this SSH session".into());
    }
    None
}

/// The addresses of the account pbx-self, when it exists and reads.
fn pbx_self_addresses(ctx: &Ctx) -> Vec<ipnet::IpNet> {
    let Ok(name) = super::init::SELF_ACCOUNT.parse::<model::AccountName>() else {
        return Vec::new();
    };
    let file = ctx.paths.account_file(&name);
    let Ok(profiles) = store::load_profiles(&ctx.paths) else {
        return Vec::new();
    };
    store::read_optional(&file)
        .ok()
        .flatten()
        .and_then(|t| store::parse_account(&file, &t, &profiles).ok())
        .map(|a| a.addresses)
        .unwrap_or_default()
}

/// The live elements of both ban sets; an error when the table is not loaded.
fn live_bans() -> Result<Vec<(Family, TimedElement)>> {
    let mut out = Vec::new();
    for family in [Family::V4, Family::V6] {
        let set = set_name(BAN_SET, family);
        let live =
            netlink::list_timed_elements(&set).with_context(|| format!("cannot read set {set}"))?;
        let Some(live) = live else {
            bail!("set {set} of table inet pbxwall is not loaded (run restart first)");
        };
        out.extend(live.into_iter().map(|e| (family, e)));
    }
    Ok(out)
}

/// The state record with `addrs` (to sets `names`, by family) recorded at `now` with
/// `timeout` and `comment`, written to its temporary file and synced, for
/// [`store::Staged::commit`] once the ban is live; and the warning of a record that could
/// not be read.
fn stage_record(
    paths: &store::Paths,
    names: &[String; 2],
    addrs: &[Vec<IpAddr>; 2],
    timeout: Option<std::time::Duration>,
    comment: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> (Result<store::Staged, store::StoreError>, Option<String>) {
    let (mut state, warning) = DynamicState::load(paths);
    for i in 0..2 {
        state.record_all(&names[i], &addrs[i], timeout, Some(comment), now);
    }
    (state.stage(paths), warning)
}

/// New addresses a bulk ban sends to the kernel in one transaction while the rest of the
/// list is still being parsed. The kernel takes as long for 100,000 elements in pieces of
/// 5,000 to 50,000 as in one transaction (measured), and pbxwall parses the next piece
/// meanwhile.
const PIECE: usize = 8192;

/// The first piece is smaller: the kernel starts sooner.
const FIRST_PIECE: usize = 2048;

/// What the parsing side of a ban hands the sending side, by family (index 0: IPv4).
enum Piece {
    /// Addresses not banned now: added in a transaction of their own.
    New([Vec<IpAddr>; 2]),
    /// The end of the list, in one transaction: the addresses banned already (removed and
    /// added again, so that the new timeout and comment hold) and the last new ones.
    Last {
        replace: [Vec<IpAddr>; 2],
        new: [Vec<IpAddr>; 2],
    },
}

/// Index of an address's family in the by-family arrays.
fn family_index(a: IpAddr) -> usize {
    usize::from(Family::of(a) == Family::V6)
}

/// What the parsing side of a ban found.
struct Parsed {
    /// Every address, once, by family, in order.
    by_family: [Vec<IpAddr>; 2],
    /// The same addresses as a set (their flows end afterwards).
    sources: AddrSet,
    /// The first eleven addresses, in order (a short ban names them).
    first: Vec<IpAddr>,
}

/// The parsing side of a ban: `cli` and then the lines of `text`, each address once,
/// checked by `check`; addresses banned now (`live`) are held back for the last piece,
/// the others are sent on `to` in pieces of `piece` (the first one smaller). Stops at the first bad line or
/// refused address, or when the sending side hangs up.
fn feed(
    cli: &[IpAddr],
    text: &str,
    check: &(dyn Fn(IpAddr) -> Result<(), UsageError> + Sync),
    live: &AddrSet,
    piece: usize,
    to: &std::sync::mpsc::Sender<Piece>,
) -> Result<Parsed, Stop> {
    let mut parsed = Parsed {
        by_family: Default::default(),
        sources: AddrSet::with_capacity_and_hasher(cli.len() + text.len() / 16, Default::default()),
        first: Vec::new(),
    };
    let mut replace: [Vec<IpAddr>; 2] = Default::default();
    let mut new: [Vec<IpAddr>; 2] = Default::default();
    let mut limit = piece.min(FIRST_PIECE);
    let mut take = |a: IpAddr| -> Result<(), Stop> {
        let a = a.to_canonical();
        if !parsed.sources.insert(a) {
            return Ok(());
        }
        check(a).map_err(Stop::Bad)?;
        let i = family_index(a);
        parsed.by_family[i].push(a);
        if parsed.first.len() <= 10 {
            parsed.first.push(a);
        }
        if live.contains(&a) {
            replace[i].push(a);
        } else {
            new[i].push(a);
            if new[0].len() + new[1].len() >= limit {
                to.send(Piece::New(std::mem::take(&mut new)))
                    .map_err(|_| Stop::Hung)?;
                limit = piece;
            }
        }
        Ok(())
    };
    for a in cli {
        take(*a)?;
    }
    scan_lines(text, &mut take)?;
    to.send(Piece::Last { replace, new })
        .map_err(|_| Stop::Hung)?;
    Ok(parsed)
}

/// One transaction of a ban: removes `replace` and adds `replace` and `new` with `timeout`
/// and `comment`. An error means this transaction changed nothing.
fn send_piece(
    names: &[String; 2],
    replace: &[Vec<IpAddr>; 2],
    new: &[Vec<IpAddr>; 2],
    timeout: Option<std::time::Duration>,
    comment: &str,
) -> Result<()> {
    let changes: Vec<netlink::BulkAdd> = (0..2)
        .map(|i| netlink::BulkAdd {
            set: &names[i],
            family: [Family::V4, Family::V6][i],
            replace: &replace[i],
            new: &new[i],
        })
        .collect();
    netlink::add_timed_bulk(&changes, timeout, Some(comment)).map_err(|e| match &e {
        // The kernel's "set full" is ENFILE, whose text ("Too many open files in system")
        // would mislead.
        netlink::NetlinkError::Rejected { source, .. }
            if source.raw_os_error() == Some(libc::ENFILE) =>
        {
            sets_full()
        }
        _ => anyhow::Error::new(e).context("the kernel refused the ban; nothing changed"),
    })?;
    Ok(())
}

/// The error of a ban that does not fit the ban sets.
fn sets_full() -> anyhow::Error {
    anyhow::anyhow!(
        "the ban sets are full: ban_v4 and ban_v6 hold at most {} addresses each (bans live \
         and being added); nothing changed",
        crate::compile::BAN_SET_SIZE
    )
}

/// Removes `remove` (IPv4, IPv6) from the ban sets `names` in one transaction.
fn remove_bans(
    names: &[String; 2],
    remove: &[Vec<IpAddr>; 2],
) -> Result<netlink::ApplyStats, netlink::NetlinkError> {
    let changes: Vec<TimedChange> = (0..2)
        .map(|i| TimedChange {
            set: &names[i],
            family: [Family::V4, Family::V6][i],
            remove: &remove[i],
            add: &[],
        })
        .collect();
    netlink::update_timed_sets(&changes)
}

/// Removes `added` (by family) from the ban sets again: what the first transactions of a
/// ban added before a later one failed. Only addresses that were not banned before are
/// in it. An address that is no longer an element (it ran out, or was unbanned meanwhile)
/// would make the kernel refuse the whole removal, so after such a refusal the live sets
/// are read and only what is still there is removed.
fn take_back(names: &[String; 2], added: &[Vec<IpAddr>; 2]) -> Result<()> {
    let mut remove: [Vec<IpAddr>; 2] = added.clone();
    for attempt in 0..3 {
        match remove_bans(names, &remove) {
            Ok(_) => return Ok(()),
            Err(netlink::NetlinkError::Rejected { source, .. })
                if source.raw_os_error() == Some(libc::ENOENT) && attempt < 2 =>
            {
                let live: AddrSet = live_bans()?.iter().map(|(_, e)| e.addr).collect();
                for list in &mut remove {
                    list.retain(|a| live.contains(a));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    bail!("the ban sets kept changing")
}

/// `pbxwall ban ADDR... [--for DUR] [--comment T] [--force] [--stdin]`.
///
/// A long list goes to the kernel in pieces (8,192 new addresses a transaction) while
/// the rest is still being parsed, and the state record is written while the kernel works
/// through the last pieces. Every failure leaves the bans as they were: a bad line or an
/// address that needs `--force` further down the list, or a piece the kernel refuses,
/// takes the pieces already sent back out of the sets (only addresses that were not
/// banned before are in them: the ones banned already are replaced in the last
/// transaction, all or nothing). A list that could fill a ban set is parsed whole first
/// and refused before anything is sent when it does not fit.
pub fn ban(ctx: &Ctx, args: BanArgs) -> Result<Outcome> {
    let duration = match &args.duration {
        Some(d) => Some(d.parse::<Duration>().map_err(UsageError::bad_value)?),
        None => None,
    };
    if let Some(c) = &args.comment
        && (c.len() > MAX_ELEMENT_COMMENT || c.chars().any(char::is_control))
    {
        return Err(UsageError(format!(
            "invalid comment {:?}: at most {MAX_ELEMENT_COMMENT} bytes of printable text",
            model::printable(c)
        ))
        .into());
    }
    let cli = parse_addrs(&args.addrs, None)?;
    let text = if args.stdin {
        read_all(&mut std::io::stdin().lock())?
    } else {
        String::new()
    };
    if cli.is_empty()
        && !text.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        })
    {
        if args.stdin {
            ctx.say("no address on standard input; nothing banned");
            return Ok(Outcome::Done);
        }
        return Err(UsageError(
            "no address given: name at least one, e.g. pbxwall ban 203.0.113.7 (or use --stdin)"
                .into(),
        )
        .into());
    }
    let settings = store::load_settings(&ctx.paths)?;
    let pbx_self = if args.force {
        Vec::new()
    } else {
        pbx_self_addresses(ctx)
    };
    let ssh = ssh_session().map(|(a, _)| a);
    let force = args.force;
    let check = |a: IpAddr| -> Result<(), UsageError> {
        match protected(a, &settings, &pbx_self, ssh).filter(|_| !force) {
            Some(why) => Err(UsageError(format!(
                "refusing to ban {a}: {why}; use --force to ban it anyway (nothing changed)"
            ))),
            None => Ok(()),
        }
    };
    let duration = duration.unwrap_or(settings.guard.ban_for);
    let timeout = Some(duration.to_std());
    let comment = args.comment.clone().unwrap_or_else(|| "manual".into());
    let _lock = ctx.lock()?;
    let names = [set_name(BAN_SET, Family::V4), set_name(BAN_SET, Family::V6)];
    let live = live_bans().map_err(|e| e.context("nothing banned"))?;
    let mut live_count = [0usize; 2];
    for (family, _) in &live {
        live_count[usize::from(*family == Family::V6)] += 1;
    }
    let live: AddrSet = live.into_iter().map(|(_, e)| e.addr).collect();
    // Pieces only when the whole list cannot overfill a set: then nothing is sent before
    // the count is known.
    let most = cli.len() + text.bytes().filter(|&b| b == b'\n').count() + 1;
    let fits = live_count
        .iter()
        .all(|n| n + most <= crate::compile::BAN_SET_SIZE as usize);
    let piece = if fits { PIECE } else { usize::MAX };
    // The recorded expiry counts from just before the first piece is sent.
    let now = chrono::Utc::now();
    let paths = &ctx.paths;
    let (done, failure, added) = std::thread::scope(|s| {
        // Unbounded: the parsing side runs ahead of the kernel, so that the record is written
        // while the kernel still works through the pieces.
        let (to, from) = std::sync::mpsc::channel::<Piece>();
        let (cli, text, live, check, names, comment) =
            (&cli, &text, &live, &check, &names, &comment);
        // The parsing side; once the last piece is out, it merges the ban into the state
        // record and writes it to a temporary file while the kernel works, put in place
        // only once the ban is live (dropped otherwise).
        let parsing = s.spawn(move || {
            let parsed = feed(cli, text, check, live, piece, &to)?;
            drop(to);
            let staged = stage_record(paths, names, &parsed.by_family, timeout, comment, now);
            Ok::<_, Stop>((parsed, staged))
        });
        let mut added: [Vec<IpAddr>; 2] = Default::default();
        let mut failure = None;
        for p in from.iter() {
            let (replace, new) = match p {
                Piece::New(new) => (Default::default(), new),
                Piece::Last { replace, new } => (replace, new),
            };
            if (0..2).any(|i| {
                live_count[i] + added[i].len() + new[i].len()
                    > crate::compile::BAN_SET_SIZE as usize
            }) {
                failure = Some(sets_full());
                break;
            }
            if let Err(e) = send_piece(names, &replace, &new, timeout, comment) {
                failure = Some(e);
                break;
            }
            for i in 0..2 {
                added[i].extend_from_slice(&new[i]);
            }
        }
        // Hangs up on the parsing side if it is still at work.
        drop(from);
        let done = parsing.join();
        (done, failure, added)
    });
    let done = match (done, failure) {
        (Ok(Ok(done)), None) => Ok(done),
        (Ok(Err(Stop::Bad(e))), _) => Err(e.into()),
        (_, Some(e)) => Err(e),
        (Ok(Err(Stop::Hung)), None) => Err(anyhow::anyhow!(
            "the ban stopped before its end; nothing changed"
        )),
        (Err(_), None) => Err(anyhow::anyhow!(
            "parsing the addresses failed unexpectedly; nothing changed"
        )),
    };
    let (parsed, (staged, warning)) = match done {
        Ok(done) => done,
        Err(e) => {
            if let Err(back) = take_back(&names, &added) {
                let n = added[0].len() + added[1].len();
                let first = format!("{e:#}").replace("; nothing changed", "");
                return Err(anyhow::anyhow!(
                    "{first}; and {n} addresses the first transactions banned could not be \
                     taken back ({back:#}): they stay banned until their timeout runs out \
                     (pbxwall bans lists them)"
                ));
            }
            return Err(e);
        }
    };
    if let Some(w) = warning {
        ctx.warn(w);
    }
    if let Err(e) = staged.and_then(|s| s.commit()) {
        ctx.warn_state_unsaved(format_args!(
            "the ban is live, but recording it failed (a reboot would lose it): {}",
            crate::error_chain(&e)
        ));
    }
    let count = parsed.by_family[0].len() + parsed.by_family[1].len();
    let what = if count <= 10 {
        parsed
            .first
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        format!("{count} addresses")
    };
    let why = match origin(Some(&comment)) {
        "manual" if comment == "manual" => "manual".to_owned(),
        o => format!("{o}: {comment}"),
    };
    let line = format!("banned {what} for {duration} ({why})");
    ctx.say(&line);
    ctx.audit(&line);
    let keep = super::lockout::own_ssh_flow();
    let mut outcome = Outcome::Done;
    match conntrack::end_flows_from(&parsed.sources, keep.as_ref()) {
        Ok(ended) => {
            if let Some(s) = ended.summary() {
                ctx.say(s.replace("that lost access", "banned"));
            }
            for p in &ended.problems {
                ctx.warn(p);
                outcome = Outcome::Degraded;
            }
        }
        Err(e) => {
            ctx.warn(format_args!(
                "banned, but their running flows could not be ended: {}; the ban drops \
                 their packets anyway",
                crate::error_chain(&e)
            ));
            outcome = Outcome::Degraded;
        }
    }
    Ok(outcome)
}

/// `pbxwall unban ADDR...`: an address that is not banned is said and is no error (a ban
/// that ran out before fail2ban's unban).
pub fn unban(ctx: &Ctx, args: UnbanArgs) -> Result<Outcome> {
    let addrs = parse_addrs(&args.addrs, None)?;
    if addrs.is_empty() {
        return Err(UsageError("no address given: name at least one".into()).into());
    }
    let lock = ctx.lock()?;
    let live = live_bans().map_err(|e| e.context("nothing unbanned"))?;
    let live_addrs: HashSet<IpAddr> = live.iter().map(|(_, e)| e.addr).collect();
    let mut removes: [Vec<IpAddr>; 2] = Default::default();
    for a in &addrs {
        if live_addrs.contains(a) {
            removes[usize::from(Family::of(*a) == Family::V6)].push(*a);
        } else {
            ctx.say(format_args!("{a} is not banned"));
        }
    }
    let names = [set_name(BAN_SET, Family::V4), set_name(BAN_SET, Family::V6)];
    remove_bans(&names, &removes).context("the kernel refused the unban; nothing changed")?;
    let (mut state, warning) = DynamicState::load(&ctx.paths);
    if let Some(w) = warning {
        ctx.warn(w);
    }
    for name in &names {
        state.remove(name, &addrs);
    }
    if let Err(e) = state.save(&ctx.paths, &lock) {
        ctx.warn_state_unsaved(format_args!(
            "unbanned, but recording it failed (restart could bring the ban back): {}",
            crate::error_chain(&e)
        ));
    }
    for a in removes.iter().flatten() {
        let line = format!("unbanned {a}");
        ctx.say(&line);
        ctx.audit(&line);
    }
    Ok(Outcome::Done)
}

/// One ban as `bans --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct BanEntry {
    /// The address.
    pub address: IpAddr,
    /// Seconds left (`null`: no timeout).
    pub expires_in_s: Option<u64>,
    /// When it ends (RFC 3339, UTC; `null`: no timeout).
    pub expires_at: Option<String>,
    /// `manual`, `guard` or `fail2ban`.
    pub origin: &'static str,
    /// Its comment (`null` for the guard's).
    pub comment: Option<String>,
}

/// The live bans, sorted by address.
pub fn ban_entries() -> Result<Vec<BanEntry>> {
    let now = chrono::Utc::now();
    Ok(live_bans()?
        .into_iter()
        .map(|(_, e)| BanEntry {
            address: e.addr,
            expires_in_s: e.expires.map(|d| d.as_secs()),
            expires_at: e.expires.map(|d| {
                (now + chrono::Duration::from_std(d).unwrap_or_default())
                    .format("%Y-%m-%dT%H:%M:%SZ")
                    .to_string()
            }),
            origin: origin(e.comment.as_deref()),
            comment: e.comment,
        })
        .collect())
}

/// `90s` → `1m30s`: a time left as users write durations (`0s` under a second).
pub fn left_text(secs: Option<u64>) -> String {
    match secs {
        None => "no timeout".into(),
        Some(0) => "0s".into(),
        Some(s) => Duration::from_secs(s.min(Duration::MAX_SECS))
            .map(|d| d.to_string())
            .unwrap_or_default(),
    }
}

/// `pbxwall bans [--json]`.
pub fn bans(ctx: &Ctx, _args: BansArgs) -> Result<Outcome> {
    let entries = ban_entries()?;
    if ctx.json {
        ctx.print_json(&serde_json::json!({ "bans": entries }))?;
        return Ok(Outcome::Done);
    }
    if entries.is_empty() {
        ctx.say("no bans");
    }
    for e in &entries {
        ctx.say(format_args!(
            "{:<39} {:>10} left  {:<8} {}",
            e.address,
            left_text(e.expires_in_s),
            e.origin,
            e.comment
                .as_deref()
                .filter(|c| *c != "manual")
                .unwrap_or("")
        ));
    }
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_from_arguments_and_lines() {
        let args = vec!["192.0.2.7,2001:db8::7".to_string(), "192.0.2.7".into()];
        let mut input: &[u8] = b"# list\n\n198.51.100.9\n  203.0.113.4  \n";
        let got = parse_addrs(&args, Some(&mut input as &mut dyn BufRead)).unwrap();
        let want: Vec<IpAddr> = ["192.0.2.7", "2001:db8::7", "198.51.100.9", "203.0.113.4"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want);
        let mut bad: &[u8] = b"192.0.2.1\n192.0.2.0/24\n";
        let err = parse_addrs(&[], Some(&mut bad as &mut dyn BufRead)).unwrap_err();
        assert!(err.downcast_ref::<UsageError>().is_some());
        assert!(
            err.to_string().starts_with("line 2 of standard input"),
            "{err}"
        );
        // A long list (parsed in two halves): order kept, the first bad line reported.
        let mut long = String::new();
        for i in 0..20_000u32 {
            long += &format!("2001:db8:7::{:x}\n", i + 1);
        }
        let got = parse_addrs(&[], Some(&mut long.as_bytes() as &mut dyn BufRead)).unwrap();
        assert_eq!(got.len(), 20_000);
        assert_eq!(got[0].to_string(), "2001:db8:7::1");
        assert_eq!(got[19_999].to_string(), "2001:db8:7::4e20");
        let mut bad_late = long.clone() + "nonsense\n";
        bad_late.insert_str(0, "\n# comment\n");
        let err = parse_addrs(&[], Some(&mut bad_late.as_bytes() as &mut dyn BufRead))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 20003 of standard input"), "{err}");
        let bad_both = format!("x\n{long}y\n");
        let err = parse_addrs(&[], Some(&mut bad_both.as_bytes() as &mut dyn BufRead))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 1 of standard input"), "{err}");
        for s in [
            "192.0.2.0/24",
            "0.0.0.0",
            "127.0.0.1",
            "::ffff:192.0.2.1",
            "x",
            "::/0",
        ] {
            assert!(parse_addrs(&[s.into()], None).is_err(), "{s}");
        }
    }

    #[test]
    fn plainly_unicast_addresses_pass_the_full_check() {
        // Around the edges of every special-purpose block: whatever the fast path lets
        // through, the full check accepts too.
        let edges = [
            "0.0.0.0",
            "0.255.255.255",
            "1.0.0.0",
            "126.255.255.255",
            "127.0.0.1",
            "128.0.0.0",
            "168.255.255.255",
            "169.254.0.1",
            "169.255.0.1",
            "170.0.0.0",
            "223.255.255.255",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::2",
            "::ffff:1.2.3.4",
            "::ffff:0:1.2.3.4",
            "::1.2.3.4",
            "1::",
            "63:ffff::",
            "64::",
            "64:ff9b::1.2.3.4",
            "64:ff9b:1::1",
            "64:ff9c::",
            "65::",
            "fe7f:ffff::",
            "fe80::1",
            "febf:ffff::",
            "fec0::",
            "feff::",
            "ff00::1",
            "ff02::1",
            "2001:db8::1",
        ];
        for e in edges {
            let a: IpAddr = e.parse().unwrap();
            if plainly_unicast(a) {
                assert!(model::parse_ban_address(e).is_ok(), "{e}");
            }
        }
        assert!(plainly_unicast("192.0.2.1".parse().unwrap()));
        assert!(plainly_unicast("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn address_sets_tell_addresses_apart() {
        let mut set = AddrSet::default();
        for i in 0..10_000u32 {
            assert!(set.insert(IpAddr::V6(
                (0x2001_0db8_u128 << 96 | u128::from(i) << 64).into()
            )));
            assert!(set.insert(IpAddr::V4(i.into())));
        }
        assert_eq!(set.len(), 20_000);
        assert!(set.contains(&IpAddr::V4(7.into())));
        assert!(!set.contains(&IpAddr::V4(10_001.into())));
    }

    #[test]
    fn origins_come_from_the_comment() {
        assert_eq!(origin(None), "guard");
        assert_eq!(origin(Some("f2b:asterisk")), "fail2ban");
        assert_eq!(origin(Some("manual")), "manual");
        assert_eq!(origin(Some("spammer")), "manual");
    }

    #[test]
    fn trusted_self_and_ssh_need_force() {
        let s = Settings::default();
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        assert!(
            protected(ip("192.168.1.5"), &s, &[], None)
                .unwrap()
                .contains("trusted network 192.168.0.0/16")
        );
        let me = ["203.0.113.1/32".parse().unwrap()];
        assert!(protected(ip("203.0.113.1"), &s, &me, None).is_some());
        assert!(protected(ip("198.51.100.7"), &s, &me, Some(ip("198.51.100.7"))).is_some());
        assert!(protected(ip("198.51.100.8"), &s, &me, Some(ip("198.51.100.7"))).is_none());
    }
}
