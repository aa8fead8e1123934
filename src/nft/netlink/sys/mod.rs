//! The FFI under the netlink backend: owned libnftnl objects, the expression builder, the
//! batch and the socket. The only part of pbxwall allowed `unsafe`.
//!
//! Everything here is mechanism: it builds, parses, sends and receives what it is told to,
//! and decides nothing about the ruleset. What it offers the rest of `netlink` is safe:
//! owned objects that free themselves, attribute setters and getters that copy, visitors
//! that hand out borrowed views of a rule's expressions or a set's elements only for the
//! length of one callback, a [`Batch`] that writes every message itself and a [`Socket`]
//! that sends requests and batches and checks every answer's length before parsing it.
//! A [`RawSocket`] sends and receives plain byte buffers for the conntrack module, which
//! writes and reads those messages itself.
//!
//! Attribute ids (`NFTNL_TABLE_NAME`, `NFTNL_EXPR_META_KEY`, ...) are the plain constants
//! of `nftnl::nftnl_sys`; using them needs no `unsafe`.

#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::marker::PhantomData;
use std::mem;
use std::ptr::NonNull;

use nftnl::nftnl_sys as ffi;

use super::{NetlinkError, Result};

mod batch;
mod raw;
mod socket;

pub(super) use batch::{Batch, Obj};
pub(super) use raw::{Protocol, RawSocket};
pub(super) use socket::{CommitError, Reply, RequestError, Socket};

/// The libnftnl functions of one object type (table, chain, rule, set); they all share
/// the same shapes. Its fields are private: only this module can make one.
pub(super) struct Api<R> {
    alloc: unsafe extern "C" fn() -> *mut R,
    free: unsafe extern "C" fn(*const R),
    set_str: unsafe extern "C" fn(*mut R, u16, *const c_char) -> c_int,
    set_u32: unsafe extern "C" fn(*mut R, u16, u32),
    set_data: unsafe extern "C" fn(*mut R, u16, *const c_void, u32) -> c_int,
    is_set: unsafe extern "C" fn(*const R, u16) -> bool,
    get_str: unsafe extern "C" fn(*const R, u16) -> *const c_char,
    get_u32: unsafe extern "C" fn(*const R, u16) -> u32,
    get_u64: unsafe extern "C" fn(*const R, u16) -> u64,
    parse: unsafe extern "C" fn(*const libc::nlmsghdr, *mut R) -> c_int,
}

/// A libnftnl object type with its [`Api`].
pub(super) trait Kind: Sized + 'static {
    /// Its functions.
    const API: Api<Self>;
}

macro_rules! kind {
    ($raw:ty { $alloc:path, $free:path, $set_str:path, $set_u32:path, $set_data:path,
      $is_set:path, $get_str:path, $get_u32:path, $get_u64:path, $parse:path }) => {
        impl Kind for $raw {
            const API: Api<Self> = Api {
                alloc: $alloc,
                free: $free,
                set_str: $set_str,
                set_u32: $set_u32,
                set_data: $set_data,
                is_set: $is_set,
                get_str: $get_str,
                get_u32: $get_u32,
                get_u64: $get_u64,
                parse: $parse,
            };
        }
    };
}

kind!(ffi::nftnl_table {
    ffi::nftnl_table_alloc, ffi::nftnl_table_free, ffi::nftnl_table_set_str,
    ffi::nftnl_table_set_u32, ffi::nftnl_table_set_data, ffi::nftnl_table_is_set,
    ffi::nftnl_table_get_str, ffi::nftnl_table_get_u32, ffi::nftnl_table_get_u64,
    ffi::nftnl_table_nlmsg_parse
});
kind!(ffi::nftnl_chain {
    ffi::nftnl_chain_alloc, ffi::nftnl_chain_free, ffi::nftnl_chain_set_str,
    ffi::nftnl_chain_set_u32, ffi::nftnl_chain_set_data, ffi::nftnl_chain_is_set,
    ffi::nftnl_chain_get_str, ffi::nftnl_chain_get_u32, ffi::nftnl_chain_get_u64,
    ffi::nftnl_chain_nlmsg_parse
});
kind!(ffi::nftnl_rule {
    ffi::nftnl_rule_alloc, ffi::nftnl_rule_free, ffi::nftnl_rule_set_str,
    ffi::nftnl_rule_set_u32, ffi::nftnl_rule_set_data, ffi::nftnl_rule_is_set,
    ffi::nftnl_rule_get_str, ffi::nftnl_rule_get_u32, ffi::nftnl_rule_get_u64,
    ffi::nftnl_rule_nlmsg_parse
});
kind!(ffi::nftnl_set {
    ffi::nftnl_set_alloc, ffi::nftnl_set_free, ffi::nftnl_set_set_str,
    ffi::nftnl_set_set_u32, ffi::nftnl_set_set_data, ffi::nftnl_set_is_set,
    ffi::nftnl_set_get_str, ffi::nftnl_set_get_u32, ffi::nftnl_set_get_u64,
    ffi::nftnl_set_nlmsg_parse
});

