//! The block server against real clients (`qemu-img`, `qemu-io`, `qemu-nbd --list`) and against a hand-written
//! client that breaks the protocol. The QEMU tools are required: a test that cannot find them fails.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use storage_repo::block::{BlockDevice, RawFile};
use storage_repo::nbd::proto::*;
use storage_repo::nbd::{self, Handle, Server};
use tempfile::TempDir;

const MIB: u64 = 1 << 20;

/// The path of a QEMU tool; panics (failing the test) if it is not installed.
fn tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/bin", "/usr/local/bin"]) {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed (Debian: apt-get install qemu-utils); the NBD tests need it");
}

fn run(name: &str, args: &[&str]) -> Output {
    Command::new(tool(name)).args(args).stdin(Stdio::null()).output().unwrap()
}

/// Runs a QEMU tool and returns its stdout; panics with its output unless it succeeded.
fn ok(name: &str, args: &[&str]) -> String {
    let out = run(name, args);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{name} {args:?} failed: {text}");
    // qemu-io reports a failed command on stdout and still exits 0.
    assert!(!text.contains("failed:") && !text.contains("Pattern verification failed"), "{name} {args:?}: {text}");
    text
}

/// A raw image of `size` bytes whose every 512-byte sector starts with its index.
fn make_image(path: &Path, size: u64) {
    let mut data = vec![0u8; size as usize];
    for (i, sector) in data.chunks_mut(512).enumerate() {
        sector[..8].copy_from_slice(&(i as u64).to_le_bytes());
        sector[8..].fill((i % 251) as u8);
    }
    fs::write(path, data).unwrap();
}

fn open_raw(path: &Path, writable: bool) -> io::Result<Arc<dyn BlockDevice>> {
    Ok(Arc::new(RawFile::open(path, writable)?))
}

