//! The block servers: one process per attached VHD VDI (our tapdisk), serving its chain over NBD on a unix socket
//! that libvirt gives QEMU as a network disk.
//!
//! A block server is the daemon's own executable run as `xapi-server tapdisk …`, in its own process group: it keeps
//! serving when the daemon is killed or restarted (running VMs keep their disks), and a restarted daemon adopts it
//! again from its pid file. Files per VDI in the tapdisk directory: `<uuid>.sock` (NBD), `<uuid>.ctl` (control),
//! `<uuid>.pid`, `<uuid>.log`.
//!
//! Besides VBDs, NBD export connections (`storage::nbd_export`) use servers: they [`hold`](Tapdisks::hold) one
//! (started read-only if none runs) and the holds keep it running until the last one is released.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;
use xapi_types::generated::errors as codes;

use crate::error::ApiError;

/// The longest unix socket path the kernel takes is 107 bytes; longer data directories use a directory in /tmp.
const MAX_SOCKET_PATH: usize = 100;

pub struct Tapdisks {
    dir: PathBuf,
    procs: Mutex<HashMap<String, Proc>>,
}

struct Proc {
    pid: u32,
    /// Set for servers this daemon started (so it reaps them); adopted ones are not its children.
    child: Option<Child>,
    writable: bool,
    /// A VBD asked for it ([`Tapdisks::ensure`]); adopted servers count as asked for.
    claimed: bool,
    /// NBD export connections using it ([`Tapdisks::hold`]): while there are any, it is never stopped.
    holds: usize,
}

/// A block server held for an NBD export connection ([`Tapdisks::hold`]).
#[derive(Debug)]
pub struct Held {
    /// Its NBD socket and export name.
    pub socket: PathBuf,
    pub export: String,
    /// Whether it serves read-write (a running VM's).
    pub writable: bool,
    /// Which server it is: [`Tapdisks::release`] names it.
    pub pid: u32,
}

/// A paused block server: resumed (reopening its chain from the files) when dropped.
pub struct Paused {
    ctl: PathBuf,
}

impl Drop for Paused {
    fn drop(&mut self) {
        match storage_repo::nbd::control(&self.ctl, "resume") {
            Ok(r) if r.trim() == "ok" => {}
            Ok(r) => tracing::error!(ctl = %self.ctl.display(), reply = r.trim(), "a block server did not resume"),
            Err(e) => tracing::error!(ctl = %self.ctl.display(), error = %e, "a block server did not resume"),
        }
    }
}

fn tapdisk_error(what: String) -> ApiError {
    tracing::error!(%what, "block server");
    ApiError::new(&codes::SR_BACKEND_FAILURE, ["TAPDISK".to_string(), what, String::new()])
}

