//! Fuzz target: arbitrary bytes as a `methodResponse` body, as `xe` reads it: no panic, depth within
//! MAX_DEPTH + 1, and the result (or failure) reads back the same after our writer
//! (`xapi_types::wire::fuzzing::xmlrpc_response`). Runs and counts: docs/reliability.md, "Fuzzing".
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xapi_types::wire::fuzzing::xmlrpc_response(data));
