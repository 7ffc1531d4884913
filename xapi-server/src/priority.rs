//! CPU priorities: the host's guests first, then the daemon's control of them, then its API.
//!
//! | threads | nice | what runs there |
//! |---|---|---|
//! | libvirtd, QEMU | 0 (theirs) | the guests |
//! | control ([`control`]) | 0 | VM lifecycle operations, libvirt's event loop, the store's reaction to events |
//! | API (the async runtime and its blocking pool) | [`API_NICE`] | accepting, parsing and answering calls |
//! | bulk ([`crate::bulk`]) | [`crate::bulk::NICE`] | encoding large answers; pauses while QEMU starts |
//!
//! On a host with few cores, a storm of API calls (80 clients looping on `VM.get_all_records`) would otherwise
//! take the CPU that libvirtd and QEMU need to start a VM; xapi took 2m38s to start one in that situation. With
//! these priorities the API answers a little more slowly while VMs start, and VM starts do not wait for the API.
//! When nothing else wants the CPU, priorities change nothing.
//!
//! Priorities alone leave QEMU sharing the cores while it starts (the kernel still gives niced threads a share).
//! So the calls that make QEMU start ([`urgent`]: create, restore) also pause the bulk encoders for their few
//! hundred milliseconds, each encoder waiting at most [`crate::bulk::URGENT_WAIT`] per 64 KiB chunk
//! ([`yield_to_urgent`]): a large answer is delayed by at most that while VMs start, never starved.
//!
//! Linux applies a niceness to one thread, and new threads inherit their creator's. The control threads are made
//! by [`init`] before the async runtime exists (so at the daemon's own priority, without privileges); the runtime's
//! threads lower themselves to [`API_NICE`] as they start ([`api_thread_started`]).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The niceness of the API threads.
pub const API_NICE: i32 = 10;

/// Control threads: enough for several VMs starting at once (each mostly waits for libvirt).
const CONTROL_THREADS: usize = 16;

type Job = Box<dyn FnOnce() + Send>;

static CONTROL: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();

thread_local! {
    static ON_CONTROL: Cell<bool> = const { Cell::new(false) };
}

/// Sets this thread's niceness (Linux: per thread); a failure (lowering it needs privileges) is logged.
pub fn set_own_nice(nice: i32) {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
        tracing::debug!(nice, error = %e, "cannot change this thread's priority");
    }
}

/// For the async runtime's `on_thread_start`.
pub fn api_thread_started() {
    set_own_nice(API_NICE);
}

/// Starts the control threads at this thread's priority: call it before the async runtime starts. (Later calls,
/// and the first [`control`] without it, start them where they are called from.)
pub fn init() {
    CONTROL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..CONTROL_THREADS {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("control-{i}"))
                .spawn(move || {
                    ON_CONTROL.with(|c| c.set(true));
                    loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .expect("spawn a control thread");
        }
        Mutex::new(tx)
    });
}

/// Runs `f` on a control thread and waits for it (the calling thread, an API thread, sleeps meanwhile). On a
/// control thread already, runs it here.
pub fn control<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    if ON_CONTROL.with(Cell::get) {
        return f();
    }
    init();
    let (tx, rx) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(out);
    });
    CONTROL.get().expect("initialised").lock().unwrap_or_else(|e| e.into_inner()).send(job).expect("control threads");
    match rx.recv().expect("a control thread answers") {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// How many CPU-hungry hypervisor calls (QEMU starting) are in flight.
static URGENT: AtomicUsize = AtomicUsize::new(0);
static QUIET: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());

/// Runs `f`, a call that makes QEMU start (create, restore), as urgent: bulk work yields the CPU meanwhile.
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

/// Waits (at most `max`) while an urgent call is in flight: bulk work calls this before each piece, so that a VM
/// start has the CPU to itself for its few hundred milliseconds; `max` bounds what a reader can lose.
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
    use super::*;

    fn nice() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
    }

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

    #[test]
    fn control_runs_at_the_priority_it_was_started_with() {
        init();
        let here = nice();
        std::thread::spawn(move || {
            api_thread_started();
            if here <= API_NICE {
                assert_eq!(nice(), API_NICE);
            }
            assert_eq!(control(nice), here, "control work is not slowed by the API's priority");
            assert_eq!(control(|| control(|| 7)), 7, "nested calls run in place");
        })
        .join()
        .unwrap();
    }
}
