//! A plain netlink socket that sends and receives byte buffers: the socket I/O under the
//! conntrack module (`ctnetlink`, `rtnetlink` addresses, `sock_diag`), which builds and
//! parses every message itself, in safe Rust.

use std::ffi::c_int;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// The netlink protocols a [`RawSocket`] can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::nft::netlink) enum Protocol {
    /// `NETLINK_NETFILTER`: nfnetlink, here its conntrack subsystem.
    Netfilter,
    /// `NETLINK_ROUTE`: the addresses of the interfaces.
    Route,
    /// `NETLINK_SOCK_DIAG`: looking up and closing sockets.
    SockDiag,
}

impl Protocol {
    fn number(self) -> c_int {
        match self {
            Protocol::Netfilter => libc::NETLINK_NETFILTER,
            Protocol::Route => libc::NETLINK_ROUTE,
            Protocol::SockDiag => libc::NETLINK_SOCK_DIAG,
        }
    }
}

/// A netlink socket in the network namespace of the thread that opened it, with a receive
/// timeout so no answer is waited for forever.
pub(in crate::nft::netlink) struct RawSocket {
    fd: OwnedFd,
}

impl RawSocket {
    /// Opens a socket of `protocol` whose receives give up after `timeout`.
    pub(in crate::nft::netlink) fn open(protocol: Protocol, timeout: Duration) -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol.number(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let sock = RawSocket { fd };
        // Errors without the echoed request (optional: older kernels lack it).
        let one: c_int = 1;
        let _ = sock.setsockopt(libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, &one);
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        sock.setsockopt(libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
        Ok(sock)
    }

    fn setsockopt<T>(&self, level: c_int, name: c_int, value: &T) -> io::Result<()> {
        // SAFETY: valid socket; `value` points at a `T` of the size passed, read only.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (value as *const T).cast(),
                mem::size_of::<T>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Sends one datagram holding one or more complete netlink messages, to the kernel.
    pub(in crate::nft::netlink) fn send(&self, msg: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: valid socket; `msg` is readable for its length. A netlink socket
            // that was never connected sends to the kernel (port 0) by default.
            let rc = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
            if rc >= 0 {
                if rc as usize != msg.len() {
                    return Err(io::Error::other(format!(
                        "only {rc} of {} bytes were sent",
                        msg.len()
                    )));
                }
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Receives one datagram into `buf` (its whole length is offered) and returns the part
    /// received. A datagram larger than `buf` is an error, never silently cut.
    pub(in crate::nft::netlink) fn recv<'b>(&self, buf: &'b mut [u8]) -> io::Result<&'b [u8]> {
        // SAFETY: valid socket; `buf` is writable for its length.
        let n = unsafe { recv_whole(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) }?;
        Ok(&buf[..n])
    }
}

/// One `recv(2)` of a whole datagram into the `len` bytes at `buf`, retried when
/// interrupted. `MSG_TRUNC` makes the kernel return the datagram's real length, so one larger
/// than the buffer is an error, never silently cut. Returns the length received.
///
/// # Safety
/// `fd` must be an open socket and `buf` writable for `len` bytes.
pub(super) unsafe fn recv_whole(
    fd: std::os::fd::RawFd,
    buf: *mut std::ffi::c_void,
    len: usize,
    flags: std::ffi::c_int,
) -> io::Result<usize> {
    loop {
        // SAFETY: the caller guarantees `fd` and `len` writable bytes at `buf`.
        let rc = unsafe { libc::recv(fd, buf, len, flags | libc::MSG_TRUNC) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        let n = rc as usize;
        if n > len {
            return Err(io::Error::other(format!(
                "netlink message of {n} bytes does not fit the {len}-byte buffer"
            )));
        }
        return Ok(n);
    }
}
