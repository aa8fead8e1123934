//! dnsmasq for the host-name scenarios: serves `example.test` from an addn-hosts file and
//! forwards `slow.example` to a server that never answers (`--server=/slow.example/IP`).
//! Killed by PID and reaped on drop (it also dies with the bench: PR_SET_PDEATHSIG).

use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{self, QType};

pub struct Dnsmasq {
    child: Child,
    ns: String,
    listen: SocketAddr,
    dir: tempfile::TempDir,
    hosts: PathBuf,
}

const WAIT: Duration = Duration::from_secs(10);

impl Dnsmasq {
    /// Starts dnsmasq in `ns` on `listen` (the address must exist there) serving `records`
    /// (`(name, address)`, a name may appear several times) and forwarding `slow_zone` to
    /// `slow_server` if given; waits (bounded) until it answers.
    pub fn start(
        ns: &str,
        listen: SocketAddr,
        records: &[(String, IpAddr)],
        slow: Option<(&str, SocketAddr)>,
    ) -> Dnsmasq {
        let exe = common::tool_path("dnsmasq");
        let dir = tempfile::Builder::new()
            .prefix("pbxw-bench-dnsmasq-")
            .tempdir()
            .expect("temp dir");
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, hosts_text(records)).expect("write hosts");
        let mut cmd = Command::new(common::tool_path("ip"));
        cmd.args(["netns", "exec", ns])
            .arg(exe)
            .arg("-k")
            .arg("--conf-file=/dev/null")
            .arg("--user=root")
            .arg("--group=root")
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!("--listen-address={}", listen.ip()))
            .arg(format!("--port={}", listen.port()))
            .arg("--bind-interfaces")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg("--no-negcache")
            // The default (150) would refuse part of a burst of forwarded queries.
            .arg("--dns-forward-max=4096")
            .arg(format!("--addn-hosts={}", hosts.display()))
            .arg(format!("--local=/{}/", common::ZONE))
            .arg("--local-ttl=1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((zone, server)) = slow {
            cmd.arg(format!(
                "--server=/{zone}/{}#{}",
                server.ip(),
                server.port()
            ));
        }
        // SAFETY: prctl only changes the child's own attributes.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start dnsmasq");
        let mut d = Dnsmasq {
            child,
            ns: ns.to_string(),
            listen,
            dir,
            hosts,
        };
        let probe = records
            .first()
            .map(|r| r.0.clone())
            .unwrap_or_else(|| format!("ready.{}", common::ZONE));
        d.wait_until(&probe, |_| true);
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) until `name`'s answer satisfies `ok`; panics otherwise.
    fn wait_until(&mut self, name: &str, ok: impl Fn(&common::DnsReply) -> bool) {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("dnsmasq in {} exited: {st}", self.ns);
            }
            for qtype in [QType::Aaaa, QType::A] {
                match common::dns_query(
                    &self.ns,
                    self.listen,
                    name,
                    qtype,
                    Duration::from_millis(300),
                ) {
                    Ok(r) if ok(&r) => return,
                    Ok(r) => last = format!("{r:?}"),
                    Err(e) => last = e.to_string(),
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("dnsmasq: {name} not as expected after {WAIT:?}: {last}");
    }

    /// Replaces the records, reloads (SIGHUP) and waits until `name` answers `addr`.
    pub fn set_records(&mut self, records: &[(String, IpAddr)], name: &str, addr: IpAddr) {
        let tmp = self.dir.path().join("hosts.new");
        std::fs::write(&tmp, hosts_text(records)).expect("write hosts");
        std::fs::rename(&tmp, &self.hosts).expect("replace hosts");
        let pid = libc::pid_t::try_from(self.pid()).expect("pid");
        // SAFETY: kill(2) on our own child, not yet reaped.
        assert_eq!(
            unsafe { libc::kill(pid, libc::SIGHUP) },
            0,
            "SIGHUP dnsmasq"
        );
        self.wait_until(name, |r| r.addrs.contains(&addr));
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        common::stop_child(&mut self.child, Duration::from_secs(2));
    }
}

fn hosts_text(records: &[(String, IpAddr)]) -> String {
    records
        .iter()
        .map(|(n, ip)| format!("{ip} {n}\n"))
        .collect()
}
