//! Listeners in the pbx namespace: TCP that accepts and writes `hello\n`, UDP echo.
//!
//! They are threads of the test process whose sockets were created inside the namespace.
//! Each socket is dual-stack (`[::]:PORT`, `IPV6_V6ONLY` off) with a short receive timeout
//! (`SO_RCVTIMEO` also bounds `accept` on Linux), so every thread notices the stop flag within
//! [`POLL`] and `Drop` joins them all.

use std::io::{self, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::netns::{Topology, spawn_in_ns};

/// How often a server thread checks its stop flag.
pub const POLL: Duration = Duration::from_millis(50);
/// A server thread ends by itself after this long even if never stopped.
pub const MAX_LIFETIME: Duration = Duration::from_secs(600);
/// What the TCP servers write to every connection.
pub const HELLO: &[u8] = b"hello\n";

/// Running listeners; stopped and joined on drop.
pub struct Servers {
    ns: String,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    hits: Arc<AtomicUsize>,
    tcp: Vec<u16>,
    udp: Vec<u16>,
}

impl Servers {
    /// Starts a TCP hello server on each of `tcp_ports` and a UDP echo server on each of
    /// `udp_ports` in the pbx namespace; returns once every socket is bound (panics if one
    /// cannot be).
    pub fn start(topo: &Topology, tcp_ports: &[u16], udp_ports: &[u16]) -> Servers {
        Servers::start_in(topo.pbx_ns(), tcp_ports, udp_ports)
    }

    /// [`Servers::start`] in any namespace.
    pub fn start_in(ns: &str, tcp_ports: &[u16], udp_ports: &[u16]) -> Servers {
        let mut servers = Servers {
            ns: ns.to_string(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            hits: Arc::new(AtomicUsize::new(0)),
            tcp: tcp_ports.to_vec(),
            udp: udp_ports.to_vec(),
        };
        let jobs = tcp_ports
            .iter()
            .map(|&p| (p, true))
            .chain(udp_ports.iter().map(|&p| (p, false)));
        for (port, is_tcp) in jobs {
            let (tx, rx) = mpsc::channel::<io::Result<()>>();
            let stop = Arc::clone(&servers.stop);
            let hits = Arc::clone(&servers.hits);
            servers.threads.push(spawn_in_ns(ns, move || {
                if is_tcp {
                    match tcp_listener(port) {
                        Ok(l) => {
                            let _ = tx.send(Ok(()));
                            tcp_loop(l, &stop, &hits);
                        }
                        Err(e) => drop(tx.send(Err(e))),
                    }
                } else {
                    match udp_socket(port) {
                        Ok(s) => {
                            let _ = tx.send(Ok(()));
                            udp_loop(s, &stop, &hits);
                        }
                        Err(e) => drop(tx.send(Err(e))),
                    }
                }
            }));
            let proto = if is_tcp { "tcp" } else { "udp" };
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(())) => {}
                // `servers` drops here: the threads already started are stopped and joined.
                Ok(Err(e)) => panic!("{proto} server on port {port} in {ns}: {e}"),
                Err(_) => panic!("{proto} server on port {port} in {ns} did not start"),
            }
        }
        servers
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }

    pub fn tcp_ports(&self) -> &[u16] {
        &self.tcp
    }

    pub fn udp_ports(&self) -> &[u16] {
        &self.udp
    }

    /// TCP connections accepted plus UDP datagrams echoed so far, over all servers.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            // A panicked server thread has nothing left to clean up; don't double-panic.
            let _ = t.join();
        }
    }
}

fn dual_stack(port: u16, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV6, ty, Some(proto))?;
    s.set_only_v6(false)?;
    s.set_reuse_address(true)?;
    s.set_read_timeout(Some(POLL))?;
    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    Ok(s)
}

fn tcp_listener(port: u16) -> io::Result<TcpListener> {
    let s = dual_stack(port, Type::STREAM, Protocol::TCP)?;
    s.listen(128)?;
    Ok(s.into())
}

fn udp_socket(port: u16) -> io::Result<UdpSocket> {
    Ok(dual_stack(port, Type::DGRAM, Protocol::UDP)?.into())
}

fn running(stop: &AtomicBool, started: Instant) -> bool {
    !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_LIFETIME
}

fn tcp_loop(listener: TcpListener, stop: &AtomicBool, hits: &AtomicUsize) {
    let started = Instant::now();
    while running(stop, started) {
        match listener.accept() {
            Ok((mut conn, _)) => {
                hits.fetch_add(1, Ordering::Relaxed);
                let _ = conn.set_write_timeout(Some(POLL));
                let _ = conn.write_all(HELLO);
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn udp_loop(sock: UdpSocket, stop: &AtomicBool, hits: &AtomicUsize) {
    let started = Instant::now();
    let mut buf = [0u8; 2048];
    while running(stop, started) {
        match sock.recv_from(&mut buf) {
            Ok((n, peer)) => {
                hits.fetch_add(1, Ordering::Relaxed);
                let _ = sock.send_to(&buf[..n], peer);
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}
