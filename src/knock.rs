//! Port knocking: the `[knock]` settings, their checks, random sequences for
//! `pbxwall knock --setup`, and the client that sends a sequence (`pbxwall knock HOST`).
//!
//! A knock is a TCP SYN (a connection attempt) or one UDP datagram to each port of the
//! sequence, in order, each within `step_timeout` of the one before, as knockd's `knock`
//! client sends them (<https://github.com/jvinet/knock>, `knock.1`). The kernel follows the
//! steps with stage sets and grants the source for `grant_for` (see [`crate::compile`]).
//!
//! The ports of a sequence are checked wherever they come from (the settings file or the
//! command line): 2 to [`MAX_STEPS`] distinct unprivileged ports (1024-65535), none a port of
//! a service profile or inside the RTP range: a knock port must never be a port anybody
//! reaches for another reason, or ordinary traffic would knock.

use std::fmt;
use std::io::Read;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration as StdDuration;

use thiserror::Error;

use crate::model::{Duration, PortSpec, Profiles, RtpSettings};
use crate::ruleset::{L4Proto, PortRange};

/// Fewest steps of a sequence.
pub const MIN_STEPS: usize = 2;
/// Most steps of a sequence: each step but the last is a kernel set per family.
pub const MAX_STEPS: usize = 8;
/// Steps of a sequence `knock --setup` makes when `--length` is not given.
pub const DEFAULT_STEPS: usize = 3;
/// Lowest knock port: ports below are privileged (well-known services).
pub const MIN_PORT: u16 = 1024;

/// A wrong knock sequence or knock setting: one line naming the value and what is valid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KnockError {
    /// Fewer than [`MIN_STEPS`] or more than [`MAX_STEPS`] ports.
    #[error(
        "invalid knock sequence {0}: use 2 to 8 distinct ports (or an empty sequence to switch knocking off)"
    )]
    Steps(String),
    /// A port given twice.
    #[error(
        "invalid knock sequence {sequence}: port {port} appears twice; the ports must be distinct"
    )]
    Duplicate {
        /// The sequence.
        sequence: String,
        /// The port given twice.
        port: u16,
    },
    /// A port that is not a number from 1024 to 65535.
    #[error("invalid knock port {0:?}: use a port from 1024 to 65535 (below 1024 are services)")]
    Port(String),
    /// A port some service profile opens.
    #[error(
        "invalid knock port {port}: it is {what} of service {service}; knock ports are never services, choose another (pbxwall knock --setup picks free ones)"
    )]
    ServicePort {
        /// The port.
        port: u16,
        /// `tcp 5060-5061`.
        what: String,
        /// The profile.
        service: String,
    },
    /// A port inside the media range.
    #[error(
        "invalid knock port {port}: it is inside the RTP range {range} ([rtp] ports), which is open to media senders; choose another"
    )]
    RtpPort {
        /// The port.
        port: u16,
        /// The RTP range.
        range: PortRange,
    },
    /// A protocol other than tcp or udp.
    #[error("invalid knock protocol {0:?}: use tcp or udp")]
    Protocol(String),
    /// A `--length` out of range.
    #[error("invalid knock length {0}: use 2 to 8 ports")]
    Length(usize),
}

/// `[knock]` settings. With an empty `sequence` knocking is off and the ruleset has no
/// knock sets or rules. Two are equal when their values are (wherever they were written).
#[derive(Debug, Clone, Eq)]
pub struct KnockSettings {
    /// The ports to knock, in order; empty = off.
    pub sequence: Vec<u16>,
    /// Protocol of the knocks: TCP SYNs (the default, as knockd's client) or UDP datagrams.
    pub protocol: L4Proto,
    /// Time allowed from one knock to the next.
    pub step_timeout: Duration,
    /// How long a grant lasts.
    pub grant_for: Duration,
    /// What a grant opens: service names or TM3 codes, as written.
    pub services: Vec<String>,
    /// Lines of the settings file the values came from (1 when not from a file), for
    /// errors found once the profiles are known.
    pub lines: KnockLines,
}