/// An owned libnftnl object, freed on drop. libnftnl copies every string and byte buffer
/// handed to its setters, so nothing borrowed outlives a call.
pub(super) struct Nft<R: Kind>(NonNull<R>);

/// A table (`struct nftnl_table`).
pub(super) type NfTable = Nft<ffi::nftnl_table>;
/// A chain (`struct nftnl_chain`).
pub(super) type NfChain = Nft<ffi::nftnl_chain>;
/// A rule with its expressions (`struct nftnl_rule`).
pub(super) type NfRule = Nft<ffi::nftnl_rule>;
/// A set with an element list (`struct nftnl_set`).
pub(super) type NfSet = Nft<ffi::nftnl_set>;

impl<R: Kind> Nft<R> {
    /// A fresh, empty object.
    pub(super) fn new() -> Self {
        // SAFETY: the allocator takes no arguments and returns an owned object or NULL.
        let p = unsafe { (R::API.alloc)() };
        Nft(NonNull::new(p).expect("libnftnl: out of memory"))
    }

    fn ptr(&self) -> *mut R {
        self.0.as_ptr()
    }

    /// Parses one nf_tables message into a fresh object.
    pub(super) fn parse(msg: &Reply<'_>, what: &str) -> Result<Self> {
        let obj = Self::new();
        // SAFETY: `msg` is a complete, length-checked netlink message in a 4-aligned
        // buffer; `obj` is a valid object of the matching type.
        let rc = unsafe { (R::API.parse)(msg.header(), obj.ptr()) };
        if rc < 0 {
            return Err(NetlinkError::Protocol {
                what: what.to_owned(),
                reason: "libnftnl could not parse a message".into(),
            });
        }
        Ok(obj)
    }

    /// Sets a string attribute (copied).
    pub(super) fn set_str(&mut self, attr: u32, value: &CStr) {
        // SAFETY: valid object; `value` is NUL-terminated and copied by libnftnl.
        unsafe { (R::API.set_str)(self.ptr(), attr as u16, value.as_ptr()) };
    }

    /// Sets a u32 attribute.
    pub(super) fn set_u32(&mut self, attr: u32, value: u32) {
        // SAFETY: valid object; plain value.
        unsafe { (R::API.set_u32)(self.ptr(), attr as u16, value) };
    }

    /// Sets a byte attribute (copied).
    pub(super) fn set_data(&mut self, attr: u32, data: &[u8]) {
        // SAFETY: valid object; `data` is readable for its length and copied by libnftnl.
        unsafe {
            (R::API.set_data)(
                self.ptr(),
                attr as u16,
                data.as_ptr().cast(),
                data.len() as u32,
            )
        };
    }

    fn is_set(&self, attr: u32) -> bool {
        // SAFETY: valid object.
        unsafe { (R::API.is_set)(self.ptr(), attr as u16) }
    }

    /// A string attribute, `None` when it is not set.
    pub(super) fn get_str(&self, attr: u32) -> Option<String> {
        if !self.is_set(attr) {
            return None;
        }
        // SAFETY: valid object and the attribute is set, so libnftnl returns a
        // NUL-terminated string owned by the object, copied before the object can change.
        unsafe {
            let p = (R::API.get_str)(self.ptr(), attr as u16);
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        }
    }

