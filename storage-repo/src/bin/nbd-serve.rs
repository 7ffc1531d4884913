//! `nbd-serve`: the block server as a stand-alone process, for tests and benchmarks (the toolstack runs the same
//! [`storage_repo::nbd::tapdisk::run`] from its own binary).
//!
//! ```text
//! nbd-serve --socket PATH --ctl PATH --export NAME [--pidfile PATH] [--workers N] [--read-only] (--raw FILE | --vhd FILE)
//! ```

use std::process::ExitCode;

use storage_repo::nbd::tapdisk;

const USAGE: &str = "usage: nbd-serve --socket PATH --ctl PATH --export NAME [--pidfile PATH] [--workers N] \
                     [--read-only] (--raw FILE | --vhd FILE)";

fn main() -> ExitCode {
    match tapdisk::parse_args(std::env::args().skip(1)) {
        Ok(args) => match tapdisk::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("nbd-serve: {e}");
                ExitCode::FAILURE
            }
        },
        Err(msg) => {
            eprintln!("nbd-serve: {msg}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
