//! The block server, our tapdisk: one disk ([`BlockDevice`]) served over NBD on a unix socket, for QEMU (which
//! cannot open differencing VHD chains itself) and for tools such as a backup client, plus a control socket through
//! which the toolstack pauses, resumes and stops it, as `tap-ctl` drives tapdisk on XenServer.
//!
//! - [`Server`]: the listening socket, one thread per connection ([`conn`]), the pause gate ([`gate`]).
//! - [`control`]: the line protocol of the control socket and its client, [`control()`].
//! - [`tapdisk`]: the process around it (pid file, signals), run by the toolstack's re-executed binary.
//!
//! The protocol subset, the control commands and the process lifecycle are described in `docs/block-server.md`.

mod conn;
pub mod control;
#[doc(hidden)]
pub mod fuzzing;
mod gate;
mod handshake;
pub mod proto;
pub mod tapdisk;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use crate::block::BlockDevice;

pub use control::{Reopen, control, control_with_timeout};

/// Worker threads per connection unless [`Server::set_workers`] says otherwise.
pub const DEFAULT_WORKERS: usize = 8;

/// Counters since the server started, as the `stats` control command reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub reads: u64,
    pub writes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub flushes: u64,
    pub trims: u64,
    pub zeroes: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Connections open now, and since the start.
    pub connections: u64,
    pub connections_total: u64,
    pub paused: bool,
}

impl fmt::Display for Stats {
    /// One line of `key=value` pairs separated by spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "reads={} writes={} bytes_read={} bytes_written={} flushes={} trims={} zeroes={} errors={} \
             connections={} connections_total={} paused={}",
            self.reads,
            self.writes,
            self.bytes_read,
            self.bytes_written,
            self.flushes,
            self.trims,
            self.zeroes,
            self.errors,
            self.connections,
            self.connections_total,
            u8::from(self.paused)
        )
    }
}

#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    flushes: AtomicU64,
    trims: AtomicU64,
    zeroes: AtomicU64,
    errors: AtomicU64,
    connections: AtomicU64,
    connections_total: AtomicU64,
}

/// What the accept loop, the connections and the control channel share.
struct Shared {
    export: String,
    gate: gate::Gate,
    stats: Counters,
    workers: usize,
    stopping: AtomicBool,
    /// A clone of every open client stream, to shut them down on stop.
    streams: Mutex<HashMap<u64, UnixStream>>,
    /// The sockets whose accept loops must be woken on stop (by connecting to them).
    listening: Mutex<Vec<PathBuf>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A unix socket file that is removed when this is dropped.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds a unix socket at `path` with permissions `mode`. A socket file left by a dead server (nothing accepts on
/// it) is replaced; a live one is an `AddrInUse` error, as is any other kind of file.
fn bind_socket(path: &Path, mode: u32) -> io::Result<(UnixListener, SocketFile)> {
    let listener = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
            if !is_socket || UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("{} is in use", path.display())));
            }
            std::fs::remove_file(path)?;
            UnixListener::bind(path)?
        }
        Err(e) => return Err(e),
    };
    let file = SocketFile(path.to_path_buf());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok((listener, file))
}

/// An NBD server for one export, bound and ready to [`serve`](Server::serve).
pub struct Server {
    listener: UnixListener,
    socket: SocketFile,
    control: Option<(UnixListener, SocketFile, Reopen)>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("socket", &self.socket.0).field("export", &self.shared.export).finish()
    }
}

impl Server {
    /// Binds `socket_path` (mode 0666: QEMU runs as another user; the directory must let it through) to serve
    /// `device` as the export `export_name`. Nothing is accepted until [`serve`](Server::serve).
    pub fn bind(socket_path: &Path, export_name: &str, device: Arc<dyn BlockDevice>) -> io::Result<Server> {
        let (listener, socket) = bind_socket(socket_path, 0o666)?;
        let shared = Arc::new(Shared {
            export: export_name.to_owned(),
            gate: gate::Gate::new(device),
            stats: Counters::default(),
            workers: DEFAULT_WORKERS,
            stopping: AtomicBool::new(false),
            streams: Mutex::new(HashMap::new()),
            listening: Mutex::new(vec![socket_path.to_path_buf()]),
        });
        Ok(Server { listener, socket, control: None, shared })
    }

    /// Also listens for control commands on `ctl_path` (mode 0600); `reopen` opens the disk again on `resume`.
    pub fn with_control(mut self, ctl_path: &Path, reopen: Reopen) -> io::Result<Server> {
        let (listener, file) = bind_socket(ctl_path, 0o600)?;
        lock(&self.shared.listening).push(ctl_path.to_path_buf());
        self.control = Some((listener, file, reopen));
        Ok(self)
    }

