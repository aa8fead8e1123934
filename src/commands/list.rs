//! `list`: the accounts, one a line, from the files alone (no DNS, no kernel, no root
//! needed when the files are readable).

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::{Ctx, Outcome};
use crate::model::{Account, display_net};
use crate::store;

/// `list --help`: the columns and the `--json` shape.
pub const LONG_HELP: &str = "\
One account a line, in name order: NAME, SERVICES, ADDRESSES, NAMES (host names),
EXPIRES, ORIGIN and COMMENT; \"-\" where there is nothing. EXPIRES is when a temporary
account (--expires) ends. ORIGIN is provider:ID for an account written by
enable-trusted-providers, fleet:SERIAL for one from the fleet bundle (pbxwall sync; a local
account of the same name wins and is listed instead), \"-\" for one made by hand. An
account file that cannot be read is skipped with a warning naming file and line (exit 3).

With --json it prints one object:
  {\"accounts\": [{\"name\": \"joe\", \"services\": [\"sip-udp\"], \"addresses\": [\"203.0.113.7\"],
    \"fqdns\": [], \"comment\": null, \"created\": \"2026-11-22T10:00:00Z\", \"expires\": null,
    \"origin\": null}], \"skipped\": [\"FILE:LINE: ...\"]}";

/// `list`: no arguments of its own (`--json` is common to every command).
#[derive(Debug, Clone, Args)]
pub struct ListArgs {}

/// One account as `list` shows it. A column is a field: new kinds of accounts (temporary,
/// from a fleet bundle) fill `expires` and `origin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListRow {
    /// The account name.
    pub name: String,
    /// Profile names, ordered by code.
    pub services: Vec<String>,
    /// Addresses and networks, as users write them.
    pub addresses: Vec<String>,
    /// Host names.
    pub fqdns: Vec<String>,
    /// Free text.
    pub comment: Option<String>,
    /// When the account was created (RFC 3339), if known.
    pub created: Option<String>,
    /// When a temporary account ends (RFC 3339); `None` for a permanent one.
    pub expires: Option<String>,
    /// Where the account comes from when not made by hand: `provider:ID`, `fleet:SERIAL`.
    pub origin: Option<String>,
}

impl ListRow {
    /// The row of an account.
    pub fn of(account: &Account) -> ListRow {
        ListRow {
            name: account.name.to_string(),
            services: account.services.clone(),
            addresses: account.addresses.iter().map(display_net).collect(),
            fqdns: account.fqdns.iter().map(|f| f.to_string()).collect(),
            comment: account.comment.clone(),
            created: account.created.clone(),
            expires: account.expires.map(crate::model::format_time),
            origin: account.provider.as_ref().map(|p| format!("provider:{p}")),
        }
    }

    /// The row of an account of the fleet bundle of `serial`.
    pub fn of_fleet(account: &Account, serial: u64) -> ListRow {
        ListRow {
            origin: Some(format!("fleet:{serial}")),
            ..ListRow::of(account)
        }
    }

    /// The column titles of [`ListRow::cells`].
    pub const TITLES: [&'static str; 7] = [
        "NAME",
        "SERVICES",
        "ADDRESSES",
        "NAMES",
        "EXPIRES",
        "ORIGIN",
        "COMMENT",
    ];

    /// The row as text cells, "-" where there is nothing (the comment last: free text).
    pub fn cells(&self) -> [String; 7] {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.join(",")
            }
        };
        let opt = |o: &Option<String>| match o.as_deref() {
            None | Some("") => "-".to_owned(),
            Some(text) => text.to_owned(),
        };
        [
            self.name.clone(),
            list(&self.services),
            list(&self.addresses),
            list(&self.fqdns),
            opt(&self.expires),
            opt(&self.origin),
            opt(&self.comment),
        ]
    }
}

