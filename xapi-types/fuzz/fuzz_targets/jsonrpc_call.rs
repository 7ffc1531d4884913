//! Fuzz target: arbitrary bytes as a JSON-RPC request (`POST /jsonrpc`) and as a response: no panic, depth
//! within MAX_DEPTH, envelope and call (or result) read back the same after our writer
//! (`xapi_types::wire::fuzzing::jsonrpc_call`). Runs and counts: docs/reliability.md, "Fuzzing".
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xapi_types::wire::fuzzing::jsonrpc_call(data));
