//! `cargo xtask`: project automation (the alias is in `.cargo/config.toml`).
//!
//! `cargo xtask codegen [--check]` derives `xapi-types/model/datamodel.json` from `../shared/xenapi` when that
//! directory exists (otherwise it uses the committed data file), then generates the Rust tables in
//! `xapi-types/src/generated/` and the SQL in `migrations/`. With `--check` it writes nothing and fails if any
//! file is out of date.

use std::process::ExitCode;

use anyhow::{Result, bail};
use xtask::codegen::{self, Stats};
use xtask::datamodel::Datamodel;
use xtask::{DATAMODEL_PATH, derive, stale_files, upstream_available, upstream_dir, workspace_root, write_files};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  codegen [--check]   derive xapi-types/model/datamodel.json from ../shared/xenapi (if present), then generate
                      xapi-types/src/generated/ and migrations/20261126000000_create-object-tables.sql;
                      with --check, write nothing and fail if anything is out of date
  help                print this message";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["codegen"] => run_codegen(false),
        ["codegen", "--check"] => run_codegen(true),
        [] | ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            Ok(true)
        }
        _ => {
            eprintln!("{USAGE}");
            Ok(false)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Returns whether everything is (now) up to date.
fn run_codegen(check: bool) -> Result<bool> {
    let root = workspace_root();
    let upstream = upstream_dir(&root);
    let dm: Datamodel = if upstream_available(&root) {
        println!("derive: {} -> {DATAMODEL_PATH}", upstream.display());
        derive::derive_from_dir(&upstream)?
    } else {
        println!("derive: {} not found; using the committed {DATAMODEL_PATH}", upstream.display());
        codegen::load_committed(&root)?.0
    };

    let output = codegen::generate(&dm)?;
    print_stats(&output.stats);

    let mut files = vec![(DATAMODEL_PATH.to_owned(), dm.to_json())];
    files.extend(output.files);
    if check {
        let stale = stale_files(&root, &files)?;
        for s in &stale {
            println!("stale: {s}");
        }
        if !stale.is_empty() {
            bail!("{} generated file(s) out of date: run `cargo xtask codegen`", stale.len());
        }
        println!("codegen: everything is up to date");
    } else {
        let changed = write_files(&root, &files)?;
        for c in &changed {
            println!("{c}");
        }
        println!("codegen: {} file(s) changed, {} generated", changed.len(), files.len());
    }
    Ok(true)
}

fn print_stats(s: &Stats) {
    println!(
        "model: {} classes, {} fields, {} messages ({} hidden, {} documented), {} enums, {} error codes ({} \
         documented, {} without a doc entry), {} tables",
        s.classes,
        s.fields,
        s.messages,
        s.hidden_messages,
        s.messages - s.hidden_messages,
        s.enums,
        s.documented_errors + s.undocumented_errors,
        s.documented_errors,
        s.undocumented_errors,
        s.tables
    );
    println!("message kinds:");
    for (kind, n) in &s.kinds {
        println!("  {kind:<20} {n:>5}");
    }
    println!("non-persistent classes: {}", s.non_persistent.join(", "));
    println!("custom (non-implicit) messages with a generic kind:");
    for m in &s.generic_custom {
        println!("  {m}");
    }
}
