//! Fuzz target: arbitrary bytes split into a child `c.vhd` and a parent `p.vhd`, opened as a chain, read,
//! coalesced and written (`storage_repo::formats::vhd::fuzzing::open_chain`). The first two bytes give the
//! child's length.
//!
//! Last run (2026-11-26, `TMPDIR=/dev/shm RUSTC_BOOTSTRAP=1 cargo fuzz run -O vhd_chain corpus/vhd_chain seeds/vhd_chain`):
//! 251 637 executions in 101 s (2.5k/s), no crash; -max_len=32768.
//! Second run, after the locator-overlap rule: 197 688 in 61 s, no crash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_repo::formats::vhd::fuzzing;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let split = (usize::from(u16::from_be_bytes([data[0], data[1]])) * 8).min(data.len() - 2);
    let (child, parent) = data[2..].split_at(split);
    let dir = tempfile::tempdir().expect("a temporary directory");
    fuzzing::open_chain(dir.path(), child, parent);
});
