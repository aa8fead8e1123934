//! Fleets: accounts shared by many PBXes through a signed bundle.
//!
//! The administrator keeps a folder of account files (`accounts/NAME.toml`, the same format
//! as `CONFIG_DIR/accounts/`) and optionally a `providers.toml`; `pbxwall bundle create DIR
//! -o FILE` packs them into one JSON document, the administrator signs it with the
//! standard `minisign -S -m FILE` (which writes `FILE.minisig`) and publishes both. Each PBX
//! runs `pbxwall sync` on a timer: it fetches the bundle and its signature, verifies them
//! with `[sync] public_key` (in-process, `minisign-verify`), refuses a serial below the last
//! one applied or the same serial with other content, stores the bundle apart from the
//! local accounts and applies through the same guarded path as `restart`.
//!
//! Bundle format (version 1), one JSON object:
//!
//! ```json
//! {"pbxwall_bundle": 1,
//!  "serial": 1764748800,
//!  "created": "2026-12-03T08:00:00Z",
//!  "files": [{"path": "accounts/joe.toml", "sha256": "<64 hex digits>", "content": "..."},
//!            {"path": "providers.toml", "sha256": "...", "content": "..."}]}
//! ```
//! `path` is `accounts/NAME.toml` (NAME as for any account) or `providers.toml`; `sha256`
//! is the SHA-256 of `content` (the file's bytes, UTF-8). The signature covers the whole
//! document; the hashes let a reader check each file it extracts.
//!
//! On the PBX (a contract, like the rest of the file layout):
//!
//! ```text
//! CONFIG_DIR/fleet/bundle.json          the last good bundle, as published
//! CONFIG_DIR/fleet/bundle.json.minisig  its signature
//! STATE_DIR/sync.json                   last serial applied, ETag, last attempt and error
//! ```
//! The bundle's accounts are read from `bundle.json` at every build, beside the local
//! account files; a local account with the same name wins (with a warning).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use toml::Spanned;

use crate::model::{Account, AccountName, Duration, Profiles};
use crate::store::{self, Paths, StoreError, StoreLock};

/// The format version this program writes and reads.
pub const BUNDLE_FORMAT: u32 = 1;
/// Folder of the fleet's files in the configuration folder.
pub const FLEET_DIR: &str = "fleet";
/// The stored bundle in [`FLEET_DIR`].
pub const BUNDLE_FILE: &str = "bundle.json";
/// The sync record in the state folder.
pub const SYNC_STATE_FILE: &str = "sync.json";
/// Default and highest `[sync] max_bytes`: 8 MiB, the size limit of every configuration
/// file pbxwall reads (the stored bundle is one), room for some 50,000 accounts.
pub const DEFAULT_MAX_BYTES: u64 = store::MAX_CONFIG_FILE_BYTES;
/// Default time limit of one fetch (`[sync] timeout`).
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Largest signature file read.
pub const MAX_SIGNATURE_BYTES: u64 = 16 << 10;

/// Why a bundle was refused or could not be fetched: `sync` ends with exit 3 and the last
/// good bundle stays in force.
#[derive(Debug, Error)]
pub enum SyncError {
    /// The server did not answer, answered an error, or the download was cut short.
    #[error("cannot fetch {url}: {why}")]
    Fetch {
        /// What was fetched.
        url: String,
        /// What went wrong.
        why: String,
    },
    /// No configured key verifies the signature.
    #[error("bad signature on {url}: {why}")]
    Signature {
        /// The bundle.
        url: String,
        /// What the verifier said, per key.
        why: String,
    },
    /// The document is not a valid bundle, or a file in it is invalid.
    #[error("invalid bundle: {0}")]
    Invalid(String),
    /// Anti-rollback: the serial is below the last one applied.
    #[error(
        "refusing serial {serial}: it is below serial {last}, the last one applied (a replayed older bundle?)"
    )]
    Rollback {
        /// The bundle's serial.
        serial: u64,
        /// The last serial applied.
        last: u64,
    },
    /// Anti-rollback: the same serial as the last one applied, with other content.
    #[error(
        "refusing serial {serial}: serial {serial} was applied already with other content (a new bundle needs a higher serial)"
    )]
    SameSerial {
        /// The serial.
        serial: u64,
    },
    /// The bundle was good but applying it failed (the lockout guard, the kernel).
    #[error("{0}")]
    Apply(String),
}

