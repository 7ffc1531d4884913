//! The control socket: one command per line, one reply line each, as the toolstack drives a running block server
//! (`tap-ctl pause/unpause/stats/close` on XenServer).
//!
//! | command  | effect | reply |
//! |----------|--------|-------|
//! | `pause`  | no new request starts; the ones in flight finish; the device is flushed and closed | `ok` |
//! | `resume` | the device is reopened (by the [`Reopen`] function, so by path) and waiting requests run | `ok` |
//! | `stats`  | — | `key=value …` (see [`Stats`](super::Stats)) |
//! | `stop`   | as `pause`, then every connection is closed and the server exits | `ok` |
//!
//! A failure is answered `error <message>`. Several commands may be sent on one connection.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use super::Handle;
use crate::block::BlockDevice;

/// Opens the disk again (after a pause, during which its files may have been renamed or replaced).
pub type Reopen = Box<dyn Fn() -> io::Result<Arc<dyn BlockDevice>> + Send + Sync>;

/// How long [`control`] waits for a reply: a pause waits for the requests in flight and a flush.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// A control connection idle this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Longer command lines are refused (and the connection closed).
const MAX_LINE: u64 = 1024;

/// Sends `command` to the server listening on `ctl_path` and returns its reply line (without the newline).
/// A reply `error <message>` is returned as an error carrying `<message>`.
pub fn control(ctl_path: &Path, command: &str) -> io::Result<String> {
    control_with_timeout(ctl_path, command, DEFAULT_TIMEOUT)
}

/// [`control`] with a chosen timeout for connecting and for the reply.
pub fn control_with_timeout(ctl_path: &Path, command: &str, timeout: Duration) -> io::Result<String> {
    if command.contains('\n') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "a control command is one line"));
    }
    let mut stream = UnixStream::connect(ctl_path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).take(64 << 10).read_line(&mut line)?;
    if !line.ends_with('\n') {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the block server closed the control connection"));
    }
    let line = line.trim_end_matches('\n');
    match line.strip_prefix("error ") {
        Some(msg) => Err(io::Error::other(msg.to_owned())),
        None => Ok(line.to_owned()),
    }
}

/// The accept loop of the control socket; returns when the server stops.
pub(super) fn serve(listener: UnixListener, handle: Handle, reopen: Reopen) {
    let reopen = Arc::new(reopen);
    for stream in listener.incoming() {
        if handle.0.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let (handle, reopen) = (handle.clone(), reopen.clone());
        let spawned = thread::Builder::new().name("nbd-ctl".into()).spawn(move || {
            if let Err(e) = session(stream, &handle, &reopen) {
                tracing::debug!("nbd control: {e}");
            }
        });
        if let Err(e) = spawned {
            tracing::warn!("nbd control: cannot start a thread: {e}");
        }
    }
}

fn session(stream: UnixStream, handle: &Handle, reopen: &Reopen) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        let n = (&mut reader).take(MAX_LINE).read_line(&mut line)?;
        if n == 0 {
            return Ok(());
        }
        if !line.ends_with('\n') && n as u64 == MAX_LINE {
            writer.write_all(b"error command line too long\n")?;
            return Ok(());
        }
        let command = line.trim();
        let (reply, stop) = execute(command, handle, reopen);
        writer.write_all(format!("{reply}\n").as_bytes())?;
        if stop {
            handle.stop();
            return Ok(());
        }
    }
}

/// Runs one command; the reply line, and whether the server must stop once it is sent.
fn execute(command: &str, handle: &Handle, reopen: &Reopen) -> (String, bool) {
    let export = &handle.0.export;
    let answer = |r: io::Result<()>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("error {}", one_line(&e.to_string())),
    };
    match command {
        "pause" => {
            let r = handle.pause();
            match &r {
                Ok(()) => tracing::info!("nbd {export}: paused"),
                Err(e) => tracing::warn!("nbd {export}: pause failed: {e}"),
            }
            (answer(r), false)
        }
        "resume" => {
            if !handle.paused() {
                return (answer(Err(io::Error::other("not paused"))), false);
            }
            let r =
                reopen().map_err(|e| io::Error::new(e.kind(), format!("reopen: {e}"))).and_then(|d| handle.resume(d));
            match &r {
                Ok(()) => tracing::info!("nbd {export}: resumed"),
                Err(e) => tracing::warn!("nbd {export}: resume failed: {e}"),
            }
            (answer(r), false)
        }
        "stats" => (handle.stats().to_string(), false),
        "stop" => {
            // Flush and close now, so that `ok` means the data is safe; the server itself stops once it is sent.
            let r = handle.0.gate.stop();
            tracing::info!("nbd {export}: stopping");
            (answer(r), true)
        }
        other => (format!("error unknown command {:?}", one_line(other)), false),
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}
