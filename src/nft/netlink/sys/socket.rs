//! The `NETLINK_NETFILTER` socket: requests with their answers, and a batch in one
//! `sendmsg`.

use std::ffi::{c_int, c_void};
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nftnl::nftnl_sys as ffi;

use super::super::{ApplyStats, NetlinkError, Result};
use super::batch::{Batch, Obj, max_msg_size, write_msg};

/// Receive buffer: room for many error reports; dumps are paced by our reads anyway.
const RCVBUF_BYTES: usize = 4 << 20;
/// Receive buffer for one `recv` (dump messages are at most 32 KiB, errors are capped).
const RECV_CHUNK: usize = 128 << 10;
/// How long a request waits for its answer.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// An 8-aligned byte buffer (netlink headers need 4-byte alignment).
struct AlignedBuf(Vec<u64>);

impl AlignedBuf {
    fn new(bytes: usize) -> AlignedBuf {
        AlignedBuf(vec![0u64; bytes.div_ceil(8)])
    }

    fn len(&self) -> usize {
        self.0.len() * 8
    }

    fn as_mut_ptr(&mut self) -> *mut c_void {
        self.0.as_mut_ptr().cast()
    }

    fn bytes(&self, n: usize) -> &[u8] {
        let n = n.min(self.len());
        // SAFETY: the Vec<u64> owns `len()` initialised bytes; `n` is within them.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), n) }
    }
}

/// One netlink message inside a received buffer (length-checked, 4-aligned).
pub(in crate::nft::netlink) struct Reply<'a> {
    bytes: &'a [u8],
}

impl Reply<'_> {
    fn u16_at(&self, at: usize) -> u16 {
        u16::from_ne_bytes([self.bytes[at], self.bytes[at + 1]])
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_ne_bytes(self.bytes[at..at + 4].try_into().unwrap_or_default())
    }

    fn msg_type(&self) -> u16 {
        self.u16_at(4)
    }

    fn flags(&self) -> u16 {
        self.u16_at(6)
    }

    fn seq(&self) -> u32 {
        self.u32_at(8)
    }

    /// The nf_tables message type, for messages of the nf_tables subsystem.
    pub(in crate::nft::netlink) fn nft_type(&self) -> Option<c_int> {
        let t = self.msg_type();
        ((t >> 8) as c_int == libc::NFNL_SUBSYS_NFTABLES).then_some((t & 0xff) as c_int)
    }

    pub(super) fn header(&self) -> *const libc::nlmsghdr {
        self.bytes.as_ptr().cast()
    }

    /// errno (positive, 0 for an ACK) and the extended-ack message of an NLMSG_ERROR.
    fn error(&self) -> (i32, Option<String>) {
        let p = &self.bytes[16..];
        if p.len() < 4 {
            return (libc::EPROTO, None);
        }
        let errno = -i32::from_ne_bytes(p[0..4].try_into().unwrap_or_default());
        let mut msg = None;
        if self.flags() & libc::NLM_F_ACK_TLVS as u16 != 0 && p.len() >= 20 {
            let orig_len = u32::from_ne_bytes(p[4..8].try_into().unwrap_or_default()) as usize;
            let mut off = if self.flags() & libc::NLM_F_CAPPED as u16 != 0 {
                4 + 16
            } else {
                4 + align4(orig_len)
            };
            while off + 4 <= p.len() {
                let len = u16::from_ne_bytes([p[off], p[off + 1]]) as usize;
                let ty = u16::from_ne_bytes([p[off + 2], p[off + 3]]);
                if len < 4 || off + len > p.len() {
                    break;
                }
                if ty == NLMSGERR_ATTR_MSG {
                    let s = &p[off + 4..off + len];
                    let s = s.split(|&b| b == 0).next().unwrap_or_default();
                    msg = Some(String::from_utf8_lossy(s).into_owned());
                }
                off += align4(len);
            }
        }
        (errno, msg)
    }
}

