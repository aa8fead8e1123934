//! The SSH lockout guard: a command that applies a ruleset from an SSH session refuses one
//! that would stop that session's client from logging in again (unless `--force`).

use std::net::IpAddr;

use anyhow::Result;

use crate::nft::netlink::conntrack::Flow;
use crate::ruleset::{L4Proto, Ruleset};
use crate::store::{self, Paths};

/// The SSH session this command runs in: the client's address and the server's port, from
/// `SSH_CONNECTION` ("client_ip client_port server_ip server_port").
pub fn ssh_session() -> Option<(IpAddr, u16)> {
    parse_ssh_connection(&std::env::var("SSH_CONNECTION").ok()?)
}

fn parse_ssh_connection(s: &str) -> Option<(IpAddr, u16)> {
    parse_ssh_flow(s).map(|f| (f.src, f.dport))
}

/// The TCP connection this command's SSH session runs over, from `SSH_CONNECTION`: ending
/// the flows of sources that lost access leaves it open (reported), so a `--force` past the
/// guard below does not cut the command off half way.
pub(crate) fn own_ssh_flow() -> Option<Flow> {
    parse_ssh_flow(&std::env::var("SSH_CONNECTION").ok()?)
}

fn parse_ssh_flow(s: &str) -> Option<Flow> {
    let mut parts = s.split_whitespace();
    let client: IpAddr = parts.next()?.parse().ok()?;
    let client_port: u16 = parts.next()?.parse().ok()?;
    let server: IpAddr = parts.next()?.parse().ok()?;
    let port: u16 = parts.next()?.parse().ok()?;
    Some(Flow {
        src: client.to_canonical(),
        sport: client_port,
        proto: L4Proto::Tcp,
        dst: server.to_canonical(),
        dport: port,
    })
}

/// Refuses a ruleset that would stop this SSH session's client from opening a new
/// connection to the SSH port (the running session itself would survive as established,
/// but the next login would not). The advice names a command that works as written: an
/// account name no file in `paths` uses yet (`admin`, else `admin-2`, `admin-3`, ...: after
/// `init` the `admin` account exists already, and `add-ip` does not overwrite it).
pub(crate) fn guard_ssh_lockout(paths: &Paths, ruleset: &Ruleset) -> Result<()> {
    if let Some((client, port)) = ssh_session()
        && !ruleset.accepts_new(client, L4Proto::Tcp, port)
    {
        let existing = store::account_names(paths).unwrap_or_default();
        let name = free_account_name("admin", &existing);
        anyhow::bail!(
            "refusing to apply: your SSH client {client} could no longer reach tcp port {port}; \
             whitelist it first (add-ip {name} {client} --allow ssh) or pass --force"
        );
    }
    Ok(())
}

/// `base` when no account has that name (ignoring case, as file systems and people may),
/// else the first of `base-2`, `base-3`, ... that is free.
fn free_account_name(base: &str, existing: &[String]) -> String {
    let taken = |n: &str| existing.iter().any(|e| e.eq_ignore_ascii_case(n));
    if !taken(base) {
        return base.to_owned();
    }
    (2..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| !taken(n))
        .expect("an unbounded range has a free name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_connection_parsing() {
        assert_eq!(
            parse_ssh_connection("203.0.113.7 52314 192.0.2.1 22"),
            Some(("203.0.113.7".parse().unwrap(), 22))
        );
        assert_eq!(
            parse_ssh_connection("::ffff:203.0.113.7 52314 ::ffff:192.0.2.1 2222"),
            Some(("203.0.113.7".parse().unwrap(), 2222))
        );
        assert_eq!(
            parse_ssh_connection("2001:db8::7 1 2001:db8::1 22"),
            Some(("2001:db8::7".parse().unwrap(), 22))
        );
        assert_eq!(parse_ssh_connection(""), None);
        let flow = parse_ssh_flow("::ffff:203.0.113.7 52314 ::ffff:192.0.2.1 2222").unwrap();
        assert_eq!(flow.to_string(), "203.0.113.7 tcp/2222");
        assert_eq!(
            (flow.sport, flow.dst),
            (52314, "192.0.2.1".parse().unwrap())
        );
        assert_eq!(parse_ssh_connection("garbage here"), None);
    }

    #[test]
    fn the_advised_account_name_is_free() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(free_account_name("admin", &names(&["joe"])), "admin");
        assert_eq!(free_account_name("admin", &names(&["admin"])), "admin-2");
        assert_eq!(
            free_account_name("admin", &names(&["Admin", "admin-2", "admin-4"])),
            "admin-3"
        );
    }
}
