//! One client connection: the handshake, then the transmission phase. The connection's own thread reads the
//! requests. A small READ or WRITE is executed right there while the device answers fast (the page cache: a few
//! microseconds, less than handing the request to another thread costs); everything else, and everything once the
//! device turns slow (a moving average of READ/WRITE times above [`INLINE_BELOW`]), goes to a few worker threads, so
//! that a client with several requests in flight (QEMU keeps up to its queue depth) gets them served concurrently.
//! Replies go out whole under the connection's writer lock; the replies to requests executed in line are gathered
//! while more requests are already buffered and sent with one `write` before the reader could block.
//!
//! **Nothing a client sends can make the server panic or allocate without bound**: lengths are checked before any
//! buffer is sized, a WRITE longer than [`MAX_PAYLOAD`] closes the connection (its payload is not read), and the
//! bytes held by queued requests are capped per connection.

use std::collections::VecDeque;
use std::io::{self, BufReader, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

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
/// Buffers larger than this are not kept for reuse…
const POOL_MAX_BUFFER: usize = (256 << 10) + REPLY_LEN;
/// …and at most this many are (so at most 8 MiB a connection).
const POOL_MAX_COUNT: usize = 32;
/// Requests executed by the reader itself are at most this long…
const INLINE_MAX_LEN: u32 = 128 << 10;
/// …and only while READ/WRITE take less than this on average (nanoseconds).
const INLINE_BELOW: u64 = 50_000;
/// Replies gathered before a `write` is forced.
const MAX_PENDING: usize = 64 << 10;

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
        writer: Mutex::new(Writer { stream, pending: Vec::new() }),
        broken: AtomicBool::new(false),
        pool: Mutex::new(Vec::new()),
        average_ns: AtomicU64::new(0),
    };
    thread::scope(|scope| {
        for _ in 0..shared.workers.max(1) {
            scope.spawn(|| conn.worker());
        }
        let result = conn.read_requests(reader);
        conn.flush_pending();
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
    writer: Mutex<Writer>,
    /// Set when a reply could not be written: the client is gone and reading more is pointless.
    broken: AtomicBool,
    pool: Mutex<Vec<Vec<u8>>>,
    /// A moving average of the device's READ/WRITE times, nanoseconds: decides between in line and workers.
    average_ns: AtomicU64,
}

struct Writer {
    stream: UnixStream,
    /// Replies not written yet (only the reader defers replies, and it flushes them before it may block).
    pending: Vec<u8>,
}

impl Conn<'_> {
    fn read_requests(&self, mut r: BufReader<UnixStream>) -> io::Result<()> {
        let mut header = [0u8; REQUEST_LEN];
        loop {
            if self.broken.load(Ordering::Relaxed) {
                return Ok(());
            }
            if r.buffer().len() < REQUEST_LEN {
                self.flush_pending();
            }
            match r.read_exact(&mut header) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            let Some(req) = Request::decode(&header) else {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "bad request magic"));
            };
            if req.kind == CMD_DISC {
                return Ok(());
            }
            if req.kind == CMD_READ && req.len > MAX_PAYLOAD {
                self.reply_error(req.cookie, EINVAL, false);
                continue;
            }
            if req.kind == CMD_WRITE && req.len > MAX_PAYLOAD {
                // Its payload follows and we will not read it: hang up.
                return Err(io::Error::new(io::ErrorKind::InvalidData, "WRITE larger than the maximum"));
            }
            let inline = self.in_line(&req);
            let cost = if matches!(req.kind, CMD_READ | CMD_WRITE) { u64::from(req.len) } else { 0 };
            if !inline {
                self.wait_for_budget(cost);
            }
            let mut data = Vec::new();
            if req.kind == CMD_WRITE {
                data = self.buffer(req.len as usize);
                if r.buffer().len() < data.len() {
                    self.flush_pending();
                }
                if let Err(e) = r.read_exact(&mut data) {
                    if !inline {
                        self.release(cost);
                    }
                    return Err(e);
                }
            }
            let job = Job { req, data, cost };
            if inline {
                let more = r.buffer().len() >= REQUEST_LEN;
                self.execute(job, more);
            } else {
                self.push(job);
            }
        }
    }

    /// Whether the reader executes `req` itself.
    fn in_line(&self, req: &Request) -> bool {
        matches!(req.kind, CMD_READ | CMD_WRITE)
            && req.flags & CMD_FLAG_FUA == 0
            && req.len <= INLINE_MAX_LEN
            && self.average_ns.load(Ordering::Relaxed) < INLINE_BELOW
    }

    fn observe(&self, elapsed: Duration) {
        let sample = elapsed.as_nanos().min(u128::from(u32::MAX)) as u64;
        let old = self.average_ns.load(Ordering::Relaxed);
        // Races between threads lose a sample now and then; an estimate is all this needs.
        self.average_ns.store(old - old / 8 + sample / 8, Ordering::Relaxed);
    }

    fn wait_for_budget(&self, cost: u64) {
        let full = |q: &Queue| q.count > 0 && (q.count >= MAX_QUEUED || q.bytes + cost > MAX_QUEUED_BYTES);
        let mut q = lock(&self.queue);
        if full(&q) {
            // Replies held back must not wait for the workers (which may be waiting on a paused disk).
            drop(q);
            self.flush_pending();
            q = lock(&self.queue);
        }
        while full(&q) {
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
            self.execute(job, false);
            self.release(cost);
        }
    }

    /// Runs one request and sends its reply; `defer`: the reply may wait for the next [`Conn::flush_pending`].
    fn execute(&self, job: Job, defer: bool) {
        let Job { req, data, .. } = job;
        let stats = &self.shared.stats;
        let gate = &self.shared.gate;
        // Replies held back must not wait for a paused device.
        let device = match gate.enter_or(|| self.flush_pending()) {
            Ok(d) => d,
            Err(Closed::Stopping) => return self.reply_error(req.cookie, ESHUTDOWN, false),
        };
        if req.kind == CMD_READ {
            let mut buf = self.buffer(REPLY_LEN + req.len as usize);
            let error = match check(&*device, &req) {
                0 => {
                    let started = Instant::now();
                    let result = device.read_at(&mut buf[REPLY_LEN..], req.offset);
                    self.observe(started.elapsed());
                    match result {
                        Ok(()) => 0,
                        Err(e) => self.device_error("read", &req, &e),
                    }
                }
                e => e,
            };
            drop(device);
            gate.leave();
            if error == 0 {
                stats.reads.fetch_add(1, Ordering::Relaxed);
                stats.bytes_read.fetch_add(u64::from(req.len), Ordering::Relaxed);
                encode_reply(&mut buf, 0, req.cookie);
                self.send(&buf, defer);
            } else {
                self.reply_error(req.cookie, error, defer);
            }
            self.recycle(buf);
            return;
        }
        let error = match check(&*device, &req) {
            0 => {
                let fua = req.flags & CMD_FLAG_FUA != 0;
                let (what, result) = match req.kind {
                    CMD_WRITE => {
                        let started = Instant::now();
                        let result = device.write_at(&data, req.offset);
                        self.observe(started.elapsed());
                        ("write", result)
                    }
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
            self.send(&header, defer);
        } else {
            self.reply_error(req.cookie, error, defer);
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

    fn reply_error(&self, cookie: u64, error: u32, defer: bool) {
        self.shared.stats.errors.fetch_add(1, Ordering::Relaxed);
        let mut header = [0u8; REPLY_LEN];
        encode_reply(&mut header, error, cookie);
        self.send(&header, defer);
    }

    /// Sends a reply, or with `defer` gathers it with others to send later.
    fn send(&self, bytes: &[u8], defer: bool) {
        let mut w = lock(&self.writer);
        if self.broken.load(Ordering::Relaxed) {
            return;
        }
        let Writer { stream, pending } = &mut *w;
        if defer && pending.len() + bytes.len() <= MAX_PENDING {
            pending.extend_from_slice(bytes);
            return;
        }
        let result = if pending.is_empty() {
            stream.write_all(bytes)
        } else {
            let r = write_all_vectored(stream, &mut [IoSlice::new(pending), IoSlice::new(bytes)]);
            pending.clear();
            r
        };
        if result.is_err() {
            self.broken.store(true, Ordering::Relaxed);
            // Wake the reader: the client cannot be answered any more.
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Writes the gathered replies.
    fn flush_pending(&self) {
        let mut w = lock(&self.writer);
        if w.pending.is_empty() || self.broken.load(Ordering::Relaxed) {
            return;
        }
        let Writer { stream, pending } = &mut *w;
        let result = stream.write_all(pending);
        pending.clear();
        if result.is_err() {
            self.broken.store(true, Ordering::Relaxed);
            let _ = stream.shutdown(Shutdown::Both);
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

fn write_all_vectored(w: &mut impl Write, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
