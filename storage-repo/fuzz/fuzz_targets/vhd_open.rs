//! Fuzz target: arbitrary bytes as one VHD file, through read_info, check, Chain::open and reads of every
//! allocated block, then a writable open with a small write that must read back
//! (`storage_repo::formats::vhd::fuzzing::open_one`).
//!
//! Last run (2026-11-26, `TMPDIR=/dev/shm RUSTC_BOOTSTRAP=1 cargo fuzz run -O vhd_open corpus/vhd_open seeds/vhd_open`):
//! 454 978 executions in 101 s (4.5k/s), no crash; corpus 224 entries, -max_len=16384.
//! Second run, after the locator-overlap rule: 392 661 in 61 s, no crash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_repo::formats::vhd::fuzzing;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    fuzzing::open_one(dir.path(), data);
});