/// Where in `pbxwall.toml` the `[knock]` values are (1-based lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnockLines {
    /// Line of `sequence`.
    pub sequence: usize,
    /// Line of `services`.
    pub services: usize,
}

impl PartialEq for KnockSettings {
    fn eq(&self, other: &Self) -> bool {
        self.sequence == other.sequence
            && self.protocol == other.protocol
            && self.step_timeout == other.step_timeout
            && self.grant_for == other.grant_for
            && self.services == other.services
    }
}

impl Default for KnockSettings {
    fn default() -> Self {
        KnockSettings {
            sequence: Vec::new(),
            protocol: L4Proto::Tcp,
            step_timeout: Duration::from_secs(10).expect("in range"),
            grant_for: Duration::from_secs(3600).expect("in range"),
            services: vec!["all".to_owned()],
            lines: KnockLines {
                sequence: 1,
                services: 1,
            },
        }
    }
}

impl KnockSettings {
    /// Whether knocking is on (a sequence is set).
    pub fn enabled(&self) -> bool {
        !self.sequence.is_empty()
    }

    /// The granted services as profile names (in profile order).
    pub fn service_names(
        &self,
        profiles: &Profiles,
    ) -> Result<Vec<String>, crate::model::ModelError> {
        profiles.parse_services(&self.services)
    }

    /// The sequence as `23456,34567,45678` (what `--sequence` takes).
    pub fn sequence_text(&self) -> String {
        sequence_text(&self.sequence)
    }
}

/// Ports as `23456,34567,45678`.
pub fn sequence_text(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses a protocol name: `tcp` or `udp` (any case).
pub fn parse_protocol(s: &str) -> Result<L4Proto, KnockError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "tcp" => Ok(L4Proto::Tcp),
        "udp" => Ok(L4Proto::Udp),
        _ => Err(KnockError::Protocol(s.to_owned())),
    }
}

/// Parses one port of a sequence: a number from [`MIN_PORT`] to 65535.
pub fn parse_port(s: &str) -> Result<u16, KnockError> {
    s.trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p >= MIN_PORT)
        .ok_or_else(|| KnockError::Port(s.to_owned()))
}

/// Parses a sequence as given on the command line: ports separated by commas or spaces
/// (`23456,34567,45678`), checked by [`check_shape`].
pub fn parse_sequence(s: &str) -> Result<Vec<u16>, KnockError> {
    let ports = crate::model::split_list(s)
        .map(parse_port)
        .collect::<Result<Vec<_>, _>>()?;
    check_shape(&ports)?;
    Ok(ports)
}

/// Checks what a sequence must be on any server: 2 to [`MAX_STEPS`] distinct ports from
/// [`MIN_PORT`] up.
pub fn check_shape(ports: &[u16]) -> Result<(), KnockError> {
    if !(MIN_STEPS..=MAX_STEPS).contains(&ports.len()) {
        return Err(KnockError::Steps(format!("[{}]", sequence_text(ports))));
    }
    if let Some(p) = ports.iter().find(|p| **p < MIN_PORT) {
        return Err(KnockError::Port(p.to_string()));
    }
    for (i, p) in ports.iter().enumerate() {
        if ports[..i].contains(p) {
            return Err(KnockError::Duplicate {
                sequence: format!("[{}]", sequence_text(ports)),
                port: *p,
            });
        }
    }
    Ok(())
}

/// Checks a sequence against this server: [`check_shape`], and no port a service profile
/// opens (in either protocol: a port people know as a service's must not knock) nor inside
/// the RTP range.
pub fn check_sequence(
    ports: &[u16],
    profiles: &Profiles,
    rtp: &RtpSettings,
) -> Result<(), KnockError> {
    check_shape(ports)?;
    for &port in ports {
        if let Some((proto, range, service)) = service_port(port, profiles) {
            let what = if range.first == range.last {
                format!("{} port {}", proto.keyword(), range.first)
            } else {
                format!("in {} {}", proto.keyword(), range)
            };
            return Err(KnockError::ServicePort {
                port,
                what,
                service,
            });
        }
        if (rtp.ports.first..=rtp.ports.last).contains(&port) {
            return Err(KnockError::RtpPort {
                port,
                range: rtp.ports,
            });
        }
    }
    Ok(())
}

