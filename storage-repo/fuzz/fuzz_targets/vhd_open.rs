//! Fuzz target: arbitrary bytes as one VHD file, through read_info, check, Chain::open and reads of every
//! allocated block, then a writable open with a small write that must read back
//! (`storage_repo::formats::vhd::fuzzing::open_one`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_repo::formats::vhd::fuzzing;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    fuzzing::open_one(dir.path(), data);
});