/// The rows as aligned text lines, a title line first; nothing when there are no rows.
pub fn table(rows: &[ListRow]) -> Vec<String> {
    if rows.is_empty() {
        return Vec::new();
    }
    let titles = ListRow::TITLES.map(str::to_owned);
    let cells: Vec<[String; 7]> = std::iter::once(titles)
        .chain(rows.iter().map(ListRow::cells))
        .collect();
    let mut widths = [0usize; 7];
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    cells
        .iter()
        .map(|row| {
            let mut line = String::new();
            for (i, (c, w)) in row.iter().zip(widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(c);
                } else {
                    line.push_str(&format!("{c:<w$}  "));
                }
            }
            line.trim_end().to_owned()
        })
        .collect()
}

/// `list [--json]`.
pub fn list(ctx: &Ctx, _args: ListArgs) -> Result<Outcome> {
    let profiles = store::load_profiles(&ctx.paths)?;
    let mut loaded = store::load_accounts(&ctx.paths, &profiles)?;
    // A file this user may not read is no broken file: say that it needs root instead.
    let denied = loaded.skipped.iter().position(|e| {
        matches!(e, store::StoreError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied)
    });
    if let Some(i) = denied {
        return Err(loaded.skipped.swap_remove(i).into());
    }
    let mut rows: Vec<ListRow> = loaded.accounts.iter().map(ListRow::of).collect();
    // The fleet bundle's accounts that no local account overrides.
    let (fleet, fleet_skipped, _) =
        crate::fleet::load_accounts(&ctx.paths, &profiles, &loaded.accounts);
    loaded.skipped.extend(fleet_skipped);
    if !fleet.is_empty() {
        let serial = crate::fleet::stored_bundle(&ctx.paths)
            .ok()
            .flatten()
            .map_or(0, |(b, _)| b.serial);
        rows.extend(fleet.iter().map(|a| ListRow::of_fleet(a, serial)));
        rows.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let skipped: Vec<String> = loaded
        .skipped
        .iter()
        .map(|e| crate::error_chain(e))
        .collect();
    if ctx.json {
        ctx.print_json(&serde_json::json!({"accounts": rows, "skipped": skipped}))?;
    } else {
        for line in table(&rows) {
            outln!("{}", crate::model::printable(&line));
        }
        if rows.is_empty() && skipped.is_empty() && !ctx.quiet {
            eprintln!("no accounts in {}", ctx.paths.accounts_dir().display());
        }
        for s in &skipped {
            ctx.warn(format_args!("skipped account file {s}"));
        }
    }
    Ok(if skipped.is_empty() {
        Outcome::Done
    } else {
        Outcome::Degraded
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_aligned_with_dashes_for_nothing() {
        let a = ListRow {
            name: "joe".into(),
            services: vec!["sip-udp".into(), "iax".into()],
            addresses: vec!["203.0.113.7".into()],
            fqdns: vec![],
            comment: Some("Joe's office".into()),
            created: None,
            expires: None,
            origin: None,
        };
        let b = ListRow {
            name: "provider-x".into(),
            services: vec!["sip-udp".into()],
            addresses: vec![],
            fqdns: vec!["sip.example".into()],
            comment: None,
            created: None,
            expires: None,
            origin: Some("provider:x".into()),
        };
        assert_eq!(
            table(&[a, b]),
            [
                "NAME        SERVICES     ADDRESSES    NAMES        EXPIRES  ORIGIN      COMMENT",
                "joe         sip-udp,iax  203.0.113.7  -            -        -           Joe's office",
                "provider-x  sip-udp      -            sip.example  -        provider:x  -",
            ]
        );
        assert!(table(&[]).is_empty());
        let blank = ListRow {
            comment: Some(String::new()),
            ..ListRow::of(&crate::model::Account {
                name: "ann".parse().unwrap(),
                addresses: vec!["192.0.2.7/32".parse().unwrap()],
                fqdns: vec![],
                services: vec!["ssh".into()],
                media: vec![],
                comment: None,
                created: None,
                provider: None,
                expires: None,
            })
        };
        assert_eq!(blank.cells()[6], "-", "an empty comment is shown as -");
    }
}