    /// Sets the worker threads per connection (at least 1); call before [`serve`](Server::serve).
    pub fn set_workers(&mut self, workers: usize) {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.workers = workers.max(1);
        }
    }

    /// A handle to stop, pause or query the server from other threads.
    pub fn handle(&self) -> Handle {
        Handle(self.shared.clone())
    }

    /// Accepts and serves clients until [`Handle::stop`] (or the `stop` control command). Then it waits for the
    /// requests in flight, flushes the device, closes it and removes the socket files. The result is the final
    /// flush's.
    pub fn serve(self) -> io::Result<()> {
        let Server { listener, socket, control, shared } = self;
        let control_thread = match control {
            Some((l, file, reopen)) => {
                let handle = Handle(shared.clone());
                Some(thread::Builder::new().name("nbd-control".into()).spawn(move || {
                    control::serve(l, handle, reopen);
                    drop(file);
                })?)
            }
            None => None,
        };
        let mut connections: Vec<JoinHandle<()>> = Vec::new();
        let mut next_id = 0u64;
        for stream in listener.incoming() {
            if shared.stopping.load(Ordering::SeqCst) {
                break;
            }
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("nbd {}: accept: {e}", shared.export);
                    // EMFILE and the like: do not spin.
                    thread::sleep(std::time::Duration::from_millis(50));
                    continue;
                }
            };
            connections.retain(|c| !c.is_finished());
            let id = next_id;
            next_id += 1;
            match stream.try_clone() {
                Ok(clone) => {
                    lock(&shared.streams).insert(id, clone);
                }
                Err(e) => {
                    tracing::warn!("nbd {}: {e}", shared.export);
                    continue;
                }
            }
            // A stop between the check above and the registration must not leave this client served.
            if shared.stopping.load(Ordering::SeqCst) {
                lock(&shared.streams).remove(&id);
                break;
            }
            let s = shared.clone();
            let spawned = thread::Builder::new().name("nbd-conn".into()).spawn(move || {
                s.stats.connections.fetch_add(1, Ordering::Relaxed);
                s.stats.connections_total.fetch_add(1, Ordering::Relaxed);
                conn::serve(stream, &s);
                lock(&s.streams).remove(&id);
                s.stats.connections.fetch_sub(1, Ordering::Relaxed);
            });
            match spawned {
                Ok(t) => connections.push(t),
                Err(e) => {
                    tracing::warn!("nbd {}: cannot start a connection thread: {e}", shared.export);
                    lock(&shared.streams).remove(&id);
                }
            }
        }
        drop(listener);
        drop(socket);
        // Handle::stop has shut the streams' read side: readers see EOF, workers drain their queues.
        for c in connections {
            let _ = c.join();
        }
        let result = shared.gate.stop();
        if let Some(t) = control_thread {
            let _ = t.join();
        }
        result
    }
}

/// Controls a running [`Server`] from another thread (what the control channel and signal handlers use).
#[derive(Clone)]
pub struct Handle(Arc<Shared>);

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Handle").field(&self.0.export).finish()
    }
}

impl Handle {
    /// Makes [`Server::serve`] return: no new connections or requests; requests waiting on a paused device fail
    /// with `ESHUTDOWN`; requests running finish. Idempotent; returns at once.
    pub fn stop(&self) {
        let shared = &self.0;
        if shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        shared.gate.begin_stop();
        for stream in lock(&shared.streams).values() {
            let _ = stream.shutdown(Shutdown::Read);
        }
        // Wake the accept loops, which check the stop flag after each connection.
        for path in lock(&shared.listening).iter() {
            let _ = UnixStream::connect(path);
        }
    }

    /// Waits for the requests in flight, flushes the device and closes it; later requests wait for
    /// [`resume`](Handle::resume). Clients stay connected.
    pub fn pause(&self) -> io::Result<()> {
        self.0.gate.pause()
    }

    /// Serves `device` (the disk reopened, perhaps from files renamed or replaced during the pause) and lets the
    /// waiting requests run. Fails unless paused.
    pub fn resume(&self, device: Arc<dyn BlockDevice>) -> io::Result<()> {
        if self.0.stopping.load(Ordering::SeqCst) {
            return Err(io::Error::other("the server is stopping"));
        }
        self.0.gate.resume(device)
    }

    /// True between a successful pause and the next resume.
    pub fn paused(&self) -> bool {
        self.0.gate.paused()
    }

    pub fn stats(&self) -> Stats {
        let c = &self.0.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            reads: get(&c.reads),
            writes: get(&c.writes),
            bytes_read: get(&c.bytes_read),
            bytes_written: get(&c.bytes_written),
            flushes: get(&c.flushes),
            trims: get(&c.trims),
            zeroes: get(&c.zeroes),
            errors: get(&c.errors),
            connections: get(&c.connections),
            connections_total: get(&c.connections_total),
            paused: self.0.gate.paused(),
        }
    }
}
