//! A bounded UDP flood and a sink: `sendmmsg`/`recvmmsg` in batches of [`BATCH`], 18-byte
//! payloads, the sender pinned to one CPU and the sink to the other, so the two never
//! compete for a core.
//!
//! Over a veth pair the receive path (netfilter included) runs in the sender's context
//! (`veth_xmit` → backlog → softirq on `local_bh_enable`), so the sender's rate *is* the
//! per-packet cost of the whole path; the bench checks that by comparing what was sent with
//! what the firewall counted or the sink received.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// Messages per `sendmmsg`/`recvmmsg` call.
pub const BATCH: usize = 64;
/// Payload size: the smallest UDP datagram that still looks like a packet (a minimal
/// Ethernet frame), so the cost measured is the per-packet path, not copying.
pub const PAYLOAD: usize = 18;

/// Pins the calling thread to `cpu` if the machine has it; returns whether it did.
pub fn pin_to_cpu(cpu: usize) -> bool {
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if cpus < 2 || cpu as libc::c_long >= cpus {
        return false;
    }
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it; pid 0 is this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// What one flood did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flood {
    /// Datagrams the kernel accepted from `sendmmsg`.
    pub sent: u64,
    /// `sendmmsg` calls that failed (ENOBUFS, EAGAIN...).
    pub errors: u64,
    /// How long it ran.
    pub secs: f64,
    /// CPU time of the sending thread (`CLOCK_THREAD_CPUTIME_ID`): with
    /// `CONFIG_IRQ_TIME_ACCOUNTING` off (as here) it includes the softirq work done on its
    /// stack, i.e. the whole receive path of its packets, firewall included.
    pub cpu_secs: f64,
}

impl Flood {
    pub fn pps(&self) -> f64 {
        self.sent as f64 / self.secs
    }
}

/// Sends 18-byte datagrams from `src` to `dst` for `dur` or until `max_packets`, whichever
/// comes first, from the calling thread (pinned to CPU 0). Creates its socket in the
/// calling thread's namespace.
pub fn flood(
    src: SocketAddr,
    dst: SocketAddr,
    dur: Duration,
    max_packets: u64,
) -> io::Result<Flood> {
    pin_to_cpu(0);
    let sock = Socket::new(Domain::for_address(dst), Type::DGRAM, Some(Protocol::UDP))?;
    sock.bind(&src.into())?;
    sock.connect(&dst.into())?;
    sock.set_write_timeout(Some(Duration::from_millis(100)))?;
    let mut payload = [0x5au8; PAYLOAD];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: PAYLOAD,
    };
    // SAFETY: mmsghdr is plain data; all-zero is valid (no name, no control).
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for m in msgs.iter_mut() {
        m.msg_hdr.msg_iov = &mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let fd = sock.as_raw_fd();
    let mut out = Flood::default();
    let cpu0 = thread_cpu_secs();
    let start = Instant::now();
    while out.sent < max_packets {
        if start.elapsed() >= dur {
            break;
        }
        // SAFETY: msgs holds BATCH valid headers pointing at `iov`/`payload`, alive here.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as libc::c_uint, 0) };
        if n < 0 {
            out.errors += 1;
        } else {
            out.sent += n as u64;
        }
    }
    out.secs = start.elapsed().as_secs_f64();
    out.cpu_secs = thread_cpu_secs() - cpu0;
    Ok(out)
}

/// CPU time of the calling thread, seconds.
pub fn thread_cpu_secs() -> f64 {
    // SAFETY: timespec is plain data; clock_gettime writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// CPU seconds used so far by `ksoftirqd/<cpu>` (softirq work the kernel deferred from the
/// sender's stack to that thread), from /proc (tick resolution); None if not found.
pub fn ksoftirqd_secs(cpu: usize) -> Option<f64> {
    let want = format!("ksoftirqd/{cpu}");
    let dir = std::fs::read_dir("/proc").ok()?;
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != want {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the ")" of comm: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        return Some(ticks as f64 / hz);
    }
    None
}

/// A counting UDP sink on `[::]:port` (dual-stack) in the namespace of the thread that
/// starts it, pinned to CPU 1; stopped and joined by [`Sink::stop`] or on drop.
pub struct Sink {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<u64>>,
}

impl Sink {
    /// Starts the sink on a new thread that first enters namespace `ns`.
    pub fn start(ns: &str, port: u16) -> Sink {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let stop2 = Arc::clone(&stop);
        let ns = ns.to_string();
        let thread = thread::spawn(move || {
            if let Err(e) = crate::common::enter_ns(&ns) {
                let _ = tx.send(Err(e));
                return 0;
            }
            pin_to_cpu(1);
            let sock = match sink_socket(port) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return 0;
                }
            };
            let _ = tx.send(Ok(()));
            sink_loop(&sock, &stop2)
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("sink on port {port}: {e}"),
            Err(_) => panic!("sink on port {port} did not start"),
        }
        Sink {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the sink and returns how many datagrams it received.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sink_socket(port: u16) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(false)?;
    s.set_reuse_address(true)?;
    s.set_recv_buffer_size(8 << 20)?;
    s.set_read_timeout(Some(Duration::from_millis(20)))?;
    s.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)).into())?;
    Ok(s)
}

/// Upper bound of a sink's life, whatever happens.
const SINK_MAX: Duration = Duration::from_secs(120);

fn sink_loop(sock: &Socket, stop: &AtomicBool) -> u64 {
    let mut bufs = [[0u8; 64]; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all-zero is valid.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let fd = sock.as_raw_fd();
    let started = Instant::now();
    let mut got = 0u64;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < SINK_MAX {
        // SAFETY: msgs holds BATCH headers pointing at live buffers; SO_RCVTIMEO bounds it.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                0,
                std::ptr::null_mut(),
            )
        };
        if n > 0 {
            got += n as u64;
        }
    }
    got
}
