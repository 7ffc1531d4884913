//! Fuzz target: arbitrary bytes as a query string and `Cookie` values (and Basic credentials), through the
//! helpers of `xapi_types::wire::query` that `/import_raw_vdi`, `/export_raw_vdi` and `/console` use
//! (`xapi_types::wire::fuzzing::http_query`). Runs and counts: docs/reliability.md, "Fuzzing".
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xapi_types::wire::fuzzing::http_query(data));
