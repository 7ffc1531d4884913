//! The NBD export (`VDI.get_nbd_info`): VDIs read over TCP by backup tools, as XenServer's `xapi-nbd` serves them
//! on port 10809.
//!
//! A client names its export `/<vdi-uuid>?session_id=<session ref>` (the `exportname` that `VDI.get_nbd_info`
//! answers). Per connection: the server side of the fixed newstyle handshake; the session and the VDI are checked;
//! the VDI's block server is held ([`Tapdisks::hold`](super::tapdisk::Tapdisks::hold): the running one, or a new
//! read-only one) and reached over its unix socket with the client side of the handshake; then requests go to it
//! and its replies come back unchanged until either side closes. When the connection ends the hold is released
//! (the server stops if no VBD uses it).
//!
//! **The export is read-only**, as on XenServer (`xapi-nbd` plugs a read-only VBD): the client is told
//! `NBD_FLAG_READ_ONLY`, and a client that sends a write, trim or write-zeroes all the same is disconnected (the
//! block server may be a running VM's, which writes). Plain TCP: TLS is not implemented yet.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use storage_repo::nbd::proto::*;
use uuid::Uuid;
use xapi_types::generated::errors as codes;

use super::Backend;
use crate::error::ApiError;
use crate::hv::rec::{Rec, class};
use crate::state::State;

/// A client (or a block server) silent for this long during the handshake is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;
/// Option replies longer than this from a block server are not read.
const MAX_REPLY_DATA: u32 = 64 << 10;
/// What the export's flags never offer: everything that writes.
const WRITE_FLAGS: u16 = FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES | FLAG_SEND_FUA;

/// The VDI file behind VDI `vdi` if it can be exported: `None` while its SR is not attached here. A VDI of
/// `type` `cbt_metadata` (as xapi) or of an SR that is not `ext` answers `VDI_INCOMPATIBLE_TYPE [vdi, type]`; a
/// base copy (`managed=false`) `VDI_NOT_MANAGED`.
pub fn exportable(state: &State, vdi: &str) -> Result<Option<(Uuid, PathBuf)>, ApiError> {
    let vdi_c = class("VDI");
    let row = state.store.get(vdi_c, vdi)?;
    let rec = Rec::new(vdi_c, &row.fields);
    let incompatible = || ApiError::new(&codes::VDI_INCOMPATIBLE_TYPE, [vdi, rec.str("type")]);
    if rec.str("type") == "cbt_metadata" {
        return Err(incompatible());
    }
    let fsr = match state.storage.backend(rec.str("SR")) {
        Ok(Backend::Ext(fsr)) => fsr,
        Ok(Backend::Iso(_)) => return Err(incompatible()),
        Err(_) => return Ok(None),
    };
    if !rec.bool("managed") {
        return Err(ApiError::new(&codes::VDI_NOT_MANAGED, [vdi]));
    }
    let (uuid, _) = super::vdi_uuid(state, vdi)?;
    Ok(Some((uuid, fsr.path(&uuid))))
}

/// The export name of VDI `vdi_uuid` for session `session`, as `VDI.get_nbd_info` answers it.
pub fn export_name(vdi_uuid: &str, session: &str) -> String {
    format!("/{vdi_uuid}?session_id={session}")
}

/// What an export name says: `/<vdi-uuid>?session_id=<ref>` (the slash may be left out; the ref may be
/// percent-encoded; other query parameters are ignored).
#[derive(Debug, PartialEq, Eq)]
struct ExportName {
    vdi: Uuid,
    session: String,
}

