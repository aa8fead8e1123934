//! Writing nf_tables messages: one request, or a whole batch in libnftnl's pages.

use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::ptr::{self, NonNull};

use nftnl::nftnl_sys as ffi;

use super::super::NFPROTO_INET;
use super::{NfChain, NfRule, NfSet, NfTable};

/// The payload of one nf_tables message.
pub(in crate::nft::netlink) enum Obj<'a> {
    /// A table.
    Table(&'a NfTable),
    /// A chain.
    Chain(&'a NfChain),
    /// A rule (or, with only family and table, every rule of the table).
    Rule(&'a NfRule),
    /// A set.
    Set(&'a NfSet),
    /// Table and set name of a set, for a GETSETELEM dump or a whole-set flush.
    SetElemsOf(&'a NfSet),
    /// No payload (GETGEN).
    Nothing,
}

/// The largest message libnftnl writes (the room kept free at the end of a buffer).
pub(super) fn max_msg_size() -> usize {
    nftnl::nft_nlmsg_maxsize() as usize
}

/// Writes one nf_tables message (header with `NLM_F_REQUEST | flags`, family inet).
///
/// # Safety
/// `buf` must point to at least [`max_msg_size`] writable bytes, aligned to 4.
pub(super) unsafe fn write_msg(buf: *mut c_void, ty: c_int, flags: c_int, seq: u32, obj: &Obj<'_>) {
    // SAFETY: the caller guarantees room for the largest message; the objects are valid.
    unsafe {
        let nlh =
            ffi::nftnl_nlmsg_build_hdr(buf.cast(), ty as u16, NFPROTO_INET, flags as u16, seq);
        match obj {
            Obj::Table(t) => ffi::nftnl_table_nlmsg_build_payload(nlh, t.ptr()),
            Obj::Chain(c) => ffi::nftnl_chain_nlmsg_build_payload(nlh, c.ptr()),
            Obj::Rule(r) => ffi::nftnl_rule_nlmsg_build_payload(nlh, r.ptr()),
            Obj::Set(s) => ffi::nftnl_set_nlmsg_build_payload(nlh, s.ptr()),
            Obj::SetElemsOf(s) => ffi::nftnl_set_elems_nlmsg_build_payload(nlh, s.ptr()),
            Obj::Nothing => {}
        }
    }
}

/// A batch under construction: libnftnl pages plus a description of every message, by
/// sequence number, so an error can name its object.
/// Smallest batch page: see [`Batch::new`].
const BATCH_PAGE: u32 = 1 << 20;

pub(in crate::nft::netlink) struct Batch {
    raw: NonNull<ffi::nftnl_batch>,
    next_seq: u32,
    begin_seq: u32,
    what: HashMap<u32, String>,
    messages: usize,
}

impl Batch {
    /// Starts a batch whose messages are numbered from `first_seq` (a block reserved with
    /// [`super::Socket::take_seqs`]); with `genid`, the kernel refuses it (`ERESTART`) if
    /// nf_tables changed since that generation.
    pub(in crate::nft::netlink) fn new(first_seq: u32, genid: Option<u32>) -> Batch {
        // libnftnl starts a new page once less than one largest message fits in the current
        // one, and allocates every page as page size + largest message (64 KiB): with its
        // default 128 KiB pages, two thirds of a large batch's memory were that slack (58 MiB
        // for 600,000 interval elements, 22 MiB of messages). 1 MiB pages waste 6 %.
        let page = nftnl::default_batch_page_size().max(BATCH_PAGE);
        // SAFETY: plain allocation; the overrun size is the largest message, as nft uses.
        let raw = unsafe { ffi::nftnl_batch_alloc(page, max_msg_size() as u32) };
        let mut b = Batch {
            raw: NonNull::new(raw).expect("libnftnl: out of memory"),
            next_seq: first_seq,
            begin_seq: first_seq,
            what: HashMap::new(),
            messages: 0,
        };
        let seq = b.next_seq;
        // SAFETY: the current batch buffer has room for the largest message; the begin
        // message (20 bytes) plus one 8-byte attribute fits easily.
        unsafe {
            let nlh = ffi::nftnl_batch_begin(b.current().cast(), seq);
            if let Some(genid) = genid {
                // NFNL_BATCH_GENID, a big-endian u32 attribute after the nfgenmsg header.
                let mut attr = [0u8; 8];
                attr[0..2].copy_from_slice(&8u16.to_ne_bytes());
                attr[2..4].copy_from_slice(&(libc::NFNL_BATCH_GENID as u16).to_ne_bytes());
                attr[4..8].copy_from_slice(&genid.to_be_bytes());
                let len = (*nlh).nlmsg_len as usize;
                ptr::copy_nonoverlapping(attr.as_ptr(), nlh.cast::<u8>().add(len), attr.len());
                (*nlh).nlmsg_len += attr.len() as u32;
            }
        }
        b.advance("the batch (begin / generation check / commit)".into());
        b
    }

    fn current(&self) -> *mut c_void {
        // SAFETY: valid batch.
        unsafe { ffi::nftnl_batch_buffer(self.raw.as_ptr()) }
    }

    /// Moves past the message just written into the current buffer.
    fn advance(&mut self, what: String) {
        // SAFETY: valid batch; a complete message was written at the current position.
        if unsafe { ffi::nftnl_batch_update(self.raw.as_ptr()) } < 0 {
            panic!("libnftnl: out of memory growing the batch");
        }
        self.what.insert(self.next_seq, what);
        self.next_seq = self.next_seq.wrapping_add(1);
        self.messages += 1;
    }

    /// Adds one message; `what` names its object in error messages.
    pub(in crate::nft::netlink) fn add(
        &mut self,
        ty: c_int,
        flags: c_int,
        obj: Obj<'_>,
        what: impl FnOnce() -> String,
    ) {
        // SAFETY: libnftnl keeps room for a largest message at the current buffer, which
        // lies in a malloc'd page (aligned).
        unsafe { write_msg(self.current(), ty, flags, self.next_seq, &obj) };
        self.advance(what());
    }

    /// The sequence number the next message gets.
    pub(in crate::nft::netlink) fn next_seq(&self) -> u32 {
        self.next_seq
    }

    /// Adds one complete message written as bytes (with [`Batch::next_seq`] as its
    /// sequence number); `what` names its object in error messages.
    pub(in crate::nft::netlink) fn add_message(&mut self, msg: &[u8], what: String) {
        assert!(
            msg.len() <= max_msg_size() && msg.len().is_multiple_of(4) && msg.len() >= 16,
            "a batch message of {} bytes",
            msg.len()
        );
        // SAFETY: libnftnl keeps room for a largest message at the current buffer, and `msg`
        // is no larger (checked above); `advance` reads the length from its header.
        unsafe {
            ptr::copy_nonoverlapping(msg.as_ptr(), self.current().cast::<u8>(), msg.len());
        }
        self.advance(what);
    }

    /// Adds the set's element list as as many element messages as it takes (each is
    /// filled up to the 64 KiB attribute limit).
    pub(in crate::nft::netlink) fn add_elems(
        &mut self,
        ty: c_int,
        flags: c_int,
        set: &NfSet,
        what: &str,
    ) {
        // SAFETY: valid set; the iterator is destroyed below, before the set can change.
        let iter = unsafe { ffi::nftnl_set_elems_iter_create(set.ptr()) };
        assert!(!iter.is_null(), "libnftnl: out of memory");
        let mut part = 1;
        loop {
            let seq = self.next_seq;
            // SAFETY: room for a largest message at the current buffer (see `add`); the
            // iterator belongs to `set`, which outlives this loop.
            let more = unsafe {
                let nlh = ffi::nftnl_nlmsg_build_hdr(
                    self.current().cast(),
                    ty as u16,
                    NFPROTO_INET,
                    flags as u16,
                    seq,
                );
                ffi::nftnl_set_elems_nlmsg_build_payload_iter(nlh, iter)
            };
            self.advance(if part == 1 && more <= 0 {
                what.to_owned()
            } else {
                format!("{what} (message {part})")
            });
            part += 1;
            if more <= 0 {
                break;
            }
        }
        // SAFETY: created above, destroyed once.
        unsafe { ffi::nftnl_set_elems_iter_destroy(iter) };
    }

    /// Adds the batch end.
    pub(in crate::nft::netlink) fn finish(mut self) -> Batch {
        // SAFETY: room for a largest message at the current buffer.
        unsafe { ffi::nftnl_batch_end(self.current().cast(), self.next_seq) };
        self.advance("the batch end".into());
        self
    }

    /// Number of messages, batch begin and end included.
    pub(super) fn messages(&self) -> usize {
        self.messages
    }

    /// Whether `seq` is the sequence number of the batch begin.
    pub(super) fn is_begin(&self, seq: u32) -> bool {
        seq == self.begin_seq
    }

    /// Whether `seq` is the sequence number of one of this batch's messages.
    pub(super) fn sent(&self, seq: u32) -> bool {
        self.what.contains_key(&seq)
    }

    /// What the message with sequence number `seq` was about.
    pub(in crate::nft::netlink) fn describe(&self, seq: u32) -> String {
        self.what
            .get(&seq)
            .cloned()
            .unwrap_or_else(|| format!("an unknown message (sequence number {seq})"))
    }

    /// The pages to send, as one iovec.
    pub(super) fn iovecs(&self) -> Vec<libc::iovec> {
        // SAFETY: valid batch; the iovec array has exactly the length libnftnl reports.
        unsafe {
            let n = ffi::nftnl_batch_iovec_len(self.raw.as_ptr()).max(0) as usize;
            let mut iov = vec![
                libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0,
                };
                n
            ];
            ffi::nftnl_batch_iovec(self.raw.as_ptr(), iov.as_mut_ptr(), n as u32);
            iov
        }
    }

    /// The whole batch as bytes, and the largest message it may hold.
    #[cfg(test)]
    pub(in crate::nft::netlink) fn bytes(&self) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        for v in self.iovecs() {
            // SAFETY: each iovec points into one of the batch's pages, alive while `self` is.
            out.extend_from_slice(unsafe {
                std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len)
            });
        }
        (out, max_msg_size())
    }

    /// What each message is about, in batch order.
    #[cfg(test)]
    pub(in crate::nft::netlink) fn descriptions(&self) -> Vec<String> {
        (0..self.messages as u32)
            .map(|i| self.describe(self.begin_seq.wrapping_add(i)))
            .collect()
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: we own the batch; freed once.
        unsafe { ffi::nftnl_batch_free(self.raw.as_ptr()) };
    }
}
