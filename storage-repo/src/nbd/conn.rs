//! One client connection: the handshake, then the transmission phase with one reader thread (the connection's own)
//! feeding a few worker threads, so that a client with several requests in flight (QEMU keeps up to its queue depth)
//! gets them served concurrently. Replies go out whole, one `write` each, under the connection's writer lock.
//!
//! **Nothing a client sends can make the server panic or allocate without bound**: lengths are checked before any
//! buffer is sized, a WRITE longer than [`MAX_PAYLOAD`] closes the connection (its payload is not read), and the
//! bytes held by queued requests are capped per connection.

use std::collections::VecDeque;
use std::io::{self, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use super::Shared;
use super::gate::Closed;
use super::handshake::{self, Outcome};
use super::proto::*;
use crate::block::BlockDevice;

/// A client that has not finished its handshake within this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many requests of one connection are queued or running…
const MAX_QUEUED: usize = 128;
/// …and their payloads (write data read, read data to send) add up to at most this (one request is always admitted).
const MAX_QUEUED_BYTES: u64 = 128 << 20;
/// Flags we accept on requests: FUA, and NO_HOLE (meaningful for WRITE_ZEROES, which always writes here).
const KNOWN_FLAGS: u16 = CMD_FLAG_FUA | (1 << 1);
/// Buffers larger than this are not kept for reuse.
const POOL_MAX_BUFFER: usize = 4 << 20;
const POOL_MAX_COUNT: usize = 64;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves one accepted connection until the client leaves, breaks the protocol, or the server stops.
pub fn serve(stream: UnixStream, shared: &Shared) {
    if let Err(e) = run(stream, shared) {
        tracing::debug!("nbd: connection ended: {e}");
    }
}

fn run(mut stream: UnixStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    if handshake::negotiate(&mut stream, &shared.export, &shared.gate)? != Outcome::Transmission {
        return Ok(());
    }
    stream.set_read_timeout(None)?;
    let reader = BufReader::with_capacity(256 << 10, stream.try_clone()?);
    let conn = Conn {
        shared,
        queue: Mutex::new(Queue { jobs: VecDeque::new(), closed: false, count: 0, bytes: 0 }),
        work: Condvar::new(),
        space: Condvar::new(),
        writer: Mutex::new(stream),
        broken: AtomicBool::new(false),
        pool: Mutex::new(Vec::new()),
    };
    thread::scope(|scope| {
        for _ in 0..shared.workers.max(1) {
            scope.spawn(|| conn.worker());
        }
        let result = conn.read_requests(reader);
        // Let the workers finish what was queued (their replies still go out), then they exit.
        lock(&conn.queue).closed = true;
        conn.work.notify_all();
        result
    })
}

struct Job {
    req: Request,
    /// WRITE payload.
    data: Vec<u8>,
    /// What this job counts against the connection's byte budget.
    cost: u64,
}

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
    /// Jobs queued or running, and their cost.
    count: usize,
    bytes: u64,
}

struct Conn<'a> {
    shared: &'a Shared,
    queue: Mutex<Queue>,
    /// Workers wait here for jobs.
    work: Condvar,
    /// The reader waits here for budget.
    space: Condvar,
    writer: Mutex<UnixStream>,
    /// Set when a reply could not be written: the client is gone and reading more is pointless.
    broken: AtomicBool,
    pool: Mutex<Vec<Vec<u8>>>,
}

