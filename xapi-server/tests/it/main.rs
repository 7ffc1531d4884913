//! Integration tests of the daemon through real HTTP: wire bytes, dispatch and errors, persistence.

// `&[sess.clone()]` reads better than `std::slice::from_ref(&sess)` in call lists.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod audit;
mod bad_input;
mod crash;
mod events;
mod import_export;
mod limits;
mod nbd_export;
mod persistence;
mod rbac;
mod rpc;
mod sessions;
mod storage;
mod support;
mod tls;
mod vm;
