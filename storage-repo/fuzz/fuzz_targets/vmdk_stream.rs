//! Fuzz target: arbitrary bytes as a streamOptimized upload, read to the end without seeking; every extent must
//! lie inside the capacity (`storage_repo::formats::vmdk::fuzzing::stream_one`).
//!
//! Last run (2026-11-26, `TMPDIR=/dev/shm RUSTC_BOOTSTRAP=1 cargo fuzz run -O vmdk_stream corpus/vmdk_stream
//! seeds/vmdk_stream -- -max_total_time=60`): 322 580 executions in 61 s (5.3k/s), no crash; cov 891, corpus 365.
//! Second run (grown corpus): 379 793 executions in 61 s (6.2k/s), no crash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_repo::formats::vmdk::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::stream_one(data);
});
