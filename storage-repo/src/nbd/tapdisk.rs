//! The block server process, as the toolstack runs it for each attached VDI: the toolstack re-executes its own
//! binary with a subcommand (after `setsid`, with stdin from `/dev/null` and stdout/stderr to a log) and that
//! subcommand calls [`run`].
//!
//! Lifecycle: open the disk, bind the NBD socket (0666) and the control socket (0600), write the pid file (its
//! appearance means both sockets accept connections), serve until SIGTERM, SIGINT or the `stop` control command,
//! then wait for the requests in flight, flush, close the disk and remove both sockets and the pid file.
//!
//! It is a process of its own so that a guest keeps its disk while the toolstack daemon is restarted or killed.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::{Reopen, Server};
use crate::block::BlockDevice;

/// What [`run`] needs.
pub struct TapdiskArgs {
    /// The NBD socket QEMU connects to.
    pub nbd_socket: PathBuf,
    /// The control socket (see [`control`](super::control)).
    pub ctl_socket: PathBuf,
    /// The export name clients must ask for.
    pub export: String,
    /// Written with our pid once the sockets are ready; removed on exit.
    pub pidfile: Option<PathBuf>,
    /// Opens the disk: at start and again on every `resume`.
    pub open: Reopen,
    /// Worker threads per connection (`None`: [`DEFAULT_WORKERS`](super::DEFAULT_WORKERS)).
    pub workers: Option<usize>,
}

impl std::fmt::Debug for TapdiskArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapdiskArgs")
            .field("nbd_socket", &self.nbd_socket)
            .field("ctl_socket", &self.ctl_socket)
            .field("export", &self.export)
            .field("pidfile", &self.pidfile)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl TapdiskArgs {
    /// Arguments with no pid file and the default worker count.
    pub fn new(nbd_socket: PathBuf, ctl_socket: PathBuf, export: String, open: Reopen) -> TapdiskArgs {
        TapdiskArgs { nbd_socket, ctl_socket, export, pidfile: None, open, workers: None }
    }
}

/// Removes the pid file when dropped.
struct PidFile(PathBuf);

impl PidFile {
    /// Writes our pid to `path` atomically (a temporary file renamed over it).
    fn write(path: &Path) -> io::Result<PidFile> {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut f = fs::File::create(&tmp)?;
        writeln!(f, "{}", std::process::id())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Serves the disk until told to stop; see the module documentation. Errors: the disk cannot be opened, a socket
/// or the pid file cannot be created, or the final flush failed.
pub fn run(args: TapdiskArgs) -> io::Result<()> {
    let TapdiskArgs { nbd_socket, ctl_socket, export, pidfile, open, workers } = args;
    let device: Arc<dyn BlockDevice> = open().map_err(|e| io::Error::new(e.kind(), format!("open: {e}")))?;
    let mut server = Server::bind(&nbd_socket, &export, device)?.with_control(&ctl_socket, open)?;
    if let Some(w) = workers {
        server.set_workers(w);
    }
    let handle = server.handle();
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    let signal_handle = signals.handle();
    let stopper = handle.clone();
    let signal_thread = thread::Builder::new().name("nbd-signals".into()).spawn(move || {
        if let Some(sig) = signals.forever().next() {
            tracing::info!("nbd {}: signal {sig}, stopping", stopper.0.export);
            stopper.stop();
        }
    })?;
    let pid = match pidfile.as_deref().map(PidFile::write).transpose() {
        Ok(p) => p,
        Err(e) => {
            handle.stop();
            let _ = server.serve();
            signal_handle.close();
            let _ = signal_thread.join();
            return Err(e);
        }
    };
    tracing::info!("nbd {export}: serving on {}", nbd_socket.display());
    let result = server.serve();
    signal_handle.close();
    let _ = signal_thread.join();
    drop(pid);
    result
}

/// The image a block server serves.
enum Image {
    Raw(PathBuf),
    Vhd(PathBuf),
}

/// Parses `--socket PATH --ctl PATH --export NAME [--pidfile PATH] [--workers N] [--read-only] (--raw FILE |
/// --vhd FILE)`, the arguments of `nbd-serve` and of the daemon's `tapdisk` subcommand.
pub fn parse_args(mut it: impl Iterator<Item = String>) -> Result<TapdiskArgs, String> {
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
    let open: super::Reopen = match image {
        Image::Raw(path) => {
            Box::new(move || Ok(Arc::new(crate::block::RawFile::open(&path, writable)?) as Arc<dyn BlockDevice>))
        }
        Image::Vhd(path) => {
            Box::new(move || Ok(Arc::new(crate::formats::vhd::Chain::open(&path, writable)?) as Arc<dyn BlockDevice>))
        }
    };
    let mut args = TapdiskArgs::new(nbd_socket, ctl_socket, export, open);
    args.pidfile = pidfile;
    args.workers = workers;
    Ok(args)
}