    /// A u32 attribute, `None` when it is not set.
    pub(super) fn get_u32(&self, attr: u32) -> Option<u32> {
        // SAFETY: valid object; the attribute is set.
        self.is_set(attr)
            .then(|| unsafe { (R::API.get_u32)(self.ptr(), attr as u16) })
    }

    /// A u64 attribute, `None` when it is not set.
    pub(super) fn get_u64(&self, attr: u32) -> Option<u64> {
        // SAFETY: valid object; the attribute is set.
        self.is_set(attr)
            .then(|| unsafe { (R::API.get_u64)(self.ptr(), attr as u16) })
    }
}

impl<R: Kind> Drop for Nft<R> {
    fn drop(&mut self) {
        // SAFETY: we own the object, allocated by the matching allocator, freed once.
        unsafe { (R::API.free)(self.ptr()) };
    }
}

impl NfChain {
    /// Sets a signed attribute (the priority).
    pub(super) fn set_s32(&mut self, attr: u32, value: i32) {
        // SAFETY: valid chain object; plain value.
        unsafe { ffi::nftnl_chain_set_s32(self.ptr(), attr as u16, value) };
    }

    /// A signed attribute, `None` when it is not set.
    pub(super) fn get_s32(&self, attr: u32) -> Option<i32> {
        // SAFETY: valid chain object; the attribute is set.
        self.is_set(attr)
            .then(|| unsafe { ffi::nftnl_chain_get_s32(self.ptr(), attr as u16) })
    }
}

impl NfRule {
    /// Appends an expression; the rule owns it from now on.
    pub(super) fn add_expr(&mut self, e: Expr) {
        let p = e.0.as_ptr();
        mem::forget(e);
        // SAFETY: valid rule; the rule takes ownership of the expression (freed with it).
        unsafe { ffi::nftnl_rule_add_expr(self.ptr(), p) };
    }

    /// Calls `f` with each expression of the rule, in order. The view lives for one call;
    /// the rule is borrowed mutably throughout, so nothing else sees a change made through
    /// it while it lasts.
    pub(super) fn for_each_expr<F: FnMut(&mut RuleExpr<'_>)>(&mut self, mut f: F) {
        unsafe extern "C" fn visit<F: FnMut(&mut RuleExpr<'_>)>(
            e: *mut ffi::nftnl_expr,
            data: *mut c_void,
        ) -> c_int {
            // SAFETY: `data` is the `F` passed below, alive and not otherwise borrowed
            // during the foreach; `e` is an expression owned by the rule, valid for the
            // whole foreach, and the view handed out cannot outlive this call.
            unsafe {
                let f = &mut *data.cast::<F>();
                if let Some(ptr) = NonNull::new(e) {
                    f(&mut RuleExpr {
                        ptr,
                        _rule: PhantomData,
                    });
                }
            }
            0
        }
        // SAFETY: valid rule, borrowed mutably; the callback only touches `f` through
        // `data` and the rule's own expressions.
        unsafe {
            ffi::nftnl_expr_foreach(self.ptr(), Some(visit::<F>), (&raw mut f).cast());
        }
    }

    /// A byte attribute (the userdata), `None` when it is not set.
    pub(super) fn get_data(&self, attr: u32) -> Option<Vec<u8>> {
        if !self.is_set(attr) {
            return None;
        }
        let mut len = 0u32;
        // SAFETY: valid rule and the attribute is set; libnftnl returns a buffer of `len`
        // bytes owned by the rule, copied before the rule can change.
        unsafe {
            let p = ffi::nftnl_rule_get_data(self.ptr(), attr as u16, &mut len);
            (!p.is_null())
                .then(|| std::slice::from_raw_parts(p.cast::<u8>(), len as usize).to_vec())
        }
    }
}

/// One expression of a rule, lent by [`NfRule::for_each_expr`] for one callback.
pub(super) struct RuleExpr<'r> {
    ptr: NonNull<ffi::nftnl_expr>,
    _rule: PhantomData<&'r mut NfRule>,
}