fn parse_export_name(name: &[u8]) -> Option<ExportName> {
    let name = std::str::from_utf8(name).ok()?;
    let name = name.strip_prefix('/').unwrap_or(name);
    let (path, query) = name.split_once('?')?;
    let vdi = Uuid::try_parse(path).ok()?;
    let session = query.split('&').find_map(|kv| kv.strip_prefix("session_id="))?;
    let session = percent_decode(session)?;
    (!session.is_empty()).then_some(ExportName { vdi, session })
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            // Two hex digits exactly (`from_str_radix` alone would take a sign: `%+1`).
            let hex = b.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Why an export is refused during option haggling.
#[derive(Debug)]
struct Refusal {
    /// `NBD_REP_ERR_UNKNOWN` (no such export here) or `NBD_REP_ERR_POLICY` (not for this client).
    kind: u32,
    message: String,
}

fn unknown(message: impl Into<String>) -> Refusal {
    Refusal { kind: REP_ERR_UNKNOWN, message: message.into() }
}

fn policy(message: impl Into<String>) -> Refusal {
    Refusal { kind: REP_ERR_POLICY, message: message.into() }
}

/// Checks an export name: a live session, a VDI that exists and can be exported. Answers its file.
fn authorize(state: &State, name: &[u8]) -> Result<(Uuid, PathBuf), Refusal> {
    let Some(n) = parse_export_name(name) else {
        return Err(unknown("export names are /<vdi-uuid>?session_id=<session>, as VDI.get_nbd_info answers"));
    };
    state.check_session(&n.session).map_err(|_| policy("the session is not valid"))?;
    let vdi = state.store.by_uuid(class("VDI"), &n.vdi.to_string()).map_err(|_| unknown("no such VDI"))?;
    match exportable(state, &vdi) {
        Ok(Some(found)) => Ok(found),
        Ok(None) => Err(unknown("the VDI's SR is not attached on this host")),
        Err(e) => Err(policy(format!("this VDI cannot be exported: {}", e.description().join(" ")))),
    }
}

/// A hold on a VDI's block server for one connection, released when dropped.
struct Hold {
    state: Arc<State>,
    uuid: String,
    pid: u32,
}

impl Drop for Hold {
    fn drop(&mut self) {
        super::release_export(&self.state, &self.uuid, self.pid);
    }
}

/// A block server reached for one connection, its handshake done.
struct Upstream {
    stream: UnixStream,
    size: u64,
    /// Transmission flags as the client is told them.
    flags: u16,
    /// `NBD_REP_INFO` data other than `NBD_INFO_EXPORT` and `NBD_INFO_NAME` (block sizes), to pass on.
    infos: Vec<Vec<u8>>,
    _hold: Hold,
}

/// Holds VDI `uuid`'s block server and negotiates `option` (`GO` or `INFO`) with it, asking for `infos`.
fn upstream(state: &Arc<State>, uuid: Uuid, vhd: PathBuf, option: u32, infos: &[u16]) -> Result<Upstream, Refusal> {
    let held = state.storage.tapdisks.hold(&uuid, &vhd).map_err(|e| {
        tracing::warn!(vdi = %uuid, error = %e.description().join(" "), "NBD export: no block server");
        unknown("the VDI's block server could not be started")
    })?;
    let hold = Hold { state: state.clone(), uuid: uuid.to_string(), pid: held.pid };
    let fail = |e: io::Error| {
        tracing::warn!(vdi = %uuid, error = %e, "NBD export: the block server's handshake failed");
        unknown("the VDI's block server does not answer")
    };
    let stream = UnixStream::connect(&held.socket).map_err(fail)?;
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(fail)?;
    stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(fail)?;
    let (size, flags, infos) = client_handshake(&stream, held.export.as_bytes(), option, infos).map_err(fail)?;
    stream.set_read_timeout(None).map_err(fail)?;
    stream.set_write_timeout(None).map_err(fail)?;
    tracing::debug!(vdi = %uuid, pid = held.pid, server_writable = held.writable, "NBD export: a client reads a VDI");
    let flags = (flags | FLAG_READ_ONLY) & !WRITE_FLAGS;
    Ok(Upstream { stream, size, flags, infos, _hold: hold })
}

/// The client side of the fixed newstyle handshake with a block server: `option` (`GO` or `INFO`) for `export`.
/// Answers the size, the transmission flags and the other `NBD_REP_INFO` data.
fn client_handshake(
    mut s: &UnixStream,
    export: &[u8],
    option: u32,
    infos: &[u16],
) -> io::Result<(u64, u16, Vec<Vec<u8>>)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut hello = [0u8; 18];
    s.read_exact(&mut hello)?;
    let handshake_flags = u16::from_be_bytes([hello[16], hello[17]]);
    if hello[0..8] != NBDMAGIC.to_be_bytes()
        || hello[8..16] != IHAVEOPT.to_be_bytes()
        || handshake_flags & FLAG_FIXED_NEWSTYLE == 0
    {
        return Err(bad("not a fixed newstyle NBD server"));
    }
    let no_zeroes = if handshake_flags & FLAG_NO_ZEROES != 0 { FLAG_C_NO_ZEROES } else { 0 };
    let client_flags = FLAG_C_FIXED_NEWSTYLE | no_zeroes;
    let data = info_request(export, infos);
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&client_flags.to_be_bytes());
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(&data);
    s.write_all(&out)?;
    let mut export_info = None;
    let mut others = Vec::new();
    loop {
        let mut h = [0u8; 20];
        s.read_exact(&mut h)?;
        let magic = u64::from_be_bytes(h[0..8].try_into().expect("8 bytes"));
        let opt = u32::from_be_bytes(h[8..12].try_into().expect("4 bytes"));
        let kind = u32::from_be_bytes(h[12..16].try_into().expect("4 bytes"));
        let len = u32::from_be_bytes(h[16..20].try_into().expect("4 bytes"));
        if magic != OPT_REPLY_MAGIC || opt != option || len > MAX_REPLY_DATA {
            return Err(bad("a malformed option reply"));
        }
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data)?;
        match kind {
            REP_ACK => break,
            REP_INFO if data.len() >= 2 => match u16::from_be_bytes([data[0], data[1]]) {
                INFO_EXPORT if data.len() == 12 => {
                    let size = u64::from_be_bytes(data[2..10].try_into().expect("8 bytes"));
                    export_info = Some((size, u16::from_be_bytes([data[10], data[11]])));
                }
                INFO_EXPORT | INFO_NAME => {}
                _ => others.push(data),
            },
            REP_INFO => return Err(bad("a malformed NBD_REP_INFO")),
            k if k & (1 << 31) != 0 => {
                return Err(bad(&format!("the export was refused ({k:#x}: {})", String::from_utf8_lossy(&data))));
            }
            _ => {}
        }
    }
    let (size, flags) = export_info.ok_or_else(|| bad("no NBD_INFO_EXPORT before NBD_REP_ACK"))?;
    Ok((size, flags, others))
}

