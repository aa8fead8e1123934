//! `pbxwall init`: first-time setup, safe to run again.
//!
//! 1. Settings: trusted LAN ranges (none with `--cloud`), the RTP range from rtp.conf.
//!    An existing `pbxwall.toml` is kept as it is.
//! 2. Profile overrides for the ports this host really uses where they differ from the
//!    shipped profiles (sshd `Port`, PJSIP/chan_sip/IAX2 bind ports).
//! 3. Accounts: `pbx-self` (this server's own addresses, service all) and `admin` (the SSH
//!    client of this session and every `--admin ADDR`, services ssh, web, webmin).
//! 4. Apply, with the SSH lockout guard.
//!
//! Init says what it looked for and did not find (no sshd_config, no Asterisk folder, no SSH
//! client and no `--admin`: no admin account). A second run with the same inputs changes no
//! file, and applies only when table inet pbxwall is not loaded or differs from the files.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use clap::Args;
use ipnet::IpNet;

use super::{Ctx, Dns, Outcome, build, change_then_apply, ssh_session};
use crate::detect::{self, DetectedPorts};
use crate::diff;
use crate::model::{
    Account, AccountName, DEFAULT_TRUSTED, PortSpec, Profiles, check_rtp_ports, parse_source,
};
use crate::nft::netlink;
use crate::ruleset::{L4Proto, PortRange};
use crate::state::now_rfc3339;
use crate::store::{self, parse_account, render_account};

/// `pbxwall init --help`: exit codes, what init reads and writes, what a second run does.
pub const LONG_HELP: &str = "\
Exit status: 0 success, 1 error (nothing changed, the old ruleset stays live),
2 usage error, 3 applied but degraded (names left out, account files skipped, or running
flows of sources that lost access not ended).

Init writes pbxwall.toml (trusted LAN ranges, none with --cloud; the RTP range of
rtp.conf) unless it has settings of the administrator's, a local profile for ssh, sip-udp,
sip-tcp or iax when the ports read from --sshd-config and --asterisk-dir (pjsip.conf,
pjsip.transports.conf, sip.conf, iax.conf, rtp.conf) differ from the shipped ones, the
account pbx-self (this server's global addresses, service all) and the account admin (the
SSH client of this session and every --admin, services web, webmin, ssh), then applies with
the SSH lockout guard.

It says what it did not find: no sshd configuration or no Asterisk folder (the shipped
ports stay), no SSH client and no --admin (no admin account is written).

A second run with the same inputs changes no file; it applies only when table inet pbxwall
is not loaded or differs from the files, and says so.";

/// `pbxwall init`: first-time setup.
#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Trust no private range (for cloud servers, where other customers may use them)
    #[arg(long)]
    pub cloud: bool,
    /// The administrator's address or network (also taken from SSH_CONNECTION); repeatable
    #[arg(long, value_name = "ADDR")]
    pub admin: Vec<String>,
    /// sshd configuration to read the SSH port from
    #[arg(long, value_name = "PATH", default_value = "/etc/ssh/sshd_config")]
    pub sshd_config: PathBuf,
    /// Asterisk configuration folder to read SIP, IAX2 and RTP ports from
    #[arg(long, value_name = "DIR", default_value = "/etc/asterisk")]
    pub asterisk_dir: PathBuf,
    /// Apply even if the ruleset would cut off this SSH session's client
    #[arg(long)]
    pub force: bool,
    /// Only write the files; apply at the next restart
    #[arg(long)]
    pub no_restart: bool,
}

/// Name of the account holding this server's own addresses.
pub const SELF_ACCOUNT: &str = "pbx-self";
/// Name of the account holding the administrator's addresses.
pub const ADMIN_ACCOUNT: &str = "admin";
/// Services of the admin account.
pub const ADMIN_SERVICES: [&str; 3] = ["web", "webmin", "ssh"];

/// A file init wants to have, with its contents.
struct Planned {
    path: PathBuf,
    text: String,
    what: String,
}