/// An in-process server on a raw image in a temp dir, with a control socket; stopped when dropped.
struct Fixture {
    dir: TempDir,
    image: PathBuf,
    socket: PathBuf,
    ctl: PathBuf,
    handle: Handle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Fixture {
    fn new(size: u64, writable: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.raw");
        make_image(&image, size);
        let (socket, ctl) = (dir.path().join("nbd.sock"), dir.path().join("ctl.sock"));
        let reopen_path = image.clone();
        let server = Server::bind(&socket, "disk", open_raw(&image, writable).unwrap())
            .unwrap()
            .with_control(&ctl, Box::new(move || open_raw(&reopen_path, writable)))
            .unwrap();
        let handle = server.handle();
        let thread = Some(thread::spawn(move || server.serve()));
        Fixture { dir, image, socket, ctl, handle, thread }
    }

    fn url(&self) -> String {
        format!("nbd+unix:///disk?socket={}", self.socket.display())
    }

    fn stop(&mut self) -> io::Result<()> {
        self.handle.stop();
        self.thread.take().map_or(Ok(()), |t| t.join().unwrap())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A minimal NBD client that lets a test send whatever it likes.
struct Client {
    s: UnixStream,
    size: u64,
    flags: u16,
}

impl Client {
    /// Connects and selects `export` with NBD_OPT_GO.
    fn connect(socket: &Path, export: &str) -> io::Result<Client> {
        let mut s = UnixStream::connect(socket)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut hello = [0u8; 18];
        s.read_exact(&mut hello)?;
        assert_eq!(&hello[..8], b"NBDMAGIC");
        assert_eq!(u64::from_be_bytes(hello[8..16].try_into().unwrap()), IHAVEOPT);
        assert_eq!(u16::from_be_bytes([hello[16], hello[17]]), FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        s.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())?;
        let mut data = (export.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(export.as_bytes());
        data.extend_from_slice(&0u16.to_be_bytes());
        send_option(&mut s, OPT_GO, &data)?;
        let (mut size, mut flags) = (0, 0);
        loop {
            let (kind, payload) = read_option_reply(&mut s, OPT_GO)?;
            match kind {
                REP_INFO if payload[..2] == INFO_EXPORT.to_be_bytes() => {
                    size = u64::from_be_bytes(payload[2..10].try_into().unwrap());
                    flags = u16::from_be_bytes([payload[10], payload[11]]);
                }
                REP_INFO => {}
                REP_ACK => return Ok(Client { s, size, flags }),
                e => return Err(io::Error::other(format!("GO refused: {e:#x} {}", String::from_utf8_lossy(&payload)))),
            }
        }
    }

    fn send(&mut self, kind: u16, flags: u16, cookie: u64, offset: u64, len: u32, data: &[u8]) -> io::Result<()> {
        let mut msg = Request { flags, kind, cookie, offset, len }.encode().to_vec();
        msg.extend_from_slice(data);
        self.s.write_all(&msg)
    }

    /// Reads a simple reply header: (error, cookie).
    fn reply(&mut self) -> io::Result<(u32, u64)> {
        let mut h = [0u8; REPLY_LEN];
        self.s.read_exact(&mut h)?;
        assert_eq!(u32::from_be_bytes(h[0..4].try_into().unwrap()), SIMPLE_REPLY_MAGIC);
        Ok((u32::from_be_bytes(h[4..8].try_into().unwrap()), u64::from_be_bytes(h[8..16].try_into().unwrap())))
    }

    fn read(&mut self, offset: u64, len: u32) -> io::Result<Result<Vec<u8>, u32>> {
        self.send(CMD_READ, 0, 1, offset, len, &[])?;
        let (error, cookie) = self.reply()?;
        assert_eq!(cookie, 1);
        if error != 0 {
            return Ok(Err(error));
        }
        let mut data = vec![0u8; len as usize];
        self.s.read_exact(&mut data)?;
        Ok(Ok(data))
    }

    /// Sends a request without payload-in-reply and returns the reply's error.
    fn command(&mut self, kind: u16, flags: u16, offset: u64, len: u32, data: &[u8]) -> io::Result<u32> {
        self.send(kind, flags, 2, offset, len, data)?;
        let (error, cookie) = self.reply()?;
        assert_eq!(cookie, 2);
        Ok(error)
    }

    /// True if the server has closed the connection (reads EOF or a reset).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0) | Err(_))
    }
}

fn send_option(s: &mut UnixStream, option: u32, data: &[u8]) -> io::Result<()> {
    let mut msg = IHAVEOPT.to_be_bytes().to_vec();
    msg.extend_from_slice(&option.to_be_bytes());
    msg.extend_from_slice(&(data.len() as u32).to_be_bytes());
    msg.extend_from_slice(data);
    s.write_all(&msg)
}

fn read_option_reply(s: &mut UnixStream, option: u32) -> io::Result<(u32, Vec<u8>)> {
    let mut h = [0u8; 20];
    s.read_exact(&mut h)?;
    assert_eq!(u64::from_be_bytes(h[0..8].try_into().unwrap()), OPT_REPLY_MAGIC);
    assert_eq!(u32::from_be_bytes(h[8..12].try_into().unwrap()), option);
    let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
    let mut payload = vec![0u8; u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize];
    s.read_exact(&mut payload)?;
    Ok((kind, payload))
}

/// Waits until `cond` holds, up to 10 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn qemu_img_reads_converts_and_compares_through_the_server() {
    let f = Fixture::new(16 * MIB, true);
    let info = ok("qemu-img", &["info", &f.url()]);
    assert!(info.contains("virtual size: 16 MiB (16777216 bytes)"), "{info}");

    // Out of the server, whole, with several requests in flight.
    let copy = f.dir.path().join("copy.raw");
    ok("qemu-img", &["convert", "-m", "8", "-f", "raw", "-O", "raw", &f.url(), copy.to_str().unwrap()]);
    assert_eq!(fs::read(&copy).unwrap(), fs::read(&f.image).unwrap());
    let out = ok("qemu-img", &["compare", "-f", "raw", "-F", "raw", f.image.to_str().unwrap(), &f.url()]);
    assert!(out.contains("Images are identical"), "{out}");

    // Into the server, out of order (-W), from another image.
    let other = f.dir.path().join("other.raw");
    fs::write(&other, (0..16 * MIB).map(|i| (i * 7 / 4096) as u8).collect::<Vec<_>>()).unwrap();
    let src = other.to_str().unwrap();
    ok("qemu-img", &["convert", "-n", "-W", "-m", "8", "-f", "raw", "-O", "raw", src, &f.url()]);
    ok("qemu-img", &["compare", "-f", "raw", "-F", "raw", src, &f.url()]);
    assert_eq!(fs::read(&other).unwrap(), fs::read(&f.image).unwrap());
    let stats = f.handle.stats();
    assert!(stats.reads > 0 && stats.writes > 0 && stats.bytes_written >= 16 * MIB, "{stats}");
    assert_eq!(stats.errors, 0, "{stats}");
}

#[test]
fn qemu_io_writes_reads_zeroes_discards_and_flushes() {
    let f = Fixture::new(8 * MIB, true);
    let url = f.url();
    let out = ok(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0xab 0 1M",
            "-c",
            "read -P 0xab 0 1M",
            "-c",
            "write -P 0xcd -f 1M 64k", // FUA
            "-c",
            "write -z 2M 1M",
            "-c",
            "read -P 0 2M 1M",
            "-c",
            "discard 4M 1M",
            "-c",
            "aio_write -P 0x11 5M 4k",
            "-c",
            "aio_write -P 0x22 6M 4k",
            "-c",
            "aio_flush",
            "-c",
            "flush",
            "-c",
            "read -P 0x11 5M 4k",
            "-c",
            "read -P 0x22 6M 4k",
            &url,
        ],
    );
    assert!(out.contains("wrote 1048576/1048576 bytes at offset 0"), "{out}");
    let data = fs::read(&f.image).unwrap();
    let m = MIB as usize;
    assert!(data[..m].iter().all(|&b| b == 0xab));
    assert!(data[m..m + 65536].iter().all(|&b| b == 0xcd));
    assert!(data[2 * m..3 * m].iter().all(|&b| b == 0));
    assert!(data[5 * m..5 * m + 4096].iter().all(|&b| b == 0x11));
    let stats = f.handle.stats();
    assert!(stats.zeroes >= 1 && stats.trims >= 1 && stats.flushes >= 2, "{stats}");
    assert_eq!(stats.errors, 0, "{stats}");
}

#[test]
fn unaligned_requests_are_served_byte_exact() {
    let f = Fixture::new(MIB, true);
    let mut c = Client::connect(&f.socket, "disk").unwrap();
    assert_eq!(c.size, MIB);
    assert_eq!(c.command(CMD_WRITE, 0, 1000, 3, b"xyz").unwrap(), 0);
    let got = c.read(999, 5).unwrap().unwrap();
    let original = fs::read(&f.image).unwrap();
    assert_eq!(got, [original[999], b'x', b'y', b'z', original[1003]]);
}

#[test]
fn qemu_nbd_lists_the_export_with_its_block_sizes() {
    let f = Fixture::new(4 * MIB, true);
    let out = ok("qemu-nbd", &["--list", "-k", f.socket.to_str().unwrap()]);
    assert!(out.contains("export: 'disk'"), "{out}");
    assert!(out.contains("size:  4194304"), "{out}");
    assert!(out.contains("min block: 512") && out.contains("opt block: 4096"), "{out}");
    assert!(out.contains("max block: 33554432"), "{out}");
    assert!(out.contains(" multi )"), "{out}");
}

#[test]
fn read_only_exports_refuse_writes() {
    let mut f = Fixture::new(4 * MIB, false);
    let before = fs::read(&f.image).unwrap();
    // QEMU sees the flag: opening read-write fails, reading works.
    let out = run("qemu-io", &["-f", "raw", "-c", "write -P 1 0 4k", &f.url()]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() || text.contains("failed"), "{text}");
    ok("qemu-io", &["-r", "-f", "raw", "-c", "read 0 64k", &f.url()]);
    let info = ok("qemu-nbd", &["--list", "-k", f.socket.to_str().unwrap()]);
    assert!(info.contains("( readonly "), "{info}");

    // A client that ignores the flag is refused by the server itself.
    let mut c = Client::connect(&f.socket, "disk").unwrap();
    assert_ne!(c.flags & FLAG_READ_ONLY, 0);
    assert_eq!(c.command(CMD_WRITE, 0, 0, 4, b"evil").unwrap(), EPERM);
    assert_eq!(c.command(CMD_WRITE_ZEROES, 0, 0, 4096, &[]).unwrap(), EPERM);
    assert_eq!(c.command(CMD_TRIM, 0, 0, 4096, &[]).unwrap(), EPERM);
    assert_eq!(c.command(CMD_FLUSH, 0, 0, 0, &[]).unwrap(), 0);
    assert!(c.read(0, 4096).unwrap().is_ok());
    drop(c);
    f.stop().unwrap();
    assert_eq!(fs::read(&f.image).unwrap(), before);
}

#[test]
fn unknown_export_names_are_refused() {
    let f = Fixture::new(MIB, true);
    let out = run("qemu-img", &["info", &format!("nbd+unix:///other?socket={}", f.socket.display())]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no export named \"other\""), "{out:?}");
    assert!(Client::connect(&f.socket, "other").is_err());

