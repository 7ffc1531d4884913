//! The host's guests first: while VM operations run, the encoding of large answers stands back.
//!
//! On a host with few cores, a storm of API calls (80 clients looping on `VM.get_all_records`) takes the CPU that
//! libvirtd and QEMU need to start a VM: xapi took 2m38s to start one in that situation, and this daemon, before
//! this module, 3.6× its idle start time (`docs/benchmarks.md`). Encoding large answers is the daemon's only bulk
//! CPU work, and it runs on [`crate::bulk`]'s threads. While any VM operation runs ([`VmOperation`]), those
//! threads drop to nice 19; and while a call that makes QEMU start ([`urgent`]: create, restore) is in flight, each
//! chunk first waits for it ([`yield_to_urgent`], at most [`crate::bulk::URGENT_WAIT`]), so that QEMU has the cores
//! for its few hundred milliseconds. A reader of a large answer is delayed while VMs start, never starved; with no
//! VM operation running, the bulk threads run at the daemon's own priority.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How many VM operations are running.
static OPERATIONS: AtomicUsize = AtomicUsize::new(0);

/// A VM lifecycle operation in progress (held by `hv::ops` from its checks to its answer).
#[derive(Debug)]
pub struct VmOperation(());

impl VmOperation {
    pub fn begin() -> VmOperation {
        OPERATIONS.fetch_add(1, Ordering::AcqRel);
        VmOperation(())
    }
}

impl Drop for VmOperation {
    fn drop(&mut self) {
        OPERATIONS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether bulk work should stand back now.
pub fn vm_operations_running() -> bool {
    OPERATIONS.load(Ordering::Acquire) > 0
}

/// How many calls that make QEMU start are in flight.
static URGENT: AtomicUsize = AtomicUsize::new(0);
static QUIET: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());

/// Runs `f`, a call that makes QEMU start (create, restore), as urgent: bulk work waits meanwhile.
pub fn urgent<T>(f: impl FnOnce() -> T) -> T {
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            if URGENT.fetch_sub(1, Ordering::AcqRel) == 1 {
                let _guard = QUIET.0.lock().unwrap_or_else(|e| e.into_inner());
                QUIET.1.notify_all();
            }
        }
    }
    URGENT.fetch_add(1, Ordering::AcqRel);
    let _done = Done;
    f()
}

/// Waits (at most `max`) while an urgent call is in flight; bulk threads call it before each chunk.
pub fn yield_to_urgent(max: Duration) {
    if URGENT.load(Ordering::Acquire) == 0 {
        return;
    }
    let deadline = Instant::now() + max;
    let mut guard = QUIET.0.lock().unwrap_or_else(|e| e.into_inner());
    while URGENT.load(Ordering::Acquire) > 0 {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        guard = QUIET.1.wait_timeout(guard, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn bulk_work_waits_for_urgent_calls_but_not_forever() {
        let t = Instant::now();
        yield_to_urgent(Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_millis(100), "nothing urgent: no wait");
        let waited = std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel();
            s.spawn(move || {
                urgent(|| {
                    tx.send(()).unwrap();
                    std::thread::sleep(Duration::from_millis(300));
                })
            });
            rx.recv().unwrap();
            let t = Instant::now();
            yield_to_urgent(Duration::from_secs(5));
            t.elapsed()
        });
        assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(4), "{waited:?}");
        let bounded = std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel();
            s.spawn(move || {
                urgent(|| {
                    tx.send(()).unwrap();
                    std::thread::sleep(Duration::from_millis(800));
                })
            });
            rx.recv().unwrap();
            let t = Instant::now();
            yield_to_urgent(Duration::from_millis(100));
            t.elapsed()
        });
        assert!(bounded < Duration::from_millis(600), "the wait is bounded: {bounded:?}");
    }
}