/// `pbxwall init [--cloud] [--admin ADDR]...`.
pub fn init(ctx: &Ctx, args: InitArgs) -> Result<Outcome> {
    let profiles = store::load_profiles(&ctx.paths)?;
    let mut admins: Vec<IpNet> = Vec::new();
    for a in &args.admin {
        admins.push(parse_source(a, false).map_err(super::UsageError::bad_value)?);
    }
    if let Some((client, _)) = ssh_session() {
        let net = IpNet::from(client);
        if !admins.contains(&net) {
            admins.push(net);
        }
    }
    let detected = detect::detect(&args.sshd_config, &args.asterisk_dir);
    if let Some(rtp) = detected.rtp {
        check_rtp_ports(rtp, &profiles).with_context(|| {
            format!(
                "the RTP range of rtpstart/rtpend in {} is not taken over; set it to a range clear of the service ports (e.g. rtpstart=10000, rtpend=20000) and run init again",
                args.asterisk_dir.join("rtp.conf").display()
            )
        })?;
    }
    let own = own_addresses().context("listing this server's addresses with `ip -j addr`")?;

    let mut plan = Vec::new();
    plan.extend(settings_plan(ctx, args.cloud, detected.rtp)?);
    plan.extend(profile_overrides(ctx, &profiles, &detected));
    let lock = ctx.lock()?;
    let (has_own, has_admin) = (!own.is_empty(), !admins.is_empty());
    if !own.is_empty() {
        plan.extend(account_plan(
            ctx,
            &profiles,
            SELF_ACCOUNT,
            own,
            &["all"],
            "this server's own addresses (pbxwall init)",
        )?);
    }
    if !admins.is_empty() {
        plan.extend(account_plan(
            ctx,
            &profiles,
            ADMIN_ACCOUNT,
            admins,
            &ADMIN_SERVICES,
            "the administrator (pbxwall init)",
        )?);
    }

    if args.cloud {
        ctx.warn(
            "--cloud: no private range is trusted; some clouds route 10.0.0.0/8, 172.16.0.0/12, \
             192.168.0.0/16 and 100.64.0.0/10 between customers, so never trust them there",
        );
    }
    if !detected.sources.is_empty() {
        ctx.say(format_args!("read {}", detected.sources.join(", ")));
    }
    for line in not_found(&args, &detected, has_own, has_admin) {
        ctx.say(line);
    }
    let changed: Vec<&Planned> = plan
        .iter()
        .filter(|p| {
            store::read_optional(&p.path).ok().flatten().as_deref() != Some(p.text.as_str())
        })
        .collect();
    if changed.is_empty() {
        // Nothing to write: apply only when the kernel does not already hold what the files
        // say (not loaded, or changed behind pbxwall's back), and say so.
        if args.no_restart {
            ctx.say("nothing to change: pbxwall is set up");
            return Ok(Outcome::Done);
        }
        match live_differs(ctx, &lock)? {
            None => {
                ctx.say("nothing to change: pbxwall is set up and table inet pbxwall is in sync");
                return Ok(Outcome::Done);
            }
            Some(why) => ctx.say(format_args!(
                "nothing to change in the files, but {why}: applying them"
            )),
        }
    }
    for p in &changed {
        ctx.say(format_args!("writing {} ({})", p.path.display(), p.what));
    }
    let touched: Vec<PathBuf> = changed.iter().map(|p| p.path.clone()).collect();
    let outcome = change_then_apply(
        ctx,
        &lock,
        &touched,
        args.no_restart,
        args.force,
        &[],
        || {
            for p in &changed {
                store::write_atomic(&p.path, p.text.as_bytes(), 0o644)?;
            }
            Ok(())
        },
    )?;
    for p in &changed {
        ctx.audit(&format!("wrote {} ({})", p.path.display(), p.what));
    }
    Ok(outcome)
}

/// What init looked for and did not find, each with what it means for the setup.
fn not_found(args: &InitArgs, d: &DetectedPorts, has_own: bool, has_admin: bool) -> Vec<String> {
    let read = |path: &std::path::Path| {
        let path = path.display().to_string();
        d.sources.iter().any(|s| s.starts_with(&path))
    };
    let mut out = Vec::new();
    if !read(&args.sshd_config) {
        out.push(format!(
            "not found: {} (no sshd configuration): the ssh profile keeps its shipped port; give --sshd-config PATH if sshd is configured elsewhere",
            args.sshd_config.display()
        ));
    }
    if !args.asterisk_dir.is_dir() {
        out.push(format!(
            "not found: {} (no Asterisk configuration folder): the SIP, IAX2 and RTP ports stay the shipped ones; give --asterisk-dir DIR if Asterisk is configured elsewhere",
            args.asterisk_dir.display()
        ));
    } else if !read(&args.asterisk_dir) {
        out.push(format!(
            "not found: pjsip.conf, sip.conf, iax.conf or rtp.conf in {}: the SIP, IAX2 and RTP ports stay the shipped ones",
            args.asterisk_dir.display()
        ));
    }
    if !has_admin {
        out.push(format!(
            "not found: an SSH client (no SSH_CONNECTION) and no --admin: no {ADMIN_ACCOUNT} account written; give --admin ADDR for the addresses you administer from"
        ));
    }
    if !has_own {
        out.push(format!(
            "not found: a global address of this server: no {SELF_ACCOUNT} account written"
        ));
    }
    out
}

