//! `pbxwall knock`: on the server, `--setup` writes a random sequence to `[knock]` and
//! applies it; on a client, `pbxwall knock HOST` sends the sequence.

use anyhow::{Context, Result};
use clap::Args;

use super::{Ctx, Outcome, UsageError, change_then_apply};
use crate::knock::{self, ClientOptions, KnockSettings};
use crate::ruleset::L4Proto;
use crate::store;

/// The end of `pbxwall knock --help`.
pub const LONG_HELP: &str = "\
On the server, `pbxwall knock --setup` writes a random sequence of distinct unprivileged
ports (none a port of a service profile or of the RTP range) to [knock] sequence in
pbxwall.toml, applies it, and prints how to knock. From then on a source that sends a TCP
SYN (or, with protocol = \"udp\", a UDP datagram) to each port in order, each within
[knock] step_timeout of the one before, is granted [knock] services for [knock] grant_for.
A knock on any other port (of that protocol) in between starts it over; the same port
again (a retransmitted SYN) changes nothing. Knock ports are never open. The settings file
then holds a secret, so it loses any read permission for others.

`pbxwall grants` lists the granted sources with the time each has left; `pbxwall revoke
ADDR` ends a grant and the source's running flows.

On a client, `pbxwall knock HOST --sequence P,P,P` sends the knocks; knockd's `knock`
client does the same (`knock HOST P:tcp P:tcp P:tcp`).";

/// `pbxwall knock`.
#[derive(Debug, Clone, Args)]
pub struct KnockArgs {
    /// Host to knock on: a name or an address (the client)
    #[arg(value_name = "HOST", required_unless_present = "setup")]
    pub host: Option<String>,
    /// On the server: write a sequence to [knock] in pbxwall.toml (random unless --sequence
    /// gives one), then apply
    #[arg(long, conflicts_with = "host")]
    pub setup: bool,
    /// Ports of the random sequence --setup makes: 2 to 8
    #[arg(
        long,
        value_name = "N",
        requires = "setup",
        conflicts_with = "sequence"
    )]
    pub length: Option<usize>,
    /// The ports, in order, separated by commas [default: [knock] sequence of the settings
    /// here]
    #[arg(long, value_name = "P,P,P")]
    pub sequence: Option<String>,
    /// Knock with TCP SYNs or UDP datagrams [default: [knock] protocol of the settings here,
    /// else tcp]
    #[arg(long, value_name = "tcp|udp")]
    pub protocol: Option<String>,
    /// With --setup: only write the settings; apply at the next restart
    #[arg(long, requires = "setup")]
    pub no_restart: bool,
}

/// `pbxwall knock ...`.
pub fn knock(ctx: &Ctx, args: KnockArgs) -> Result<Outcome> {
    let protocol = args
        .protocol
        .as_deref()
        .map(knock::parse_protocol)
        .transpose()
        .map_err(UsageError::bad_value)?;
    let sequence = args
        .sequence
        .as_deref()
        .map(knock::parse_sequence)
        .transpose()
        .map_err(UsageError::bad_value)?;
    if args.setup {
        let length = args.length.unwrap_or(knock::DEFAULT_STEPS);
        if !(knock::MIN_STEPS..=knock::MAX_STEPS).contains(&length) {
            return Err(UsageError::bad_value(knock::KnockError::Length(length)));
        }
        return setup(ctx, sequence, length, protocol, args.no_restart);
    }
    let host = args.host.unwrap_or_default();
    client(ctx, &host, sequence, protocol)
}

/// `pbxwall knock --setup`.
fn setup(
    ctx: &Ctx,
    sequence: Option<Vec<u16>>,
    length: usize,
    protocol: Option<L4Proto>,
    no_restart: bool,
) -> Result<Outcome> {
    let profiles = store::load_profiles(&ctx.paths)?;
    let settings = store::load_settings(&ctx.paths)?;
    let sequence = match sequence {
        Some(s) => {
            knock::check_sequence(&s, &profiles, &settings.rtp).map_err(UsageError::bad_value)?;
            s
        }
        None => knock::random_sequence(length, &profiles, &settings.rtp)
            .context("cannot choose a knock sequence")?,
    };
    let lock = ctx.lock()?;
    let path = ctx.paths.settings_file();
    let current = store::read_config(&path)?;
    let text = with_sequence(current.as_deref(), &sequence, protocol)
        .with_context(|| format!("{} cannot be parsed; fix it first", path.display()))?;
    // The whole new file must load, or nothing is written.
    let new = store::parse_settings(&path, &text)?;
    store::check_knock(&path, &new, &profiles)?;
    let k = new.knock.clone();
    let what = format!(
        "knock sequence {} {} written to {}",
        k.protocol.keyword(),
        k.sequence_text(),
        path.display()
    );
    let outcome = change_then_apply(
        ctx,
        &lock,
        std::slice::from_ref(&path),
        no_restart,
        false,
        std::slice::from_ref(&what),
        // The sequence is a secret: the file is no longer readable by others.
        || Ok(store::write_secret(&path, text.as_bytes())?),
    )?;
    ctx.audit(&what);
    for line in how_to_knock(&k) {
        ctx.say(line);
    }
    Ok(outcome)
}