/// The first profile port range holding `port` (either protocol), with its profile's name.
fn service_port(port: u16, profiles: &Profiles) -> Option<(L4Proto, PortRange, String)> {
    profiles.ordered().into_iter().find_map(|p| {
        p.ports.iter().find_map(|spec| match *spec {
            PortSpec::Port(proto, range) if (range.first..=range.last).contains(&port) => {
                Some((proto, range, p.name.clone()))
            }
            _ => None,
        })
    })
}

/// A random sequence of `len` ports for this server, each passing [`check_sequence`], drawn
/// from the kernel's random source; with three ports or more never all ascending or all
/// descending (a port scan that walks the ports in order would otherwise hit them in order).
pub fn random_sequence(
    len: usize,
    profiles: &Profiles,
    rtp: &RtpSettings,
) -> std::io::Result<Vec<u16>> {
    if !(MIN_STEPS..=MAX_STEPS).contains(&len) {
        return Err(std::io::Error::other(KnockError::Length(len)));
    }
    let mut random = std::fs::File::open("/dev/urandom")?;
    // Bounded: each draw is free with high probability (a few thousand ports are taken).
    for _ in 0..10_000 {
        let mut bytes = [0u8; 2 * MAX_STEPS];
        random.read_exact(&mut bytes)?;
        let ports: Vec<u16> = bytes
            .chunks(2)
            .take(len)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .collect();
        // Two ports are always one or the other.
        let monotonic = len > 2
            && (ports.windows(2).all(|w| w[0] < w[1]) || ports.windows(2).all(|w| w[0] > w[1]));
        if !monotonic && check_sequence(&ports, profiles, rtp).is_ok() {
            return Ok(ports);
        }
    }
    Err(std::io::Error::other(
        "no free knock ports found: the service profiles and the RTP range cover too many ports",
    ))
}

/// How the knock client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// TCP SYNs or UDP datagrams.
    pub protocol: L4Proto,
    /// How long a TCP knock waits for the connection (the server drops knocks, so it
    /// always waits this long unless something answers).
    pub connect_timeout: StdDuration,
    /// Pause between two knocks.
    pub gap: StdDuration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            protocol: L4Proto::Tcp,
            connect_timeout: StdDuration::from_millis(150),
            gap: StdDuration::from_millis(100),
        }
    }
}

/// One knock sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Knocked {
    /// Where it went.
    pub to: SocketAddr,
    /// Whether something answered (a TCP connection was accepted: that port is open, so it
    /// is not a knock port of a pbxwall server).
    pub answered: bool,
}

impl fmt::Display for Knocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to)
    }
}

/// The first address of `host` (a name or an address), for the knocks.
pub fn resolve_host(host: &str) -> std::io::Result<std::net::IpAddr> {
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse() {
        return Ok(ip);
    }
    (host, 0)
        .to_socket_addrs()?
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| std::io::Error::other(format!("{host} has no address")))
}