/// The listener, serving until [`shutdown`](NbdExport::shutdown).
pub struct NbdExport {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    stopping: AtomicBool,
    /// A clone of every client stream, to shut them down on stop.
    clients: Mutex<HashMap<u64, TcpStream>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves the NBD export on `listener` (bound by the caller) from threads of its own.
pub fn spawn(listener: TcpListener, state: Arc<State>) -> io::Result<NbdExport> {
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared { stopping: AtomicBool::new(false), clients: Mutex::default() });
    let sh = shared.clone();
    let accept = thread::Builder::new().name("nbd-export".into()).spawn(move || accept_loop(listener, state, sh))?;
    Ok(NbdExport { addr, shared, accept: Some(accept) })
}

impl NbdExport {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, disconnects every client and waits (at most 15 s) until their holds are released.
    pub fn shutdown(mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for s in lock(&self.shared.clients).values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Wake the accept loop, which checks the flag after each connection.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, state: Arc<State>, shared: Arc<Shared>) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    let next_id = AtomicU64::new(0);
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "NBD export: accept");
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        connections.retain(|c| !c.is_finished());
        if connections.len() >= MAX_CONNECTIONS {
            tracing::warn!(peer = ?stream.peer_addr().ok(), "NBD export: too many connections; one refused");
            continue;
        }
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let Ok(clone) = stream.try_clone() else { continue };
        lock(&shared.clients).insert(id, clone);
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let (st, sh) = (state.clone(), shared.clone());
        let spawned = thread::Builder::new().name("nbd-export-conn".into()).spawn(move || {
            let peer = stream.peer_addr().ok();
            if let Err(e) = serve(&st, stream) {
                tracing::debug!(?peer, error = %e, "NBD export: a connection ended with an error");
            }
            lock(&sh.clients).remove(&id);
        });
        match spawned {
            Ok(t) => connections.push(t),
            Err(e) => {
                tracing::warn!(error = %e, "NBD export: cannot start a connection thread");
                lock(&shared.clients).remove(&id);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while connections.iter().any(|c| !c.is_finished()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
}

fn read_u32<R: Read>(r: &mut R) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u64<R: Read>(r: &mut R) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn reply(w: &mut TcpStream, option: u32, kind: u32, data: &[u8]) -> io::Result<()> {
    w.write_all(&option_reply(option, kind, data))
}

/// One client: the handshake, then the proxying.
fn serve(state: &Arc<State>, tcp: TcpStream) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    tcp.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let mut w = tcp.try_clone()?;
    let mut r = BufReader::with_capacity(64 << 10, tcp);
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    w.write_all(&hello)?;
    let client_flags = read_u32(&mut r)?;
    if client_flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Ok(());
    }
    let no_zeroes = client_flags & FLAG_C_NO_ZEROES != 0;
    let upstream = loop {
        if read_u64(&mut r)? != IHAVEOPT {
            return Ok(());
        }
        let option = read_u32(&mut r)?;
        let len = read_u32(&mut r)?;
        if len > MAX_OPTION_DATA {
            return Ok(());
        }
        let mut data = vec![0u8; len as usize];
        r.read_exact(&mut data)?;
        match option {
            OPT_EXPORT_NAME => {
                // The protocol has no way to refuse this option but hanging up.
                let up = match authorize(state, &data) {
                    Ok((uuid, vhd)) => upstream(state, uuid, vhd, OPT_GO, &[]),
                    Err(e) => Err(e),
                };
                let up = match up {
                    Ok(up) => up,
                    Err(e) => {
                        tracing::info!(reason = %e.message, "NBD export: an export refused (NBD_OPT_EXPORT_NAME)");
                        return Ok(());
                    }
                };
                let mut out = Vec::with_capacity(134);
                out.extend_from_slice(&up.size.to_be_bytes());
                out.extend_from_slice(&up.flags.to_be_bytes());
                if !no_zeroes {
                    out.extend_from_slice(&[0u8; 124]);
                }
                w.write_all(&out)?;
                break up;
            }
            OPT_GO | OPT_INFO => {
                let Some((name, infos)) = parse_info_request(&data) else {
                    reply(&mut w, option, REP_ERR_INVALID, b"malformed NBD_OPT_INFO/NBD_OPT_GO data")?;
                    continue;
                };
                let up = authorize(state, name).and_then(|(uuid, vhd)| upstream(state, uuid, vhd, option, &infos));
                let up = match up {
                    Ok(up) => up,
                    Err(e) => {
                        tracing::info!(reason = %e.message, "NBD export: an export refused");
                        reply(&mut w, option, e.kind, e.message.as_bytes())?;
                        continue;
                    }
                };
                let mut export = INFO_EXPORT.to_be_bytes().to_vec();
                export.extend_from_slice(&up.size.to_be_bytes());
                export.extend_from_slice(&up.flags.to_be_bytes());
                reply(&mut w, option, REP_INFO, &export)?;
                if infos.contains(&INFO_NAME) {
                    let mut info = INFO_NAME.to_be_bytes().to_vec();
                    info.extend_from_slice(name);
                    reply(&mut w, option, REP_INFO, &info)?;
                }
                for info in &up.infos {
                    reply(&mut w, option, REP_INFO, info)?;
                }
                reply(&mut w, option, REP_ACK, &[])?;
                if option == OPT_GO {
                    break up;
                }
                // NBD_OPT_INFO: the block server's connection and the hold end here.
            }
            OPT_ABORT => {
                let _ = reply(&mut w, option, REP_ACK, &[]);
                return Ok(());
            }
            OPT_LIST => {
                // Exports are not listed: their names carry a session.
                if data.is_empty() {
                    reply(&mut w, option, REP_ACK, &[])?;
                } else {
                    reply(&mut w, option, REP_ERR_INVALID, b"NBD_OPT_LIST takes no data")?;
                }
            }
            _ => reply(&mut w, option, REP_ERR_UNSUP, b"option not supported")?,
        }
    };
    w.set_read_timeout(None)?;
    w.set_write_timeout(None)?;
    proxy(r, w, upstream)
}