/// `NLMSGERR_ATTR_MSG`.
const NLMSGERR_ATTR_MSG: u16 = 1;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Splits a received buffer into messages.
fn messages(buf: &[u8]) -> Result<Vec<Reply<'_>>, String> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or_default()) as usize;
        if len < 16 || off + len > buf.len() {
            return Err(format!(
                "truncated netlink message ({len} bytes at offset {off})"
            ));
        }
        out.push(Reply {
            bytes: &buf[off..off + len],
        });
        off += align4(len);
    }
    Ok(out)
}

/// Why [`Socket::request`] failed.
pub(in crate::nft::netlink) enum RequestError {
    /// The kernel answered with an error.
    Kernel(io::Error),
    /// A dump was interrupted by a concurrent change (`NLM_F_DUMP_INTR`).
    Interrupted,
    /// Sending, receiving or parsing failed.
    Other(NetlinkError),
}

impl From<NetlinkError> for RequestError {
    fn from(e: NetlinkError) -> Self {
        RequestError::Other(e)
    }
}

/// Why [`Socket::commit`] failed.
pub(in crate::nft::netlink) enum CommitError {
    /// `ERESTART` on the batch begin: the generation changed since it was read.
    GenerationChanged,
    /// The kernel rejected the batch, or sending or receiving failed.
    Failed(NetlinkError),
}

impl CommitError {
    /// The error of a batch sent without a generation check, or sent once.
    pub(in crate::nft::netlink) fn into_error(self) -> NetlinkError {
        match self {
            CommitError::GenerationChanged => NetlinkError::Busy { attempts: 1 },
            CommitError::Failed(e) => e,
        }
    }
}

impl From<NetlinkError> for CommitError {
    fn from(e: NetlinkError) -> Self {
        CommitError::Failed(e)
    }
}

/// A `NETLINK_NETFILTER` socket in the network namespace of the thread that opened it.
pub(in crate::nft::netlink) struct Socket {
    fd: OwnedFd,
    seq: u32,
    rbuf: AlignedBuf,
}

