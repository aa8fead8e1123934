//! Files: where they live, how they are locked, read and written.
//!
//! Layout (a contract: administrators edit these files and install scripts write them, so
//! the paths do not change; README "Files" shows them with examples):
//!
//! ```text
//! CONFIG_DIR/pbxwall.toml          settings (optional)
//! CONFIG_DIR/accounts/NAME.toml    one permission file per account
//! CONFIG_DIR/profiles/NAME.toml    local overrides of shipped profiles
//! SHARE_DIR/profiles/NAME.toml     shipped profiles (built-in copies when absent)
//! SHARE_DIR/providers.toml         shipped provider list
//! STATE_DIR/lock                   the lock every changing command holds
//! STATE_DIR/accounts-cache.bin     parse cache of the account files (crate::account_cache)
//! STATE_DIR/...                    resolution cache, last applied ruleset
//! ```
//!
//! Every write goes through [`write_atomic`] (temp file beside the target, fsync, rename,
//! fsync of the folder), and every command that changes something holds a [`StoreLock`]
//! across read → modify → write → apply, so cron and an administrator can run commands at
//! the same time and nothing is lost.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use toml::Spanned;

use crate::account_cache::{self, FileStamp};
use crate::geo::{Country, GeoSettings};
use crate::knock::KnockSettings;
use crate::model::{
    Account, AccountName, Duration, Fqdn, ModelError, Profile, Profiles, ResolverSettings, RtpFrom,
    RtpSettings, Settings, parse_port_range, parse_source,
};

pub use crate::model::display_net;

/// Default configuration folder.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/pbxwall";
/// Default state folder.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/pbxwall";
/// Default folder of shipped data (of a package install).
pub const DEFAULT_SHARE_DIR: &str = "/usr/share/pbxwall";

/// The shipped-data folder when none is given: `../share/pbxwall` beside this program when
/// it exists (a `make install PREFIX=/usr/local` puts the binaries in `/usr/local/sbin` and the
/// data in `/usr/local/share/pbxwall`), else [`DEFAULT_SHARE_DIR`].
pub fn default_share_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("share/pbxwall")))
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SHARE_DIR))
}

/// Errors of the file layer. Each names the file it is about.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A read, write or rename failed.
    #[error("{path}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file that does not parse or holds invalid values.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem (1 when unknown).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The account to create exists already.
    #[error("account {0} exists already: pass --replace to overwrite it")]
    AccountExists(AccountName),
    /// The account to delete does not exist.
    #[error("no account named {name}{}", suggestion(.close))]
    NoSuchAccount {
        /// What was asked for.
        name: String,
        /// Existing names that look alike.
        close: Vec<String>,
    },
    /// A configuration file or folder anybody but root (or the user running pbxwall) could
    /// have written, or that is not a plain file of a sane size.
    #[error("refusing to read {path}: {why}")]
    Unsafe {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong with it and how to fix it.
        why: String,
    },
    /// The lock could not be taken.
    #[error("cannot lock {path} (pbxwall needs a local file system that supports locks)")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn suggestion(close: &[String]) -> String {
    if close.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", close.join(" or "))
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The folders pbxwall works in.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Configuration (`/etc/pbxwall`).
    pub config_dir: PathBuf,
    /// State (`/var/lib/pbxwall`).
    pub state_dir: PathBuf,
    /// Shipped data (`/usr/share/pbxwall`).
    pub share_dir: PathBuf,
}

impl Paths {
    /// The settings file.
    pub fn settings_file(&self) -> PathBuf {
        self.config_dir.join("pbxwall.toml")
    }
    /// The accounts folder.
    pub fn accounts_dir(&self) -> PathBuf {
        self.config_dir.join("accounts")
    }
    /// The file of one account.
    pub fn account_file(&self, name: &AccountName) -> PathBuf {
        self.accounts_dir().join(format!("{name}.toml"))
    }
    /// Local profile overrides.
    pub fn local_profiles_dir(&self) -> PathBuf {
        self.config_dir.join("profiles")
    }
    /// Shipped profiles.
    pub fn shipped_profiles_dir(&self) -> PathBuf {
        self.share_dir.join("profiles")
    }
    /// Shipped providers list.
    pub fn providers_file(&self) -> PathBuf {
        self.share_dir.join("providers.toml")
    }
    /// The lock file.
    pub fn lock_file(&self) -> PathBuf {
        self.state_dir.join("lock")
    }
}

/// An exclusive lock on the store, released when dropped.
#[derive(Debug)]
pub struct StoreLock {
    file: File,
}

impl StoreLock {
    /// Takes the lock, creating the state folder and lock file if needed. If another command
    /// holds it, says so through `waiting` and blocks until it is free.
    ///
    /// A full or read-only state folder must not stop a command from protecting the host,
    /// and a lock needs no writing: when the lock file cannot be opened for writing, it is
    /// opened read-only, and when it cannot be created, the state folder itself is locked.
    pub fn acquire(paths: &Paths, waiting: impl FnOnce(&Path)) -> Result<StoreLock, StoreError> {
        let mut path = paths.lock_file();
        fs::create_dir_all(&paths.state_dir).map_err(io_err(&paths.state_dir))?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(STATE_FILE_MODE)
            .open(&path)
            .or_else(|e| File::open(&path).map_err(|_| e))
            .or_else(|e| {
                path = paths.state_dir.clone();
                File::open(&path).map_err(|_| e)
            })
            .map_err(io_err(&path))?;
        let lock_err = |source| StoreError::Lock {
            path: path.clone(),
            source,
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                waiting(&path);
                file.lock().map_err(lock_err)?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(lock_err(e)),
        }
        for dir in [
            paths.config_dir.clone(),
            paths.accounts_dir(),
            paths.local_profiles_dir(),
            paths.state_dir.clone(),
        ] {
            remove_stale_temp_files(&dir);
        }
        Ok(StoreLock { file })
    }
}

/// Removes temp files [`write_atomic`] left behind when a command was killed mid-write.
/// Only called with the lock held: then no write is in progress, so any is stale.
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if is_temp_name(&name.to_string_lossy()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Whether a file name is one of [`write_atomic`]'s temp files: `.NAME.tmp.PID.N`.
fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let mut parts = rest.rsplitn(4, '.');
    let (Some(n), Some(pid), Some("tmp"), Some(target)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !target.is_empty()
        && [n, pid]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

static TEMP_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Mode of account files pbxwall writes: they name the users' addresses.
pub const ACCOUNT_FILE_MODE: u32 = 0o640;
/// Mode of state files (resolution cache, last apply, audit log): root only.
pub const STATE_FILE_MODE: u32 = 0o600;

/// Writes `contents` to `path` atomically: a temp file beside it (created exclusively),
/// the old file's mode kept without its group and other write bits (else `mode`), fsync,
/// rename over the target, fsync of the folder. Readers see the old or the new file, never
/// a mix; the temp file is removed on error. A symbolic link at `path` is replaced, never
/// followed.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), StoreError> {
    let mode = fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_file())
        .map(|m| m.mode() & 0o7777 & !0o022)
        .unwrap_or(mode);
    write_atomic_with_mode(path, contents, mode)
}

/// [`write_atomic`] for a file that holds a secret (the settings once they have a knock
/// sequence): the old file's mode without any bit for others and without group write
/// (else 0640), so no local user but root and the file's group can read it.
pub fn write_secret(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    let mode = fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_file())
        .map(|m| m.mode() & 0o7777 & !0o027)
        .unwrap_or(0o640);
    write_atomic_with_mode(path, contents, mode)
}

/// [`write_atomic`] for a state file: always [`STATE_FILE_MODE`], whatever the old file's
/// mode was.
pub fn write_state(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    write_atomic_with_mode(path, contents, STATE_FILE_MODE)
}

/// [`write_atomic`] of a record that is often written again unchanged (the resolution
/// cache, the dynamic sets' record): nothing is written when `path` is a regular file of
/// the user running pbxwall that holds exactly `contents` already and whose mode the write
/// would keep (a write of the same bytes would only cost a temp file and two fsyncs).
pub fn write_atomic_unless_same(path: &Path, contents: &[u8], mode: u32) -> Result<(), StoreError> {
    if is_same_file(path, contents, |old| old & !0o022) {
        return Ok(());
    }
    write_atomic(path, contents, mode)
}

