//! The `cargo fuzz` targets' entry points (`xapi_types::wire::fuzzing`) over the seeds committed under
//! `fuzz/seeds/<target>/`, and over byte-level mutations of them, so that a plain `cargo test` checks the
//! targets' invariants without nightly. Inputs the fuzzers once failed on are in `fuzz/seeds/` too.

use std::path::{Path, PathBuf};

use xapi_types::wire::fuzzing;

const TARGETS: &[&str] = &["xmlrpc_call", "xmlrpc_response", "jsonrpc_call", "http_query"];

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

fn run(target: &str, data: &[u8]) {
    match target {
        "xmlrpc_call" => fuzzing::xmlrpc_call(data),
        "xmlrpc_response" => fuzzing::xmlrpc_response(data),
        "jsonrpc_call" => fuzzing::jsonrpc_call(data),
        "http_query" => fuzzing::http_query(data),
        _ => unreachable!(),
    }
}

#[test]
fn every_seed_passes_its_target() {
    for target in TARGETS {
        for (_, data) in seeds(target) {
            run(target, &data);
            // Every target must also survive every other target's seeds.
            fuzzing::all(&data);
        }
    }
}

#[test]
fn the_request_seeds_are_accepted() {
    for (path, data) in seeds("xmlrpc_call") {
        let known_bad = path.file_name().unwrap().to_str().unwrap().starts_with("crash-");
        assert!(known_bad || xapi_types::wire::xmlrpc::parse_call(&data).is_ok(), "{}", path.display());
    }
    for (path, data) in seeds("jsonrpc_call") {
        let name = path.file_name().unwrap().to_str().unwrap();
        if name.contains("success") || name.contains("failure") {
            assert!(xapi_types::wire::jsonrpc::parse_response(&data).is_ok(), "{}", path.display());
        } else if !name.starts_with("crash-") {
            assert!(xapi_types::wire::jsonrpc::parse_call(&data).is_ok(), "{}", path.display());
        }
    }
    for (path, data) in seeds("xmlrpc_response") {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name == "fault" || xapi_types::wire::xmlrpc::parse_result(&data).is_ok(), "{}", path.display());
    }
}

/// xorshift64*: small, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to the grammars, for mutations to insert.
const INTERESTING: &[u8] = b"<>/&;#x%+=\"'[]{},:\\\r\n\t \0\xff";

#[test]
fn mutated_seeds_keep_the_invariants() {
    let mut rng = Rng(0x5eed_f022);
    for target in TARGETS {
        for (_, seed) in seeds(target) {
            for _ in 0..300 {
                let mut b = seed.clone();
                for _ in 0..=rng.below(3) {
                    let at = rng.below(b.len() + 1);
                    match rng.below(5) {
                        0 if at < b.len() => b[at] ^= 1 << rng.below(8),
                        1 => b.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
                        2 if at < b.len() => {
                            b.remove(at);
                        }
                        3 => b.truncate(at),
                        _ => {
                            // Repeat a slice (deeper nesting, more params).
                            let start = rng.below(b.len() + 1);
                            let end = (start + rng.below(64)).min(b.len());
                            let piece = b[start..end].to_vec();
                            b.splice(at..at, piece);
                        }
                    }
                }
                run(target, &b);
            }
        }
    }
}
