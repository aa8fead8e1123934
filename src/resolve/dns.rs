//! Asking DNS: the A and AAAA records of every name, concurrently and bounded in time.
//!
//! [`ask`] asks [hickory-resolver] for the A and the AAAA records of every name as **two
//! separate queries**. (`lookup_ip` would merge them and silently return one family when
//! the other fails, which for a firewall means dropping addresses on a mere timeout.) All
//! queries run concurrently, at most [`MAX_QUERIES_IN_FLIGHT`] at a time, so a slow name
//! server costs about one query's worst case for the whole run, not one per name. Each
//! answer is sorted into addresses, NXDOMAIN, no records or a [`Transient`] failure; what
//! that means for the name is the policy's business.
//!
//! The resolver is set up for this job only: the name servers of `[resolver] nameservers`,
//! or, when that list is empty, the `nameserver` lines of the system's `/etc/resolv.conf`
//! (its options, search domains and `ndots` are ignored); each query waits `timeout_ms` per
//! try and is tried `attempts` times in all; no hosts file, no answer cache (`cache_size =
//! 0`), `ndots = 0`, and names are asked as absolute names (with the final dot), so no
//! search domain is ever appended. If the resolver cannot be set up (no readable
//! resolv.conf, no name server in it), every name gets that error as a transient failure:
//! nothing panics and the last good addresses are kept within the grace.
//!
//! [hickory-resolver]: https://docs.rs/hickory-resolver

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::stream::{self, StreamExt};
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, Record};
use hickory_resolver::{Resolver, TokioResolver};
use thiserror::Error;

use super::policy::{Answer, Fresh, Transient};
use crate::model::{Fqdn, ResolverSettings};

/// At most this many queries (an A or an AAAA query of one name) are in flight at once.
pub const MAX_QUERIES_IN_FLIGHT: usize = 256;
/// The resolver configuration read when `[resolver] nameservers` is empty.
pub const SYSTEM_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The record type a query asks for: A (IPv4 addresses) or AAAA (IPv6 addresses). Every
/// name gets one query of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QueryType {
    /// IPv4 addresses.
    A,
    /// IPv6 addresses.
    Aaaa,
}

impl QueryType {
    /// The record type as DNS writes it, `A` or `AAAA`.
    pub fn record_type(self) -> &'static str {
        match self {
            QueryType::A => "A",
            QueryType::Aaaa => "AAAA",
        }
    }
}

/// This run's answers for `names`, in their order. Blocking: it runs its own
/// single-threaded tokio runtime, on a helper thread when called from inside another
/// runtime.
pub(super) fn ask(names: &[&Fqdn], settings: &ResolverSettings, resolv_conf: &Path) -> Vec<Fresh> {
    if names.is_empty() {
        Vec::new()
    } else if tokio::runtime::Handle::try_current().is_ok() {
        // block_on inside a runtime would panic: resolve on a thread of our own.
        std::thread::scope(|s| {
            s.spawn(|| fresh_answers(names, settings, resolv_conf))
                .join()
                .unwrap_or_else(|_| {
                    vec![
                        Fresh::failed(Transient::Other("the resolver crashed".into()));
                        names.len()
                    ]
                })
        })
    } else {
        fresh_answers(names, settings, resolv_conf)
    }
}