/// [`write_state`] with the shortcut of [`write_atomic_unless_same`].
pub fn write_state_unless_same(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    if is_same_file(path, contents, |_| STATE_FILE_MODE) {
        return Ok(());
    }
    write_state(path, contents)
}

/// Whether `path` (not followed if a symbolic link) is a regular file owned by the effective
/// user, with mode `new_mode(its mode)` already, holding exactly `contents`.
fn is_same_file(path: &Path, contents: &[u8], new_mode: impl FnOnce(u32) -> u32) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    let mode = meta.mode() & 0o7777;
    meta.file_type().is_file()
        && meta.len() == contents.len() as u64
        && Some(meta.uid()) == effective_uid()
        && new_mode(mode) == mode
        && fs::read(path).is_ok_and(|old| old == contents)
}

fn write_atomic_with_mode(path: &Path, contents: &[u8], mode: u32) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(
        ".{file_name}.tmp.{}.{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// A state file written in two steps: its contents go into a temporary file beside it
/// ([`Staged::create`], then [`Staged::writer`]), and only once what they record is true
/// does [`Staged::commit`] put it in place (fsync, rename, fsync of the folder), as
/// [`write_state`] does at once. Dropped without a commit, the temporary file is removed.
/// For a large file rendered while the kernel works through a batch, without holding its
/// text in memory.
#[derive(Debug)]
pub struct Staged {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<io::BufWriter<File>>,
    /// [`Staged::sync`] made the contents durable already.
    synced: bool,
}

impl Staged {
    /// Creates the temporary file of `path` (mode [`STATE_FILE_MODE`]).
    pub fn create(path: &Path) -> Result<Staged, StoreError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let tmp = dir.join(format!(
            ".{file_name}.tmp.{}.{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(STATE_FILE_MODE)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        Ok(Staged {
            path: path.to_owned(),
            tmp,
            file: Some(io::BufWriter::with_capacity(1 << 16, f)),
            synced: false,
        })
    }

    /// Where to write the contents.
    pub fn writer(&mut self) -> &mut impl Write {
        self.file
            .as_mut()
            .expect("a staged file is written before its commit")
    }

    /// Makes the contents written so far durable in the temporary file (flush, mode, fsync)
    /// without putting it in place: done before the commit, e.g. while the kernel works
    /// through a batch, it leaves the commit only the rename and the folder's fsync. Nothing
    /// may be written after it.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        let result = (|| {
            let w = self.file.as_mut().expect("synced before the commit");
            w.flush()?;
            let f = w.get_ref();
            f.set_permissions(fs::Permissions::from_mode(STATE_FILE_MODE))?;
            f.sync_all()
        })();
        result.map_err(io_err(&self.tmp))?;
        self.synced = true;
        Ok(())
    }

    /// Puts the file in place, durably.
    pub fn commit(mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let result = (|| {
            let f = self
                .file
                .take()
                .expect("committed once")
                .into_inner()
                .map_err(|e| e.into_error())?;
            if !self.synced {
                f.set_permissions(fs::Permissions::from_mode(STATE_FILE_MODE))?;
                f.sync_all()?;
            }
            drop(f);
            fs::rename(&self.tmp, &path)?;
            File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
        })();
        result.map_err(io_err(&path))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Committed: renamed away already, and this finds nothing.
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Removes a file and fsyncs its folder; a missing file is not an error.
pub fn remove_durably(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path)(e)),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Largest configuration file read (settings, an account, a profile): a hand-written account
/// is a few hundred bytes, an account of 100,000 addresses about 2 MiB; parsing takes about
/// ten times a file's size in memory, so 8 MiB bounds that while leaving room to grow.
pub const MAX_CONFIG_FILE_BYTES: u64 = 8 << 20;

/// Reads a configuration file that decides who gets in, after the checks sshd makes with
/// StrictModes: it must be owned by root (or the user running pbxwall) and writable by
/// nobody else, a regular file (a symbolic link is followed and its target checked; a
/// dangling one is an error, not a missing file), and at most [`MAX_CONFIG_FILE_BYTES`].
/// `Ok(None)` if it does not exist.
pub fn read_config(path: &Path) -> Result<Option<String>, StoreError> {
    Ok(read_config_with_meta(path)?.map(|(text, _)| text))
}

/// [`read_config`], with the metadata of the open file its checks were made on.
pub fn read_config_with_meta(path: &Path) -> Result<Option<(String, fs::Metadata)>, StoreError> {
    let unsafe_file = |why: String| StoreError::Unsafe {
        path: path.to_owned(),
        why,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return match fs::symlink_metadata(path) {
                Ok(_) => Err(unsafe_file(
                    "it is a symbolic link to a file that does not exist".into(),
                )),
                Err(_) => Ok(None),
            };
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(unsafe_file("it is not a regular file".into()));
    }
    check_owner_and_mode(path, &meta)?;
    if meta.len() > MAX_CONFIG_FILE_BYTES {
        return Err(unsafe_file(format!(
            "it is {} bytes, more than the limit of {MAX_CONFIG_FILE_BYTES}",
            meta.len()
        )));
    }
    let text = read_known_size(file, meta.len()).map_err(io_err(path))?;
    Ok(Some((text, meta)))
}

/// Whether the metadata of `path` passes the checks [`read_config`] makes, without opening
/// it: a regular file, owned by root or the effective user and writable by nobody else, at
/// most [`MAX_CONFIG_FILE_BYTES`].
fn passes_config_checks(path: &Path, meta: &fs::Metadata) -> bool {
    meta.is_file()
        && meta.len() <= MAX_CONFIG_FILE_BYTES
        && check_owner_and_mode(path, meta).is_ok()
}