/// Why the kernel's table differs from what the files build (`None`: in sync), with the
/// names resolved from the cache only.
fn live_differs(ctx: &Ctx, lock: &store::StoreLock) -> Result<Option<String>> {
    let b = build(ctx, Some(lock), Dns::CacheOnly)?;
    let live = netlink::read_table()
        .context("cannot read table inet pbxwall from the kernel (init needs root)")?;
    let want_rules = netlink::rule_fingerprints(&b.ruleset);
    let diff = diff::diff(&b.ruleset, want_rules.as_deref(), live.as_ref());
    Ok(if live.is_none() {
        Some("table inet pbxwall is not loaded".to_owned())
    } else if !diff.is_in_sync() {
        Some("table inet pbxwall differs from them".to_owned())
    } else {
        None
    })
}

/// Private ranges `--cloud` takes out of `trusted`: RFC 1918, shared address space
/// (RFC 6598) and unique local IPv6 (RFC 4193), which some clouds route between customers.
const PRIVATE_RANGES: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
];

/// Whether a `trusted` entry lies inside one of [`PRIVATE_RANGES`].
fn is_private_range(entry: &str) -> bool {
    let Ok(net) = entry.trim().parse::<IpNet>() else {
        return false;
    };
    PRIVATE_RANGES
        .iter()
        .any(|r| r.parse::<IpNet>().is_ok_and(|r| r.contains(&net)))
}

/// The settings file init wants.
///
/// A missing file, or one whose settings are all commented out (as `make install` and the
/// package ship it), becomes init's own. A file with the administrator's settings keeps them
/// and its comments: only the keys init owns change (`trusted` loses its private ranges with
/// `--cloud`, `[rtp] ports` takes the range detected in rtp.conf). A file that does not
/// parse is left alone (an error).
fn settings_plan(ctx: &Ctx, cloud: bool, rtp: Option<PortRange>) -> Result<Option<Planned>> {
    let path = ctx.paths.settings_file();
    let current = store::read_optional(&path)?;
    Ok(
        settings_edit(&path, current.as_deref(), cloud, rtp)?.map(|(text, what)| Planned {
            path,
            text,
            what,
        }),
    )
}

/// [`settings_plan`] on the file's text (`None`: no file): the new text and what changed.
fn settings_edit(
    path: &std::path::Path,
    current: Option<&str>,
    cloud: bool,
    rtp: Option<PortRange>,
) -> Result<Option<(String, String)>> {
    let existing = match current {
        None => None,
        Some(text) => {
            let doc: toml_edit::DocumentMut = text.parse().with_context(|| {
                format!(
                    "{} cannot be parsed, so init leaves it alone; fix it, then run init again",
                    path.display()
                )
            })?;
            (!doc.as_table().is_empty()).then_some(doc)
        }
    };
    let Some(mut doc) = existing else {
        let what = if cloud {
            "settings: no trusted LAN (--cloud)".into()
        } else {
            format!("settings: trusted LAN {}", DEFAULT_TRUSTED.join(", "))
        };
        return Ok(Some((settings_text(cloud, rtp), what)));
    };
    let mut what = Vec::new();
    if cloud {
        match doc.get_mut("trusted").and_then(|t| t.as_array_mut()) {
            Some(list) => {
                let before = list.len();
                list.retain(|v| !v.as_str().is_some_and(is_private_range));
                if list.len() != before {
                    list.fmt();
                }
            }
            None => doc["trusted"] = toml_edit::value(toml_edit::Array::new()),
        }
        what.push("no private range trusted (--cloud)".to_owned());
    }
    if let Some(r) = rtp {
        doc["rtp"]["ports"] = toml_edit::value(format!("{}-{}", r.first, r.last));
        what.push(format!("rtp ports {r}"));
    }
    if what.is_empty() {
        return Ok(None);
    }
    Ok(Some((
        doc.to_string(),
        format!("settings: {}", what.join(", ")),
    )))
}

