//! Reading the ports a PBX really uses, for `pbxwall init`: sshd's `Port`, PJSIP transports,
//! chan_sip and IAX2 bind ports, and the RTP range of rtp.conf (FreePBX's `*_additional.conf`
//! and `*_custom.conf` files included). Parsers are pure functions of the file texts.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::ruleset::{L4Proto, PortRange};

/// What was found on this host. Empty sets mean "nothing found": keep the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DetectedPorts {
    /// sshd `Port` values.
    pub ssh: BTreeSet<u16>,
    /// SIP over UDP (PJSIP udp transports, chan_sip bindport).
    pub sip_udp: BTreeSet<u16>,
    /// SIP over TCP and TLS (PJSIP tcp/tls transports, chan_sip tcp/tls bind addresses).
    pub sip_tcp: BTreeSet<u16>,
    /// IAX2 bindport.
    pub iax: BTreeSet<u16>,
    /// rtp.conf `rtpstart`-`rtpend`.
    pub rtp: Option<PortRange>,
    /// The files that were read, for the report.
    pub sources: Vec<String>,
}

/// `Port` lines of an sshd_config text (`Port 22`, case-insensitive, comments ignored).
pub fn sshd_ports(text: &str) -> BTreeSet<u16> {
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next()?.trim();
            let (key, value) = l.split_once(char::is_whitespace)?;
            key.eq_ignore_ascii_case("port")
                .then(|| value.trim().parse().ok())?
        })
        .collect()
}

/// Sections of an Asterisk config text: `(name, [(key, value)])`, comments (`;`) removed,
/// `=>` treated like `=`.
fn sections(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = vec![(String::new(), Vec::new())];
    for line in text.lines() {
        let line = line.split(';').next().unwrap_or("").trim();
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest.split(']').next().unwrap_or("").trim().to_owned();
            out.push((name, Vec::new()));
        } else if let Some((k, v)) = line.split_once('=') {
            let v = v.trim_start_matches('>').trim();
            if let Some(last) = out.last_mut() {
                last.1.push((k.trim().to_ascii_lowercase(), v.to_owned()));
            }
        }
    }
    out
}

/// The port of a bind address: `0.0.0.0:5060`, `[::]:5061`, `5060` or an address without a
/// port (→ `default`).
fn bind_port(value: &str, default: u16) -> Option<u16> {
    let v = value.trim();
    if let Ok(p) = v.parse::<u16>() {
        return Some(p);
    }
    if let Some(rest) = v.strip_prefix('[') {
        let (_, after) = rest.split_once(']')?;
        return after
            .strip_prefix(':')
            .map_or(Some(default), |p| p.parse().ok());
    }
    match v.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => port.parse().ok(),
        _ => Some(default),
    }
}