/// The text of an open file whose size `len` the caller has from its metadata: read into a
/// buffer of that size (two `read`s for a file that did not change, not one per 8 KiB), at
/// most [`MAX_CONFIG_FILE_BYTES`] + 1 bytes (a file that grew past the limit meanwhile is
/// cut there and fails to parse, as before).
fn read_known_size(file: File, len: u64) -> io::Result<String> {
    let mut bytes = Vec::with_capacity(len.min(MAX_CONFIG_FILE_BYTES) as usize + 1);
    io::Read::read_to_end(
        &mut io::Read::take(file, MAX_CONFIG_FILE_BYTES + 1),
        &mut bytes,
    )?;
    String::from_utf8(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}

/// Checks a configuration folder the way [`read_config`] checks a file (a missing folder is
/// fine: it holds nothing).
pub fn check_config_dir(dir: &Path) -> Result<(), StoreError> {
    match fs::metadata(dir) {
        Ok(meta) => check_owner_and_mode(dir, &meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// Owned by root or by the effective user, and not writable by group or others.
fn check_owner_and_mode(path: &Path, meta: &fs::Metadata) -> Result<(), StoreError> {
    let why = if meta.uid() != 0 && Some(meta.uid()) != effective_uid() {
        format!(
            "it is owned by uid {}, not root; run chown root {}",
            meta.uid(),
            path.display()
        )
    } else if meta.mode() & 0o022 != 0 {
        format!(
            "it is writable by group or others (mode {:04o}); run chmod go-w {}",
            meta.mode() & 0o7777,
            path.display()
        )
    } else {
        return Ok(());
    };
    Err(StoreError::Unsafe {
        path: path.to_owned(),
        why,
    })
}

/// The effective user id, from `/proc/self/status` (`Uid:` real, effective, ...); `None`
/// when it cannot be read, and then only root-owned files pass.
fn effective_uid() -> Option<u32> {
    // Read once: it is asked for every file checked.
    static EUID: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *EUID.get_or_init(|| {
        let status = fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("Uid:"))?;
        line.split_whitespace().nth(2)?.parse().ok()
    })
}

/// Reads a file to a string; `Ok(None)` if it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>, StoreError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn invalid(path: &Path, text: &str, offset: usize, message: impl Into<String>) -> StoreError {
    StoreError::Invalid {
        path: path.to_owned(),
        line: line_of(text, offset),
        message: message.into(),
    }
}

fn toml_error(path: &Path, text: &str, e: toml::de::Error) -> StoreError {
    let offset = e.span().map(|s| s.start).unwrap_or(0);
    invalid(path, text, offset, e.message().trim().replace('\n', " "))
}

// ---------------------------------------------------------------------------------------
// Accounts

/// A service as written in a file: a name or a TM3 code.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ServiceEntry {
    Code(u8),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountFileIn {
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
    #[serde(default)]
    fqdns: Vec<Spanned<String>>,
    services: Spanned<Vec<Spanned<ServiceEntry>>>,
    #[serde(default)]
    media: Vec<Spanned<String>>,
    comment: Option<String>,
    created: Option<toml::value::Datetime>,
    provider: Option<String>,
    expires: Option<Spanned<toml::value::Datetime>>,
}

#[derive(Debug, Serialize)]
struct AccountFileOut<'a> {
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    addresses: Vec<String>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    fqdns: Vec<&'a str>,
    services: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    media: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<toml::value::Datetime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<toml::value::Datetime>,
}

fn parse_nets(
    path: &Path,
    text: &str,
    entries: &[Spanned<String>],
) -> Result<Vec<IpNet>, StoreError> {
    entries
        .iter()
        .map(|e| {
            parse_source(e.get_ref(), true)
                .map_err(|err| invalid(path, text, e.span().start, err.to_string()))
        })
        .collect()
}

/// Parses the text of an account file. `path` names the file in errors and gives the
/// account its name.
pub fn parse_account(path: &Path, text: &str, profiles: &Profiles) -> Result<Account, StoreError> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let name: AccountName = stem
        .parse()
        .map_err(|e: ModelError| invalid(path, text, 0, e.to_string()))?;
    let raw: AccountFileIn = toml::from_str(text).map_err(|e| toml_error(path, text, e))?;
    let addresses = parse_nets(path, text, &raw.addresses)?;
    let media = parse_nets(path, text, &raw.media)?;
    let fqdns = raw
        .fqdns
        .iter()
        .map(|e| {
            e.get_ref()
                .parse::<Fqdn>()
                .map_err(|err| invalid(path, text, e.span().start, err.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut services = Vec::new();
    for entry in raw.services.get_ref() {
        let value = match entry.get_ref() {
            ServiceEntry::Code(c) => c.to_string(),
            ServiceEntry::Name(n) => n.clone(),
        };
        let parsed = profiles
            .parse_services(&[value])
            .map_err(|err| invalid(path, text, entry.span().start, err.to_string()))?;
        for s in parsed {
            if !services.contains(&s) {
                services.push(s);
            }
        }
    }
    if services.is_empty() {
        let err = ModelError::NoServices {
            valid: profiles.describe(),
        };
        return Err(invalid(
            path,
            text,
            raw.services.span().start,
            err.to_string(),
        ));
    }
    if addresses.is_empty() && fqdns.is_empty() {
        return Err(invalid(
            path,
            text,
            0,
            "the account has neither addresses nor fqdns",
        ));
    }
    let expires = match &raw.expires {
        None => None,
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(&t.get_ref().to_string())
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| {
                    invalid(
                        path,
                        text,
                        t.span().start,
                        format!(
                            "invalid expires {}: expected a date and time with its offset, e.g. 2026-12-24T18:00:00Z",
                            t.get_ref()
                        ),
                    )
                })?,
        ),
    };
    if let (Some(t), Err(e)) = (&raw.expires, crate::model::check_temporary(&addresses)) {
        let at = raw
            .addresses
            .iter()
            .find(|a| matches!(&e, ModelError::TemporaryNetwork(n) if parse_source(a.get_ref(), true).ok() == Some(*n)))
            .map_or(t.span().start, |a| a.span().start);
        return Err(invalid(path, text, at, e.to_string()));
    }
    Ok(Account {
        name,
        addresses,
        fqdns,
        services,
        media,
        comment: raw.comment,
        created: raw.created.map(|d| d.to_string()),
        provider: raw.provider,
        expires,
    })
}

/// The text of an account file.
pub fn render_account(account: &Account) -> String {
    let out = AccountFileOut {
        addresses: account.addresses.iter().map(display_net).collect(),
        fqdns: account.fqdns.iter().map(Fqdn::as_str).collect(),
        services: &account.services,
        media: account.media.iter().map(display_net).collect(),
        comment: account.comment.as_deref(),
        created: account.created.as_deref().and_then(|c| c.parse().ok()),
        provider: account.provider.as_deref(),
        expires: account
            .expires
            .and_then(|t| crate::model::format_time(t).parse().ok()),
    };
    toml::to_string(&out).expect("account serialises")
}

/// What loading the accounts folder found: the good accounts and the files that were skipped.
#[derive(Debug, Default)]
pub struct LoadedAccounts {
    /// Accounts in name order.
    pub accounts: Vec<Account>,
    /// Files that could not be read, each with file and line.
    pub skipped: Vec<StoreError>,
    /// The parse cache being written ([`load_accounts_locked`]); keep it while the lock is
    /// held: dropping it waits for the write.
    pub cache_write: BackgroundWrite,
}

/// A state file written ([`write_state`]) on a thread of its own while the command goes on
/// (the parse cache, while the ruleset is compiled and applied). Dropping it (or
/// [`BackgroundWrite::wait`]) waits until the file is in place or the write failed, so a
/// holder that lives shorter than the lock's guard never lets a write outlast the lock.
#[derive(Debug, Default)]
pub struct BackgroundWrite(Option<std::thread::JoinHandle<()>>);

impl BackgroundWrite {
    /// Starts writing `contents` to `path`; a failure is only ever a missed shortcut (the
    /// caller holds the lock).
    fn start(path: PathBuf, contents: Vec<u8>, _lock: &StoreLock) -> BackgroundWrite {
        let contents = std::sync::Arc::new(contents);
        let (p, c) = (path.clone(), std::sync::Arc::clone(&contents));
        match std::thread::Builder::new().spawn(move || {
            let _ = write_state(&p, &c);
        }) {
            Ok(h) => BackgroundWrite(Some(h)),
            // No thread to be had: written here and now.
            Err(_) => {
                let _ = write_state(&path, &contents);
                BackgroundWrite(None)
            }
        }
    }

    /// Waits for the write to end.
    pub fn wait(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}

impl Drop for BackgroundWrite {
    fn drop(&mut self) {
        self.wait();
    }
}

/// Account files one thread reads at least: below this a folder is read by one thread.
const ACCOUNT_FILES_PER_THREAD: usize = 512;

/// Loads every `*.toml` in the accounts folder; a bad file is skipped and reported, the rest
/// still load. A missing folder means no accounts. Large folders are read and parsed by a
/// few threads (one per CPU, at most 8); the result is the same, in file order.
///
/// Accounts whose files did not change are taken from the parse cache of the state folder
/// ([`crate::account_cache`]: never trusted over a changed file), which this does not write.
pub fn load_accounts(paths: &Paths, profiles: &Profiles) -> Result<LoadedAccounts, StoreError> {
    load_accounts_cached(paths, profiles, None)
}

/// [`load_accounts`] by a command that holds the lock: the parse cache is written again when
/// what was loaded differs from what it holds (a cache that cannot be written is no error:
/// the next load reads the files).
pub fn load_accounts_locked(
    paths: &Paths,
    profiles: &Profiles,
    lock: &StoreLock,
) -> Result<LoadedAccounts, StoreError> {
    load_accounts_cached(paths, profiles, Some(lock))
}

/// How one account file was loaded.
enum AccountLoad {
    /// From the parse cache: the file's stamp and the range of its entry.
    Hit(Account, FileStamp, std::ops::Range<usize>),
    /// Read and parsed (the stamp of the file read, when it could be opened).
    Read(Option<FileStamp>, Result<Account, StoreError>),
}

fn load_accounts_cached(
    paths: &Paths,
    profiles: &Profiles,
    lock: Option<&StoreLock>,
) -> Result<LoadedAccounts, StoreError> {
    check_config_dir(&paths.config_dir)?;
    check_config_dir(&paths.accounts_dir())?;
    let files = toml_entries(&paths.accounts_dir())?;
    // Before any file is looked at: entries recorded now are trusted later only for files
    // older than this.
    let read_at_ns = account_cache::ns_since_epoch(std::time::SystemTime::now());
    let key = account_cache::cache_key(profiles);
    let cache = account_cache::Cache::load(paths, &key);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let per_thread = files.len().div_ceil(threads).max(ACCOUNT_FILES_PER_THREAD);
    let load_one = |(path, entry): &(PathBuf, fs::DirEntry)| -> Option<AccountLoad> {
        // A symbolic link is never taken from the cache: `entry.metadata()` is the link's
        // own, which is no regular file, so the file behind it is read and checked.
        if let Some(cache) = &cache
            && let Some(name) = account_cache::file_name(path)
            && let Ok(meta) = entry.metadata()
            && passes_config_checks(path, &meta)
        {
            let stamp = FileStamp::of(&meta);
            if let Some((account, range)) = cache.lookup(name, &stamp) {
                return Some(AccountLoad::Hit(account, stamp, range));
            }
        }
        // Only plain files are recorded (a link is never taken from the cache, so recording
        // it would only write the cache again each time).
        let recorded = entry.file_type().is_ok_and(|t| t.is_file());
        match read_config_with_meta(path) {
            Ok(Some((text, meta))) => Some(AccountLoad::Read(
                recorded.then(|| FileStamp::of(&meta)),
                parse_account(path, &text, profiles),
            )),
            // Removed by a del-acct since the folder was listed (readers take no lock).
            Ok(None) => None,
            Err(e) => Some(AccountLoad::Read(None, Err(e))),
        }
    };
    // `base`: the index in `files` of the chunk's first file.
    let load = |base: usize, chunk: &[(PathBuf, fs::DirEntry)]| -> Vec<(usize, AccountLoad)> {
        // Sized once: an account is a few hundred bytes to move at every growth.
        let mut out = Vec::with_capacity(chunk.len());
        out.extend(
            chunk
                .iter()
                .enumerate()
                .filter_map(|(i, path)| Some((base + i, load_one(path)?))),
        );
        out
    };
    let results: Vec<(usize, AccountLoad)> = if files.len() <= per_thread {
        load(0, &files)
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = files
                .chunks(per_thread)
                .enumerate()
                .map(|(k, chunk)| s.spawn(move || load(k * per_thread, chunk)))
                .collect();
            let mut all = Vec::with_capacity(files.len());
            for h in handles {
                all.extend(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
            }
            all
        })
    };
    let mut loaded = LoadedAccounts {
        accounts: Vec::with_capacity(results.len()),
        ..LoadedAccounts::default()
    };
    if let Some(lock) = lock
        && let Some(bytes) = account_cache_bytes(&key, read_at_ns, cache.as_ref(), &files, &results)
    {
        // A cache is only ever a shortcut: not writing it costs the next load its reads.
        loaded.cache_write =
            BackgroundWrite::start(paths.state_dir.join(account_cache::CACHE_FILE), bytes, lock);
    }
    for (_, result) in results {
        match result {
            AccountLoad::Hit(a, _, _) | AccountLoad::Read(_, Ok(a)) => loaded.accounts.push(a),
            AccountLoad::Read(_, Err(e)) => loaded.skipped.push(e),
        }
    }
    loaded.accounts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(loaded)
}

/// The parse cache of what was loaded, unless the cache holds exactly that already.
fn account_cache_bytes(
    key: &str,
    read_at_ns: i128,
    cache: Option<&account_cache::Cache>,
    files: &[(PathBuf, fs::DirEntry)],
    results: &[(usize, AccountLoad)],
) -> Option<Vec<u8>> {
    let read = results
        .iter()
        .filter(|(_, r)| matches!(r, AccountLoad::Read(Some(_), Ok(_))))
        .count();
    let hits = results
        .iter()
        .filter(|(_, r)| matches!(r, AccountLoad::Hit(..)))
        .count();
    if read == 0 && cache.is_some_and(|c| c.len() == hits) {
        return None;
    }
    let mut entries = Vec::with_capacity(results.len());
    for (i, result) in results {
        let Some(name) = account_cache::file_name(&files[*i].0) else {
            continue;
        };
        match result {
            AccountLoad::Hit(_, stamp, range) => {
                entries.push(account_cache::Entry::Kept(name, *stamp, range.clone()));
            }
            AccountLoad::Read(Some(stamp), Ok(a)) => {
                entries.push(account_cache::Entry::Parsed(name, *stamp, a));
            }
            AccountLoad::Read(_, _) => {}
        }
    }
    Some(account_cache::encode(key, read_at_ns, cache, &entries))
}

/// The names of the account files present (valid or not), for suggestions.
pub fn account_names(paths: &Paths) -> Result<Vec<String>, StoreError> {
    Ok(toml_files(&paths.accounts_dir())?
        .iter()
        .filter_map(|p| p.file_stem()?.to_str().map(str::to_owned))
        .collect())
}

/// Whether an account file exists.
pub fn account_exists(paths: &Paths, name: &AccountName) -> bool {
    paths.account_file(name).exists()
}

/// Writes an account file atomically. Refuses to overwrite unless `replace`.
/// The caller holds the [`StoreLock`].
pub fn save_account(
    paths: &Paths,
    account: &Account,
    replace: bool,
    _lock: &StoreLock,
) -> Result<(), StoreError> {
    let path = paths.account_file(&account.name);
    if !replace && path.exists() {
        return Err(StoreError::AccountExists(account.name.clone()));
    }
    write_atomic(&path, render_account(account).as_bytes(), ACCOUNT_FILE_MODE)
}

/// Deletes account files. Every name must exist, else nothing is deleted and the error
/// suggests close names. The caller holds the [`StoreLock`].
pub fn delete_accounts(
    paths: &Paths,
    names: &[AccountName],
    _lock: &StoreLock,
) -> Result<(), StoreError> {
    for name in names {
        if !account_exists(paths, name) {
            let existing = account_names(paths)?;
            return Err(StoreError::NoSuchAccount {
                name: name.to_string(),
                close: close_names(name.as_str(), &existing),
            });
        }
    }
    for name in names {
        remove_durably(&paths.account_file(name))?;
    }
    Ok(())
}

/// Existing names within a small edit distance of `name` (or sharing its prefix).
pub fn close_names(name: &str, existing: &[String]) -> Vec<String> {
    let lower = name.to_ascii_lowercase();
    let mut scored: Vec<(usize, &String)> = existing
        .iter()
        .map(|e| (edit_distance(&lower, &e.to_ascii_lowercase()), e))
        .filter(|(d, e)| *d <= 2.max(name.len() / 4) || e.to_ascii_lowercase().starts_with(&lower))
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, e)| e.clone()).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn toml_files(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    Ok(toml_entries(dir)?
        .into_iter()
        .map(|(path, _)| path)
        .collect())
}

/// [`toml_files`] with their folder entries: [`fs::DirEntry::metadata`] looks at a file
/// relative to the open folder (no walk of the whole path per file) and does not follow a
/// symbolic link.
fn toml_entries(dir: &Path) -> Result<Vec<(PathBuf, fs::DirEntry)>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".toml") && !name.starts_with('.') {
            files.push((entry.path(), entry));
        }
    }
    // One folder: the names' bytes give the order of the paths (and cost less to compare).
    files.sort_unstable_by(|(a, _), (b, _)| a.as_os_str().cmp(b.as_os_str()));
    Ok(files)
}