fn settings_text(cloud: bool, rtp: Option<PortRange>) -> String {
    let trusted = if cloud {
        "trusted = []    # --cloud: no LAN is trusted".to_owned()
    } else {
        let list: Vec<String> = DEFAULT_TRUSTED.iter().map(|t| format!("\"{t}\"")).collect();
        format!("trusted = [{}]    # full access (LAN)", list.join(", "))
    };
    let rtp = rtp.unwrap_or(PortRange {
        first: 10000,
        last: 20000,
    });
    format!(
        "# pbxwall settings, written by `pbxwall init`; see pbxwall.toml(5).\n\
         {trusted}\n\
         log_drops = true\n\n\
         [resolver]\n\
         nameservers = []          # empty: the system's resolv.conf\n\
         timeout_ms = 2000\n\
         attempts = 2\n\
         stale_grace_s = 3600\n\n\
         [rtp]\n\
         ports = \"{}-{}\"\n\
         from = \"any\"\n",
        rtp.first, rtp.last
    )
}

/// Local profiles for services whose detected ports the shipped profile does not cover.
fn profile_overrides(ctx: &Ctx, profiles: &Profiles, d: &DetectedPorts) -> Vec<Planned> {
    let mut out = Vec::new();
    for (name, proto, ports) in [
        ("ssh", L4Proto::Tcp, &d.ssh),
        ("sip-udp", L4Proto::Udp, &d.sip_udp),
        ("sip-tcp", L4Proto::Tcp, &d.sip_tcp),
        ("iax", L4Proto::Udp, &d.iax),
    ] {
        let Some(profile) = profiles.get(name) else {
            continue;
        };
        let path = ctx.paths.local_profiles_dir().join(format!("{name}.toml"));
        let covered = ports.iter().all(|port| {
            profile.ports.iter().any(|spec| match spec {
                PortSpec::All => true,
                PortSpec::Port(p, r) => *p == proto && (r.first..=r.last).contains(port),
            })
        });
        if ports.is_empty() || (covered && !path.exists()) {
            continue;
        }
        let specs: Vec<String> = ports
            .iter()
            .map(|p| format!("\"{}/{p}\"", proto.keyword()))
            .collect();
        let code = profile
            .code
            .map(|c| format!("code = {c}\n"))
            .unwrap_or_default();
        let detected: Vec<String> = ports.iter().map(u16::to_string).collect();
        out.push(Planned {
            text: format!(
                "# Written by `pbxwall init` from this host's configuration.\n{code}name = \"{name}\"\ndescription = \"{} (ports detected on this host: {})\"\nports = [{}]\n",
                without_ports(&profile.description),
                detected.join(", "),
                specs.join(", ")
            ),
            path,
            what: format!("profile {name}: {}", specs.join(", ").replace('"', "")),
        });
    }
    out
}

/// A profile description without its trailing list of ports in parentheses ("SIP signalling
/// over UDP (PJSIP 5060-5061, ...)" → "SIP signalling over UDP"): an override written for
/// other ports must not name the shipped ones.
fn without_ports(description: &str) -> &str {
    match description.trim_end().strip_suffix(')') {
        Some(head) => match head.rfind(" (") {
            Some(at) if head[at..].chars().any(|c| c.is_ascii_digit()) => head[..at].trim_end(),
            _ => description,
        },
        None => description,
    }
}

/// The account file init wants. An existing account keeps what it has (its `created`, any
/// other addresses and services): init only adds.
fn account_plan(
    ctx: &Ctx,
    profiles: &Profiles,
    name: &str,
    addresses: Vec<IpNet>,
    services: &[&str],
    comment: &str,
) -> Result<Option<Planned>> {
    let name: AccountName = name.parse()?;
    let path = ctx.paths.account_file(&name);
    let mut account = Account {
        name,
        addresses: Vec::new(),
        fqdns: Vec::new(),
        services: profiles.parse_services(services)?,
        media: Vec::new(),
        comment: Some(comment.to_owned()),
        created: Some(now_rfc3339()),
        provider: None,
        expires: None,
    };
    if let Some(text) = store::read_optional(&path)? {
        // Never overwrite what cannot be read: it may hold addresses init would lose.
        let existing = parse_account(&path, &text, profiles).with_context(|| {
            format!(
                "{} exists but cannot be read, so init leaves it alone; fix or remove it, then run init again",
                path.display()
            )
        })?;
        let mut services: Vec<String> = existing.services.clone();
        services.extend(account.services.iter().cloned());
        account.services = profiles.parse_services(&services)?;
        account.addresses = existing.addresses.clone();
        account.fqdns = existing.fqdns.clone();
        account.media = existing.media.clone();
        account.comment = existing.comment.clone().or(account.comment);
        account.created = existing.created.clone();
        account.provider = existing.provider.clone();
    }
    for a in addresses {
        if !account.addresses.contains(&a) {
            account.addresses.push(a);
        }
    }
    let what = format!(
        "account {}: {}",
        account.name,
        account
            .addresses
            .iter()
            .map(crate::model::display_net)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Some(Planned {
        path,
        text: render_account(&account),
        what,
    }))
}