// ---------------------------------------------------------------------------------------
// Settings

/// `[sync]` in `pbxwall.toml`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SyncIn {
    url: Option<Spanned<String>>,
    public_key: Option<Spanned<String>>,
    next_public_key: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    max_bytes: Option<Spanned<u64>>,
}

/// Where the bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `https://` or `http://` URL.
    Http(String),
    /// `file://` path.
    File(PathBuf),
}

impl Source {
    /// Parses `https://...`, `http://...` or `file:///path`.
    pub fn parse(url: &str) -> Result<Source, String> {
        let bad = |why: &str| {
            format!(
                "invalid [sync] url {url:?}: {why}; expected https://HOST/PATH, http://HOST/PATH or file:///PATH"
            )
        };
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("it contains a space or control character"));
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad("a file:// URL needs an absolute path"));
            }
            return Ok(Source::File(PathBuf::from(path)));
        }
        for scheme in ["https://", "http://"] {
            if let Some(rest) = url.strip_prefix(scheme) {
                let host = rest.split(['/', '?', '#']).next().unwrap_or("");
                if host.is_empty() {
                    return Err(bad("it has no host"));
                }
                return Ok(Source::Http(url.to_owned()));
            }
        }
        Err(bad("unknown scheme"))
    }

    /// The source as a URL.
    pub fn url(&self) -> String {
        match self {
            Source::Http(u) => u.clone(),
            Source::File(p) => format!("file://{}", p.display()),
        }
    }

    /// The signature's location: the URL with `.minisig` appended.
    pub fn signature(&self) -> Source {
        match self {
            Source::Http(u) => Source::Http(format!("{u}.minisig")),
            Source::File(p) => {
                let mut s = p.clone().into_os_string();
                s.push(".minisig");
                Source::File(s.into())
            }
        }
    }
}

/// Validated `[sync]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSettings {
    /// The bundle's location; `None`: no fleet.
    pub source: Option<Source>,
    /// Minisign public keys (the base64 line) a signature may be made with: `public_key`
    /// and, during a key rotation, `next_public_key`.
    pub public_keys: Vec<String>,
    /// A PEM file of the only CA certificates trusted for https (else the system's).
    pub ca_file: Option<PathBuf>,
    /// Time limit of each fetch.
    pub timeout: Duration,
    /// Largest bundle downloaded.
    pub max_bytes: u64,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            source: None,
            public_keys: Vec::new(),
            ca_file: None,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS).expect("in range"),
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// The base64 line of a minisign public key given as that line or as the whole `.pub`
/// file (an `untrusted comment:` line, then the key).
pub fn public_key_line(text: &str) -> Result<String, String> {
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .unwrap_or("");
    minisign_verify::PublicKey::from_base64(line)
        .map(|_| line.to_owned())
        .map_err(|e| {
            format!(
                "invalid minisign public key {line:?}: {e}; expected the base64 line of the .pub file `minisign -G` wrote (it starts with RW)"
            )
        })
}