/// `text` (the settings file, `None` when there is none) with `[knock] sequence` set to
/// `ports` (and `protocol` when given), comments and everything else kept.
fn with_sequence(text: Option<&str>, ports: &[u16], protocol: Option<L4Proto>) -> Result<String> {
    let mut doc: toml_edit::DocumentMut = text.unwrap_or("").parse()?;
    if !doc.contains_key("knock") {
        let mut table = toml_edit::Table::new();
        if !doc.as_table().is_empty() {
            table.decor_mut().set_prefix("\n");
        }
        doc.insert("knock", toml_edit::Item::Table(table));
    }
    let table = doc["knock"]
        .as_table_mut()
        .context("knock is not a table")?;
    let array: toml_edit::Array = ports.iter().map(|p| i64::from(*p)).collect();
    table["sequence"] = toml_edit::value(array);
    if let Some(p) = protocol {
        table["protocol"] = toml_edit::value(p.keyword());
    }
    Ok(doc.to_string())
}

/// What `--setup` prints after the sequence: how to knock with pbxwall and with knockd's
/// client.
fn how_to_knock(k: &KnockSettings) -> Vec<String> {
    let proto = k.protocol.keyword();
    let ports: Vec<String> = k.sequence.iter().map(|p| format!("{p}:{proto}")).collect();
    vec![
        format!(
            "a source that knocks {proto} {} in this order, each within {} of the one before, \
             is granted {} for {}",
            k.sequence_text(),
            k.step_timeout,
            k.services.join(","),
            k.grant_for
        ),
        "knock from a client (HOST: this server's name or address):".to_owned(),
        format!(
            "  pbxwall knock HOST --sequence {} --protocol {proto}",
            k.sequence_text()
        ),
        format!(
            "  knock HOST {}    (knockd's client, Debian package knockd)",
            ports.join(" ")
        ),
    ]
}

/// `pbxwall knock HOST`.
fn client(
    ctx: &Ctx,
    host: &str,
    sequence: Option<Vec<u16>>,
    protocol: Option<L4Proto>,
) -> Result<Outcome> {
    // Without --sequence or --protocol, the settings here (a server knocking itself, or a
    // client given a copy of [knock]).
    let local = if sequence.is_none() || protocol.is_none() {
        store::load_settings(&ctx.paths).ok().map(|s| s.knock)
    } else {
        None
    };
    let sequence = match sequence {
        Some(s) => s,
        None => match local.as_ref().filter(|k| k.enabled()) {
            Some(k) => k.sequence.clone(),
            None => {
                return Err(UsageError(
                    "no knock sequence: give --sequence P,P,P (the ports `pbxwall knock --setup` \
                     printed on the server)"
                        .into(),
                )
                .into());
            }
        },
    };
    let protocol = protocol
        .or(local.map(|k| k.protocol))
        .unwrap_or(L4Proto::Tcp);
    let addr = knock::resolve_host(host).with_context(|| format!("cannot knock on {host}"))?;
    let options = ClientOptions {
        protocol,
        ..ClientOptions::default()
    };
    let sent = knock::knock(addr, &sequence, options)
        .with_context(|| format!("knocking on {addr} failed"))?;
    for k in sent.iter().filter(|k| k.answered) {
        ctx.warn(format_args!(
            "{k} accepted the connection: that port is open, so it is not a knock port there"
        ));
    }
    ctx.say(format_args!(
        "knocked on {addr}: {} {}",
        protocol.keyword(),
        knock::sequence_text(&sequence)
    ));
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_edits_keep_comments_and_other_keys() {
        let text = "# mine\ntrusted = []   # no LAN\n\n[rtp]\nports = \"10000-20000\"\n";
        let out = with_sequence(Some(text), &[23456, 34567, 45678], None).unwrap();
        assert!(out.starts_with(text), "{out}");
        assert!(
            out.ends_with("\n[knock]\nsequence = [23456, 34567, 45678]\n"),
            "{out}"
        );
        let again = with_sequence(Some(&out), &[40000, 30000], Some(L4Proto::Udp)).unwrap();
        assert!(
            again.contains("sequence = [40000, 30000]\nprotocol = \"udp\""),
            "{again}"
        );
        assert!(again.starts_with(text));
        let s = store::parse_settings(std::path::Path::new("x.toml"), &again).unwrap();
        assert_eq!(s.knock.sequence, [40000, 30000]);
        assert_eq!(s.knock.protocol, L4Proto::Udp);
        let fresh = with_sequence(None, &[23456, 34567], None).unwrap();
        assert_eq!(
            store::parse_settings(std::path::Path::new("x.toml"), &fresh)
                .unwrap()
                .knock
                .sequence,
            [23456, 34567]
        );
        assert!(with_sequence(Some("knock = 1"), &[23456, 34567], None).is_err());
        assert!(with_sequence(Some("[knock"), &[23456, 34567], None).is_err());
    }

    #[test]
    fn how_to_knock_names_both_clients() {
        let k = KnockSettings {
            sequence: vec![23456, 34567, 45678],
            ..KnockSettings::default()
        };
        let lines = how_to_knock(&k);
        assert!(lines[0].contains("tcp 23456,34567,45678"), "{lines:?}");
        assert!(lines[0].contains("within 10s") && lines[0].contains("all for 1h"));
        assert_eq!(
            lines[2],
            "  pbxwall knock HOST --sequence 23456,34567,45678 --protocol tcp"
        );
        assert!(lines[3].starts_with("  knock HOST 23456:tcp 34567:tcp 45678:tcp"));
    }
}
