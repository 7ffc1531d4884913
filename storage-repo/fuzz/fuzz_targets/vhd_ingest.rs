//! Fuzz target: arbitrary bytes as a VHD upload through the streaming ingest, with and without its length, read
//! whole and in pieces, into a sink that checks the contract (`begin` first and once, whole sectors, inside the
//! capacity, no overlaps) (`storage_repo::formats::vhd::fuzzing::ingest_one`).
//!
//! Runs (2026-11-26, `TMPDIR=/dev/shm RUSTC_BOOTSTRAP=1 cargo fuzz run -O vhd_ingest fuzz/corpus/vhd_ingest
//! fuzz/seeds/vhd_ingest -- -max_total_time=300`): 287 552 executions in 301 s (a 4 MiB buffer per run), then
//! 2 013 810 in 301 s (6.7k/s, the buffer starting at 64 KiB); no crash; corpus ~150 entries, max length 35 328.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_repo::formats::vhd::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::ingest_one(data);
});
