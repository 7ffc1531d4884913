//! Entry points for the NBD fuzz target (`fuzz/fuzz_targets/nbd_session.rs`) and its corpus test: a whole client
//! session — handshake, options, requests with their payloads — as arbitrary bytes, against a real server on a
//! small raw disk. The server must never panic, hang or write outside the disk, whatever the bytes.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::Server;
use crate::block::{BlockDevice, RawFile};

/// The disk the sessions run against.
pub const DISK_SIZE: u64 = 64 << 10;

/// Serves export `fuzz` of a fresh 64 KiB disk in `dir`, sends `bytes` as the client, reads what the server
/// answers until it closes (or 5 s pass), stops the server. Returns the disk's length afterwards (which must
/// still be [`DISK_SIZE`]).
pub fn session(dir: &Path, bytes: &[u8]) -> u64 {
    let disk = dir.join("disk.raw");
    std::fs::write(&disk, vec![0u8; DISK_SIZE as usize]).expect("the disk file");
    let device: Arc<dyn BlockDevice> = Arc::new(RawFile::open(&disk, true).expect("the disk"));
    let socket = dir.join("nbd.sock");
    let _ = std::fs::remove_file(&socket);
    let server = Server::bind(&socket, "fuzz", device).expect("bind");
    let handle = server.handle();
    let serving = std::thread::spawn(move || server.serve());
    if let Ok(mut client) = UnixStream::connect(&socket) {
        let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = client.set_write_timeout(Some(Duration::from_secs(5)));
        // Both directions at once: a server that answers while the client still sends must not deadlock it.
        let mut reader = client.try_clone().expect("clone");
        let draining = std::thread::spawn(move || {
            let mut buf = [0u8; 64 << 10];
            while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
        });
        let _ = client.write_all(bytes);
        let _ = client.shutdown(Shutdown::Write);
        let _ = draining.join();
    }
    handle.stop();
    let _ = serving.join();
    std::fs::metadata(&disk).map(|m| m.len()).unwrap_or(0)
}