/// PJSIP transports: `type=transport` sections with `protocol` and `bind`.
pub fn pjsip_ports(text: &str) -> Vec<(L4Proto, u16)> {
    let mut out = Vec::new();
    for (_, kv) in sections(text) {
        let get = |k: &str| {
            kv.iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        if get("type") != Some("transport") {
            continue;
        }
        let protocol = get("protocol").unwrap_or("udp").to_ascii_lowercase();
        let (proto, default) = match protocol.as_str() {
            "udp" => (L4Proto::Udp, 5060),
            "tcp" => (L4Proto::Tcp, 5060),
            "tls" => (L4Proto::Tcp, 5061),
            _ => continue, // ws/wss go through the web server
        };
        if let Some(port) = get("bind").and_then(|b| bind_port(b, default)) {
            out.push((proto, port));
        }
    }
    out
}

/// chan_sip `[general]`: `bindport` (UDP), `tcpbindaddr` (TCP, when `tcpenable=yes`) and
/// `tlsbindaddr` (TCP, when `tlsenable=yes`).
pub fn chan_sip_ports(text: &str) -> Vec<(L4Proto, u16)> {
    let mut out = Vec::new();
    for (name, kv) in sections(text) {
        if !(name.is_empty() || name.eq_ignore_ascii_case("general")) {
            continue;
        }
        let get = |k: &str| {
            kv.iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let yes = |k: &str| get(k).is_some_and(|v| v.eq_ignore_ascii_case("yes"));
        if let Some(p) = get("bindport").and_then(|v| v.parse().ok()) {
            out.push((L4Proto::Udp, p));
        }
        if yes("tcpenable") {
            let p = get("tcpbindaddr")
                .and_then(|v| bind_port(v, 5060))
                .unwrap_or(5060);
            out.push((L4Proto::Tcp, p));
        }
        if yes("tlsenable") {
            let p = get("tlsbindaddr")
                .and_then(|v| bind_port(v, 5061))
                .unwrap_or(5061);
            out.push((L4Proto::Tcp, p));
        }
    }
    out
}

/// IAX2 `bindport`.
pub fn iax_ports(text: &str) -> Vec<u16> {
    sections(text)
        .into_iter()
        .flat_map(|(_, kv)| kv)
        .filter(|(k, _)| k == "bindport")
        .filter_map(|(_, v)| v.parse().ok())
        .collect()
}

/// rtp.conf `rtpstart` and `rtpend` (the last of each wins, as Asterisk reads them).
pub fn rtp_range(text: &str) -> (Option<u16>, Option<u16>) {
    let mut start = None;
    let mut end = None;
    for (_, kv) in sections(text) {
        for (k, v) in kv {
            match k.as_str() {
                "rtpstart" => start = v.parse().ok().or(start),
                "rtpend" => end = v.parse().ok().or(end),
                _ => {}
            }
        }
    }
    (start, end)
}

fn read_all(dir: &Path, base: &str, sources: &mut Vec<String>) -> String {
    let mut text = String::new();
    for suffix in [
        "",
        "_custom",
        "_additional",
        "_general_additional",
        "_general_custom",
    ] {
        let path = dir.join(format!("{base}{suffix}.conf"));
        if let Ok(t) = fs::read_to_string(&path) {
            sources.push(path.display().to_string());
            text.push_str(&t);
            text.push('\n');
        }
    }
    text
}

/// Reads sshd_config (and its `sshd_config.d/*.conf`) and the Asterisk configuration folder.
pub fn detect(sshd_config: &Path, asterisk_dir: &Path) -> DetectedPorts {
    let mut d = DetectedPorts::default();
    let mut ssh_files = vec![sshd_config.to_path_buf()];
    if let Some(dir) = sshd_config.parent()
        && let Ok(entries) = fs::read_dir(dir.join("sshd_config.d"))
    {
        let mut extra: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        extra.sort();
        ssh_files.extend(extra);
    }
    for f in ssh_files {
        if let Ok(t) = fs::read_to_string(&f) {
            d.sources.push(f.display().to_string());
            d.ssh.extend(sshd_ports(&t));
        }
    }
    let mut sources = Vec::new();
    let mut pjsip = read_all(asterisk_dir, "pjsip", &mut sources);
    pjsip.push_str(&read_all(asterisk_dir, "pjsip.transports", &mut sources));
    for (proto, port) in pjsip_ports(&pjsip)
        .into_iter()
        .chain(chan_sip_ports(&read_all(asterisk_dir, "sip", &mut sources)))
    {
        match proto {
            L4Proto::Udp => d.sip_udp.insert(port),
            L4Proto::Tcp => d.sip_tcp.insert(port),
        };
    }
    d.iax
        .extend(iax_ports(&read_all(asterisk_dir, "iax", &mut sources)));
    if let (Some(first), Some(last)) = rtp_range(&read_all(asterisk_dir, "rtp", &mut sources))
        && first >= 1
        && first <= last
    {
        d.rtp = Some(PortRange { first, last });
    }
    d.sources.extend(sources);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sshd() {
        let t = "# Port 2200\nPort 2222\nport 22 \nListenAddress 0.0.0.0\nPorts 1\n";
        assert_eq!(sshd_ports(t), BTreeSet::from([22, 2222]));
        assert!(sshd_ports("#Port 22\n").is_empty());
    }

    #[test]
    fn pjsip_transports() {
        let t = "[transport-udp]\ntype=transport\nprotocol=udp ; comment\nbind=0.0.0.0:5070\n\n\
                 [transport-tcp]\ntype = transport\nprotocol = tcp\nbind = [::]:5072\n\
                 [transport-tls]\ntype=transport\nprotocol=tls\nbind=0.0.0.0\n\
                 [transport-wss]\ntype=transport\nprotocol=wss\nbind=0.0.0.0:8089\n\
                 [1000]\ntype=endpoint\nbind=0.0.0.0:9999\n";
        assert_eq!(
            pjsip_ports(t),
            [
                (L4Proto::Udp, 5070),
                (L4Proto::Tcp, 5072),
                (L4Proto::Tcp, 5061)
            ]
        );
    }

    #[test]
    fn chan_sip_and_iax_and_rtp() {
        let t = "[general]\nbindport=5160\ntcpenable=yes\ntcpbindaddr=0.0.0.0:5162\ntlsenable=no\n[peer]\nbindport=1\n";
        assert_eq!(
            chan_sip_ports(t),
            [(L4Proto::Udp, 5160), (L4Proto::Tcp, 5162)]
        );
        assert_eq!(iax_ports("[general]\nbindport = 4570\n"), [4570]);
        assert_eq!(
            rtp_range("[general]\nrtpstart=10000\nrtpend=20000\nrtpstart => 12000\n"),
            (Some(12000), Some(20000))
        );
    }

    #[test]
    fn detect_reads_files_and_includes() {
        let t = tempfile::tempdir().unwrap();
        let ssh = t.path().join("ssh");
        let ast = t.path().join("asterisk");
        fs::create_dir_all(ssh.join("sshd_config.d")).unwrap();
        fs::create_dir_all(&ast).unwrap();
        fs::write(ssh.join("sshd_config"), "Port 22\n").unwrap();
        fs::write(ssh.join("sshd_config.d/local.conf"), "Port 2222\n").unwrap();
        fs::write(
            ast.join("pjsip.transports.conf"),
            "[0.0.0.0-udp]\ntype=transport\nprotocol=udp\nbind=0.0.0.0:5060\n",
        )
        .unwrap();
        fs::write(ast.join("sip_general_additional.conf"), "bindport=5160\n").unwrap();
        fs::write(
            ast.join("rtp_additional.conf"),
            "[general]\nrtpstart=10000\nrtpend=20000\n",
        )
        .unwrap();
        let d = detect(&ssh.join("sshd_config"), &ast);
        assert_eq!(d.ssh, BTreeSet::from([22, 2222]));
        assert_eq!(d.sip_udp, BTreeSet::from([5060, 5160]));
        assert!(d.sip_tcp.is_empty() && d.iax.is_empty());
        assert_eq!(
            d.rtp,
            Some(PortRange {
                first: 10000,
                last: 20000
            })
        );
        assert_eq!(d.sources.len(), 5, "{:?}", d.sources);
        let none = detect(&t.path().join("nope"), &t.path().join("nope"));
        assert_eq!(none, DetectedPorts::default());
    }
}
