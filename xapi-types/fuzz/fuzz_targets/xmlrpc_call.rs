//! Fuzz target: arbitrary bytes as a `methodCall` body, as the daemon reads `POST /`: no panic, depth within
//! MAX_DEPTH, and what is accepted reads back the same after our writer
//! (`xapi_types::wire::fuzzing::xmlrpc_call`). Runs and counts: docs/reliability.md, "Fuzzing".
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xapi_types::wire::fuzzing::xmlrpc_call(data));
