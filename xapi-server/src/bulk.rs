//! Bulk work at the lowest CPU priority: encoding large answers (`get_all_records` of thousands of objects, big
//! event batches) runs on these threads, at nice 19, never on the threads that accept calls or drive VMs, and each
//! chunk first gives way to QEMU starting (`priority::yield_to_urgent`, at most [`URGENT_WAIT`]).
//!
//! A host's first duty is its guests. Without this, 80 clients looping on `VM.get_all_records` keep both cores
//! busy encoding XML, and libvirtd and QEMU get a fraction of the CPU they need to start a VM: `VM.start` took
//! 3.6× as long under that load (xapi took 2m38s in this situation); see `docs/benchmarks.md`. Readers of large
//! answers wait a little longer while VMs start; the control path does not wait for them.
//!
//! Each job is one chunk of an answer; the stream that sends the chunks asks for the next only when the connection
//! has taken the previous one, so a client that stops reading holds no thread.

use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

/// The longest a chunk waits for urgent hypervisor calls to finish (see `priority::yield_to_urgent`).
pub const URGENT_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// The niceness of the bulk threads.
pub const NICE: i32 = 19;

static POOL: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();

fn pool() -> &'static Mutex<mpsc::Sender<Job>> {
    POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
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

/// Runs `f` on a bulk thread and answers its result.
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
