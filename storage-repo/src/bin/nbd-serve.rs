//! `nbd-serve`: the block server as a stand-alone process, for tests and benchmarks (the toolstack runs the same
//! [`storage_repo::nbd::tapdisk::run`] from its own binary).
//!
//! ```text
//! nbd-serve --socket PATH --ctl PATH --export NAME [--pidfile PATH] [--workers N] [--read-only] (--raw FILE | --vhd FILE)
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use storage_repo::block::{BlockDevice, RawFile};
use storage_repo::formats::vhd::Chain;
use storage_repo::nbd::tapdisk::{self, TapdiskArgs};

const USAGE: &str = "usage: nbd-serve --socket PATH --ctl PATH --export NAME [--pidfile PATH] [--workers N] \
                     [--read-only] (--raw FILE | --vhd FILE)";

enum Image {
    Raw(PathBuf),
    Vhd(PathBuf),
}

fn main() -> ExitCode {
    match parse(std::env::args().skip(1)) {
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

fn parse(mut it: impl Iterator<Item = String>) -> Result<TapdiskArgs, String> {
    let (mut socket, mut ctl, mut export, mut pidfile, mut workers, mut image) = (None, None, None, None, None, None);
    let mut read_only = false;
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--socket" => socket = Some(PathBuf::from(value()?)),
            "--ctl" => ctl = Some(PathBuf::from(value()?)),
            "--export" => export = Some(value()?),
            "--pidfile" => pidfile = Some(PathBuf::from(value()?)),
            "--workers" => workers = Some(value()?.parse::<usize>().map_err(|e| format!("--workers: {e}"))?),
            "--raw" => image = Some(Image::Raw(PathBuf::from(value()?))),
            "--vhd" => image = Some(Image::Vhd(PathBuf::from(value()?))),
            "--read-only" => read_only = true,
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let nbd_socket = socket.ok_or("--socket is required")?;
    let ctl_socket = ctl.ok_or("--ctl is required")?;
    let export = export.ok_or("--export is required")?;
    let image = image.ok_or("--raw or --vhd is required")?;
    let writable = !read_only;
    let open: storage_repo::nbd::Reopen = match image {
        Image::Raw(path) => Box::new(move || Ok(Arc::new(RawFile::open(&path, writable)?) as Arc<dyn BlockDevice>)),
        Image::Vhd(path) => Box::new(move || Ok(Arc::new(Chain::open(&path, writable)?) as Arc<dyn BlockDevice>)),
    };
    let mut args = TapdiskArgs::new(nbd_socket, ctl_socket, export, open);
    args.pidfile = pidfile;
    args.workers = workers;
    Ok(args)
}