// ---------------------------------------------------------------------------------------
// Settings

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsIn {
    trusted: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    resolver: ResolverIn,
    #[serde(default)]
    rtp: RtpIn,
    log_drops: Option<bool>,
    #[serde(default)]
    knock: KnockIn,
    #[serde(default)]
    sip: SipIn,
    #[serde(default)]
    guard: GuardIn,
    #[serde(default)]
    geo: GeoIn,
    #[serde(default)]
    sync: crate::fleet::SyncIn,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SipIn {
    register_domains: Option<Vec<Spanned<String>>>,
    admit_for: Option<Spanned<String>>,
    open: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardIn {
    limit: Option<Spanned<String>>,
    burst: Option<Spanned<i64>>,
    ban_for: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GeoIn {
    database: Option<Spanned<String>>,
    allow: Option<Vec<Spanned<String>>>,
    deny: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolverIn {
    nameservers: Option<Vec<Spanned<String>>>,
    timeout_ms: Option<Spanned<u64>>,
    attempts: Option<Spanned<u32>>,
    stale_grace_s: Option<u64>,
    max_addresses: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RtpIn {
    ports: Option<Spanned<String>>,
    from: Option<RtpFrom>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnockIn {
    sequence: Option<Spanned<Vec<Spanned<i64>>>>,
    protocol: Option<Spanned<String>>,
    step_timeout: Option<Spanned<String>>,
    grant_for: Option<Spanned<String>>,
    services: Option<Spanned<Vec<Spanned<ServiceEntry>>>>,
}

/// `[knock]`: the sequence's shape, the protocol and the durations are checked here; the
/// services and the ports against the profiles and the RTP range once the profiles are
/// known ([`crate::knock::check_sequence`], in the apply pipeline), with the lines kept.
fn parse_knock(path: &Path, text: &str, raw: KnockIn) -> Result<KnockSettings, StoreError> {
    let mut k = KnockSettings::default();
    if let Some(seq) = raw.sequence {
        k.lines.sequence = line_of(text, seq.span().start);
        let mut ports = Vec::new();
        for p in seq.get_ref() {
            let port = u16::try_from(*p.get_ref())
                .ok()
                .filter(|port| *port >= crate::knock::MIN_PORT)
                .ok_or_else(|| {
                    let e = crate::knock::KnockError::Port(p.get_ref().to_string());
                    invalid(path, text, p.span().start, e.to_string())
                })?;
            ports.push(port);
        }
        if !ports.is_empty() {
            crate::knock::check_shape(&ports)
                .map_err(|e| invalid(path, text, seq.span().start, e.to_string()))?;
        }
        k.sequence = ports;
    }
    if let Some(p) = raw.protocol {
        k.protocol = crate::knock::parse_protocol(p.get_ref())
            .map_err(|e| invalid(path, text, p.span().start, e.to_string()))?;
    }
    let duration = |d: Spanned<String>, key: &str| {
        d.get_ref()
            .parse::<Duration>()
            .map_err(|e| invalid(path, text, d.span().start, format!("{key}: {e}")))
    };
    if let Some(d) = raw.step_timeout {
        k.step_timeout = duration(d, "step_timeout")?;
    }
    if let Some(d) = raw.grant_for {
        k.grant_for = duration(d, "grant_for")?;
    }
    if let Some(services) = raw.services {
        k.lines.services = line_of(text, services.span().start);
        k.services = services
            .get_ref()
            .iter()
            .map(|s| match s.get_ref() {
                ServiceEntry::Code(c) => c.to_string(),
                ServiceEntry::Name(n) => n.clone(),
            })
            .collect();
        if k.services.is_empty() {
            return Err(invalid(
                path,
                text,
                services.span().start,
                "[knock] services is empty: name what a grant opens, e.g. [\"all\"] or [\"sip-udp\", \"ssh\"]",
            ));
        }
    }
    Ok(k)
}

/// Checks `[knock]` against the profiles and the RTP range: the ports are no service's and
/// outside the media range, the services exist. Errors name the file and line.
pub fn check_knock(
    path: &Path,
    settings: &Settings,
    profiles: &Profiles,
) -> Result<(), StoreError> {
    let k = &settings.knock;
    let at = |line: usize, message: String| StoreError::Invalid {
        path: path.to_owned(),
        line,
        message,
    };
    k.service_names(profiles)
        .map_err(|e| at(k.lines.services, format!("[knock] services: {e}")))?;
    if k.enabled() {
        crate::knock::check_sequence(&k.sequence, profiles, &settings.rtp)
            .map_err(|e| at(k.lines.sequence, e.to_string()))?;
    }
    Ok(())
}

/// Parses the text of `pbxwall.toml`; every key is optional.
pub fn parse_settings(path: &Path, text: &str) -> Result<Settings, StoreError> {
    let raw: SettingsIn = toml::from_str(text).map_err(|e| toml_error(path, text, e))?;
    let mut s = Settings::default();
    if let Some(trusted) = raw.trusted {
        s.trusted = parse_nets(path, text, &trusted)?;
    }
    let d = ResolverSettings::default();
    let mut nameservers = Vec::new();
    for ns in raw.resolver.nameservers.unwrap_or_default() {
        let v = ns.get_ref();
        let addr = v
            .parse::<std::net::SocketAddr>()
            .or_else(|_| v.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
            .map_err(|_| {
                invalid(
                    path,
                    text,
                    ns.span().start,
                    format!(
                        "invalid nameserver {v:?}: expected an address with optional port, e.g. \"192.0.2.53\" or \"192.0.2.53:53\" or \"[2001:db8::53]:53\""
                    ),
                )
            })?;
        nameservers.push(addr);
    }
    let timeout_ms = match raw.resolver.timeout_ms {
        Some(t) if !(50..=60_000).contains(t.get_ref()) => {
            return Err(invalid(
                path,
                text,
                t.span().start,
                format!("invalid timeout_ms {}: use 50 to 60000", t.get_ref()),
            ));
        }
        Some(t) => t.into_inner(),
        None => d.timeout_ms,
    };
    let attempts = match raw.resolver.attempts {
        Some(a) if !(1..=10).contains(a.get_ref()) => {
            return Err(invalid(
                path,
                text,
                a.span().start,
                format!("invalid attempts {}: use 1 to 10", a.get_ref()),
            ));
        }
        Some(a) => a.into_inner(),
        None => d.attempts,
    };
    s.resolver = ResolverSettings {
        nameservers,
        timeout_ms,
        attempts,
        stale_grace_s: raw.resolver.stale_grace_s.unwrap_or(d.stale_grace_s),
        max_addresses: match raw.resolver.max_addresses {
            Some(m) if !(1..=1024).contains(m.get_ref()) => {
                return Err(invalid(
                    path,
                    text,
                    m.span().start,
                    format!("invalid max_addresses {}: use 1 to 1024", m.get_ref()),
                ));
            }
            Some(m) => m.into_inner(),
            None => d.max_addresses,
        },
    };
    let mut rtp = RtpSettings::default();
    if let Some(p) = raw.rtp.ports {
        rtp.ports = parse_port_range(p.get_ref()).ok_or_else(|| {
            invalid(
                path,
                text,
                p.span().start,
                format!(
                    "invalid rtp ports {:?}: expected FIRST-LAST within 1-65535, e.g. \"10000-20000\"",
                    p.get_ref()
                ),
            )
        })?;
    }
    if let Some(from) = raw.rtp.from {
        rtp.from = from;
    }
    s.rtp = rtp;
    if let Some(l) = raw.log_drops {
        s.log_drops = l;
    }
    parse_sip_layer(path, text, raw.sip, raw.guard, &mut s)?;
    s.geo = parse_geo(path, text, raw.geo)?;
    s.sync = crate::fleet::parse_sync(path, text, raw.sync)?;
    s.knock = parse_knock(path, text, raw.knock)?;
    Ok(s)
}

/// `[sip]` and `[guard]`: every value checked, the error naming file, line and what is
/// valid.
fn parse_sip_layer(
    path: &Path,
    text: &str,
    sip: SipIn,
    guard: GuardIn,
    s: &mut Settings,
) -> Result<(), StoreError> {
    let duration = |v: &Spanned<String>, key: &str| {
        v.get_ref()
            .parse::<crate::model::Duration>()
            .map_err(|e| invalid(path, text, v.span().start, format!("[{key}: {e}")))
    };
    for d in sip.register_domains.unwrap_or_default() {
        let name: Fqdn = d.get_ref().parse().map_err(|e: ModelError| {
            invalid(
                path,
                text,
                d.span().start,
                format!("invalid register_domains entry: {e}"),
            )
        })?;
        if !s.sip.register_domains.contains(&name) {
            s.sip.register_domains.push(name);
        }
    }
    if let Some(v) = &sip.admit_for {
        s.sip.admit_for = duration(v, "sip] admit_for")?;
    }
    if let Some(open) = sip.open {
        s.sip.open = open;
    }
    if let Some(v) = &guard.limit {
        s.guard.limit = v.get_ref().parse().map_err(|e: ModelError| {
            invalid(path, text, v.span().start, format!("[guard] limit: {e}"))
        })?;
    }
    if let Some(b) = &guard.burst {
        let n = *b.get_ref();
        if !(1..=100_000).contains(&n) {
            return Err(invalid(
                path,
                text,
                b.span().start,
                format!("invalid [guard] burst {n}: use 1 to 100000 packets"),
            ));
        }
        s.guard.burst = n as u32;
    }
    if let Some(v) = &guard.ban_for {
        s.guard.ban_for = duration(v, "guard] ban_for")?;
    }
    Ok(())
}

/// `[geo]`: codes checked against ISO 3166-1, `allow` and `deny` exclusive, a database
/// required by either; a relative database path is relative to the settings' folder.
fn parse_geo(path: &Path, text: &str, raw: GeoIn) -> Result<GeoSettings, StoreError> {
    let codes = |list: Option<Vec<Spanned<String>>>| -> Result<Vec<Country>, StoreError> {
        let mut out: Vec<Country> = Vec::new();
        for c in list.unwrap_or_default() {
            let code = c
                .get_ref()
                .parse::<Country>()
                .map_err(|e| invalid(path, text, c.span().start, e.to_string()))?;
            if !out.contains(&code) {
                out.push(code);
            }
        }
        Ok(out)
    };
    let allow_at = raw
        .allow
        .as_ref()
        .and_then(|a| a.first())
        .map(|a| a.span().start);
    let geo = GeoSettings {
        database: raw
            .database
            .as_ref()
            .map(|d| d.get_ref().trim())
            .filter(|d| !d.is_empty())
            .map(|d| match path.parent() {
                Some(dir) => dir.join(d),
                None => PathBuf::from(d),
            }),
        allow: codes(raw.allow)?,
        deny: codes(raw.deny)?,
    };
    if !geo.allow.is_empty() && !geo.deny.is_empty() {
        return Err(invalid(
            path,
            text,
            allow_at.unwrap_or(0),
            "[geo] allow and deny exclude each other: list the countries to allow, or those to deny",
        ));
    }
    if geo.enabled() && geo.database.is_none() {
        return Err(invalid(
            path,
            text,
            allow_at.unwrap_or(0),
            "[geo] allow or deny needs [geo] database: the path of a DB-IP lite CSV, IP2Location LITE DB1 CSV, GeoLite2 Country CSV folder or .mmdb file",
        ));
    }
    Ok(geo)
}

/// Loads the settings; a missing file means all defaults.
pub fn load_settings(paths: &Paths) -> Result<Settings, StoreError> {
    let path = paths.settings_file();
    check_config_dir(&paths.config_dir)?;
    match read_config(&path)? {
        Some(text) => parse_settings(&path, &text),
        None => Ok(Settings::default()),
    }
}

// ---------------------------------------------------------------------------------------
// Profiles

/// The shipped profiles, compiled in, used when SHARE_DIR/profiles does not exist (a binary
/// run from the build tree).
const BUILTIN_PROFILES: [(&str, &str); 10] = [
    ("all.toml", include_str!("../profiles/all.toml")),
    ("sip-udp.toml", include_str!("../profiles/sip-udp.toml")),
    ("sip-tcp.toml", include_str!("../profiles/sip-tcp.toml")),
    ("iax.toml", include_str!("../profiles/iax.toml")),
    ("web.toml", include_str!("../profiles/web.toml")),
    ("webmin.toml", include_str!("../profiles/webmin.toml")),
    ("ftp.toml", include_str!("../profiles/ftp.toml")),
    ("tftp.toml", include_str!("../profiles/tftp.toml")),
    ("ssh.toml", include_str!("../profiles/ssh.toml")),
    ("fop.toml", include_str!("../profiles/fop.toml")),
];

fn builtin_profile_list() -> Result<Vec<Profile>, StoreError> {
    BUILTIN_PROFILES
        .iter()
        .map(|(name, text)| parse_profile(&Path::new("(built-in profiles)").join(name), text))
        .collect()
}

/// The profiles compiled into the program (the repo's `profiles/`), without local
/// overrides: what parsers are checked against in tests and fuzzing.
pub fn builtin_profiles() -> Profiles {
    Profiles::new(builtin_profile_list().expect("the built-in profiles parse"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileIn {
    code: Option<Spanned<u8>>,
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    ports: Vec<Spanned<String>>,
}

/// Parses the text of a profile file.
pub fn parse_profile(path: &Path, text: &str) -> Result<Profile, StoreError> {
    let raw: ProfileIn = toml::from_str(text).map_err(|e| toml_error(path, text, e))?;
    crate::model::check_profile_name(raw.name.get_ref())
        .map_err(|e| invalid(path, text, raw.name.span().start, e.to_string()))?;
    if let Some(code) = &raw.code
        && *code.get_ref() > 9
    {
        return Err(invalid(
            path,
            text,
            code.span().start,
            format!("invalid code {}: codes are 0-9", code.get_ref()),
        ));
    }
    let ports = raw
        .ports
        .iter()
        .map(|p| {
            p.get_ref()
                .parse()
                .map_err(|e: ModelError| invalid(path, text, p.span().start, e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ports.is_empty() {
        return Err(invalid(path, text, 0, "the profile opens no ports"));
    }
    Ok(Profile {
        name: raw.name.into_inner(),
        code: raw.code.map(Spanned::into_inner),
        description: raw.description,
        ports,
    })
}

/// Loads shipped profiles (or the built-in copies), then local overrides. A bad profile
/// file is an error: accounts depend on it.
pub fn load_profiles(paths: &Paths) -> Result<Profiles, StoreError> {
    let mut all = Vec::new();
    let shipped = paths.shipped_profiles_dir();
    if shipped.is_dir() {
        for path in toml_files(&shipped)? {
            let text = fs::read_to_string(&path).map_err(io_err(&path))?;
            all.push(parse_profile(&path, &text)?);
        }
    } else {
        all.extend(builtin_profile_list()?);
    }
    check_config_dir(&paths.local_profiles_dir())?;
    for path in toml_files(&paths.local_profiles_dir())? {
        // Listed a moment ago: a file gone since then was removed on purpose.
        if let Some(text) = read_config(&path)? {
            all.push(parse_profile(&path, &text)?);
        }
    }
    Ok(Profiles::new(all))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &Path) -> Paths {
        Paths {
            config_dir: dir.join("etc"),
            state_dir: dir.join("state"),
            share_dir: dir.join("share"),
        }
    }

    fn temp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn builtin_profiles_load() {
        let t = temp();
        let ps = load_profiles(&paths(t.path())).unwrap();
        assert_eq!(
            ps.describe(),
            "0=all, 1=sip-udp, 2=sip-tcp, 3=iax, 4=web, 5=webmin, 6=ftp, 7=tftp, 8=ssh, 9=fop"
        );
    }

    #[test]
    fn account_round_trip_and_errors_with_lines() {
        let t = temp();
        let p = paths(t.path());
        let ps = load_profiles(&p).unwrap();
        let path = p.accounts_dir().join("joe.toml");
        let text = "addresses = [\"203.0.113.7\", \"2001:db8::/48\"]\nfqdns = [\"Joe.DynDNS.example.\"]\nservices = [\"sip-udp\", 3]\ncomment = \"Joe\"\ncreated = 2026-11-22T10:00:00Z\n";
        let a = parse_account(&path, text, &ps).unwrap();
        assert_eq!(a.services, ["sip-udp", "iax"]);
        assert_eq!(a.fqdns[0].as_str(), "joe.dyndns.example");
        let again = parse_account(&path, &render_account(&a), &ps).unwrap();
        assert_eq!(a, again);
        let temp = parse_account(
            &path,
            "addresses = [\"203.0.113.7\"]\nservices = [1]\nexpires = 2026-12-24T19:00:00+01:00\n",
            &ps,
        )
        .unwrap();
        let t = temp.expires.unwrap();
        assert_eq!(crate::model::format_time(t), "2026-12-24T18:00:00Z");
        let text = render_account(&temp);
        assert!(text.ends_with("expires = 2026-12-24T18:00:00Z\n"), "{text}");
        assert_eq!(parse_account(&path, &text, &ps).unwrap(), temp);
        let e = parse_account(
            &path,
            "addresses = [\"203.0.113.7\"]\nservices = [1]\nexpires = 2026-12-24T18:00:00\n",
            &ps,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("joe.toml:3: invalid expires 2026-12-24T18:00:00: expected a date and time with its offset"), "{e}");
        let e = parse_account(
            &path,
            "addresses = [\"203.0.113.7\"]\nservices = [1]\nexpires = \"2h\"\n",
            &ps,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("joe.toml:3:"), "{e}");

        let bad = "services = [\"sip-udp\"]\naddresses = [\n  \"203.0.113.7\",\n  \"198.51.100.5/24\",\n]\n";
        let e = parse_account(&path, bad, &ps).unwrap_err().to_string();
        assert!(e.ends_with("joe.toml:4: invalid network \"198.51.100.5/24\": host bits are set after /24; the network is 198.51.100.0/24"), "{e}");
        let e = parse_account(
            &path,
            "addresses = [\"192.0.2.1\"]\nservices = [\"telnet\"]\n",
            &ps,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("joe.toml:2: unknown service \"telnet\""), "{e}");
        let e = parse_account(&path, "addresses = [\"192.0.2.1\"]\nservics = [1]\n", &ps)
            .unwrap_err()
            .to_string();
        assert!(e.contains("joe.toml:2:"), "{e}");
        let e = parse_account(&path, "addresses = [\"192.0.2.1\"]\nservices = []\n", &ps)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no services given"), "{e}");
        let e = parse_account(&path, "addresses = [\"192.0.2.1\"\n", &ps)
            .unwrap_err()
            .to_string();
        assert!(e.contains("joe.toml:"), "{e}");
    }

    #[test]
    fn save_load_delete_under_lock() {
        let t = temp();
        let p = paths(t.path());
        let ps = load_profiles(&p).unwrap();
        let lock = StoreLock::acquire(&p, |_| {}).unwrap();
        let a = Account {
            name: "joe-office".parse().unwrap(),
            addresses: vec!["203.0.113.7/32".parse().unwrap()],
            fqdns: vec![],
            services: vec!["sip-udp".into()],
            media: vec![],
            comment: None,
            created: None,
            provider: None,
            expires: None,
        };
        save_account(&p, &a, false, &lock).unwrap();
        assert!(matches!(
            save_account(&p, &a, false, &lock),
            Err(StoreError::AccountExists(_))
        ));
        save_account(&p, &a, true, &lock).unwrap();
        fs::write(p.accounts_dir().join("broken.toml"), "addresses = [").unwrap();
        let loaded = load_accounts(&p, &ps).unwrap();
        assert_eq!(loaded.accounts, [a]);
        assert_eq!(loaded.skipped.len(), 1);
        let e = delete_accounts(&p, &["joe-ofice".parse().unwrap()], &lock)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "no account named joe-ofice; did you mean joe-office?");
        delete_accounts(&p, &["joe-office".parse().unwrap()], &lock).unwrap();
        assert!(!p.account_file(&"joe-office".parse().unwrap()).exists());
        let leftovers: Vec<_> = fs::read_dir(p.accounts_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(leftovers, ["broken.toml"], "no temp files left behind");
    }

    /// Writes `text` over `path` in place and puts its modification time back (an edit a
    /// stamp of size and mtime alone would miss).
    fn rewrite_keeping_mtime(path: &Path, text: &str) {
        let old_mtime = fs::metadata(path).unwrap().modified().unwrap();
        fs::write(path, text).unwrap();
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old_mtime)
            .unwrap();
    }

    #[test]
    fn the_parse_cache_never_wins_over_a_changed_or_unsafe_file() {
        let t = temp();
        let p = paths(t.path());
        let ps = load_profiles(&p).unwrap();
        let lock = StoreLock::acquire(&p, |_| {}).unwrap();
        let dir = p.accounts_dir();
        fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let f = dir.join(name);
            fs::write(&f, text).unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
        };
        for i in 0..20 {
            write(
                &format!("a{i:02}.toml"),
                &format!("addresses = [\"192.0.2.{i}\"]\nservices = [\"sip-udp\"]\n"),
            );
        }
        write("broken.toml", "addresses = [");
        // A symbolic link to an account file elsewhere: read through the link every time.
        let elsewhere = t.path().join("linked.toml");
        fs::write(
            &elsewhere,
            "addresses = [\"203.0.113.1\"]\nservices = [\"ssh\"]\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("linked.toml")).unwrap();
        let cache_file = p.state_dir.join(account_cache::CACHE_FILE);
        // A corrupt cache is ignored and written again.
        fs::create_dir_all(&p.state_dir).unwrap();
        fs::write(&cache_file, "garbage").unwrap();
        let mut first = load_accounts_locked(&p, &ps, &lock).unwrap();
        first.cache_write.wait();
        assert_eq!(first.accounts.len(), 21);
        assert_eq!(first.skipped.len(), 1);
        let written = fs::read(&cache_file).unwrap();
        assert_ne!(written, b"garbage");
        // Entries are trusted for files older than the reads by the margin.
        std::thread::sleep(std::time::Duration::from_millis(
            (account_cache::RACY_MARGIN_NS / 1_000_000) as u64 + 200,
        ));
        // The files were too recent to trust: read again, and the cache written again.
        let mut second = load_accounts_locked(&p, &ps, &lock).unwrap();
        second.cache_write.wait();
        assert_eq!(second.accounts, first.accounts);
        assert_ne!(fs::read(&cache_file).unwrap(), written);
        let written = fs::read(&cache_file).unwrap();
        let mtime = fs::metadata(&cache_file).unwrap().modified().unwrap();
        // Now every good file comes from the cache: same accounts, same errors, no write.
        let mut third = load_accounts_locked(&p, &ps, &lock).unwrap();
        third.cache_write.wait();
        assert_eq!(third.accounts, first.accounts);
        assert_eq!(third.skipped.len(), 1);
        assert_eq!(fs::read(&cache_file).unwrap(), written);
        assert_eq!(
            fs::metadata(&cache_file).unwrap().modified().unwrap(),
            mtime
        );
        // The linked file changed (same size, mtime put back): seen through the link.
        rewrite_keeping_mtime(
            &elsewhere,
            "addresses = [\"203.0.113.2\"]\nservices = [\"ssh\"]\n",
        );
        let loaded = load_accounts(&p, &ps).unwrap();
        let linked = loaded
            .accounts
            .iter()
            .find(|a| a.name.as_str() == "linked")
            .unwrap();
        assert_eq!(
            linked.addresses,
            ["203.0.113.2/32".parse::<IpNet>().unwrap()]
        );
        // Same size, modification time put back: the change time still tells.
        let f = dir.join("a05.toml");
        rewrite_keeping_mtime(
            &f,
            "addresses = [\"192.0.2.9\"]\nservices = [\"sip-udp\"]\n",
        );
        let loaded = load_accounts(&p, &ps).unwrap();
        let a05 = loaded
            .accounts
            .iter()
            .find(|a| a.name.as_str() == "a05")
            .unwrap();
        assert_eq!(a05.addresses, ["192.0.2.9/32".parse::<IpNet>().unwrap()]);
        // Writable by others: refused on a hit as on a read.
        let f = dir.join("a07.toml");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o666)).unwrap();
        let loaded = load_accounts(&p, &ps).unwrap();
        assert_eq!(loaded.accounts.len(), 20);
        assert!(
            loaded
                .skipped
                .iter()
                .any(|e| matches!(e, StoreError::Unsafe { path, .. } if path == &f))
        );
        // A removed file is gone, whatever the cache holds.
        fs::remove_file(dir.join("a01.toml")).unwrap();
        let loaded = load_accounts(&p, &ps).unwrap();
        assert_eq!(loaded.accounts.len(), 19);
    }

    #[test]
    fn stale_temp_files_are_removed_under_the_lock() {
        assert!(is_temp_name(".joe.toml.tmp.1234.0"));
        assert!(is_temp_name(".dns-cache.json.tmp.99.12"));
        assert!(!is_temp_name("joe.toml"));
        assert!(!is_temp_name(".joe.toml.tmp.x.0"));
        assert!(!is_temp_name(".tmp.1.2"));
        let t = temp();
        let p = paths(t.path());
        fs::create_dir_all(p.accounts_dir()).unwrap();
        let stale = p.accounts_dir().join(".joe.toml.tmp.4242.3");
        let keep = p.accounts_dir().join("joe.toml");
        fs::write(&stale, "partial").unwrap();
        fs::write(&keep, "services = [1]").unwrap();
        let _lock = StoreLock::acquire(&p, |_| {}).unwrap();
        assert!(!stale.exists());
        assert!(keep.exists());
    }

    #[test]
    fn config_files_are_read_only_when_nobody_else_could_write_them() {
        let t = temp();
        let f = t.path().join("a.toml");
        fs::write(&f, "x = 1").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_config(&f).unwrap().as_deref(), Some("x = 1"));
        assert_eq!(read_config(&t.path().join("none.toml")).unwrap(), None);

        fs::set_permissions(&f, fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(
            read_config(&f).unwrap_err().to_string(),
            format!(
                "refusing to read {0}: it is writable by group or others (mode 0666); run chmod go-w {0}",
                f.display()
            )
        );
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        if effective_uid() == Some(0) {
            std::os::unix::fs::chown(&f, Some(65534), None).unwrap();
            let e = read_config(&f).unwrap_err().to_string();
            assert!(
                e.ends_with(&format!(
                    "it is owned by uid 65534, not root; run chown root {}",
                    f.display()
                )),
                "{e}"
            );
            std::os::unix::fs::chown(&f, Some(0), None).unwrap();
        }

        let dangling = t.path().join("gone.toml");
        std::os::unix::fs::symlink(t.path().join("nowhere.toml"), &dangling).unwrap();
        let e = read_config(&dangling).unwrap_err().to_string();
        assert!(
            e.ends_with("it is a symbolic link to a file that does not exist"),
            "{e}"
        );
        let link = t.path().join("link.toml");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert_eq!(read_config(&link).unwrap().as_deref(), Some("x = 1"));

        let big = t.path().join("big.toml");
        fs::write(&big, vec![b'#'; MAX_CONFIG_FILE_BYTES as usize + 1]).unwrap();
        let e = read_config(&big).unwrap_err().to_string();
        assert!(e.contains("more than the limit of 8388608"), "{e}");
        assert!(read_config(t.path()).is_err(), "a folder is not a file");

        let dir = t.path().join("accounts");
        fs::create_dir(&dir).unwrap();
        assert!(check_config_dir(&dir).is_ok());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_config_dir(&dir).is_err());
        assert!(check_config_dir(&t.path().join("none")).is_ok());
    }

    #[test]
    fn written_files_never_keep_group_or_other_write() {
        let t = temp();
        let f = t.path().join("x.toml");
        write_atomic(&f, b"a", 0o640).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o666)).unwrap();
        write_atomic(&f, b"b", 0o640).unwrap();
        assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, 0o644);
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        write_state(&f, b"c").unwrap();
        assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
        // A symbolic link in the target's place is replaced, its target left alone.
        let target = t.path().join("target");
        fs::write(&target, "keep").unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_state(&link, b"new").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_file());
    }

    #[test]
    fn write_atomic_keeps_mode() {
        let t = temp();
        let f = t.path().join("x.toml");
        write_atomic(&f, b"a", 0o600).unwrap();
        assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
        fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&f, b"b", 0o600).unwrap();
        assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, 0o640);
        assert_eq!(fs::read(&f).unwrap(), b"b");
    }

    #[test]
    fn settings_defaults_and_errors() {
        let f = Path::new("/etc/pbxwall/pbxwall.toml");
        let s = parse_settings(f, "").unwrap();
        assert_eq!(s, Settings::default());
        let s = parse_settings(
            f,
            "trusted = []\n[resolver]\nnameservers = [\"192.0.2.53\", \"[2001:db8::53]:5353\"]\ntimeout_ms = 500\n[rtp]\nports = \"12000-12100\"\nfrom = \"whitelist\"\n",
        )
        .unwrap();
        assert!(s.trusted.is_empty());
        assert_eq!(s.resolver.nameservers[0].to_string(), "192.0.2.53:53");
        assert_eq!(s.rtp.from, RtpFrom::Whitelist);
        for (bad, want) in [
            (
                "trusted = [\"10.0.0.1/8\"]",
                "pbxwall.toml:1: invalid network",
            ),
            (
                "[rtp]\nports = \"20000-10000\"",
                "pbxwall.toml:2: invalid rtp ports",
            ),
            ("[rtp]\nfrom = \"everyone\"", "pbxwall.toml:2:"),
            (
                "[resolver]\ntimeout_ms = 0",
                "pbxwall.toml:2: invalid timeout_ms 0",
            ),
            ("trustd = []", "pbxwall.toml:1:"),
            (
                "[resolver]\nnameservers = [\"dns.example\"]",
                "invalid nameserver",
            ),
        ] {
            let e = parse_settings(f, bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
    }

    #[test]
    fn knock_settings_parse_with_lines() {
        let f = Path::new("/etc/pbxwall/pbxwall.toml");
        let ps = builtin_profiles();
        let s = parse_settings(
            f,
            "[knock]\nsequence = [23456, 34567, 45678]\nprotocol = \"udp\"\nstep_timeout = \"5s\"\ngrant_for = \"2h\"\nservices = [\"sip-udp\", 8]\n",
        )
        .unwrap();
        assert_eq!(s.knock.sequence, [23456, 34567, 45678]);
        assert_eq!(s.knock.protocol, crate::ruleset::L4Proto::Udp);
        assert_eq!(s.knock.step_timeout.as_secs(), 5);
        assert_eq!(s.knock.grant_for.as_secs(), 7200);
        assert_eq!(s.knock.service_names(&ps).unwrap(), ["sip-udp", "ssh"]);
        check_knock(f, &s, &ps).unwrap();
        let off = parse_settings(f, "[knock]\nsequence = []\n").unwrap();
        assert!(!off.knock.enabled());
        check_knock(f, &off, &ps).unwrap();

        for (bad, want) in [
            (
                "[knock]\nsequence = [23456]",
                "pbxwall.toml:2: invalid knock sequence [23456]: use 2 to 8 distinct ports",
            ),
            (
                "[knock]\nsequence = [2001, 2002, 2003, 2004, 2005, 2006, 2007, 2008, 2009]",
                "pbxwall.toml:2: invalid knock sequence",
            ),
            (
                "[knock]\nsequence = [23456,\n  23456]",
                "pbxwall.toml:2: invalid knock sequence [23456,23456]: port 23456 appears twice",
            ),
            (
                "[knock]\nsequence = [23456,\n  80]",
                "pbxwall.toml:3: invalid knock port \"80\"",
            ),
            (
                "[knock]\nsequence = [23456, -1]",
                "pbxwall.toml:2: invalid knock port \"-1\"",
            ),
            (
                "[knock]\nprotocol = \"icmp\"",
                "pbxwall.toml:2: invalid knock protocol",
            ),
            (
                "[knock]\nstep_timeout = \"10 sec\"",
                "pbxwall.toml:2: step_timeout: invalid duration \"10 sec\"",
            ),
            (
                "[knock]\ngrant_for = \"0s\"",
                "pbxwall.toml:2: grant_for: invalid duration \"0s\"",
            ),
            ("[knock]\nsequense = []", "pbxwall.toml:2:"),
            (
                "[knock]\nservices = []",
                "pbxwall.toml:2: [knock] services is empty",
            ),
        ] {
            let e = parse_settings(f, bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        for (bad, want) in [
            (
                "[rtp]\nports = \"10000-20000\"\n[knock]\nsequence = [23456, 5060]",
                "pbxwall.toml:4: invalid knock port 5060: it is in udp 5060-5061 of service sip-udp",
            ),
            (
                "[knock]\nsequence = [23456, 15000]",
                "pbxwall.toml:2: invalid knock port 15000: it is inside the RTP range",
            ),
            (
                "[knock]\nsequence = [23456, 34567]\nservices = [\"telnet\"]",
                "pbxwall.toml:3: [knock] services: unknown service \"telnet\"",
            ),
        ] {
            let s = parse_settings(f, bad).unwrap();
            let e = check_knock(f, &s, &ps).unwrap_err().to_string();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
    }

    #[test]
    fn close_name_suggestions() {
        let names: Vec<String> = ["joe-office", "joe-mobile", "backup-site"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(close_names("joe-offce", &names), ["joe-office"]);
        assert_eq!(close_names("joe", &names), ["joe-mobile", "joe-office"]);
        assert!(close_names("zzz", &names).is_empty());
    }
}
