//! Integration tests of the daemon through real HTTP: wire bytes, dispatch and errors, persistence.

// `&[sess.clone()]` reads better than `std::slice::from_ref(&sess)` in call lists.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod crash;
mod events;
mod import_export;
mod nbd_export;
mod persistence;
mod rpc;
mod storage;
mod support;
mod vm;
