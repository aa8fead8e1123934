//! `pbxwall bundle create DIR -o FILE [--serial N]`: pack a folder of accounts (and an
//! optional `providers.toml`) into a fleet bundle for `pbxwall sync` (format in
//! [`crate::fleet`]). The administrator signs FILE with `minisign -S -m FILE`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use super::{Ctx, Outcome, UsageError};
use crate::fleet::Bundle;
use crate::state::now_rfc3339;
use crate::store::{self, MAX_CONFIG_FILE_BYTES};

/// `pbxwall bundle create DIR -o FILE [--serial N]`.
#[derive(Debug, Clone, Args)]
pub struct BundleArgs {
    /// What to do: create (pack DIR/accounts/*.toml and DIR/providers.toml into FILE, every
    /// account checked as restart checks it)
    #[arg(value_name = "ACTION")]
    pub action: BundleAction,
    /// Folder holding accounts/NAME.toml files and an optional providers.toml
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The bundle file to write; sign it with `minisign -S -m FILE`
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Serial number, higher than every bundle published before [default: the current
    /// time in seconds since 1970, or one more than the serial of the FILE being replaced
    /// when that is as high]
    #[arg(long, value_name = "N")]
    pub serial: Option<u64>,
}

/// `pbxwall bundle ACTION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BundleAction {
    /// Pack a folder of accounts into a bundle
    Create,
}

/// `--help` of `pbxwall bundle`.
pub const LONG_HELP: &str = "\
A bundle is one JSON document: {\"pbxwall_bundle\": 1, \"serial\": N, \"created\": TIME,
\"files\": [{\"path\": \"accounts/NAME.toml\", \"sha256\": HEX, \"content\": TEXT}, ...]}.
Sign it with minisign and publish FILE and FILE.minisig side by side:
  pbxwall bundle create fleet/ -o accounts.bundle
  minisign -S -s fleet.key -m accounts.bundle
Every PBX's `pbxwall sync` verifies it with [sync] public_key and refuses a serial below the
last one it applied.

Exit status: 0 written; 1 an account or providers.toml does not parse (nothing written);
2 usage error.";

/// Runs `pbxwall bundle ACTION`.
pub fn bundle(ctx: &Ctx, args: BundleArgs) -> Result<Outcome> {
    match args.action {
        BundleAction::Create => create(ctx, args),
    }
}

/// Reads a file of the bundle's source folder (no ownership checks: it is the
/// administrator's working copy), at most [`MAX_CONFIG_FILE_BYTES`].
fn read_source(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).with_context(|| path.display().to_string())?;
    anyhow::ensure!(
        meta.is_file() && meta.len() <= MAX_CONFIG_FILE_BYTES,
        "{}: not a regular file of at most {MAX_CONFIG_FILE_BYTES} bytes",
        path.display()
    );
    std::fs::read_to_string(path).with_context(|| path.display().to_string())
}

fn create(ctx: &Ctx, args: BundleArgs) -> Result<Outcome> {
    if args.serial == Some(0) {
        return Err(UsageError("invalid --serial 0: use 1 or more".into()).into());
    }
    anyhow::ensure!(
        args.dir.is_dir(),
        "{} is not a folder: give the folder holding accounts/NAME.toml",
        args.dir.display()
    );
    let profiles = store::load_profiles(&ctx.paths)?;
    let accounts_dir = args.dir.join("accounts");
    let mut files = Vec::new();
    let mut names = Vec::new();
    let entries = match std::fs::read_dir(&accounts_dir) {
        Ok(e) => e.collect::<Result<Vec<_>, _>>()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(anyhow::Error::new(e).context(accounts_dir.display().to_string())),
    };
    let mut paths: Vec<PathBuf> = entries.iter().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if file_name.starts_with('.') {
            continue;
        }
        if !file_name.ends_with(".toml") {
            ctx.warn(format_args!(
                "left out {} (not a .toml file)",
                path.display()
            ));
            continue;
        }
        let text = read_source(&path)?;
        // Checked as restart checks an account file: file and line on error.
        let account = store::parse_account(&path, &text, &profiles)?;
        names.push(account.name.to_string());
        files.push((format!("accounts/{file_name}"), text));
    }
    let providers_path = args.dir.join("providers.toml");
    let has_providers = providers_path.exists();
    if has_providers {
        let text = read_source(&providers_path)?;
        crate::providers::parse_providers(&providers_path, &text, &profiles)?;
        files.push(("providers.toml".into(), text));
    }
    if files.is_empty() {
        ctx.warn(format_args!(
            "{} holds no account: a PBX applying this bundle drops every fleet account",
            accounts_dir.display()
        ));
    }
    let previous = std::fs::read(&args.output)
        .ok()
        .and_then(|b| Bundle::parse(&b).ok())
        .map(|b| b.serial);
    let serial = match args.serial {
        Some(s) => {
            if let Some(p) = previous.filter(|p| *p >= s) {
                ctx.warn(format_args!(
                    "{} had serial {p}: PBXes that applied it refuse serial {s}",
                    args.output.display()
                ));
            }
            s
        }
        None => {
            let now = chrono::Utc::now().timestamp().max(1) as u64;
            previous.map_or(now, |p| now.max(p + 1))
        }
    };
    let bundle = Bundle::new(serial, now_rfc3339(), files);
    // A bare file name is in the current folder (whose fsync needs a name to open).
    let output = match args.output.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new(".").join(&args.output),
        _ => args.output.clone(),
    };
    store::write_atomic(&output, bundle.to_text().as_bytes(), 0o644)?;
    ctx.say(format_args!(
        "wrote {}: serial {serial}, {} accounts{}{}",
        args.output.display(),
        names.len(),
        if names.is_empty() {
            String::new()
        } else {
            format!(" ({})", names.join(", "))
        },
        if has_providers {
            ", providers.toml"
        } else {
            ""
        }
    ));
    ctx.say(format_args!(
        "sign it: minisign -S -s KEY -m {} (then publish it and its .minisig)",
        args.output.display()
    ));
    Ok(Outcome::Done)
}
