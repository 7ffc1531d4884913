//! The XenAPI datamodel generator behind `cargo xtask codegen`.
//!
//! Two steps, so that the project builds on a machine without the upstream data:
//! 1. [`derive`]: `../shared/xenapi/{xenapi,errors}.json` → `xapi-types/model/datamodel.json` (committed),
//! 2. [`codegen`]: `datamodel.json` → Rust tables in `xapi-types/src/generated/` and the object tables in
//!    `migrations/20261126000000_create-object-tables.sql`.
//!
//! Both steps are pure functions from text to text; the binary (`src/main.rs`) does the file I/O, and the tests
//! (`tests/codegen.rs`) check that what is committed is what the generator would write.

pub mod classify;
pub mod codegen;
pub mod datamodel;
pub mod derive;
pub mod types;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The committed data file, relative to the workspace root.
pub const DATAMODEL_PATH: &str = "xapi-types/model/datamodel.json";
/// Where the Rust tables go, relative to the workspace root.
pub const GENERATED_DIR: &str = "xapi-types/src/generated";
/// The generated SQL schema, relative to the workspace root.
pub const MIGRATION_PATH: &str = "migrations/20261126000000_create-object-tables.sql";

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives inside the workspace").to_path_buf()
}

/// The upstream data, beside the workspace: `<root>/../shared/xenapi`.
pub fn upstream_dir(root: &Path) -> PathBuf {
    match root.parent() {
        Some(parent) => parent.join("shared").join("xenapi"),
        None => root.join("..").join("shared").join("xenapi"),
    }
}

/// Whether the upstream data is present (it is not on a plain checkout of the project).
pub fn upstream_available(root: &Path) -> bool {
    let dir = upstream_dir(root);
    dir.join("xenapi.json").is_file() && dir.join("errors.json").is_file()
}

/// Files under `dir` (relative to `root`, with `/` separators), recursively, sorted.
fn files_under(root: &Path, dir: &str) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut stack = vec![root.join(dir)];
    while let Some(d) = stack.pop() {
        if !d.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(root) {
                let parts: Vec<String> =
                    rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
                found.push(parts.join("/"));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// What differs between `files` and the disk: files missing or different, and files in the generated
/// directory that the generator would not write. Empty when everything is up to date.
pub fn stale_files(root: &Path, files: &[(String, String)]) -> Result<Vec<String>> {
    let mut stale = Vec::new();
    for (rel, text) in files {
        match std::fs::read(root.join(rel)) {
            Ok(bytes) if bytes == text.as_bytes() => {}
            Ok(_) => stale.push(format!("{rel} differs")),
            Err(_) => stale.push(format!("{rel} is missing")),
        }
    }
    for rel in files_under(root, GENERATED_DIR)? {
        if !files.iter().any(|(f, _)| *f == rel) {
            stale.push(format!("{rel} is not generated any more"));
        }
    }
    Ok(stale)
}

/// Writes the files that differ and deletes files in the generated directory that are not generated any more.
/// Returns what it changed.
pub fn write_files(root: &Path, files: &[(String, String)]) -> Result<Vec<String>> {
    let mut changed = Vec::new();
    for (rel, text) in files {
        let path = root.join(rel);
        if std::fs::read(&path).is_ok_and(|bytes| bytes == text.as_bytes()) {
            continue;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        changed.push(format!("wrote {rel}"));
    }
    for rel in files_under(root, GENERATED_DIR)? {
        if !files.iter().any(|(f, _)| *f == rel) {
            std::fs::remove_file(root.join(&rel)).with_context(|| format!("removing {rel}"))?;
            changed.push(format!("removed {rel}"));
        }
    }
    Ok(changed)
}