/// Transmission: requests from the client go to the block server (write requests end the connection: the export
/// is read-only), its replies go back unchanged. Returns when either side has closed.
fn proxy(mut client_r: BufReader<TcpStream>, mut client_w: TcpStream, up: Upstream) -> io::Result<()> {
    let mut server_r = up.stream.try_clone()?;
    let server_w = up.stream.try_clone()?;
    let client_w2 = client_w.try_clone()?;
    let replies = thread::Builder::new().name("nbd-export-replies".into()).spawn(move || {
        let mut buf = vec![0u8; 256 << 10];
        let result = loop {
            match server_r.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    if let Err(e) = client_w.write_all(&buf[..n]) {
                        break Err(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        // The block server has closed (or the client cannot be written to): the client goes too.
        let _ = client_w.shutdown(Shutdown::Both);
        let _ = server_r.shutdown(Shutdown::Both);
        result
    })?;
    let mut server = BufWriter::with_capacity(64 << 10, server_w);
    let requests = forward_requests(&mut client_r, &mut server);
    let _ = server.flush();
    match &requests {
        // The client disconnected or sent NBD_CMD_DISC: the block server answers what it has and closes.
        Ok(()) => {
            let _ = up.stream.shutdown(Shutdown::Write);
        }
        Err(_) => {
            let _ = up.stream.shutdown(Shutdown::Both);
            let _ = client_w2.shutdown(Shutdown::Both);
        }
    }
    let replied = replies.join().unwrap_or_else(|_| Err(io::Error::other("the reply thread panicked")));
    drop(up);
    requests.and(replied)
}

/// Copies request headers from the client to the block server until the client closes or sends `NBD_CMD_DISC`.
fn forward_requests(client: &mut BufReader<TcpStream>, server: &mut BufWriter<UnixStream>) -> io::Result<()> {
    let mut h = [0u8; REQUEST_LEN];
    loop {
        if client.buffer().is_empty() {
            // About to wait for the client: what it sent so far goes out now.
            server.flush()?;
            if client.fill_buf()?.is_empty() {
                return Ok(());
            }
        }
        client.read_exact(&mut h)?;
        let Some(req) = Request::decode(&h) else {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "a request with a bad magic"));
        };
        if matches!(req.kind, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES) {
            tracing::warn!(kind = req.kind, "NBD export: a client wrote to the read-only export; disconnected");
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "a write to a read-only export"));
        }
        server.write_all(&h)?;
        if req.kind == CMD_DISC {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_names_are_xenservers() {
        let vdi = Uuid::parse_str("3f6a1c2e-4b5d-4e6f-8a9b-0c1d2e3f4a5b").unwrap();
        let want = Some(ExportName { vdi, session: "OpaqueRef:1234".into() });
        let name = export_name(&vdi.to_string(), "OpaqueRef:1234");
        assert_eq!(name, "/3f6a1c2e-4b5d-4e6f-8a9b-0c1d2e3f4a5b?session_id=OpaqueRef:1234");
        assert_eq!(parse_export_name(name.as_bytes()), want);
        assert_eq!(parse_export_name(&name.as_bytes()[1..]), want, "without the slash");
        let encoded = "/3f6a1c2e-4b5d-4e6f-8a9b-0c1d2e3f4a5b?x=1&session_id=OpaqueRef%3A1234";
        assert_eq!(parse_export_name(encoded.as_bytes()), want, "percent-encoded, after another parameter");
        for bad in [
            "",
            "/3f6a1c2e-4b5d-4e6f-8a9b-0c1d2e3f4a5b",
            "/3f6a1c2e-4b5d-4e6f-8a9b-0c1d2e3f4a5b?session_id=",
            "/3f6a1c2e-4b5d-4e6f-8a9b-0c1d2e3f4a5b?session=OpaqueRef:1234",
            "/not-a-uuid?session_id=OpaqueRef:1234",
            "/3f6a1c2e-4b5d-4e6f-8a9b-0c1d2e3f4a5b?session_id=%zz",
            "/3f6a1c2e-4b5d-4e6f-8a9b-0c1d2e3f4a5b?session_id=%+1",
            "//3f6a1c2e-4b5d-4e6f-8a9b-0c1d2e3f4a5b?session_id=OpaqueRef:1234",
        ] {
            assert_eq!(parse_export_name(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(parse_export_name(b"\xff?session_id=a"), None, "not UTF-8");
    }
}