impl Conn<'_> {
    fn read_requests(&self, mut r: BufReader<UnixStream>) -> io::Result<()> {
        let mut header = [0u8; REQUEST_LEN];
        loop {
            if self.broken.load(Ordering::Relaxed) {
                return Ok(());
            }
            match r.read_exact(&mut header) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            let Some(req) = Request::decode(&header) else {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "bad request magic"));
            };
            match req.kind {
                CMD_DISC => return Ok(()),
                CMD_WRITE => {
                    if req.len > MAX_PAYLOAD {
                        // Its payload follows and we will not read it: hang up.
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "WRITE larger than the maximum"));
                    }
                    let cost = u64::from(req.len);
                    self.wait_for_budget(cost);
                    let mut data = self.buffer(req.len as usize);
                    if let Err(e) = r.read_exact(&mut data) {
                        self.release(cost);
                        return Err(e);
                    }
                    self.push(Job { req, data, cost });
                }
                CMD_READ if req.len > MAX_PAYLOAD => {
                    self.reply_error(req.cookie, EINVAL);
                }
                _ => {
                    let cost = if req.kind == CMD_READ { u64::from(req.len) } else { 0 };
                    self.wait_for_budget(cost);
                    self.push(Job { req, data: Vec::new(), cost });
                }
            }
        }
    }

    fn wait_for_budget(&self, cost: u64) {
        let mut q = lock(&self.queue);
        while q.count > 0 && (q.count >= MAX_QUEUED || q.bytes + cost > MAX_QUEUED_BYTES) {
            q = self.space.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        q.count += 1;
        q.bytes += cost;
    }

    fn release(&self, cost: u64) {
        let mut q = lock(&self.queue);
        q.count -= 1;
        q.bytes -= cost;
        drop(q);
        self.space.notify_one();
    }

    fn push(&self, job: Job) {
        lock(&self.queue).jobs.push_back(job);
        self.work.notify_one();
    }

    fn worker(&self) {
        loop {
            let job = {
                let mut q = lock(&self.queue);
                loop {
                    if let Some(job) = q.jobs.pop_front() {
                        break job;
                    }
                    if q.closed {
                        return;
                    }
                    q = self.work.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            };
            let cost = job.cost;
            self.execute(job);
            self.release(cost);
        }
    }

    fn execute(&self, job: Job) {
        let Job { req, data, .. } = job;
        let stats = &self.shared.stats;
        let gate = &self.shared.gate;
        let device = match gate.enter() {
            Ok(d) => d,
            Err(Closed::Stopping) => return self.reply_error(req.cookie, ESHUTDOWN),
        };
        if req.kind == CMD_READ {
            let mut buf = self.buffer(REPLY_LEN + req.len as usize);
            let error = match check(&*device, &req) {
                0 => match device.read_at(&mut buf[REPLY_LEN..], req.offset) {
                    Ok(()) => 0,
                    Err(e) => self.device_error("read", &req, &e),
                },
                e => e,
            };
            drop(device);
            gate.leave();
            if error == 0 {
                stats.reads.fetch_add(1, Ordering::Relaxed);
                stats.bytes_read.fetch_add(u64::from(req.len), Ordering::Relaxed);
                encode_reply(&mut buf, 0, req.cookie);
                self.send(&buf);
            } else {
                self.reply_error(req.cookie, error);
            }
            self.recycle(buf);
            return;
        }
        let error = match check(&*device, &req) {
            0 => {
                let fua = req.flags & CMD_FLAG_FUA != 0;
                let (what, result) = match req.kind {
                    CMD_WRITE => ("write", device.write_at(&data, req.offset)),
                    CMD_FLUSH => ("flush", if device.read_only() { Ok(()) } else { device.flush() }),
                    CMD_TRIM => ("trim", device.discard(req.offset, u64::from(req.len))),
                    _ => ("write zeroes", device.write_zeroes(req.offset, u64::from(req.len))),
                };
                let result = if fua && req.kind != CMD_FLUSH { result.and_then(|()| device.flush()) } else { result };
                match result {
                    Ok(()) => {
                        let counter = match req.kind {
                            CMD_WRITE => {
                                stats.bytes_written.fetch_add(u64::from(req.len), Ordering::Relaxed);
                                &stats.writes
                            }
                            CMD_FLUSH => &stats.flushes,
                            CMD_TRIM => &stats.trims,
                            _ => &stats.zeroes,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        0
                    }
                    Err(e) => self.device_error(what, &req, &e),
                }
            }
            e => e,
        };
        drop(device);
        gate.leave();
        self.recycle(data);
        if error == 0 {
            let mut header = [0u8; REPLY_LEN];
            encode_reply(&mut header, 0, req.cookie);
            self.send(&header);
        } else {
            self.reply_error(req.cookie, error);
        }
    }

    fn device_error(&self, what: &str, req: &Request, e: &io::Error) -> u32 {
        tracing::warn!("nbd {}: {what} of {} bytes at {}: {e}", self.shared.export, req.len, req.offset);
        match e.raw_os_error() {
            // ENOSPC, EFBIG, EDQUOT, as the protocol asks: QEMU can then pause the guest rather than fail it.
            Some(28 | 27 | 122) => ENOSPC,
            _ => EIO,
        }
    }

    fn reply_error(&self, cookie: u64, error: u32) {
        self.shared.stats.errors.fetch_add(1, Ordering::Relaxed);
        let mut header = [0u8; REPLY_LEN];
        encode_reply(&mut header, error, cookie);
        self.send(&header);
    }

    fn send(&self, bytes: &[u8]) {
        let mut w = lock(&self.writer);
        if self.broken.load(Ordering::Relaxed) {
            return;
        }
        if w.write_all(bytes).is_err() {
            self.broken.store(true, Ordering::Relaxed);
            // Wake the reader: the client cannot be answered any more.
            let _ = w.shutdown(Shutdown::Both);
        }
    }

    /// A buffer of exactly `len` bytes (contents unspecified), reused when possible.
    fn buffer(&self, len: usize) -> Vec<u8> {
        let mut v = lock(&self.pool).pop().unwrap_or_default();
        if v.capacity() < len {
            v = Vec::with_capacity(len);
        }
        v.resize(len, 0);
        v
    }

    fn recycle(&self, v: Vec<u8>) {
        if v.capacity() == 0 || v.capacity() > POOL_MAX_BUFFER {
            return;
        }
        let mut pool = lock(&self.pool);
        if pool.len() < POOL_MAX_COUNT {
            pool.push(v);
        }
    }
}

/// The error a request gets before touching the device, or 0.
fn check(device: &dyn BlockDevice, req: &Request) -> u32 {
    if req.flags & !KNOWN_FLAGS != 0 {
        return EINVAL;
    }
    if !matches!(req.kind, CMD_READ | CMD_WRITE | CMD_FLUSH | CMD_TRIM | CMD_WRITE_ZEROES) {
        return EINVAL;
    }
    if req.kind == CMD_FLUSH {
        return 0;
    }
    match req.offset.checked_add(u64::from(req.len)) {
        Some(end) if end <= device.size() => {}
        // As the protocol says: ENOSPC for writes past the end, EINVAL for reads and trims.
        _ => return if matches!(req.kind, CMD_WRITE | CMD_WRITE_ZEROES) { ENOSPC } else { EINVAL },
    }
    if req.kind != CMD_READ && device.read_only() {
        return EPERM;
    }
    0
}