/// Why the resolver could not be set up. Every name then fails with this text as a
/// transient error.
#[derive(Debug, Error)]
pub enum SetupError {
    /// The system resolver configuration could not be read.
    #[error("cannot read {path}")]
    ReadResolvConf {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The system resolver configuration names no usable name server.
    #[error("{path}: {message}")]
    ResolvConf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The async runtime could not start.
    #[error("cannot start the DNS resolver")]
    Runtime(#[source] io::Error),
    /// hickory refused the configuration.
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
}

/// The name servers of a resolv.conf file (only its `nameserver` lines matter).
fn system_nameservers(path: &Path) -> Result<Vec<NameServerConfig>, SetupError> {
    let data = std::fs::read(path).map_err(|source| SetupError::ReadResolvConf {
        path: path.to_owned(),
        source,
    })?;
    let (config, _opts) = hickory_resolver::system_conf::parse_resolv_conf(data).map_err(|e| {
        SetupError::ResolvConf {
            path: path.to_owned(),
            message: e.to_string(),
        }
    })?;
    let servers = config.name_servers().to_vec();
    if servers.is_empty() {
        return Err(SetupError::ResolvConf {
            path: path.to_owned(),
            message: "no nameserver line".into(),
        });
    }
    Ok(servers)
}

/// A configured name server: UDP, and TCP for truncated answers, on its port.
fn nameserver(addr: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

/// The hickory options for `settings` and `servers` name servers. `attempts` counts every
/// try, hickory's counts the retries after the first. Up to three servers are asked at once
/// (resolv.conf has at most three): hickory gives all servers of one try `timeout` together,
/// so with its default of two at a time a third server would never be reached when the first
/// two are down.
fn resolver_opts(settings: &ResolverSettings, servers: usize) -> ResolverOpts {
    let mut opts = ResolverOpts::default();
    opts.timeout = per_try_timeout(settings);
    opts.attempts = settings.attempts.max(1) as usize - 1;
    opts.num_concurrent_reqs = servers.clamp(2, 3);
    opts.use_hosts_file = ResolveHosts::Never;
    opts.ndots = 0;
    opts.cache_size = 0;
    opts
}

fn per_try_timeout(settings: &ResolverSettings) -> Duration {
    Duration::from_millis(settings.timeout_ms.max(1))
}

fn build_resolver(
    settings: &ResolverSettings,
    resolv_conf: &Path,
) -> Result<TokioResolver, SetupError> {
    let servers = if settings.nameservers.is_empty() {
        system_nameservers(resolv_conf)?
    } else {
        settings
            .nameservers
            .iter()
            .copied()
            .map(nameserver)
            .collect()
    };
    let opts = resolver_opts(settings, servers.len());
    Resolver::builder_with_config(
        ResolverConfig::from_name_servers(servers),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .build()
    .map_err(|e| SetupError::Resolver(e.to_string()))
}

/// The failure class of a hickory error. NXDOMAIN is a kind of "no records found", so it is
/// tested first.
fn answer_of_error<A>(e: &NetError) -> Answer<A> {
    if e.is_nx_domain() {
        return Answer::NxDomain;
    }
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr))
            if nr.response_code == ResponseCode::NoError =>
        {
            Answer::NoRecords
        }
        NetError::Timeout => Answer::Failed(Transient::Timeout),
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => {
            Answer::Failed(Transient::ServFail)
        }
        NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => {
            Answer::Failed(Transient::Refused)
        }
        NetError::Dns(DnsError::NoRecordsFound(nr)) => Answer::Failed(Transient::Other(format!(
            "{} with no records",
            nr.response_code
        ))),
        other => Answer::Failed(Transient::Other(other.to_string())),
    }
}

/// The addresses of one family in a lookup (CNAMEs followed by the server), with the
/// smallest TTL of the records used.
fn answer_of_lookup<A>(lookup: &Lookup, pick: impl Fn(&RData) -> Option<A>) -> Answer<A> {
    answer_of_records(lookup.query().name(), lookup.answers(), pick)
}

/// Longest CNAME chain followed from the name asked for.
const MAX_CNAME_HOPS: usize = 8;

/// A name as the owner of a record is compared: lower case, without the final dot.
fn owner_key(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// [`answer_of_lookup`] on the records of an answer: only records owned by the name asked
/// for, or by a name its CNAME chain leads to, count. A server that adds records of other
/// names (by mistake, or to plant addresses) cannot widen what a name admits.
fn answer_of_records<A>(
    asked: &Name,
    records: &[Record],
    pick: impl Fn(&RData) -> Option<A>,
) -> Answer<A> {
    let mut chain = vec![owner_key(asked)];
    for _ in 0..MAX_CNAME_HOPS {
        let last = chain.last().expect("starts with the name asked for");
        let next = records.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if owner_key(&r.name) == *last => Some(owner_key(&target.0)),
            _ => None,
        });
        match next {
            Some(next) if !chain.contains(&next) => chain.push(next),
            _ => break,
        }
    }
    let mut ttl = u32::MAX;
    let addrs: Vec<A> = records
        .iter()
        .filter(|r| chain.contains(&owner_key(&r.name)))
        .filter_map(|r| {
            ttl = ttl.min(r.ttl);
            pick(&r.data)
        })
        .collect();
    if addrs.is_empty() {
        return Answer::NoRecords;
    }
    Answer::Addrs(addrs, ttl)
}

/// What one query returned, before it is judged per family.
enum Raw {
    Lookup(Lookup),
    Error(NetError),
    Failed(Transient),
}

