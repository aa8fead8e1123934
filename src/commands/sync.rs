//! `pbxwall sync`: fetch the fleet bundle and its signature from `[sync] url`, verify them
//! with `[sync] public_key`, refuse a rollback, store the bundle apart from the local
//! accounts (`CONFIG_DIR/fleet/`) and apply through the same guarded path as `restart`.
//! Format and files: [`crate::fleet`].
//!
//! Any failure (server down, bad signature, truncated download, bad account, rollback,
//! the lockout guard or the kernel refusing) keeps the last good bundle in force and ends
//! with exit 3 naming the reason; `status` shows it too.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::{Ctx, Outcome, change_then_apply};
use crate::fleet::{self, Bundle, Decision, Source, SyncError, SyncSettings, SyncState};
use crate::state::now_rfc3339;
use crate::store::{self, StoreLock};

/// `pbxwall sync`.
#[derive(Debug, Clone, Args)]
pub struct SyncArgs {
    /// Apply even if the ruleset would cut off this SSH session's client
    #[arg(long)]
    pub force: bool,
    /// Install a cron.d entry running sync as root on this five-field schedule (instead of
    /// pbxwall-sync.timer)
    #[arg(long, value_name = "SCHEDULE", conflicts_with = "remove_cron")]
    pub install_cron: Option<String>,
    /// Remove the cron.d entry
    #[arg(long)]
    pub remove_cron: bool,
    /// The cron.d file to write or remove
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SYNC_CRON_FILE)]
    pub cron_file: PathBuf,
}

/// Where `sync --install-cron` writes by default.
pub const DEFAULT_SYNC_CRON_FILE: &str = "/etc/cron.d/pbxwall-sync";