/// Sends the knocks: for TCP a connection attempt (its SYN) to each port, given up after
/// `connect_timeout`; for UDP one empty datagram. Ports in order, `gap` between them.
pub fn knock(
    host: std::net::IpAddr,
    ports: &[u16],
    options: ClientOptions,
) -> std::io::Result<Vec<Knocked>> {
    let mut out = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(options.gap);
        }
        let to = SocketAddr::new(host, port);
        let answered = match options.protocol {
            // Refused (RST) or timed out: either way the SYN went out.
            L4Proto::Tcp => TcpStream::connect_timeout(&to, options.connect_timeout).is_ok(),
            L4Proto::Udp => {
                let bind: SocketAddr = if host.is_ipv4() {
                    "0.0.0.0:0".parse().expect("valid")
                } else {
                    "[::]:0".parse().expect("valid")
                };
                let socket = UdpSocket::bind(bind)?;
                socket.send_to(&[], to)?;
                false
            }
        };
        out.push(Knocked { to, answered });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles() -> Profiles {
        crate::store::builtin_profiles()
    }

    #[test]
    fn sequences_parse_and_are_checked() {
        assert_eq!(
            parse_sequence("23456,34567,45678").unwrap(),
            [23456, 34567, 45678]
        );
        assert_eq!(parse_sequence("23456 34567").unwrap(), [23456, 34567]);
        for (bad, want) in [
            (
                "23456",
                "invalid knock sequence [23456]: use 2 to 8 distinct ports",
            ),
            (
                "2001,2002,2003,2004,2005,2006,2007,2008,2009",
                "invalid knock sequence [2001,2002,2003,2004,2005,2006,2007,2008,2009]: use 2 to 8",
            ),
            (
                "23456,34567,23456",
                "invalid knock sequence [23456,34567,23456]: port 23456 appears twice",
            ),
            (
                "80,34567",
                "invalid knock port \"80\": use a port from 1024 to 65535",
            ),
            ("70000,34567", "invalid knock port \"70000\""),
            ("abc,34567", "invalid knock port \"abc\""),
            ("", "invalid knock sequence []"),
        ] {
            let e = parse_sequence(bad).unwrap_err().to_string();
            assert!(e.starts_with(want), "{bad:?}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn service_and_rtp_ports_are_refused() {
        let ps = profiles();
        let rtp = RtpSettings::default();
        assert!(check_sequence(&[23456, 34567], &ps, &rtp).is_ok());
        let e = check_sequence(&[5160, 34567], &ps, &rtp)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid knock port 5160: it is in udp 5160-5161 of service sip-udp; knock ports are never services, choose another (pbxwall knock --setup picks free ones)"
        );
        let e = check_sequence(&[23456, 4445], &ps, &rtp)
            .unwrap_err()
            .to_string();
        assert!(e.contains("it is tcp port 4445 of service fop"), "{e}");
        // A UDP port of a service is refused for TCP knocks too.
        let e = check_sequence(&[23456, 4569], &ps, &rtp)
            .unwrap_err()
            .to_string();
        assert!(e.contains("udp port 4569 of service iax"), "{e}");
        let e = check_sequence(&[23456, 12000], &ps, &rtp)
            .unwrap_err()
            .to_string();
        assert!(e.contains("inside the RTP range 10000-20000"), "{e}");
    }

    #[test]
    fn random_sequences_are_valid_distinct_and_not_monotonic() {
        let ps = profiles();
        let rtp = RtpSettings::default();
        for len in MIN_STEPS..=MAX_STEPS {
            for _ in 0..50 {
                let s = random_sequence(len, &ps, &rtp).unwrap();
                assert_eq!(s.len(), len);
                check_sequence(&s, &ps, &rtp).unwrap();
                if len > 2 {
                    assert!(!s.windows(2).all(|w| w[0] < w[1]), "{s:?}");
                    assert!(!s.windows(2).all(|w| w[0] > w[1]), "{s:?}");
                }
            }
        }
        assert!(random_sequence(1, &ps, &rtp).is_err());
        assert!(random_sequence(9, &ps, &rtp).is_err());
    }

    #[test]
    fn protocols() {
        assert_eq!(parse_protocol("TCP").unwrap(), L4Proto::Tcp);
        assert_eq!(parse_protocol("udp").unwrap(), L4Proto::Udp);
        assert_eq!(
            parse_protocol("icmp").unwrap_err().to_string(),
            "invalid knock protocol \"icmp\": use tcp or udp"
        );
    }

    #[test]
    fn udp_knocks_reach_a_local_socket_in_order() {
        let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let second = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port2 = second.local_addr().unwrap().port();
        let opts = ClientOptions {
            protocol: L4Proto::Udp,
            gap: StdDuration::from_millis(1),
            ..ClientOptions::default()
        };
        let sent = knock("127.0.0.1".parse().unwrap(), &[port, port2], opts).unwrap();
        assert_eq!(sent.len(), 2);
        let mut buf = [0u8; 8];
        listener
            .set_read_timeout(Some(StdDuration::from_secs(2)))
            .unwrap();
        second
            .set_read_timeout(Some(StdDuration::from_secs(2)))
            .unwrap();
        assert_eq!(listener.recv(&mut buf).unwrap(), 0);
        assert_eq!(second.recv(&mut buf).unwrap(), 0);
    }
}
