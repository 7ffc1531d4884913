//! Bulk work: these threads encode the chunks of large answers (`get_all_records` of thousands of objects, big
//! event batches), so that the threads that accept calls and drive VMs never do. While VM operations run they are
//! at nice 19 (otherwise at the daemon's own priority), and each chunk first gives way to QEMU starting (at most
//! [`URGENT_WAIT`]); see `priority`.
//!
//! A job is one chunk. The stream that sends an answer has chunk n+1 encoded while chunk n is sent, and no further
//! ahead: a client that stops reading holds one chunk, and no thread.

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
                    // On Linux a niceness applies to one thread. Raising it needs no privilege; lowering it back
                    // does (root has it): without, the thread stays at `NICE` once it got there.
                    let tid = rustix::thread::gettid();
                    let normal = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
                    let mut now = normal;
                    loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(job) = job else { return };
                        let want = if crate::priority::vm_operations_running() { NICE.max(normal) } else { normal };
                        if want != now && rustix::process::setpriority_process(Some(tid), want).is_ok() {
                            now = want;
                        }
                        job();
                    }
                })
                .expect("spawn a bulk worker");
        }
        Mutex::new(tx)
    })
}

/// Starts `f` on a bulk thread (after any QEMU start in flight); its result arrives on the receiver.
pub fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> tokio::sync::oneshot::Receiver<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        crate::priority::yield_to_urgent(URGENT_WAIT);
        let _ = tx.send(f());
    });
    pool().lock().unwrap_or_else(|e| e.into_inner()).send(job).expect("the bulk workers live as long as the process");
    rx
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn jobs_run_at_low_priority_while_vm_operations_run() {
        let nice = || super::spawn(|| rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap());
        let normal = rustix::process::getpriority_process(None).unwrap();
        let during = {
            let _op = crate::priority::VmOperation::begin();
            nice().await.unwrap()
        };
        assert_eq!(during, super::NICE.max(normal));
        assert_eq!(super::spawn(|| 6 * 7).await.unwrap(), 42);
    }
}