impl RuleExpr<'_> {
    /// The expression's name (`counter`, `lookup`, ...).
    pub(super) fn name(&self) -> Option<&CStr> {
        // SAFETY: valid expression; the name is a NUL-terminated string owned by it, which
        // the setters below never touch, borrowed for no longer than `self`.
        unsafe {
            let p = ffi::nftnl_expr_get_str(self.ptr.as_ptr(), ffi::NFTNL_EXPR_NAME as u16);
            (!p.is_null()).then(|| CStr::from_ptr(p))
        }
    }

    /// Whether the attribute is set.
    pub(super) fn is_set(&self, attr: u32) -> bool {
        // SAFETY: valid expression.
        unsafe { ffi::nftnl_expr_is_set(self.ptr.as_ptr(), attr as u16) }
    }

    /// A u64 attribute; 0 when it is not set (libnftnl's own answer).
    pub(super) fn get_u64(&self, attr: u32) -> u64 {
        // SAFETY: valid expression; libnftnl returns 0 for an attribute that is not set.
        unsafe { ffi::nftnl_expr_get_u64(self.ptr.as_ptr(), attr as u16) }
    }

    /// Sets a u32 attribute.
    pub(super) fn set_u32(&mut self, attr: u32, value: u32) {
        // SAFETY: valid expression, exclusively ours for the callback; plain value.
        unsafe { ffi::nftnl_expr_set_u32(self.ptr.as_ptr(), attr as u16, value) };
    }

    /// Sets a u64 attribute.
    pub(super) fn set_u64(&mut self, attr: u32, value: u64) {
        // SAFETY: valid expression, exclusively ours for the callback; plain value.
        unsafe { ffi::nftnl_expr_set_u64(self.ptr.as_ptr(), attr as u16, value) };
    }

    /// The expression's body as libnftnl prints it (`nftnl_expr_snprintf`, default output
    /// type): what `nft --debug=netlink` shows after the name.
    pub(super) fn text(&self) -> String {
        let mut buf = vec![0u8; 256];
        loop {
            // SAFETY: `buf` is writable for its length; libnftnl writes at most that many
            // bytes, NUL included, and returns the length the whole text needs.
            let n = unsafe {
                ffi::nftnl_expr_snprintf(
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    self.ptr.as_ptr(),
                    ffi::NFTNL_OUTPUT_DEFAULT,
                    0,
                )
            };
            let n = n.max(0) as usize;
            if n < buf.len() {
                return String::from_utf8_lossy(&buf[..n]).into_owned();
            }
            buf.resize(n + 1, 0);
        }
    }
}

impl NfSet {
    /// Adds one element to the set's element list: its key (network byte order), the
    /// `NFT_SET_ELEM_INTERVAL_END` flag, element userdata, and in a map the chain it jumps
    /// to. Everything is copied.
    pub(super) fn add_elem(
        &mut self,
        key: &[u8],
        interval_end: bool,
        userdata: Option<&[u8]>,
        jump: Option<&CStr>,
    ) {
        // SAFETY: the element is fresh; key/udata buffers are readable for their lengths
        // and copied by libnftnl; the set takes ownership of the element.
        unsafe {
            let el = ffi::nftnl_set_elem_alloc();
            assert!(!el.is_null(), "libnftnl: out of memory");
            ffi::nftnl_set_elem_set(
                el,
                ffi::NFTNL_SET_ELEM_KEY as u16,
                key.as_ptr().cast(),
                key.len() as u32,
            );
            if interval_end {
                ffi::nftnl_set_elem_set_u32(
                    el,
                    ffi::NFTNL_SET_ELEM_FLAGS as u16,
                    libc::NFT_SET_ELEM_INTERVAL_END as u32,
                );
            }
            if let Some(udata) = userdata {
                ffi::nftnl_set_elem_set(
                    el,
                    ffi::NFTNL_SET_ELEM_USERDATA as u16,
                    udata.as_ptr().cast(),
                    udata.len() as u32,
                );
            }
            if let Some(chain) = jump {
                // nft: ... : jump CHAIN
                ffi::nftnl_set_elem_set_u32(
                    el,
                    ffi::NFTNL_SET_ELEM_VERDICT as u16,
                    libc::NFT_JUMP as u32,
                );
                ffi::nftnl_set_elem_set_str(el, ffi::NFTNL_SET_ELEM_CHAIN as u16, chain.as_ptr());
            }
            ffi::nftnl_set_elem_add(self.ptr(), el);
        }
    }

