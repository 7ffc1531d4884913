//! Fuzz target: arbitrary bytes as a VMDK upload converted while it arrives, with and without its length; the
//! sink checks `begin` comes first and once and every write is 512-aligned, inside the capacity and not over an
//! earlier one (`storage_repo::formats::vmdk::fuzzing::ingest_one`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_repo::formats::vmdk::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::ingest_one(data);
});
