//! `STATE_DIR/state.json`: what was applied last and how the last ipchecker run went.
//!
//! `ipchecker` uses the recorded skeleton (the ruleset without set elements) to decide
//! whether changed addresses can go in as element updates or need a full apply; `status`
//! shows both records. Written atomically under the store lock; a missing or corrupt file
//! means "nothing recorded" (with a warning), never an error.

use serde::{Deserialize, Serialize};

use crate::store::{self, Paths, StoreError, StoreLock};

/// File name of the state record in the state folder.
pub const STATE_FILE: &str = "state.json";

/// Everything recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The last full or incremental apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<Applied>,
    /// The last ipchecker run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipchecker: Option<IpcheckerRun>,
}

/// What was applied last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Which command applied it.
    pub by: String,
    /// The ruleset without set elements, in nft syntax.
    pub skeleton: String,
    /// Number of address ranges in all sets.
    pub elements: usize,
    /// When the table was last loaded in full (RFC 3339, UTC): its drop counter counts from
    /// then. An update of set elements only (ipchecker) keeps the table, its counter and
    /// this time. `None` in state written before pbxwall recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded_at: Option<String>,
}

/// How the last ipchecker run went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcheckerRun {
    /// When it ran (RFC 3339, UTC).
    pub at: String,
    /// "ok", "degraded" or "error".
    pub outcome: String,
    /// Netlink transactions sent to the kernel (0 when nothing changed).
    pub netlink_writes: u32,
    /// One line per change or problem.
    pub changes: Vec<String>,
}

impl State {
    /// Loads the record; a missing file is empty, a corrupt one empty with a warning.
    pub fn load(paths: &Paths) -> (State, Option<String>) {
        load_json(paths, STATE_FILE)
    }

    /// Writes the record atomically; the caller holds the lock.
    pub fn save(&self, paths: &Paths, lock: &StoreLock) -> Result<(), StoreError> {
        save_json(paths, STATE_FILE, self, lock)
    }
}

/// Loads the JSON record `file` of the state folder: a missing file is the empty record, a
/// corrupt or unreadable one the empty record with a warning (state is a cache of what
/// was done: starting afresh is always safe).
pub fn load_json<T: serde::de::DeserializeOwned + Default>(
    paths: &Paths,
    file: &str,
) -> (T, Option<String>) {
    let path = paths.state_dir.join(file);
    match store::read_optional(&path) {
        Ok(None) => (T::default(), None),
        Ok(Some(text)) => match serde_json::from_str(&text) {
            Ok(s) => (s, None),
            Err(e) => (
                T::default(),
                Some(format!("{}: {e}; starting afresh", path.display())),
            ),
        },
        Err(e) => (T::default(), Some(crate::error_chain(&e))),
    }
}

/// Writes the JSON record `file` of the state folder atomically (temporary file, fsync,
/// rename); the caller holds the lock.
pub fn save_json<T: Serialize>(
    paths: &Paths,
    file: &str,
    value: &T,
    _lock: &StoreLock,
) -> Result<(), StoreError> {
    let path = paths.state_dir.join(file);
    store::write_state(&path, &pretty_json(&path, value)?)
}

/// [`save_json`] that writes nothing when the file holds this record already
/// ([`store::write_state_unless_same`]).
pub fn save_json_unless_same<T: Serialize>(
    paths: &Paths,
    file: &str,
    value: &T,
    _lock: &StoreLock,
) -> Result<(), StoreError> {
    let path = paths.state_dir.join(file);
    store::write_state_unless_same(&path, &pretty_json(&path, value)?)
}

/// `value` as pretty-printed JSON, for the record at `path`.
fn pretty_json<T: Serialize>(path: &std::path::Path, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec_pretty(value).map_err(|e| StoreError::Io {
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })
}

/// The current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corrupt_file() {
        let t = tempfile::tempdir().unwrap();
        let paths = Paths {
            config_dir: t.path().join("etc"),
            state_dir: t.path().join("state"),
            share_dir: t.path().join("share"),
        };
        assert_eq!(State::load(&paths), (State::default(), None));
        let lock = StoreLock::acquire(&paths, |_| {}).unwrap();
        let s = State {
            applied: Some(Applied {
                at: now_rfc3339(),
                by: "restart".into(),
                skeleton: "table inet pbxwall {}".into(),
                elements: 3,
                loaded_at: None,
            }),
            ipchecker: None,
        };
        s.save(&paths, &lock).unwrap();
        assert_eq!(State::load(&paths).0, s);
        std::fs::write(paths.state_dir.join(STATE_FILE), "{").unwrap();
        let (empty, warning) = State::load(&paths);
        assert_eq!(empty, State::default());
        assert!(warning.unwrap().contains("starting afresh"));
    }
}
