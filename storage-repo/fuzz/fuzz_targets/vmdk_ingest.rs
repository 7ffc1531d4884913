//! Fuzz target: arbitrary bytes as a VMDK upload converted while it arrives, with and without its length; the
//! sink checks `begin` comes first and once and every write is 512-aligned, inside the capacity and not over an
//! earlier one (`storage_repo::formats::vmdk::fuzzing::ingest_one`).
//!
//! Last run (2026-11-26, `TMPDIR=/dev/shm RUSTC_BOOTSTRAP=1 cargo fuzz run -O vmdk_ingest fuzz/corpus/vmdk_ingest
//! fuzz/seeds/vmdk_ingest -- -max_total_time=300`): 503 726 executions in 301 s (1.7k/s), no crash; cov 1506,
//! corpus 695. Second run (the final code: the head grown as bytes arrive, on the grown corpus, 200 s): 665 121
//! executions in 201 s (3.3k/s), no crash; cov 1552, corpus 678.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_repo::formats::vmdk::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::ingest_one(data);
});
