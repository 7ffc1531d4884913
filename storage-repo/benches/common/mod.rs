//! What the storage benchmarks share: the machine's load, a command's output, and writing a section of
//! `docs/benchmarks.md`.

use std::fs;
use std::path::Path;
use std::process::Command;

/// The load average (1, 5, 15 min).
pub fn load_avg() -> String {
    fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
}

/// A command's trimmed standard output, or `?`.
pub fn command_output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

/// Replaces the section `name` of `path` (between `<!-- NAME:begin -->` and `<!-- NAME:end -->`), keeping the rest.
pub fn write_section(path: &Path, name: &str, md: &str) {
    let old = fs::read_to_string(path).unwrap_or_default();
    let (begin, end) = (format!("<!-- {name}:begin -->"), format!("<!-- {name}:end -->"));
    let (begin, end) = (begin.as_str(), end.as_str());
    let section = format!("{begin}\n{}\n{end}\n", md.trim_end());
    let text = match (old.find(begin), old.find(end)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{section}{}", &old[..b], old[e + end.len()..].trim_start_matches('\n'))
        }
        _ if old.trim().is_empty() => section,
        _ => format!("{}\n\n{section}", old.trim_end()),
    };
    fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