/// This server's global addresses (loopback, link-local and host-scope ones left out).
fn own_addresses() -> Result<Vec<IpNet>> {
    let out = Command::new("ip").args(["-j", "addr", "show"]).output()?;
    anyhow::ensure!(out.status.success(), "ip -j addr show failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut addrs = Vec::new();
    for iface in v.as_array().into_iter().flatten() {
        for a in iface["addr_info"].as_array().into_iter().flatten() {
            if a["scope"] != "global" {
                continue;
            }
            if let Some(ip) = a["local"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) {
                let net = IpNet::from(ip);
                // Validated like every other address, whatever `ip` calls global.
                if crate::model::check_unicast(&net).is_ok() && !addrs.contains(&net) {
                    addrs.push(net);
                }
            }
        }
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/etc/pbxwall/pbxwall.toml";
    const RTP: PortRange = PortRange {
        first: 12000,
        last: 12100,
    };

    fn edit(current: Option<&str>, cloud: bool, rtp: Option<PortRange>) -> Option<String> {
        settings_edit(std::path::Path::new(PATH), current, cloud, rtp)
            .unwrap()
            .map(|(text, _)| text)
    }

    #[test]
    fn the_shipped_commented_file_becomes_inits_own() {
        let shipped = include_str!("../../packaging/pbxwall.toml");
        let text = edit(Some(shipped), true, Some(RTP)).unwrap();
        assert_eq!(text, settings_text(true, Some(RTP)));
        let settings = store::parse_settings(std::path::Path::new(PATH), &text).unwrap();
        assert!(settings.trusted.is_empty());
        assert_eq!(settings.rtp.ports, RTP);
        assert_eq!(edit(None, false, None).unwrap(), settings_text(false, None));
    }

    #[test]
    fn the_administrators_settings_and_comments_stay() {
        let mine = "# my notes\ntrusted = [\"192.168.0.0/16\", \"203.0.113.0/24\", \"10.1.0.0/16\"]  # office\nlog_drops = false\n\n[rtp]\n# media\nports = \"10000-20000\"\nfrom = \"whitelist\"\n";
        let text = edit(Some(mine), true, Some(RTP)).unwrap();
        assert_eq!(
            text,
            "# my notes\ntrusted = [\"203.0.113.0/24\"]  # office\nlog_drops = false\n\n[rtp]\n# media\nports = \"12000-12100\"\nfrom = \"whitelist\"\n"
        );
        assert_eq!(
            edit(Some(mine), false, None),
            None,
            "nothing init owns changes"
        );
        let no_trusted = "log_drops = false\n";
        let text = edit(Some(no_trusted), true, None).unwrap();
        let settings = store::parse_settings(std::path::Path::new(PATH), &text).unwrap();
        assert!(settings.trusted.is_empty() && !settings.log_drops, "{text}");
        let text = edit(Some(no_trusted), false, Some(RTP)).unwrap();
        let settings = store::parse_settings(std::path::Path::new(PATH), &text).unwrap();
        assert_eq!(settings.rtp.ports, RTP, "{text}");
    }

    #[test]
    fn override_descriptions_lose_the_shipped_ports() {
        assert_eq!(
            without_ports("SIP signalling over UDP (PJSIP 5060-5061, chan_sip 5160-5161)"),
            "SIP signalling over UDP"
        );
        assert_eq!(
            without_ports("Secure shell (ports detected on this host: 2222)"),
            "Secure shell"
        );
        assert_eq!(without_ports("Secure shell"), "Secure shell");
        assert_eq!(without_ports("Panel (old)"), "Panel (old)");
    }

    #[test]
    fn a_settings_file_that_does_not_parse_is_left_alone() {
        let e = settings_edit(
            std::path::Path::new(PATH),
            Some("trusted = [\n"),
            true,
            None,
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("cannot be parsed, so init leaves it alone"),
            "{e:#}"
        );
    }
}
