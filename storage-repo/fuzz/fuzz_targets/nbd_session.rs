//! Fuzz target: arbitrary bytes as a whole NBD client session (handshake, options, requests and their payloads)
//! against a real server on a 64 KiB disk (`storage_repo::nbd::fuzzing::session`): no panic, no hang, and the disk
//! keeps its size (nothing is written outside it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_repo::nbd::fuzzing;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    assert_eq!(fuzzing::session(dir.path(), data), fuzzing::DISK_SIZE);
});