    // NBD_OPT_EXPORT_NAME cannot be refused but by hanging up.
    let mut s = UnixStream::connect(&f.socket).unwrap();
    s.read_exact(&mut [0u8; 18]).unwrap();
    s.write_all(&FLAG_C_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
    send_option(&mut s, OPT_EXPORT_NAME, b"other").unwrap();
    assert_eq!(s.read(&mut [0u8; 8]).unwrap(), 0);

    // The right name still works, with NBD_OPT_EXPORT_NAME and the 124 zero bytes for an old client.
    let mut s = UnixStream::connect(&f.socket).unwrap();
    s.read_exact(&mut [0u8; 18]).unwrap();
    s.write_all(&FLAG_C_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
    send_option(&mut s, OPT_LIST, &[]).unwrap();
    let (kind, payload) = read_option_reply(&mut s, OPT_LIST).unwrap();
    assert_eq!((kind, &payload[..]), (REP_SERVER, &b"\0\0\0\x04disk"[..]));
    assert_eq!(read_option_reply(&mut s, OPT_LIST).unwrap().0, REP_ACK);
    send_option(&mut s, OPT_STRUCTURED_REPLY, &[]).unwrap();
    assert_eq!(read_option_reply(&mut s, OPT_STRUCTURED_REPLY).unwrap().0, REP_ERR_UNSUP);
    send_option(&mut s, 42, &[1, 2, 3]).unwrap();
    assert_eq!(read_option_reply(&mut s, 42).unwrap().0, REP_ERR_UNSUP);
    send_option(&mut s, OPT_EXPORT_NAME, b"disk").unwrap();
    let mut reply = [0u8; 134];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(u64::from_be_bytes(reply[..8].try_into().unwrap()), MIB);
    assert!(reply[10..].iter().all(|&b| b == 0));
}

#[test]
fn hostile_clients_get_errors_or_are_dropped_and_the_server_carries_on() {
    let f = Fixture::new(MIB, true);

    // Garbage instead of the handshake.
    let mut s = UnixStream::connect(&f.socket).unwrap();
    s.read_exact(&mut [0u8; 18]).unwrap();
    s.write_all(&[0xff; 64]).unwrap();
    assert_eq!(s.read(&mut [0u8; 1]).unwrap_or(0), 0, "unknown client flags close the connection");
    let mut s = UnixStream::connect(&f.socket).unwrap();
    s.read_exact(&mut [0u8; 18]).unwrap();
    s.write_all(&[0, 0, 0, 1]).unwrap();
    s.write_all(b"not the option magic, at all").unwrap();
    assert_eq!(s.read(&mut [0u8; 1]).unwrap_or(0), 0, "a bad option magic closes the connection");
    // An option claiming 4 GiB of data.
    let mut s = UnixStream::connect(&f.socket).unwrap();
    s.read_exact(&mut [0u8; 18]).unwrap();
    s.write_all(&[0, 0, 0, 1]).unwrap();
    let mut msg = IHAVEOPT.to_be_bytes().to_vec();
    msg.extend_from_slice(&OPT_GO.to_be_bytes());
    msg.extend_from_slice(&u32::MAX.to_be_bytes());
    s.write_all(&msg).unwrap();
    assert_eq!(s.read(&mut [0u8; 1]).unwrap_or(0), 0);
    // Malformed GO data.
    let mut s = UnixStream::connect(&f.socket).unwrap();
    s.read_exact(&mut [0u8; 18]).unwrap();
    s.write_all(&[0, 0, 0, 1]).unwrap();
    send_option(&mut s, OPT_GO, &[0, 0, 1, 0, b'd']).unwrap();
    assert_eq!(read_option_reply(&mut s, OPT_GO).unwrap().0, REP_ERR_INVALID);

    // Requests out of range or malformed get error replies; the connection goes on.
    let mut c = Client::connect(&f.socket, "disk").unwrap();
    assert_eq!(c.read(MIB - 512, 1024).unwrap(), Err(EINVAL), "read past the end");
    assert_eq!(c.read(u64::MAX - 10, 512).unwrap(), Err(EINVAL), "offset + length overflows");
    assert_eq!(c.read(0, MAX_PAYLOAD + 1).unwrap(), Err(EINVAL), "read longer than the maximum");
    assert_eq!(c.command(CMD_WRITE, 0, MIB, 4, b"past").unwrap(), ENOSPC, "write past the end");
    assert_eq!(c.command(CMD_TRIM, 0, MIB, 4096, &[]).unwrap(), EINVAL);
    assert_eq!(c.command(CMD_WRITE_ZEROES, 0, MIB - 4096, 8192, &[]).unwrap(), ENOSPC);
    assert_eq!(c.command(99, 0, 0, 0, &[]).unwrap(), EINVAL, "unknown command");
    assert_eq!(c.command(5, 0, 0, 4096, &[]).unwrap(), EINVAL, "NBD_CMD_CACHE is not advertised");
    assert_eq!(c.command(CMD_WRITE_ZEROES, 1 << 4, 0, 4096, &[]).unwrap(), EINVAL, "FAST_ZERO not advertised");
    assert_eq!(c.read(0, 512).unwrap().unwrap().len(), 512);

    // A WRITE longer than the maximum: its payload is never read, the connection is closed.
    c.send(CMD_WRITE, 0, 3, 0, u32::MAX, &[]).unwrap();
    assert!(c.closed());
    // A bad request magic closes the connection.
    let mut c = Client::connect(&f.socket, "disk").unwrap();
    c.s.write_all(&[0u8; REQUEST_LEN]).unwrap();
    assert!(c.closed());
    // A client that vanishes with requests in flight.
    let mut c = Client::connect(&f.socket, "disk").unwrap();
    for i in 0..64 {
        c.send(CMD_READ, 0, i, 0, 65536, &[]).unwrap();
    }
    drop(c);

    // And the next client is served.
    ok("qemu-io", &["-f", "raw", "-c", "write -P 0x5a 0 64k", "-c", "read -P 0x5a 0 64k", &f.url()]);
    assert!(f.handle.stats().errors >= 9);
}

#[test]
fn requests_are_pipelined_and_answered_by_cookie() {
    let f = Fixture::new(4 * MIB, true);
    let mut c = Client::connect(&f.socket, "disk").unwrap();
    let image = fs::read(&f.image).unwrap();
    for i in 0..100u64 {
        c.send(CMD_READ, 0, 1000 + i, i * 4096, 4096, &[]).unwrap();
    }
    let mut seen = [false; 100];
    for _ in 0..100 {
        let (error, cookie) = c.reply().unwrap();
        assert_eq!(error, 0);
        let i = (cookie - 1000) as usize;
        let mut data = vec![0u8; 4096];
        c.s.read_exact(&mut data).unwrap();
        assert_eq!(data, image[i * 4096..(i + 1) * 4096]);
        assert!(!std::mem::replace(&mut seen[i], true));
    }
    // NBD_CMD_DISC: the server closes after answering what was sent before it.
    c.send(CMD_FLUSH, 0, 7, 0, 0, &[]).unwrap();
    c.send(CMD_DISC, 0, 8, 0, 0, &[]).unwrap();
    assert_eq!(c.reply().unwrap(), (0, 7));
    assert!(c.closed());
}

#[test]
fn several_clients_at_once() {
    let f = Fixture::new(8 * MIB, true);
    let _a = Client::connect(&f.socket, "disk").unwrap();
    let _b = Client::connect(&f.socket, "disk").unwrap();
    wait_for("two connections", || f.handle.stats().connections == 2);
    let url = f.url();
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let url = url.clone();
            thread::spawn(move || {
                let (pattern, offset) = (format!("{:#x}", 0x10 + i), format!("{}M", i * 2));
                let write = format!("write -P {pattern} {offset} 2M");
                let read = format!("read -P {pattern} {offset} 2M");
                ok("qemu-io", &["-f", "raw", "-c", &write, "-c", &read, &url]);
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let stats = f.handle.stats();
    assert!(stats.connections_total >= 6, "{stats}");
    // The qemu-io connections are gone once their server threads have noticed.
    wait_for("the qemu-io connections to close", || {
        nbd::control(&f.ctl, "stats").unwrap().contains("connections=2 connections_total=6 paused=0")
    });
}

#[test]
fn pause_closes_the_disk_and_resume_reopens_it_by_path_with_clients_connected() {
    let f = Fixture::new(4 * MIB, true);
    let mut c = Client::connect(&f.socket, "disk").unwrap();
    assert_eq!(c.command(CMD_WRITE, 0, 0, 4, b"old!").unwrap(), 0);

    assert_eq!(nbd::control(&f.ctl, "pause").unwrap(), "ok");
    assert_eq!(nbd::control(&f.ctl, "pause").unwrap(), "ok", "pausing twice is harmless");
    assert!(nbd::control(&f.ctl, "stats").unwrap().contains("paused=1"));
    // The write reached the file before pause answered.
    assert_eq!(&fs::read(&f.image).unwrap()[..4], b"old!");

    // A request from our client and a whole qemu-io run wait while paused.
    let raw_client = thread::spawn(move || {
        let data = c.read(0, 4).unwrap().unwrap();
        (c, data)
    });
    let url = f.url();
    let qemu = thread::spawn(move || ok("qemu-io", &["-f", "raw", "-c", "read -P 0x77 4k 4k", &url]));
    thread::sleep(Duration::from_millis(300));
    assert!(!raw_client.is_finished() && !qemu.is_finished(), "requests must wait while paused");

    // As a snapshot does: the file is replaced under its name.
    let replacement = f.dir.path().join("new.raw");
    let mut content = vec![0x77u8; 4 * MIB as usize];
    content[..4].copy_from_slice(b"new!");
    fs::write(&replacement, &content).unwrap();
    fs::rename(&replacement, &f.image).unwrap();

    assert_eq!(nbd::control(&f.ctl, "resume").unwrap(), "ok");
    let (mut c, data) = raw_client.join().unwrap();
    assert_eq!(data, b"new!");
    qemu.join().unwrap();
    // Writes go to the new file.
    assert_eq!(c.command(CMD_WRITE, CMD_FLAG_FUA, 8, 4, b"more").unwrap(), 0);
    assert_eq!(&fs::read(&f.image).unwrap()[..12], b"new!\x77\x77\x77\x77more");

    let err = nbd::control(&f.ctl, "resume").unwrap_err();
    assert!(err.to_string().contains("not paused"), "{err}");
    let err = nbd::control(&f.ctl, "frobnicate").unwrap_err();
    assert!(err.to_string().contains("unknown command"), "{err}");
}

#[test]
fn a_failed_reopen_keeps_the_server_paused_until_a_resume_succeeds() {
    let f = Fixture::new(MIB, true);
    let mut c = Client::connect(&f.socket, "disk").unwrap();
    nbd::control(&f.ctl, "pause").unwrap();
    let moved = f.dir.path().join("moved.raw");
    fs::rename(&f.image, &moved).unwrap();
    let err = nbd::control(&f.ctl, "resume").unwrap_err();
    assert!(err.to_string().contains("reopen"), "{err}");
    assert!(f.handle.paused());
    fs::rename(&moved, &f.image).unwrap();
    nbd::control(&f.ctl, "resume").unwrap();
    assert!(c.read(0, 512).unwrap().is_ok());
}

#[test]
fn stop_over_control_flushes_fails_waiting_requests_and_removes_the_sockets() {
    let mut f = Fixture::new(MIB, true);
    let mut c = Client::connect(&f.socket, "disk").unwrap();
    nbd::control(&f.ctl, "pause").unwrap();
    c.send(CMD_READ, 0, 5, 0, 512, &[]).unwrap();
    thread::sleep(Duration::from_millis(100));
    assert_eq!(nbd::control(&f.ctl, "stop").unwrap(), "ok");
    assert_eq!(c.reply().unwrap(), (ESHUTDOWN, 5), "a request waiting on a paused server gets ESHUTDOWN");
    assert!(c.closed());
    f.thread.take().unwrap().join().unwrap().unwrap();
    assert!(!f.socket.exists() && !f.ctl.exists());
}

#[test]
fn sockets_are_open_to_qemu_and_the_control_socket_to_root_only() {
    let f = Fixture::new(MIB, true);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&f.socket), 0o666);
    assert_eq!(mode(&f.ctl), 0o600);
    // A second server on the same socket is refused; a stale socket file is replaced.
    let err = Server::bind(&f.socket, "disk", open_raw(&f.image, false).unwrap()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    let stale = f.dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let s = Server::bind(&stale, "disk", open_raw(&f.image, false).unwrap()).unwrap();
    drop(s);
    assert!(!stale.exists(), "an unserved server removes its socket when dropped");
}

fn sigterm(child: &std::process::Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
}

/// The `nbd-serve` binary: pid file, SIGTERM, clean exit.
#[test]
fn the_process_writes_its_pidfile_serves_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.raw");
    make_image(&image, 4 * MIB);
    let (socket, ctl, pidfile) = (dir.path().join("s"), dir.path().join("c"), dir.path().join("pid"));
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_nbd-serve"))
            .args(["--socket", socket.to_str().unwrap(), "--ctl", ctl.to_str().unwrap(), "--export", "vdi"])
            .args(["--pidfile", pidfile.to_str().unwrap(), "--raw", image.to_str().unwrap()])
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    wait_for("the pid file", || pidfile.exists());
    assert_eq!(fs::read_to_string(&pidfile).unwrap().trim(), child.id().to_string());
    let url = format!("nbd+unix:///vdi?socket={}", socket.display());
    ok("qemu-io", &["-f", "raw", "-c", "write -P 0x42 1M 1M", &url]);
    sigterm(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!socket.exists() && !ctl.exists() && !pidfile.exists());
    assert!(fs::read(&image).unwrap()[MIB as usize..2 * MIB as usize].iter().all(|&b| b == 0x42));

    // And through the control socket.
    let mut child = spawn();
    wait_for("the pid file", || pidfile.exists());
    assert!(nbd::control(&ctl, "stats").unwrap().starts_with("reads=0 "));
    assert_eq!(nbd::control(&ctl, "stop").unwrap(), "ok");
    assert!(child.wait().unwrap().success());
    assert!(!socket.exists() && !pidfile.exists());

    // A disk that cannot be opened: a clear error, nothing left behind.
    let out = Command::new(env!("CARGO_BIN_EXE_nbd-serve"))
        .args(["--socket", socket.to_str().unwrap(), "--ctl", ctl.to_str().unwrap(), "--export", "vdi"])
        .args(["--pidfile", pidfile.to_str().unwrap(), "--vhd", dir.path().join("none.vhd").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("open"), "{out:?}");
    assert!(!socket.exists() && !pidfile.exists());
}

/// A disk whose every read takes `delay`: like a real disk, it benefits from requests served concurrently.
struct Slow {
    inner: Arc<dyn BlockDevice>,
    delay: Duration,
}

impl BlockDevice for Slow {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        thread::sleep(self.delay);
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        self.inner.flush()
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.discard(offset, len)
    }
}

#[test]
fn a_slow_disk_gets_requests_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.raw");
    make_image(&image, MIB);
    let socket = dir.path().join("nbd.sock");
    let delay = Duration::from_millis(40);
    let slow = Arc::new(Slow { inner: open_raw(&image, true).unwrap(), delay });
    let server = Server::bind(&socket, "disk", slow).unwrap();
    let handle = server.handle();
    let thread = thread::spawn(move || server.serve());

    let mut c = Client::connect(&socket, "disk").unwrap();
    // The first read is served in line and shows the disk is slow; the next ones go to the 8 workers.
    assert!(c.read(0, 4096).unwrap().is_ok());
    let started = Instant::now();
    for i in 0..16u64 {
        c.send(CMD_READ, 0, i, i * 4096, 4096, &[]).unwrap();
    }
    for _ in 0..16 {
        let (error, _) = c.reply().unwrap();
        assert_eq!(error, 0);
        c.s.read_exact(&mut [0u8; 4096]).unwrap();
    }
    let took = started.elapsed();
    assert!(took < delay * 8, "16 reads of {delay:?} took {took:?}: not served concurrently");
    handle.stop();
    thread.join().unwrap().unwrap();
}