/// Converts `[sync]` as written to [`SyncSettings`]; errors name the file and line.
pub(crate) fn parse_sync(path: &Path, text: &str, raw: SyncIn) -> Result<SyncSettings, StoreError> {
    let at = |offset: usize, message: String| StoreError::Invalid {
        path: path.to_owned(),
        line: text[..offset.min(text.len())].matches('\n').count() + 1,
        message,
    };
    let mut s = SyncSettings::default();
    if let Some(url) = raw.url.filter(|u| !u.get_ref().is_empty()) {
        s.source = Some(Source::parse(url.get_ref()).map_err(|e| at(url.span().start, e))?);
    }
    for key in [raw.public_key, raw.next_public_key].into_iter().flatten() {
        if key.get_ref().trim().is_empty() {
            continue;
        }
        let line = public_key_line(key.get_ref()).map_err(|e| at(key.span().start, e))?;
        if !s.public_keys.contains(&line) {
            s.public_keys.push(line);
        }
    }
    if s.source.is_some() && s.public_keys.is_empty() {
        return Err(at(
            0,
            "[sync] url is set but public_key is not: set public_key to the base64 line of the minisign public key the bundles are signed with".into(),
        ));
    }
    if let Some(ca) = raw.ca_file.filter(|c| !c.get_ref().is_empty()) {
        if !ca.get_ref().starts_with('/') {
            return Err(at(
                ca.span().start,
                format!(
                    "invalid [sync] ca_file {:?}: use an absolute path to a PEM file",
                    ca.get_ref()
                ),
            ));
        }
        s.ca_file = Some(PathBuf::from(ca.get_ref()));
    }
    if let Some(t) = raw.timeout {
        s.timeout = t.get_ref().parse().map_err(|e: crate::model::ModelError| {
            at(t.span().start, format!("invalid [sync] timeout: {e}"))
        })?;
    }
    if let Some(m) = raw.max_bytes {
        if !(1024..=DEFAULT_MAX_BYTES).contains(m.get_ref()) {
            return Err(at(
                m.span().start,
                format!(
                    "invalid [sync] max_bytes {}: use 1024 to {DEFAULT_MAX_BYTES}",
                    m.get_ref()
                ),
            ));
        }
        s.max_bytes = m.into_inner();
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------
// The bundle

/// A bundle document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Format version ([`BUNDLE_FORMAT`]).
    pub pbxwall_bundle: u32,
    /// Serial number: each new bundle of a fleet needs a higher one.
    pub serial: u64,
    /// When it was made (RFC 3339, UTC).
    pub created: String,
    /// The files, in path order.
    pub files: Vec<BundleFile>,
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleFile {
    /// `accounts/NAME.toml` or `providers.toml`.
    pub path: String,
    /// SHA-256 of `content`, lowercase hex.
    pub sha256: String,
    /// The file's text.
    pub content: String,
}

/// The SHA-256 of `bytes` in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// What a bundle holds, checked: its accounts (parsed as `restart` parses account files)
/// and its provider list.
#[derive(Debug)]
pub struct Checked {
    /// The document.
    pub bundle: Bundle,
    /// Its accounts, in name order.
    pub accounts: Vec<Account>,
    /// The text of its `providers.toml`, if it has one.
    pub providers: Option<String>,
}

impl Bundle {
    /// Makes a bundle of these files (path, text).
    pub fn new(serial: u64, created: String, files: Vec<(String, String)>) -> Bundle {
        let mut files: Vec<BundleFile> = files
            .into_iter()
            .map(|(path, content)| BundleFile {
                sha256: sha256_hex(content.as_bytes()),
                path,
                content,
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Bundle {
            pbxwall_bundle: BUNDLE_FORMAT,
            serial,
            created,
            files,
        }
    }

    /// The document's text (pretty JSON, ending in a newline).
    pub fn to_text(&self) -> String {
        let mut t = serde_json::to_string_pretty(self).expect("bundle serialises");
        t.push('\n');
        t
    }

    /// Parses a document: format, hashes and paths (not the files' contents).
    pub fn parse(bytes: &[u8]) -> Result<Bundle, SyncError> {
        let b: Bundle = serde_json::from_slice(bytes)
            .map_err(|e| SyncError::Invalid(format!("not a pbxwall bundle: {e}")))?;
        if b.pbxwall_bundle != BUNDLE_FORMAT {
            return Err(SyncError::Invalid(format!(
                "format version {} is not supported (this pbxwall reads version {BUNDLE_FORMAT}; upgrade it)",
                b.pbxwall_bundle
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &b.files {
            if f.path != "providers.toml" && account_path_name(&f.path).is_none() {
                return Err(SyncError::Invalid(format!(
                    "file {:?}: a bundle holds only accounts/NAME.toml (a valid account name) and providers.toml",
                    f.path
                )));
            }
            if !seen.insert(f.path.to_ascii_lowercase()) {
                return Err(SyncError::Invalid(format!(
                    "file {:?} is in the bundle twice (names differ only in case?)",
                    f.path
                )));
            }
            if sha256_hex(f.content.as_bytes()) != f.sha256 {
                return Err(SyncError::Invalid(format!(
                    "file {:?}: its content does not match its sha256",
                    f.path
                )));
            }
        }
        Ok(b)
    }

    /// Parses every account (as `restart` does) and the provider list; the first bad file
    /// refuses the whole bundle. `origin` names the bundle in errors.
    pub fn check(self, origin: &Path, profiles: &Profiles) -> Result<Checked, SyncError> {
        let (accounts, errors) = self.accounts(origin, profiles);
        if let Some(e) = errors.into_iter().next() {
            return Err(SyncError::Invalid(crate::error_chain(&e)));
        }
        let providers = self
            .files
            .iter()
            .find(|f| f.path == "providers.toml")
            .map(|f| f.content.clone());
        if let Some(text) = &providers {
            crate::providers::parse_providers(&origin.join("providers.toml"), text, profiles)
                .map_err(|e| SyncError::Invalid(crate::error_chain(&e)))?;
        }
        Ok(Checked {
            bundle: self,
            accounts,
            providers,
        })
    }

    /// The bundle's accounts, parsed with the account file parser; files that do not parse
    /// are returned as errors naming `origin/accounts/NAME.toml` and the line.
    pub fn accounts(&self, origin: &Path, profiles: &Profiles) -> (Vec<Account>, Vec<StoreError>) {
        let mut accounts = Vec::new();
        let mut errors = Vec::new();
        for f in &self.files {
            if account_path_name(&f.path).is_none() {
                continue;
            }
            match store::parse_account(&origin.join(&f.path), &f.content, profiles) {
                Ok(a) => accounts.push(a),
                Err(e) => errors.push(e),
            }
        }
        accounts.sort_by(|a, b| a.name.cmp(&b.name));
        (accounts, errors)
    }

    /// The names of the bundle's accounts.
    pub fn account_names(&self) -> Vec<AccountName> {
        self.files
            .iter()
            .filter_map(|f| account_path_name(&f.path))
            .collect()
    }
}

/// The account name of a bundle path `accounts/NAME.toml`.
fn account_path_name(path: &str) -> Option<AccountName> {
    path.strip_prefix("accounts/")?
        .strip_suffix(".toml")?
        .parse()
        .ok()
}

/// What to do with a verified bundle, given what was applied before (anti-rollback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A new serial (or the first bundle): apply it.
    Apply,
    /// The bundle applied last, again: nothing to do.
    Unchanged,
}

/// Anti-rollback: `serial` and `sha256` of a new bundle against the last one applied
/// (`None` when none was). A lower serial is refused, and so is the same serial with other
/// content; the same bundle again is no change.
pub fn decide(serial: u64, sha256: &str, last: Option<(u64, &str)>) -> Result<Decision, SyncError> {
    match last {
        None => Ok(Decision::Apply),
        Some((last, _)) if serial < last => Err(SyncError::Rollback { serial, last }),
        Some((last, last_sha)) if serial == last => {
            if sha256 == last_sha {
                Ok(Decision::Unchanged)
            } else {
                Err(SyncError::SameSerial { serial })
            }
        }
        Some(_) => Ok(Decision::Apply),
    }
}

/// Verifies a minisign signature of `bundle` with any of `keys` (base64 lines); the error
/// says what each key's check said.
pub fn verify(
    bundle: &[u8],
    signature: &[u8],
    keys: &[String],
    url: &str,
) -> Result<(), SyncError> {
    let bad = |why: String| SyncError::Signature {
        url: url.to_owned(),
        why,
    };
    let text =
        std::str::from_utf8(signature).map_err(|_| bad("the .minisig file is not text".into()))?;
    let sig = minisign_verify::Signature::decode(text)
        .map_err(|e| bad(format!("the .minisig file does not parse: {e}")))?;
    let mut why = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let pk = minisign_verify::PublicKey::from_base64(key)
            .map_err(|e| bad(format!("public key {}: {e}", i + 1)))?;
        match pk.verify(bundle, &sig, false) {
            Ok(()) => return Ok(()),
            Err(minisign_verify::Error::UnexpectedKeyId) => {
                why.push(format!("not signed by key {}", short_key(key)))
            }
            Err(e) => why.push(format!("key {}: {e}", short_key(key))),
        }
    }
    Err(bad(why.join("; ")))
}

fn short_key(key: &str) -> String {
    key.chars().take(12).collect::<String>() + "..."
}

// ---------------------------------------------------------------------------------------
// On the PBX

/// `CONFIG_DIR/fleet`.
pub fn fleet_dir(paths: &Paths) -> PathBuf {
    paths.config_dir.join(FLEET_DIR)
}

/// `CONFIG_DIR/fleet/bundle.json`.
pub fn bundle_file(paths: &Paths) -> PathBuf {
    fleet_dir(paths).join(BUNDLE_FILE)
}

/// `CONFIG_DIR/fleet/bundle.json.minisig`.
pub fn signature_file(paths: &Paths) -> PathBuf {
    fleet_dir(paths).join(format!("{BUNDLE_FILE}.minisig"))
}

/// The stored bundle (the last good one), if there is one; an unreadable or corrupt file
/// is an error naming it.
pub fn stored_bundle(paths: &Paths) -> Result<Option<(Bundle, String)>, StoreError> {
    let path = bundle_file(paths);
    store::check_config_dir(&fleet_dir(paths))?;
    let Some(text) = store::read_config(&path)? else {
        return Ok(None);
    };
    let b = Bundle::parse(text.as_bytes()).map_err(|e| StoreError::Invalid {
        path: path.clone(),
        line: 1,
        message: e.to_string(),
    })?;
    let sha = sha256_hex(text.as_bytes());
    Ok(Some((b, sha)))
}

/// The fleet's accounts for a build: those of the stored bundle whose names no local
/// account has. Returns them, the files that did not parse (skipped, as bad local files
/// are), and the names a local account overrides.
pub fn load_accounts(
    paths: &Paths,
    profiles: &Profiles,
    local: &[Account],
) -> (Vec<Account>, Vec<StoreError>, Vec<(AccountName, u64)>) {
    let (bundle, _) = match stored_bundle(paths) {
        Ok(Some(b)) => b,
        Ok(None) => return (Vec::new(), Vec::new(), Vec::new()),
        Err(e) => return (Vec::new(), vec![e], Vec::new()),
    };
    let (accounts, errors) = bundle.accounts(&bundle_file(paths), profiles);
    let mut shadowed = Vec::new();
    let accounts = accounts
        .into_iter()
        .filter(|a| {
            let local_too = local.iter().any(|l| l.name == a.name);
            if local_too {
                shadowed.push((a.name.clone(), bundle.serial));
            }
            !local_too
        })
        .collect();
    (accounts, errors, shadowed)
}

/// The `providers.toml` of the stored bundle, with the path it is named by in errors
/// (`CONFIG_DIR/fleet/bundle.json/providers.toml`): `enable-trusted-providers` uses it
/// instead of the shipped list.
pub fn stored_providers(paths: &Paths) -> Option<(PathBuf, String)> {
    let (bundle, _) = stored_bundle(paths).ok().flatten()?;
    let file = bundle
        .files
        .into_iter()
        .find(|f| f.path == "providers.toml")?;
    Some((bundle_file(paths).join("providers.toml"), file.content))
}

/// Where an account comes from (for `list`, `del-acct`, `status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "origin")]
pub enum Origin {
    /// A file in `CONFIG_DIR/accounts/` (and not in the fleet bundle).
    Local,
    /// The fleet bundle of this serial.
    Fleet {
        /// The bundle's serial.
        serial: u64,
    },
    /// Both: the local file is in force, the bundle's account is overridden.
    LocalOverridesFleet {
        /// The bundle's serial.
        serial: u64,
    },
    /// Neither.
    None,
}

impl Origin {
    /// A short word for listings: `local`, `fleet`, `local (overrides fleet)`, `-`.
    pub fn label(&self) -> &'static str {
        match self {
            Origin::Local => "local",
            Origin::Fleet { .. } => "fleet",
            Origin::LocalOverridesFleet { .. } => "local (overrides fleet)",
            Origin::None => "-",
        }
    }
}

/// Where the account `name` comes from: a local file, the fleet bundle, both, or neither.
/// A bundle that cannot be read counts as no bundle.
pub fn account_origin(paths: &Paths, name: &AccountName) -> Origin {
    let local = store::account_exists(paths, name);
    let fleet = stored_bundle(paths)
        .ok()
        .flatten()
        .filter(|(b, _)| b.account_names().contains(name))
        .map(|(b, _)| b.serial);
    match (local, fleet) {
        (true, None) => Origin::Local,
        (false, Some(serial)) => Origin::Fleet { serial },
        (true, Some(serial)) => Origin::LocalOverridesFleet { serial },
        (false, None) => Origin::None,
    }
}

/// The names of all the stored bundle's accounts with its serial, for listings
/// (empty without a bundle).
pub fn fleet_account_names(paths: &Paths) -> BTreeMap<AccountName, u64> {
    stored_bundle(paths)
        .ok()
        .flatten()
        .map(|(b, _)| {
            b.account_names()
                .into_iter()
                .map(|n| (n, b.serial))
                .collect()
        })
        .unwrap_or_default()
}

/// `STATE_DIR/sync.json`: what `sync` applied and how its last run went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// The source of the last bundle applied.
    #[serde(default)]
    pub url: Option<String>,
    /// Serial of the last bundle applied (anti-rollback survives a removed bundle file).
    #[serde(default)]
    pub serial: Option<u64>,
    /// SHA-256 of the last bundle applied.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The server's ETag of it, for If-None-Match.
    #[serde(default)]
    pub etag: Option<String>,
    /// The server's Last-Modified of it, for If-Modified-Since.
    #[serde(default)]
    pub last_modified: Option<String>,
    /// When a bundle was last applied (RFC 3339).
    #[serde(default)]
    pub applied_at: Option<String>,
    /// When sync last ran (RFC 3339).
    #[serde(default)]
    pub last_run: Option<String>,
    /// "ok", "unchanged" or "failed".
    #[serde(default)]
    pub last_outcome: Option<String>,
    /// Why the last run failed.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl SyncState {
    /// Loads the record; a missing or corrupt file is empty.
    pub fn load(paths: &Paths) -> SyncState {
        crate::state::load_json(paths, SYNC_STATE_FILE).0
    }

    /// Writes the record atomically; the caller holds the lock.
    pub fn save(&self, paths: &Paths, lock: &StoreLock) -> Result<(), StoreError> {
        crate::state::save_json(paths, SYNC_STATE_FILE, self, lock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acct(name: &str, addr: &str) -> (String, String) {
        (
            format!("accounts/{name}.toml"),
            format!("addresses = [\"{addr}\"]\nservices = [\"sip-udp\"]\n"),
        )
    }

    #[test]
    fn anti_rollback() {
        assert_eq!(decide(5, "a", None).unwrap(), Decision::Apply);
        assert_eq!(decide(6, "b", Some((5, "a"))).unwrap(), Decision::Apply);
        assert_eq!(decide(5, "a", Some((5, "a"))).unwrap(), Decision::Unchanged);
        let e = decide(5, "b", Some((5, "a"))).unwrap_err().to_string();
        assert!(e.contains("applied already with other content"), "{e}");
        let e = decide(4, "a", Some((5, "a"))).unwrap_err().to_string();
        assert!(e.contains("below serial 5"), "{e}");
    }

    #[test]
    fn bundle_round_trip_and_checks() {
        let b = Bundle::new(
            7,
            "2026-12-03T08:00:00Z".into(),
            vec![acct("joe", "203.0.113.7"), acct("ann", "198.51.100.0/28")],
        );
        assert_eq!(b.files[0].path, "accounts/ann.toml");
        let text = b.to_text();
        let back = Bundle::parse(text.as_bytes()).unwrap();
        assert_eq!(back, b);
        let profiles = store::builtin_profiles();
        let c = back.check(Path::new("b.json"), &profiles).unwrap();
        assert_eq!(c.accounts.len(), 2);
        assert_eq!(c.accounts[1].name.as_str(), "joe");

        // A changed file no longer matches its hash.
        let tampered = text.replace("203.0.113.7", "203.0.113.8");
        let e = Bundle::parse(tampered.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("does not match its sha256"), "{e}");
        // Truncated.
        assert!(Bundle::parse(&text.as_bytes()[..text.len() / 2]).is_err());
        // A path that escapes.
        let mut evil = b.clone();
        evil.files[0].path = "accounts/../../etc/passwd.toml".into();
        let e = Bundle::parse(evil.to_text().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("a bundle holds only"), "{e}");
        // Another format version.
        let mut v2 = b.clone();
        v2.pbxwall_bundle = 2;
        assert!(Bundle::parse(v2.to_text().as_bytes()).is_err());
        // A bad account refuses the whole bundle, naming file and line.
        let bad = Bundle::new(8, "x".into(), vec![acct("joe", "127.0.0.1")]);
        let e = bad
            .check(Path::new("b.json"), &profiles)
            .unwrap_err()
            .to_string();
        assert!(e.contains("b.json/accounts/joe.toml:1"), "{e}");
    }

    #[test]
    fn sources() {
        assert_eq!(
            Source::parse("file:///srv/b.json").unwrap().signature(),
            Source::File("/srv/b.json.minisig".into())
        );
        assert_eq!(
            Source::parse("https://fleet.example/b.json")
                .unwrap()
                .signature()
                .url(),
            "https://fleet.example/b.json.minisig"
        );
        for bad in ["ftp://x/y", "file://rel", "https:///x", "http://a b", ""] {
            assert!(Source::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sync_settings() {
        let key = "RWSsFi1QPn7mBRjoY86uXCjMDTDNV+iD/eAJd+x22dm2em+UiQQIe/cN";
        let text = format!("[sync]\nurl = \"https://f.example/b.json\"\npublic_key = \"{key}\"\n");
        let s = store::parse_settings(Path::new("p.toml"), &text).unwrap();
        assert_eq!(s.sync.public_keys, [key]);
        assert_eq!(s.sync.timeout.as_secs(), 30);
        let no_key = "[sync]\nurl = \"https://f.example/b.json\"\n";
        assert!(store::parse_settings(Path::new("p.toml"), no_key).is_err());
        let bad_key = "[sync]\npublic_key = \"RWQnope\"\n";
        let e = store::parse_settings(Path::new("p.toml"), bad_key)
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.toml:2: invalid minisign public key"), "{e}");
        let pubfile = format!("untrusted comment: minisign public key\n{key}\n");
        assert_eq!(public_key_line(&pubfile).unwrap(), key);
    }

    #[test]
    fn signatures() {
        // Made with `minisign -G -W` and `minisign -S -m m -t "pbxwall test"` (minisign 0.11).
        let a = "RWSsFi1QPn7mBRjoY86uXCjMDTDNV+iD/eAJd+x22dm2em+UiQQIe/cN".to_owned();
        let b = "RWTBHMpx8tJPDjcL42oMhMhDKu9zoQxHfk+1w/l3nHUj7NIp7S8qObLm".to_owned();
        let sig = "untrusted comment: signature from minisign secret key\n\
RUSsFi1QPn7mBYBcCXFmuxNL6MhZst3/vX+rA2wOET4s4Tbc7ZJLP4qKwsg/RoOP+DS9f1dtSfY5DRLEwof8MCDc8pRVJ+3W4wE=\n\
trusted comment: pbxwall test\n\
3G3zp+/UW02K8ZmHiCXNAnJWYRtREKfkKPuJVueNszowf9kmC+Ipe0N2td36jjSlUTZv6G3GyGdNs6AhqmA7Ag==\n";
        let msg = b"pbxwall test vector\n";
        verify(msg, sig.as_bytes(), std::slice::from_ref(&a), "u").unwrap();
        // Two keys during a rotation: either verifies.
        verify(msg, sig.as_bytes(), &[b.clone(), a.clone()], "u").unwrap();
        let e = verify(
            b"pbxwall test vectoR\n",
            sig.as_bytes(),
            std::slice::from_ref(&a),
            "u",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("bad signature on u"), "{e}");
        let e = verify(msg, sig.as_bytes(), std::slice::from_ref(&b), "u")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not signed by key RWTBHMpx8tJP"), "{e}");
        assert!(verify(msg, &sig.as_bytes()[..60], &[a], "u").is_err());
    }
}
