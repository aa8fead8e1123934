//! The audit log: every change, who made it, what, and which addresses.
//!
//! Each entry is one JSON line appended to `STATE_DIR/audit.log` (under the store lock, in
//! one `write` of a line opened with `O_APPEND`, then fsync) and sent to syslog/journald as
//! `auth.notice` through `/dev/log`. `status` shows the last entries. Logging is best
//! effort: a change is never refused because its log line could not be written.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixDatagram;

use serde::{Deserialize, Serialize};

use crate::state::now_rfc3339;
use crate::store::{Paths, StoreError, read_optional};

/// File name of the audit log in the state folder.
pub const AUDIT_LOG: &str = "audit.log";

/// One change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Who: the sudo user, else the login name, else `uid N`.
    pub user: String,
    /// The command that made the change.
    pub command: String,
    /// What changed, with the addresses.
    pub what: String,
}

/// Who is running this: `SUDO_USER` when run through sudo, else the login name, else the uid.
pub fn who() -> String {
    for var in ["SUDO_USER", "LOGNAME", "USER"] {
        if let Ok(v) = std::env::var(var)
            && !v.is_empty()
        {
            return v;
        }
    }
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return "unknown".into();
    };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| user_of(&passwd, uid))
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// The name of `uid` in an /etc/passwd text.
fn user_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

/// Appends an entry to the audit log and sends it to syslog. The caller holds the lock.
pub fn record(paths: &Paths, command: &str, what: &str) -> Result<(), StoreError> {
    let entry = Entry {
        at: now_rfc3339(),
        user: who(),
        command: command.to_owned(),
        what: what.to_owned(),
    };
    send_syslog(&format!(
        "{} by {}: {}",
        entry.command, entry.user, entry.what
    ));
    let path = paths.state_dir.join(AUDIT_LOG);
    let mut line = serde_json::to_string(&entry).expect("entry serialises");
    line.push('\n');
    let io = |source| StoreError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&paths.state_dir).map_err(io)?;
    // Root only, and never appended through a symbolic link somebody put in its place.
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(crate::store::STATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(io)?;
    f.write_all(line.as_bytes()).map_err(io)?;
    f.sync_data().map_err(io)
}

/// The last `n` entries, oldest first; unreadable lines are skipped.
pub fn last(paths: &Paths, n: usize) -> Vec<Entry> {
    let text = read_optional(&paths.state_dir.join(AUDIT_LOG))
        .ok()
        .flatten()
        .unwrap_or_default();
    let entries: Vec<Entry> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    entries[entries.len().saturating_sub(n)..].to_vec()
}

/// Sends one line to the local syslog socket as `auth.notice`; silently does nothing when
/// there is no syslog (containers, test namespaces).
fn send_syslog(message: &str) {
    const AUTH_NOTICE: u8 = 4 * 8 + 5;
    if let Ok(sock) = UnixDatagram::unbound() {
        let line = format!(
            "<{AUTH_NOTICE}>pbxwall[{}]: {}",
            std::process::id(),
            message.replace('\n', " ")
        );
        let _ = sock.send_to(line.as_bytes(), "/dev/log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(user_of(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_of(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(user_of(passwd, 7), None);
    }

    #[test]
    fn entries_append_and_read_back() {
        let t = tempfile::tempdir().unwrap();
        let paths = Paths {
            config_dir: t.path().join("etc"),
            state_dir: t.path().join("state"),
            share_dir: t.path().join("share"),
        };
        assert!(last(&paths, 5).is_empty());
        for i in 0..7 {
            record(&paths, "add-ip", &format!("account a{i} saved")).unwrap();
        }
        let l = last(&paths, 5);
        assert_eq!(l.len(), 5);
        assert_eq!(l[0].what, "account a2 saved");
        assert_eq!(l[4].command, "add-ip");
        assert!(!l[4].user.is_empty());
    }
}