impl Socket {
    /// Opens the socket (kernel error strings on, receive buffer raised, receive timeout).
    pub(in crate::nft::netlink) fn open() -> Result<Socket> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(NetlinkError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let sock = Socket {
            fd,
            seq: 1,
            rbuf: AlignedBuf::new(RECV_CHUNK),
        };
        // Optional: kernel error strings, and errors without the echoed request.
        let _ = sock.setsockopt(libc::SOL_NETLINK, libc::NETLINK_EXT_ACK, 1);
        let _ = sock.setsockopt(libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1);
        sock.grow_buffer(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, RCVBUF_BYTES);
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: valid socket; `tv` is a timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                sock.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(NetlinkError::Socket(io::Error::last_os_error()));
        }
        Ok(sock)
    }

    fn setsockopt(&self, level: c_int, name: c_int, value: c_int) -> io::Result<()> {
        // SAFETY: valid socket; `value` is a c_int of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&raw const value).cast(),
                mem::size_of::<c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Sets a buffer size with the `*FORCE` option (root: above the sysctl maximum),
    /// falling back to the plain option.
    fn grow_buffer(&self, force: c_int, plain: c_int, bytes: usize) {
        let bytes = bytes.min(c_int::MAX as usize) as c_int;
        if self.setsockopt(libc::SOL_SOCKET, force, bytes).is_err() {
            let _ = self.setsockopt(libc::SOL_SOCKET, plain, bytes);
        }
    }

    /// Reserves a block of sequence numbers for a batch.
    pub(in crate::nft::netlink) fn take_seqs(&mut self) -> u32 {
        let first = self.seq;
        self.seq = self.seq.wrapping_add(1 << 24);
        first
    }

    fn next_seq(&mut self) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        s
    }

    /// The current nf_tables generation id.
    pub(in crate::nft::netlink) fn generation(&mut self) -> Result<u32> {
        let what = "the nf_tables generation";
        let mut genid = None;
        self.request(
            what,
            libc::NFT_MSG_GETGEN,
            libc::NLM_F_ACK,
            Obj::Nothing,
            |msg| {
                if msg.nft_type() != Some(libc::NFT_MSG_NEWGEN) {
                    return Ok(());
                }
                // SAFETY: allocation without arguments; checked; freed below.
                let g = unsafe { ffi::nftnl_gen_alloc() };
                assert!(!g.is_null(), "libnftnl: out of memory");
                // SAFETY: `msg` is a complete message in a 4-aligned buffer; `g` is valid and
                // freed exactly once.
                unsafe {
                    if ffi::nftnl_gen_nlmsg_parse(msg.header(), g) >= 0
                        && ffi::nftnl_gen_is_set(g, ffi::NFTNL_GEN_ID as u16)
                    {
                        genid = Some(ffi::nftnl_gen_get_u32(g, ffi::NFTNL_GEN_ID as u16));
                    }
                    ffi::nftnl_gen_free(g);
                }
                Ok(())
            },
        )
        .map_err(|e| match e {
            RequestError::Kernel(source) => NetlinkError::Dump {
                what: what.into(),
                source,
            },
            RequestError::Interrupted => NetlinkError::Protocol {
                what: what.into(),
                reason: "interrupted".into(),
            },
            RequestError::Other(e) => e,
        })?;
        genid.ok_or_else(|| NetlinkError::Protocol {
            what: what.into(),
            reason: "no generation id in the answer".into(),
        })
    }

    /// Sends one request and hands every answer message to `each`, until the ACK (for
    /// `NLM_F_ACK`), `NLMSG_DONE` (for dumps) or an error.
    pub(in crate::nft::netlink) fn request(
        &mut self,
        what: &str,
        ty: c_int,
        flags: c_int,
        obj: Obj<'_>,
        mut each: impl FnMut(&Reply<'_>) -> Result<()>,
    ) -> Result<(), RequestError> {
        let seq = self.next_seq();
        let mut buf = AlignedBuf::new(max_msg_size());
        // SAFETY: `buf` has room for the largest message and is 8-aligned.
        unsafe { write_msg(buf.as_mut_ptr(), ty, flags, seq, &obj) };
        let len = u32::from_ne_bytes(buf.bytes(4).try_into().unwrap_or_default()) as usize;
        loop {
            // SAFETY: valid socket; `buf` holds `len` initialised bytes.
            let rc = unsafe { libc::send(self.fd.as_raw_fd(), buf.as_mut_ptr(), len, 0) };
            if rc >= 0 {
                break;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(NetlinkError::Send {
                    what: format!("the request for {what}"),
                    source: err,
                }
                .into());
            }
        }

        let mut interrupted = false;
        loop {
            let n = self.recv(0).map_err(|source| NetlinkError::Receive {
                what: what.to_owned(),
                source,
            })?;
            let rbuf = mem::replace(&mut self.rbuf, AlignedBuf(Vec::new()));
            let outcome = Self::handle(&rbuf, n, seq, what, &mut interrupted, &mut each);
            self.rbuf = rbuf;
            if let Some(done) = outcome? {
                return match done {
                    Ok(()) if interrupted => Err(RequestError::Interrupted),
                    other => other,
                };
            }
        }
    }

    /// Handles one received chunk; `Some(result)` when the request is finished.
    fn handle(
        rbuf: &AlignedBuf,
        n: usize,
        seq: u32,
        what: &str,
        interrupted: &mut bool,
        each: &mut impl FnMut(&Reply<'_>) -> Result<()>,
    ) -> Result<Option<Result<(), RequestError>>, RequestError> {
        let msgs = messages(rbuf.bytes(n)).map_err(|reason| NetlinkError::Protocol {
            what: what.to_owned(),
            reason,
        })?;
        for msg in msgs {
            if msg.seq() != seq {
                continue;
            }
            if msg.flags() & libc::NLM_F_DUMP_INTR as u16 != 0 {
                *interrupted = true;
            }
            match msg.msg_type() as c_int {
                libc::NLMSG_ERROR => {
                    let (errno, _) = msg.error();
                    return Ok(Some(if errno == 0 {
                        Ok(())
                    } else {
                        Err(RequestError::Kernel(io::Error::from_raw_os_error(errno)))
                    }));
                }
                libc::NLMSG_DONE => {
                    let status = if msg.bytes.len() >= 20 {
                        msg.u32_at(16) as i32
                    } else {
                        0
                    };
                    return Ok(Some(if status < 0 {
                        Err(RequestError::Kernel(io::Error::from_raw_os_error(-status)))
                    } else {
                        Ok(())
                    }));
                }
                libc::NLMSG_NOOP => {}
                _ => each(&msg)?,
            }
        }
        Ok(None)
    }

    /// One `recv` into the receive buffer; returns the number of bytes.
    fn recv(&mut self, flags: c_int) -> io::Result<usize> {
        let cap = self.rbuf.len();
        // SAFETY: valid socket; the buffer is writable for `cap` bytes.
        unsafe { super::raw::recv_whole(self.fd.as_raw_fd(), self.rbuf.as_mut_ptr(), cap, flags) }
    }

    /// Sends the batch with one `sendmsg` and reads back what the kernel queued.
    pub(in crate::nft::netlink) fn commit(
        &mut self,
        batch: &Batch,
    ) -> Result<ApplyStats, CommitError> {
        let iov = batch.iovecs();
        let bytes: usize = iov.iter().map(|v| v.iov_len).sum();
        // The kernel refuses a datagram larger than the send buffer (EMSGSIZE).
        self.grow_buffer(libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, bytes + 4096);
        // SAFETY: sockaddr_nl and msghdr are plain C structs; all-zero is valid for both.
        let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = (&raw mut addr).cast();
        msg.msg_namelen = mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        msg.msg_iov = iov.as_ptr().cast_mut();
        msg.msg_iovlen = iov.len() as _;
        let what = || format!("the batch ({} messages, {bytes} bytes)", batch.messages());
        loop {
            // SAFETY: valid socket; `msg` points at `addr` and at `iov`, whose entries
            // point into the batch pages; all outlive the call.
            let rc = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, 0) };
            if rc >= 0 {
                if rc as usize != bytes {
                    return Err(NetlinkError::Send {
                        what: what(),
                        source: io::Error::other(format!("only {rc} bytes were sent")),
                    }
                    .into());
                }
                break;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(NetlinkError::Send {
                    what: what(),
                    source: err,
                }
                .into());
            }
        }

        // The kernel processed the whole batch inside sendmsg(): whatever it has to say is
        // queued already. No message asked for an ACK, so anything but an ACK is an error.
        let mut first: Option<(u32, i32, Option<String>)> = None;
        let mut overflow = false;
        loop {
            let n = match self.recv(libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    overflow = true;
                    continue;
                }
                Err(source) => {
                    return Err(NetlinkError::Receive {
                        what: what(),
                        source,
                    }
                    .into());
                }
            };
            let msgs = messages(self.rbuf.bytes(n)).map_err(|reason| NetlinkError::Protocol {
                what: what(),
                reason,
            })?;
            for m in msgs {
                if m.msg_type() as c_int != libc::NLMSG_ERROR {
                    continue;
                }
                let (errno, detail) = m.error();
                if errno != 0
                    && batch.sent(m.seq())
                    && first.as_ref().is_none_or(|(s, _, _)| m.seq() < *s)
                {
                    first = Some((m.seq(), errno, detail));
                }
            }
        }
        if let Some((seq, errno, detail)) = first {
            if batch.is_begin(seq) && errno == libc::ERESTART {
                return Err(CommitError::GenerationChanged);
            }
            return Err(NetlinkError::Rejected {
                what: batch.describe(seq),
                source: io::Error::from_raw_os_error(errno),
                detail,
            }
            .into());
        }
        if overflow {
            return Err(NetlinkError::Rejected {
                what: what(),
                source: io::Error::from_raw_os_error(libc::ENOBUFS),
                detail: Some("the kernel's error reports overflowed the receive buffer".into()),
            }
            .into());
        }
        Ok(ApplyStats {
            messages: batch.messages(),
            bytes,
        })
    }
}
