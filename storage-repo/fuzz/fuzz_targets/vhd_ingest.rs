//! Fuzz target: arbitrary bytes as a VHD upload through the streaming ingest, with and without its length, read
//! whole and in pieces, into a sink that checks the contract (`begin` first and once, whole sectors, inside the
//! capacity, no overlaps) (`storage_repo::formats::vhd::fuzzing::ingest_one`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_repo::formats::vhd::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::ingest_one(data);
});