    /// Sets a u64 attribute (the default timeout).
    pub(super) fn set_u64(&mut self, attr: u32, value: u64) {
        // SAFETY: valid set object; plain value.
        unsafe { ffi::nftnl_set_set_u64(self.ptr(), attr as u16, value) };
    }

    /// Parses a NEWSETELEM message (elements land in the set's element list).
    pub(super) fn parse_elems(msg: &Reply<'_>, what: &str) -> Result<NfSet> {
        let s = NfSet::new();
        // SAFETY: `msg` is a complete, length-checked message in a 4-aligned buffer.
        let rc = unsafe { ffi::nftnl_set_elems_nlmsg_parse(msg.header(), s.ptr()) };
        if rc < 0 {
            return Err(NetlinkError::Protocol {
                what: what.to_owned(),
                reason: "libnftnl could not parse set elements".into(),
            });
        }
        Ok(s)
    }

    /// Calls `f` with each element of the set's element list. The view lives for one call.
    pub(super) fn for_each_elem<F: FnMut(&SetElem<'_>)>(&self, mut f: F) {
        unsafe extern "C" fn visit<F: FnMut(&SetElem<'_>)>(
            e: *mut ffi::nftnl_set_elem,
            data: *mut c_void,
        ) -> c_int {
            // SAFETY: `data` is the `F` passed below, alive and not otherwise borrowed
            // during the foreach; `e` is an element owned by the set, valid for the whole
            // foreach, and the view handed out cannot outlive this call.
            unsafe {
                let f = &mut *data.cast::<F>();
                if let Some(ptr) = NonNull::new(e) {
                    f(&SetElem {
                        ptr,
                        _set: PhantomData,
                    });
                }
            }
            0
        }
        // SAFETY: valid set; the callback only touches `f` through `data` and reads the
        // set's own elements.
        unsafe {
            ffi::nftnl_set_elem_foreach(self.ptr(), Some(visit::<F>), (&raw mut f).cast());
        }
    }
}

/// One element of a set's element list, lent by [`NfSet::for_each_elem`] for one callback.
pub(super) struct SetElem<'s> {
    ptr: NonNull<ffi::nftnl_set_elem>,
    _set: PhantomData<&'s NfSet>,
}

impl SetElem<'_> {
    fn is_set(&self, attr: u32) -> bool {
        // SAFETY: valid element.
        unsafe { ffi::nftnl_set_elem_is_set(self.ptr.as_ptr(), attr as u16) }
    }

    /// `NFTA_SET_ELEM_FLAGS` (interval end, catch-all), 0 when not set.
    pub(super) fn flags(&self) -> u32 {
        if !self.is_set(ffi::NFTNL_SET_ELEM_FLAGS) {
            return 0;
        }
        // SAFETY: valid element; the attribute is set.
        unsafe { ffi::nftnl_set_elem_get_u32(self.ptr.as_ptr(), ffi::NFTNL_SET_ELEM_FLAGS as u16) }
    }

    /// The key bytes (network byte order), `None` for an element without a key.
    pub(super) fn key(&self) -> Option<&[u8]> {
        self.bytes_attr(ffi::NFTNL_SET_ELEM_KEY)
    }

    /// A bytes attribute of the element, `None` when it is not set.
    fn bytes_attr(&self, attr: u32) -> Option<&[u8]> {
        if !self.is_set(attr) {
            return None;
        }
        let mut len = 0u32;
        // SAFETY: valid element; the pointer is valid for `len` bytes, owned by the
        // element, and borrowed for no longer than `self`.
        unsafe {
            let p = ffi::nftnl_set_elem_get(self.ptr.as_ptr(), attr as u16, &mut len);
            (!p.is_null()).then(|| std::slice::from_raw_parts(p.cast::<u8>(), len as usize))
        }
    }

    /// A u64 attribute (timeout, expiration in milliseconds), `None` when it is not set.
    pub(super) fn get_u64(&self, attr: u32) -> Option<u64> {
        // SAFETY: valid element; the attribute is set.
        self.is_set(attr)
            .then(|| unsafe { ffi::nftnl_set_elem_get_u64(self.ptr.as_ptr(), attr as u16) })
    }

    /// The element's userdata bytes, `None` when it has none.
    pub(super) fn userdata(&self) -> Option<&[u8]> {
        self.bytes_attr(ffi::NFTNL_SET_ELEM_USERDATA)
    }

    /// A map element's verdict: the code (`NFT_JUMP`, `NFT_GOTO`, ...) and the chain it
    /// names, if any. `None` for an element of a plain set.
    pub(super) fn verdict(&self) -> Option<(i32, Option<&CStr>)> {
        if !self.is_set(ffi::NFTNL_SET_ELEM_VERDICT) {
            return None;
        }
        // SAFETY: valid element; the verdict is set; the chain name is NUL-terminated,
        // owned by the element, and borrowed for no longer than `self`.
        unsafe {
            let p = self.ptr.as_ptr();
            let code = ffi::nftnl_set_elem_get_u32(p, ffi::NFTNL_SET_ELEM_VERDICT as u16);
            let chain = ffi::nftnl_set_elem_get_str(p, ffi::NFTNL_SET_ELEM_CHAIN as u16);
            Some((
                code as i32,
                (!chain.is_null()).then(|| CStr::from_ptr(chain)),
            ))
        }
    }
}