/// `pbxwall sync --help`: settings, files and exit codes.
pub const LONG_HELP: &str = "\
Settings ([sync] in pbxwall.toml, see pbxwall.toml(5)): url, the https://, http:// or
file:// URL of the bundle (its signature is fetched from url + \".minisig\"); public_key,
the minisign public key the bundles are signed with (the base64 line of the .pub file);
next_public_key, a second key accepted during a key rotation; ca_file, a PEM file of the
only CAs trusted for https (default: the system's CA store); timeout, each download
(default 30s); max_bytes, the largest bundle downloaded (default and highest 8388608).

The bundle is kept in CONFIG_DIR/fleet/bundle.json (with its .minisig); its accounts are
applied beside the local ones in CONFIG_DIR/accounts/, and a local account with the same
name wins (with a warning). The last serial applied, the server's ETag and the last run are
in STATE_DIR/sync.json. An unchanged bundle costs no download (If-None-Match and
If-Modified-Since). A serial below the last one applied is refused, and so is the same
serial with other content; the same bundle again is no change.

Exit status: 0 applied, or the same bundle again (no change); 1 error before anything was
fetched (no [sync] url, a broken pbxwall.toml, not root); 2 usage error; 3 refused or
failed: the server did not answer or answered an error, the download was cut short or too
large, no configured key verifies the signature, the bundle or an account in it is invalid,
its serial is below the last one applied (or equal with other content), or applying it
failed; the last good bundle stays in force and the output names the reason. 3 also when
the new bundle is applied but degraded (names left out).";

/// `pbxwall sync [--json]`.
pub fn sync(ctx: &Ctx, args: SyncArgs) -> Result<Outcome> {
    if let Some(schedule) = &args.install_cron {
        return super::ipchecker::install_cron_for(ctx, "sync", schedule, &args.cron_file);
    }
    if args.remove_cron {
        return super::ipchecker::remove_cron_file(ctx, &args.cron_file);
    }
    let settings = store::load_settings(&ctx.paths)?;
    let Some(source) = settings.sync.source.clone() else {
        anyhow::bail!(
            "no [sync] url in {}: set url and public_key to pull a fleet bundle (see pbxwall sync --help)",
            ctx.paths.settings_file().display()
        );
    };
    let lock = ctx.lock()?;
    let mut st = SyncState::load(&ctx.paths);
    let result = run(ctx, &lock, &settings.sync, &source, &mut st, args.force);
    st.last_run = Some(now_rfc3339());
    match &result {
        Ok((_, what)) => {
            st.last_outcome = Some((*what).into());
            st.last_error = None;
        }
        Err(e) => {
            st.last_outcome = Some("failed".into());
            st.last_error = Some(format!("{e:#}"));
            ctx.audit(&format!(
                "fleet bundle from {} refused, the last good bundle{} stays: {e:#}",
                source.url(),
                st.serial
                    .map(|s| format!(" (serial {s})"))
                    .unwrap_or_default()
            ));
        }
    }
    if let Err(e) = st.save(&ctx.paths, &lock) {
        ctx.warn_state_unsaved(format_args!(
            "could not record the sync: {}",
            crate::error_chain(&e)
        ));
    }
    result.map(|(o, _)| o)
}

/// What a fetch brought.
enum Fetched {
    /// 304: the bundle applied last has not changed.
    NotModified,
    /// The body, with the validators to send next time.
    Body {
        bytes: Vec<u8>,
        etag: Option<String>,
        last_modified: Option<String>,
    },
}

/// Fetch, verify, decide, apply; returns the outcome and the word recorded in sync.json.
fn run(
    ctx: &Ctx,
    lock: &StoreLock,
    s: &SyncSettings,
    source: &Source,
    st: &mut SyncState,
    force: bool,
) -> Result<(Outcome, &'static str)> {
    let url = source.url();
    let stored = match fleet::stored_bundle(&ctx.paths) {
        Ok(b) => b,
        Err(e) => {
            ctx.warn(format_args!(
                "the stored bundle cannot be read ({}); fetching afresh",
                crate::error_chain(&e)
            ));
            None
        }
    };
    // The last serial applied: the record survives a removed bundle file, and the bundle
    // file counts when the record was lost.
    let last: Option<(u64, String)> = match (&st.serial, &st.sha256, &stored) {
        (Some(serial), Some(sha), Some((b, bsha))) if b.serial >= *serial => Some((
            b.serial,
            if b.serial == *serial {
                sha.clone()
            } else {
                bsha.clone()
            },
        )),
        (Some(serial), Some(sha), _) => Some((*serial, sha.clone())),
        (_, _, Some((b, bsha))) => Some((b.serial, bsha.clone())),
        _ => None,
    };
    // Ask for the body only if it changed, when the stored bundle is the one those
    // validators describe.
    let conditional = stored.as_ref().is_some_and(|(_, sha)| {
        st.url.as_deref() == Some(url.as_str()) && st.sha256.as_deref() == Some(sha.as_str())
    });
    let agent = agent(s)?;
    let validators = if conditional {
        (st.etag.clone(), st.last_modified.clone())
    } else {
        (None, None)
    };
    let fetched = fetch((&agent, s.timeout), source, s.max_bytes, validators)?;
    let Fetched::Body {
        bytes,
        etag,
        last_modified,
    } = fetched
    else {
        let serial = last.map(|(s, _)| s).unwrap_or_default();
        ctx.say(format_args!(
            "bundle unchanged (serial {serial}): {url} not modified since the last sync"
        ));
        return Ok((Outcome::Done, "unchanged"));
    };
    let sig = match fetch(
        (&agent, s.timeout),
        &source.signature(),
        fleet::MAX_SIGNATURE_BYTES,
        (None, None),
    )? {
        Fetched::Body { bytes, .. } => bytes,
        Fetched::NotModified => {
            return Err(SyncError::Fetch {
                url: source.signature().url(),
                why: "the server answered 304 Not Modified to an unconditional request".into(),
            }
            .into());
        }
    };
    fleet::verify(&bytes, &sig, &s.public_keys, &url)?;
    let profiles = store::load_profiles(&ctx.paths)?;
    let checked = Bundle::parse(&bytes)?.check(std::path::Path::new(&url), &profiles)?;
    let sha = fleet::sha256_hex(&bytes);
    let serial = checked.bundle.serial;
    match fleet::decide(serial, &sha, last.as_ref().map(|(s, h)| (*s, h.as_str())))? {
        Decision::Unchanged => {
            st.etag = etag;
            st.last_modified = last_modified;
            st.url = Some(url.clone());
            ctx.say(format_args!("bundle unchanged (serial {serial}) at {url}"));
            return Ok((Outcome::Done, "unchanged"));
        }
        Decision::Apply => {}
    }
    let before: Vec<(String, String)> = stored
        .as_ref()
        .map(|(b, _)| {
            b.files
                .iter()
                .map(|f| (f.path.clone(), f.sha256.clone()))
                .collect()
        })
        .unwrap_or_default();
    let changes = changes(&before, &checked.bundle);
    let was = last
        .as_ref()
        .map(|(s, _)| format!(" (was serial {s})"))
        .unwrap_or_default();
    let done = vec![format!(
        "fleet bundle serial {serial} from {url}{was}: {changes}"
    )];
    // Every audit line of this apply carries the serial.
    let tagged = Ctx {
        audit_note: Some(format!("fleet serial {serial}")),
        ..ctx.clone()
    };
    let bundle_path = fleet::bundle_file(&ctx.paths);
    let sig_path = fleet::signature_file(&ctx.paths);
    let touched = [bundle_path.clone(), sig_path.clone()];
    let outcome = change_then_apply(&tagged, lock, &touched, false, force, &done, || {
        store::write_atomic(&sig_path, &sig, store::ACCOUNT_FILE_MODE)?;
        store::write_atomic(&bundle_path, &bytes, store::ACCOUNT_FILE_MODE)?;
        Ok(())
    })
    .map_err(|e| SyncError::Apply(format!("{e:#}")))?;
    tagged.audit(&done[0]);
    *st = SyncState {
        url: Some(url),
        serial: Some(serial),
        sha256: Some(sha),
        etag,
        last_modified,
        applied_at: Some(now_rfc3339()),
        ..st.clone()
    };
    Ok((outcome, "ok"))
}

/// "added a, b; removed c; changed d" between the files (path, sha256) of the bundle
/// applied before and the new one.
fn changes(before: &[(String, String)], new: &Bundle) -> String {
    let name = |p: &str| {
        p.strip_prefix("accounts/")
            .and_then(|p| p.strip_suffix(".toml"))
            .unwrap_or(p)
            .to_owned()
    };
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for f in &new.files {
        match before.iter().find(|(p, _)| *p == f.path) {
            None => added.push(name(&f.path)),
            Some((_, sha)) if *sha != f.sha256 => changed.push(name(&f.path)),
            Some(_) => {}
        }
    }
    let removed: Vec<String> = before
        .iter()
        .filter(|(p, _)| !new.files.iter().any(|f| f.path == *p))
        .map(|(p, _)| name(p))
        .collect();
    let mut parts = Vec::new();
    for (word, list) in [("added", added), ("removed", removed), ("changed", changed)] {
        if !list.is_empty() {
            parts.push(format!("{word} {}", list.join(", ")));
        }
    }
    if parts.is_empty() {
        "no account changed".into()
    } else {
        parts.join("; ")
    }
}

/// The HTTP client: the time limit, and the system's CA store or `[sync] ca_file` alone.
fn agent(s: &SyncSettings) -> Result<ureq::Agent> {
    use ureq::tls::{PemItem, RootCerts, TlsConfig};
    let roots = match &s.ca_file {
        None => RootCerts::PlatformVerifier,
        Some(file) => {
            let pem = std::fs::read(file)
                .map_err(|e| anyhow::anyhow!("[sync] ca_file {}: {e}", file.display()))?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                match item {
                    Ok(PemItem::Certificate(c)) => certs.push(c),
                    Ok(_) => {}
                    Err(e) => anyhow::bail!("[sync] ca_file {}: {e}", file.display()),
                }
            }
            anyhow::ensure!(
                !certs.is_empty(),
                "[sync] ca_file {}: no PEM certificate in it",
                file.display()
            );
            RootCerts::from(certs)
        }
    };
    Ok(ureq::Agent::config_builder()
        .timeout_global(Some(s.timeout.to_std()))
        .http_status_as_error(false)
        .user_agent(concat!("pbxwall/", env!("CARGO_PKG_VERSION")))
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .build()
        .new_agent())
}