impl Raw {
    fn answer<A>(&self, pick: impl Fn(&RData) -> Option<A>) -> Answer<A> {
        match self {
            Raw::Lookup(l) => answer_of_lookup(l, pick),
            Raw::Error(e) => answer_of_error(e),
            Raw::Failed(t) => Answer::Failed(t.clone()),
        }
    }
}

/// Runs every query, at most [`MAX_QUERIES_IN_FLIGHT`] at once, each bounded in time, and
/// all of them together bounded by the same budget: a query not answered by then (queued
/// behind a dead name server) counts as a timeout, so its name keeps its last addresses
/// within the stale grace and the run ends in about one timeout × attempts however many
/// names wait on a silent server (BENCHMARKS.md, scenario 3).
async fn query_all(
    resolver: &TokioResolver,
    names: &[&Fqdn],
    settings: &ResolverSettings,
) -> Vec<Fresh> {
    // hickory itself gives up after timeout × attempts; this is the net over that.
    let budget = per_try_timeout(settings) * (settings.attempts.max(1) + 1);
    let deadline = tokio::time::sleep(budget);
    let jobs = names
        .iter()
        .enumerate()
        .flat_map(|(i, n)| [(i, *n, QueryType::A), (i, *n, QueryType::Aaaa)]);
    let raws: Vec<(usize, QueryType, Raw)> = stream::iter(jobs)
        .map(|(i, name, qtype)| async move {
            let raw = match Name::from_ascii(format!("{name}.")) {
                Err(e) => Raw::Failed(Transient::Other(format!("invalid name: {e}"))),
                Ok(absolute) => {
                    let query = async {
                        match qtype {
                            QueryType::A => resolver.ipv4_lookup(absolute).await,
                            QueryType::Aaaa => resolver.ipv6_lookup(absolute).await,
                        }
                    };
                    match tokio::time::timeout(budget, query).await {
                        Ok(Ok(lookup)) => Raw::Lookup(lookup),
                        Ok(Err(e)) => Raw::Error(e),
                        Err(_) => Raw::Failed(Transient::Timeout),
                    }
                }
            };
            (i, qtype, raw)
        })
        .buffer_unordered(MAX_QUERIES_IN_FLIGHT)
        .take_until(deadline)
        .collect()
        .await;

    let mut fresh = vec![Fresh::failed(Transient::Timeout); names.len()];
    for (i, qtype, raw) in raws {
        match qtype {
            QueryType::A => {
                fresh[i].v4 = raw.answer(|d| match d {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
            }
            QueryType::Aaaa => {
                fresh[i].v6 = raw.answer(|d| match d {
                    RData::AAAA(a) => Some(a.0),
                    _ => None,
                })
            }
        }
    }
    fresh
}

/// Asks DNS for every name; when the resolver cannot be set up every name gets that error.
fn fresh_answers(names: &[&Fqdn], settings: &ResolverSettings, resolv_conf: &Path) -> Vec<Fresh> {
    let all_failed =
        |e: SetupError| vec![Fresh::failed(Transient::Other(crate::error_chain(&e))); names.len()];
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return all_failed(SetupError::Runtime(e)),
    };
    runtime.block_on(async {
        match build_resolver(settings, resolv_conf) {
            Ok(resolver) => query_all(&resolver, names, settings).await,
            Err(e) => all_failed(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use hickory_resolver::net::NoRecords;
    use hickory_resolver::proto::op::Query;
    use hickory_resolver::proto::rr::RecordType;

    use super::super::test_support::*;
    use super::*;

    #[test]
    fn only_records_on_the_cname_chain_count() {
        use hickory_resolver::proto::rr::rdata::{A, CNAME};
        let name = |s: &str| Name::from_ascii(s).unwrap();
        let a = |owner: &str, ttl: u32, addr: [u8; 4]| {
            Record::from_rdata(name(owner), ttl, RData::A(A(Ipv4Addr::from(addr))))
        };
        let cname = |owner: &str, target: &str| {
            Record::from_rdata(name(owner), 300, RData::CNAME(CNAME(name(target))))
        };
        let pick = |d: &RData| match d {
            RData::A(a) => Some(a.0),
            _ => None,
        };
        let records = [
            cname("Joe.Dyn.example.test.", "home.isp.example.test."),
            cname("home.isp.example.test.", "cpe-7.isp.example.test."),
            a("cpe-7.isp.example.test.", 60, [192, 0, 2, 7]),
            // Not on the chain: another owner, planted in the same answer.
            a("evil.example.test.", 30, [203, 0, 113, 66]),
            cname("other.example.test.", "cpe-7.isp.example.test."),
        ];
        assert_eq!(
            answer_of_records(&name("joe.dyn.example.test."), &records, pick),
            Answer::Addrs(vec![Ipv4Addr::new(192, 0, 2, 7)], 60)
        );
        assert_eq!(
            answer_of_records(&name("nobody.example.test."), &records, pick),
            Answer::NoRecords
        );
        // A CNAME loop ends; nothing on it has an address.
        let looped = [
            cname("a.example.test.", "b.example.test."),
            cname("b.example.test.", "a.example.test."),
        ];
        assert_eq!(
            answer_of_records(&name("a.example.test."), &looped, pick),
            Answer::NoRecords
        );
    }

    #[test]
    fn error_classes() {
        let q = || Query::query(Name::from_ascii("x.example.test.").unwrap(), RecordType::A);
        let nx = NetError::from(DnsError::NoRecordsFound(NoRecords::new(
            q(),
            ResponseCode::NXDomain,
        )));
        assert!(
            nx.is_no_records_found(),
            "why NXDOMAIN must be tested first"
        );
        assert_eq!(answer_of_error::<Ipv4Addr>(&nx), Answer::NxDomain);
        let nodata = NetError::from(DnsError::NoRecordsFound(NoRecords::new(
            q(),
            ResponseCode::NoError,
        )));
        assert_eq!(answer_of_error::<Ipv4Addr>(&nodata), Answer::NoRecords);
        assert_eq!(answer_of_error::<Ipv4Addr>(&NetError::Timeout), timeout());
        let sf = NetError::from(DnsError::ResponseCode(ResponseCode::ServFail));
        assert_eq!(answer_of_error::<Ipv4Addr>(&sf), servfail());
        let refused = NetError::from(DnsError::ResponseCode(ResponseCode::Refused));
        assert_eq!(
            answer_of_error::<Ipv4Addr>(&refused),
            Answer::Failed(Transient::Refused)
        );
        let io = NetError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(matches!(
            answer_of_error::<Ipv4Addr>(&io),
            Answer::Failed(Transient::Other(_))
        ));
    }

    #[test]
    fn resolver_options() {
        let mut s = ResolverSettings {
            timeout_ms: 750,
            attempts: 1,
            ..ResolverSettings::default()
        };
        let o = resolver_opts(&s, 1);
        assert_eq!(
            o.attempts, 0,
            "hickory counts retries; 1 attempt = no retry"
        );
        assert_eq!(o.timeout, Duration::from_millis(750));
        assert_eq!(o.cache_size, 0);
        assert_eq!(o.ndots, 0);
        assert!(matches!(o.use_hosts_file, ResolveHosts::Never));
        s.attempts = 3;
        assert_eq!(resolver_opts(&s, 1).attempts, 2);
        s.attempts = 0;
        assert_eq!(resolver_opts(&s, 1).attempts, 0);
        assert_eq!(resolver_opts(&s, 3).num_concurrent_reqs, 3);
        assert_eq!(resolver_opts(&s, 5).num_concurrent_reqs, 3);
        let ns = nameserver("192.0.2.53:5353".parse().unwrap());
        assert_eq!(ns.ip, "192.0.2.53".parse::<IpAddr>().unwrap());
        assert!(ns.connections.iter().all(|c| c.port == 5353));
    }

    #[test]
    fn resolv_conf_reading() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.conf");
        let e = system_nameservers(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot read ") && e.contains("missing.conf"),
            "{e}"
        );
        let empty = dir.path().join("empty.conf");
        std::fs::write(&empty, "search example.test\noptions ndots:5\n").unwrap();
        let e = system_nameservers(&empty).unwrap_err().to_string();
        assert!(e.contains("empty.conf: "), "{e}");
        let good = dir.path().join("resolv.conf");
        std::fs::write(
            &good,
            "# comment\nsearch example.test\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n",
        )
        .unwrap();
        let servers = system_nameservers(&good).unwrap();
        let ips: Vec<String> = servers.iter().map(|s| s.ip.to_string()).collect();
        assert_eq!(ips, ["192.0.2.53", "2001:db8::53"]);
    }
}