/// An expression under construction; owned until a rule takes it ([`NfRule::add_expr`]).
pub(super) struct Expr(NonNull<ffi::nftnl_expr>);

impl Expr {
    /// A fresh expression of the named type (`meta`, `cmp`, ...).
    pub(super) fn new(name: &CStr) -> Expr {
        // SAFETY: `name` is NUL-terminated; returns an owned expression or NULL.
        let p = unsafe { ffi::nftnl_expr_alloc(name.as_ptr()) };
        Expr(NonNull::new(p).expect("libnftnl: unknown expression or out of memory"))
    }

    /// With a u32 attribute.
    pub(super) fn u32(self, attr: u32, value: u32) -> Expr {
        // SAFETY: valid expression; plain value.
        unsafe { ffi::nftnl_expr_set_u32(self.0.as_ptr(), attr as u16, value) };
        self
    }

    /// With a u64 attribute.
    pub(super) fn u64(self, attr: u32, value: u64) -> Expr {
        // SAFETY: valid expression; plain value.
        unsafe { ffi::nftnl_expr_set_u64(self.0.as_ptr(), attr as u16, value) };
        self
    }

    /// With a byte attribute (copied).
    pub(super) fn data(self, attr: u32, data: &[u8]) -> Expr {
        // SAFETY: valid expression; `data` is readable for its length and copied.
        unsafe {
            ffi::nftnl_expr_set(
                self.0.as_ptr(),
                attr as u16,
                data.as_ptr().cast(),
                data.len() as u32,
            )
        };
        self
    }

    /// With a nested expression appended to the list `attr` (a dynset's per-element
    /// expressions); this expression owns it from now on.
    pub(super) fn nested(self, attr: u32, child: Expr) -> Expr {
        let p = child.0.as_ptr();
        mem::forget(child);
        // SAFETY: both expressions are valid; libnftnl links `p` into this expression's
        // list and frees it with this expression, so the wrapper of `p` was forgotten.
        unsafe { ffi::nftnl_expr_add_expr(self.0.as_ptr(), attr, p) };
        self
    }

    /// With a string attribute (copied).
    pub(super) fn str(self, attr: u32, value: &CStr) -> Expr {
        // SAFETY: valid expression; `value` is NUL-terminated and copied.
        unsafe { ffi::nftnl_expr_set_str(self.0.as_ptr(), attr as u16, value.as_ptr()) };
        self
    }
}

impl Drop for Expr {
    fn drop(&mut self) {
        // SAFETY: still owned (add_expr forgets the wrapper when a rule takes it).
        unsafe { ffi::nftnl_expr_free(self.0.as_ptr()) };
    }
}