/// Fetches `source`, at most `max` bytes; with validators, a conditional request.
fn fetch(
    (agent, timeout): (&ureq::Agent, crate::model::Duration),
    source: &Source,
    max: u64,
    (etag, last_modified): (Option<String>, Option<String>),
) -> Result<Fetched, SyncError> {
    let url = source.url();
    let err = |why: String| SyncError::Fetch {
        url: url.clone(),
        why,
    };
    match source {
        Source::File(path) => {
            use std::io::Read;
            let f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
            let mut bytes = Vec::new();
            f.take(max + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| err(e.to_string()))?;
            if bytes.len() as u64 > max {
                return Err(err(format!(
                    "it is larger than {max} bytes ([sync] max_bytes)"
                )));
            }
            Ok(Fetched::Body {
                bytes,
                etag: None,
                last_modified: None,
            })
        }
        Source::Http(u) => {
            let mut req = agent.get(u);
            if let Some(e) = &etag {
                req = req.header("If-None-Match", e);
            }
            if let Some(lm) = &last_modified {
                req = req.header("If-Modified-Since", lm);
            }
            let resp = req.call().map_err(|e| match e {
                ureq::Error::Timeout(_) => {
                    err(format!("no answer within {timeout} ([sync] timeout)"))
                }
                e => err(e.to_string()),
            })?;
            let status = resp.status();
            if status.as_u16() == 304 && (etag.is_some() || last_modified.is_some()) {
                return Ok(Fetched::NotModified);
            }
            if status.as_u16() != 200 {
                return Err(err(format!("the server answered {status}")));
            }
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let new_etag = header("etag");
            let new_last_modified = header("last-modified");
            let bytes = resp
                .into_body()
                .with_config()
                .limit(max)
                .read_to_vec()
                .map_err(|e| match e {
                    ureq::Error::BodyExceedsLimit(_) => {
                        err(format!("it is larger than {max} bytes ([sync] max_bytes)"))
                    }
                    ureq::Error::Timeout(_) => err(format!(
                        "the download took longer than {timeout} ([sync] timeout)"
                    )),
                    e => err(format!("the download was cut short: {e}")),
                })?;
            Ok(Fetched::Body {
                bytes,
                etag: new_etag,
                last_modified: new_last_modified,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_lines() {
        let new = Bundle::new(
            2,
            "t".into(),
            vec![
                ("accounts/a.toml".into(), "x".into()),
                ("accounts/b.toml".into(), "y".into()),
            ],
        );
        let before = vec![
            ("accounts/a.toml".to_owned(), fleet::sha256_hex(b"old")),
            ("accounts/c.toml".to_owned(), fleet::sha256_hex(b"z")),
        ];
        assert_eq!(changes(&before, &new), "added b; removed c; changed a");
        let same: Vec<(String, String)> = new
            .files
            .iter()
            .map(|f| (f.path.clone(), f.sha256.clone()))
            .collect();
        assert_eq!(changes(&same, &new), "no account changed");
    }
}
