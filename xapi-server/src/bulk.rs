//! Bulk work at the lowest CPU priority, for while VM operations run (see `priority`): these threads encode chunks
//! of large answers at nice 19, and each chunk first gives way to QEMU starting (at most [`URGENT_WAIT`]).
//!
//! A job is one chunk; the stream that sends the chunks asks for the next only when the connection has taken the
//! previous one, so a client that stops reading holds no thread.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send>;

/// The longest a chunk waits for a QEMU start.
pub const URGENT_WAIT: Duration = Duration::from_millis(250);

/// The niceness of the bulk threads.
pub const NICE: i32 = 19;

fn pool() -> &'static Mutex<mpsc::Sender<Job>> {
    static POOL: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        for i in 0..n {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("bulk-{i}"))
                .spawn(move || {
                    // Raising one's own niceness needs no privilege; on Linux it applies to this thread only.
                    let tid = rustix::thread::gettid();
                    if let Err(e) = rustix::process::setpriority_process(Some(tid), NICE) {
                        tracing::warn!(error = %e, "bulk worker runs at normal priority");
                    }
                    loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .expect("spawn a bulk worker");
        }
        Mutex::new(tx)
    })
}

/// Runs `f` on a bulk thread (after any QEMU start in flight) and answers its result.
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        crate::priority::yield_to_urgent(URGENT_WAIT);
        let _ = tx.send(f());
    });
    pool().lock().unwrap_or_else(|e| e.into_inner()).send(job).expect("the bulk workers live as long as the process");
    rx.await.expect("a bulk job panicked")
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn jobs_run_at_low_priority() {
        let nice = super::run(|| rustix::process::getpriority_process(Some(rustix::thread::gettid()))).await;
        assert_eq!(nice.unwrap(), super::NICE);
        assert_eq!(super::run(|| 6 * 7).await, 42);
    }
}
