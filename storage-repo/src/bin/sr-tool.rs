//! `sr-tool`: an `ext` SR's directory, offline (the daemon does the same while it runs).
//!
//! ```text
//! sr-tool scan DIR        one line per VHD file: uuid, virtual size, file size, hidden, parent
//! sr-tool collect DIR     recovers interrupted operations, then merges the chains (no file may be in use)
//! ```

use std::path::Path;
use std::process::ExitCode;

use storage_repo::sr::FileSr;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["scan", dir] => scan(Path::new(dir)),
        ["collect", dir] => collect(Path::new(dir)),
        _ => {
            eprintln!("usage: sr-tool scan DIR | sr-tool collect DIR");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sr-tool: {e}");
            ExitCode::FAILURE
        }
    }
}

fn scan(dir: &Path) -> storage_repo::Result<()> {
    let sr = FileSr::attach(dir)?;
    let (files, bad) = sr.scan()?;
    for f in files {
        let parent = f.parent.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{} size={} file={} hidden={} parent={parent}",
            f.uuid, f.virtual_size, f.physical_utilisation, f.hidden
        );
    }
    for (u, e) in bad {
        println!("{u} unreadable: {e}");
    }
    Ok(())
}

fn collect(dir: &Path) -> storage_repo::Result<()> {
    let sr = FileSr::attach(dir)?;
    for step in sr.collect_all(&|_| false, usize::MAX)? {
        println!("{step:?}");
    }
    Ok(())
}
