//! The only unsafe code of the workspace: two libvirt calls the `virt` crate has no safe binding for.
//!
//! - `virConnectDomainEventRegisterAny` with a lifecycle callback, so that the toolstack learns that a guest
//!   stopped, crashed or paused the moment libvirt does (no polling);
//! - `virDomainSave`, which suspends a running domain to a file (XenAPI `VM.suspend`).
//!
//! Each function checks its pointers and hands back only owned, safe values.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};

use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::Error;
use virt::sys;

/// What libvirt reports: the domain's UUID and the raw lifecycle event and detail numbers.
pub type LifecycleSink = Box<dyn Fn(String, i32, i32) + Send + 'static>;

/// The UUID of a domain handed to a callback (libvirt keeps the pointer valid for the call).
unsafe fn uuid_of(dom: sys::virDomainPtr) -> Option<String> {
    let mut buf = [0 as c_char; sys::VIR_UUID_STRING_BUFLEN as usize];
    // SAFETY: `dom` is the live domain libvirt passed in; `buf` has the documented length.
    if dom.is_null() || unsafe { sys::virDomainGetUUIDString(dom, buf.as_mut_ptr()) } < 0 {
        return None;
    }
    // SAFETY: on success libvirt wrote a NUL-terminated string into `buf`.
    Some(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

unsafe extern "C" fn on_lifecycle(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    // SAFETY: `opaque` is the `Box<LifecycleSink>` leaked in `register_lifecycle`, freed only by `free_sink` after
    // the callback is deregistered.
    let sink = unsafe { &*(opaque as *const LifecycleSink) };
    // SAFETY: see `uuid_of`.
    if let Some(uuid) = unsafe { uuid_of(dom) } {
        sink(uuid, event, detail);
    }
    0
}

unsafe extern "C" fn free_sink(opaque: *mut c_void) {
    if !opaque.is_null() {
        // SAFETY: the pointer came from `Box::into_raw` in `register_lifecycle` and libvirt frees it exactly once.
        drop(unsafe { Box::from_raw(opaque as *mut LifecycleSink) });
    }
}

/// Calls `sink` for every lifecycle event of every domain of `conn`, from libvirt's event-loop thread. Returns the
/// callback id. The default event loop must have been registered before `conn` was opened.
pub fn register_lifecycle(conn: &Connect, sink: LifecycleSink) -> Result<i32, Error> {
    let opaque = Box::into_raw(Box::new(sink)) as *mut c_void;
    type Lifecycle = unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, c_int, c_int, *mut c_void) -> c_int;
    type Generic = unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void);
    // SAFETY: libvirt's C API takes every event callback as the generic type and calls it with the signature of
    // the event id (VIR_DOMAIN_EVENT_CALLBACK in libvirt's headers does the same cast).
    let cb = unsafe { std::mem::transmute::<Lifecycle, Generic>(on_lifecycle) };
    // SAFETY: `conn` is open; a null domain means "all domains"; libvirt owns `opaque` from here and releases it
    // through `free_sink`.
    let id = unsafe {
        sys::virConnectDomainEventRegisterAny(
            conn.as_ptr(),
            std::ptr::null_mut(),
            sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE as c_int,
            Some(cb),
            opaque,
            Some(free_sink),
        )
    };
    if id < 0 {
        let err = Error::last_error();
        // SAFETY: registration failed, so libvirt did not take ownership of `opaque`.
        unsafe { free_sink(opaque) };
        return Err(err);
    }
    Ok(id)
}

/// Saves the running domain's memory to `path` and stops it (`virDomainSave`).
pub fn save(dom: &Domain, path: &str) -> Result<(), Error> {
    let path = CString::new(path).map_err(|_| Error::last_error())?;
    // SAFETY: `dom` is a live handle owned by the caller and `path` is a NUL-terminated string that outlives the call.
    if unsafe { sys::virDomainSave(dom.as_ptr(), path.as_ptr()) } < 0 {
        return Err(Error::last_error());
    }
    Ok(())
}