impl Tapdisks {
    /// The servers of the daemon whose data directory is `data_dir`. Their sockets must be reachable by QEMU,
    /// which runs as another user and cannot enter a private (0700) data directory: as root they live in
    /// `/run/xapi-rs/td-<hash of the data directory>`, otherwise in `<run_dir>/td` (and in /tmp if that path is
    /// too long for a unix socket).
    pub fn new(data_dir: &Path, run_dir: &Path) -> Tapdisks {
        // FNV-1a: stable across builds, so that a newer daemon finds the servers an older one started.
        let canonical = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        let hash = canonical
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
        let tag = format!("td-{hash:016x}");
        let run = Path::new("/run");
        let dir = if rustix::process::geteuid().is_root() && run.is_dir() {
            run.join("xapi-rs").join(tag)
        } else if run_dir.join("td").join(format!("{}.sock", Uuid::nil())).as_os_str().len() > MAX_SOCKET_PATH {
            std::env::temp_dir().join(format!("xapi-rs-{tag}"))
        } else {
            run_dir.join("td")
        };
        Tapdisks { dir, procs: Mutex::default() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether no block server runs (or is held) at all.
    pub fn none(&self) -> bool {
        self.procs().is_empty()
    }

    fn procs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Proc>> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, uuid: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{uuid}.{ext}"))
    }

    /// Whether VDI `uuid` is being served.
    pub fn running(&self, uuid: &str) -> bool {
        let mut procs = self.procs();
        let live = procs.get_mut(uuid).map(alive);
        if live == Some(false) {
            procs.remove(uuid);
        }
        live == Some(true)
    }

    /// The socket and export name serving VDI `uuid` from `vhd` to a VBD, starting its server if needed (a server
    /// running read-only is restarted if `writable`).
    pub fn ensure(&self, uuid: &Uuid, vhd: &Path, writable: bool) -> Result<(PathBuf, String), ApiError> {
        let key = uuid.to_string();
        let socket = self.path(&key, "sock");
        let mut procs = self.procs();
        if let Some(p) = procs.get_mut(&key) {
            if alive(p) && (p.writable || !writable) {
                p.claimed = true;
                return Ok((socket, key));
            }
            // Export connections holding it lose it (their releases no longer match a server).
            let p = procs.remove(&key).expect("just seen");
            stop_proc(&self.ctl(&key), p);
        }
        let mut p = self.spawn(&key, vhd, writable)?;
        p.claimed = true;
        procs.insert(key.clone(), p);
        Ok((socket, key))
    }

    /// Holds VDI `uuid`'s server for an NBD export connection: the one running (whatever its mode), or a new
    /// read-only one. Until it is [`release`](Tapdisks::release)d, [`stop_all_but`](Tapdisks::stop_all_but)
    /// leaves the server alone.
    pub fn hold(&self, uuid: &Uuid, vhd: &Path) -> Result<Held, ApiError> {
        let key = uuid.to_string();
        let socket = self.path(&key, "sock");
        let mut procs = self.procs();
        if let Some(p) = procs.get_mut(&key)
            && alive(p)
        {
            p.holds += 1;
            return Ok(Held { socket, export: key, writable: p.writable, pid: p.pid });
        }
        // A server that died is started again as it was (a VM may be using it); a new one is read-only.
        let (writable, claimed) = match procs.remove(&key) {
            Some(dead) => {
                let was = (dead.writable, dead.claimed);
                stop_proc(&self.ctl(&key), dead);
                was
            }
            None => (false, false),
        };
        let mut p = self.spawn(&key, vhd, writable)?;
        p.holds = 1;
        p.claimed = claimed;
        let pid = p.pid;
        procs.insert(key.clone(), p);
        Ok(Held { socket, export: key, writable, pid })
    }

    /// Releases a [`hold`](Tapdisks::hold) on VDI `uuid`'s server `pid` (nothing if that server is gone and
    /// another serves the VDI now). The last one stops a server that no VBD ever asked for and answers `false`;
    /// `true` means a VBD asked for it and the caller must find out whether one still uses it
    /// (`storage::release_unused`).
    pub fn release(&self, uuid: &str, pid: u32) -> bool {
        let mut procs = self.procs();
        let Some(p) = procs.get_mut(uuid).filter(|p| p.pid == pid) else { return false };
        p.holds = p.holds.saturating_sub(1);
        if p.holds > 0 {
            return false;
        }
        if p.claimed {
            return true;
        }
        let p = procs.remove(uuid).expect("just seen");
        stop_proc(&self.ctl(uuid), p);
        tracing::info!(vdi = uuid, "stopped the block server of a finished NBD export");
        false
    }

    /// Whether an NBD export connection holds VDI `uuid`'s server while it serves read-only (a VBD attaching the
    /// VDI read-write would have to restart it under the export's feet).
    pub fn held_read_only(&self, uuid: &str) -> bool {
        self.procs().get(uuid).is_some_and(|p| p.holds > 0 && !p.writable)
    }

    /// Whether an NBD export connection holds VDI `uuid`'s server.
    pub fn held(&self, uuid: &str) -> bool {
        self.procs().get(uuid).is_some_and(|p| p.holds > 0)
    }

    /// Starts a server for `key` (the VDI uuid) serving `vhd`; waits until its NBD socket accepts connections.
    fn spawn(&self, key: &str, vhd: &Path, writable: bool) -> Result<Proc, ApiError> {
        let socket = self.path(key, "sock");
        fs::create_dir_all(&self.dir).map_err(|e| tapdisk_error(format!("{}: {e}", self.dir.display())))?;
        {
            use std::os::unix::fs::PermissionsExt;
            // QEMU runs as another user: it must reach the sockets (the NBD socket is 0666, the control socket
            // 0600).
            let _ = fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o755));
            if let Some(parent) = self.dir.parent() {
                let _ = fs::set_permissions(parent, fs::Permissions::from_mode(0o755));
            }
        }
        for ext in ["sock", "ctl", "pid"] {
            let _ = fs::remove_file(self.path(key, ext));
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(key, "log"))
            .map_err(|e| tapdisk_error(format!("{}: {e}", self.dir.display())))?;
        let exe = std::env::current_exe().map_err(|e| tapdisk_error(format!("cannot find my own executable: {e}")))?;
        let mut cmd = Command::new(exe);
        cmd.arg("tapdisk")
            .arg("--socket")
            .arg(&socket)
            .arg("--ctl")
            .arg(self.ctl(key))
            .arg("--export")
            .arg(key)
            .arg("--pidfile")
            .arg(self.path(key, "pid"))
            .arg("--vhd")
            .arg(vhd);
        if !writable {
            cmd.arg("--read-only");
        }
        {
            use std::os::unix::process::CommandExt;
            // Its own process group: a Ctrl-C or SIGTERM aimed at the daemon's group does not take VMs' disks away.
            cmd.process_group(0);
        }
        let log2 = log.try_clone().map_err(|e| tapdisk_error(e.to_string()))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| tapdisk_error(format!("cannot start the block server: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let tail = log_tail(&self.path(key, "log"));
                return Err(tapdisk_error(format!("the block server for VDI {key} exited ({status}): {tail}")));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(tapdisk_error(format!("the block server for VDI {key} did not start within 10 s")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        tracing::info!(vdi = %key, pid = child.id(), writable, "started a block server");
        Ok(Proc { pid: child.id(), child: Some(child), writable, claimed: false, holds: 0 })
    }

    fn ctl(&self, key: &str) -> PathBuf {
        self.path(key, "ctl")
    }

    /// Pauses VDI `uuid`'s server (if it runs) until the guard is dropped: in between, its files may be renamed
    /// and replaced (a snapshot); it reopens them by name on resume.
    pub fn pause(&self, uuid: &Uuid) -> Result<Option<Paused>, ApiError> {
        let key = uuid.to_string();
        if !self.running(&key) {
            return Ok(None);
        }
        let ctl = self.ctl(&key);
        match storage_repo::nbd::control(&ctl, "pause") {
            Ok(r) if r.trim() == "ok" => Ok(Some(Paused { ctl })),
            Ok(r) => Err(tapdisk_error(format!("pausing the block server of VDI {key}: {}", r.trim()))),
            Err(e) => Err(tapdisk_error(format!("pausing the block server of VDI {key}: {e}"))),
        }
    }

    /// Stops every server but those of `keep` and those an NBD export holds; returns how many stopped. They are
    /// stopped under the lock: a server started meanwhile for the same VDI would lose its socket file to the
    /// exiting one.
    pub fn stop_all_but(&self, keep: &[String]) -> usize {
        let mut procs = self.procs();
        let gone: Vec<String> =
            procs.iter().filter(|(k, p)| p.holds == 0 && !keep.contains(k)).map(|(k, _)| k.clone()).collect();
        for key in &gone {
            let p = procs.remove(key).expect("just seen");
            stop_proc(&self.ctl(key), p);
            tracing::info!(vdi = %key, "stopped a block server");
        }
        gone.len()
    }

    /// At start: takes over the servers a previous run of the daemon left running (their pid files name live
    /// block-server processes); stale files are removed.
    pub fn adopt(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("pid") {
                continue;
            }
            let Some(key) = path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else { continue };
            let pid = fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<u32>().ok());
            let cmdline = pid.and_then(|p| fs::read(format!("/proc/{p}/cmdline")).ok()).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            match pid {
                Some(pid) if cmdline.contains(" tapdisk ") && cmdline.contains(&key) => {
                    let writable = !cmdline.contains("--read-only");
                    tracing::info!(vdi = %key, pid, "adopted a running block server");
                    let p = Proc { pid, child: None, writable, claimed: true, holds: 0 };
                    self.procs().insert(key, p);
                }
                _ => {
                    for ext in ["sock", "ctl", "pid"] {
                        let _ = fs::remove_file(self.path(&key, ext));
                    }
                }
            }
        }
    }
}

fn alive(p: &mut Proc) -> bool {
    match &mut p.child {
        Some(c) => matches!(c.try_wait(), Ok(None)),
        None => pid_alive(p.pid),
    }
}

fn pid_alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped by its parent) is not alive.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Asks a server to stop (it flushes first), then SIGTERM after 2 s, then SIGKILL after 7 s; waits until it is gone.
fn stop_proc(ctl: &Path, p: Proc) {
    stop_process(ctl, p);
    // Its log goes with it (a server that failed to start keeps its log: `ensure` reports it).
    let _ = fs::remove_file(ctl.with_extension("log"));
}

fn stop_process(ctl: &Path, mut p: Proc) {
    let _ = storage_repo::nbd::control(ctl, "stop");
    let pid = rustix::process::Pid::from_raw(p.pid as i32);
    let started = Instant::now();
    let mut signalled = None;
    loop {
        let gone = match &mut p.child {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => !pid_alive(p.pid),
        };
        if gone {
            return;
        }
        let (signal, at) = match signalled {
            None => (rustix::process::Signal::TERM, Duration::from_secs(2)),
            Some(_) => (rustix::process::Signal::KILL, Duration::from_secs(7)),
        };
        if started.elapsed() > at && signalled != Some(signal) {
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process(pid, signal);
            }
            signalled = Some(signal);
            if signal == rustix::process::Signal::KILL
                && let Some(c) = &mut p.child
            {
                let _ = c.wait();
                return;
            }
        }
        if started.elapsed() > Duration::from_secs(10) {
            tracing::error!(pid = p.pid, "a block server does not go away");
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}
