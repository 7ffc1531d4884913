//! The device slot every connection's requests pass through: it holds the open disk, counts the requests using it,
//! and lets the control channel pause (drain, flush and close the disk) and resume (install a reopened disk) while
//! clients stay connected. A request that arrives while paused waits here.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::block::BlockDevice;

/// Why a request could not get the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The server is stopping.
    Stopping,
}

pub struct Gate {
    state: Mutex<State>,
    /// Signalled when the device comes back (resume, stop) and when the last in-flight request leaves.
    changed: Condvar,
}

struct State {
    device: Option<Arc<dyn BlockDevice>>,
    paused: bool,
    stopping: bool,
    in_flight: usize,
    /// The last device's size and read-only flag, for handshakes done while paused.
    size: u64,
    read_only: bool,
}

/// What a client is told at the handshake.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub size: u64,
    pub read_only: bool,
}

impl Gate {
    pub fn new(device: Arc<dyn BlockDevice>) -> Gate {
        let (size, read_only) = (device.size(), device.read_only());
        Gate {
            state: Mutex::new(State {
                device: Some(device),
                paused: false,
                stopping: false,
                in_flight: 0,
                size,
                read_only,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counters half-updated: every critical section is a
        // handful of assignments. Carry on with the data as it is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The size and read-only flag a new client is told; `None` once stopping.
    pub fn geometry(&self) -> Option<Geometry> {
        let s = self.lock();
        (!s.stopping).then_some(Geometry { size: s.size, read_only: s.read_only })
    }

    pub fn paused(&self) -> bool {
        self.lock().paused
    }

    /// Waits until the device is available and takes a reference for one request; call [`Gate::leave`] after.
    #[cfg(test)]
    pub fn enter(&self) -> Result<Arc<dyn BlockDevice>, Closed> {
        self.enter_or(|| {})
    }

    /// [`Gate::enter`], calling `before_waiting` (without the lock) if it has to wait.
    pub fn enter_or(&self, before_waiting: impl FnOnce()) -> Result<Arc<dyn BlockDevice>, Closed> {
        let mut before_waiting = Some(before_waiting);
        let mut s = self.lock();
        loop {
            if s.stopping {
                return Err(Closed::Stopping);
            }
            if !s.paused
                && let Some(d) = &s.device
            {
                let d = d.clone();
                s.in_flight += 1;
                return Ok(d);
            }
            if let Some(f) = before_waiting.take() {
                drop(s);
                f();
                s = self.lock();
                continue;
            }
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Ends a request started by [`Gate::enter`] (its device reference must be dropped first).
    pub fn leave(&self) {
        let mut s = self.lock();
        s.in_flight -= 1;
        if s.in_flight == 0 && (s.paused || s.stopping) {
            self.changed.notify_all();
        }
    }

    /// Stops new requests from starting, waits for the in-flight ones, flushes the device and drops it (closing
    /// its files once nothing else holds it). Pausing a paused gate does nothing. If the flush fails the device is
    /// kept and the gate is unpaused again, so a failed pause changes nothing.
    pub fn pause(&self) -> io::Result<()> {
        let device = {
            let mut s = self.lock();
            if s.paused {
                return Ok(());
            }
            if s.stopping {
                return Err(io::Error::other("the server is stopping"));
            }
            s.paused = true;
            while s.in_flight > 0 {
                s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            s.device.take()
        };
        let Some(device) = device else { return Ok(()) };
        if let Err(e) = device.flush() {
            let mut s = self.lock();
            s.device = Some(device);
            s.paused = false;
            self.changed.notify_all();
            return Err(io::Error::new(e.kind(), format!("flush before pause: {e}")));
        }
        drop(device);
        Ok(())
    }

    /// Installs `device` and lets waiting requests run. Refused unless paused.
    pub fn resume(&self, device: Arc<dyn BlockDevice>) -> io::Result<()> {
        let mut s = self.lock();
        if !s.paused {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not paused"));
        }
        s.size = device.size();
        s.read_only = device.read_only();
        s.device = Some(device);
        s.paused = false;
        self.changed.notify_all();
        Ok(())
    }

    /// Makes every waiting and future [`Gate::enter`] fail, waits for the in-flight requests, then flushes and drops
    /// the device. Returns the flush's result.
    pub fn stop(&self) -> io::Result<()> {
        let device = {
            let mut s = self.lock();
            s.stopping = true;
            self.changed.notify_all();
            while s.in_flight > 0 {
                s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            s.device.take()
        };
        match device {
            Some(d) if !d.read_only() => d.flush(),
            _ => Ok(()),
        }
    }

    /// Marks the gate stopping without waiting (wakes requests waiting on a paused device).
    pub fn begin_stop(&self) {
        let mut s = self.lock();
        s.stopping = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread;
    use std::time::Duration;

    struct Mem {
        flushed: AtomicBool,
    }

    impl BlockDevice for Mem {
        fn size(&self) -> u64 {
            4096
        }
        fn read_only(&self) -> bool {
            false
        }
        fn read_at(&self, buf: &mut [u8], _offset: u64) -> io::Result<()> {
            buf.fill(1);
            Ok(())
        }
        fn write_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> io::Result<()> {
            self.flushed.store(true, Ordering::SeqCst);
            Ok(())
        }
        fn discard(&self, _offset: u64, _len: u64) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn pause_waits_for_in_flight_requests_and_blocks_new_ones_until_resume() {
        let dev = Arc::new(Mem { flushed: AtomicBool::new(false) });
        let gate = Arc::new(Gate::new(dev.clone()));
        let held = gate.enter().unwrap();
        let g = gate.clone();
        let pauser = thread::spawn(move || g.pause());
        thread::sleep(Duration::from_millis(50));
        assert!(!pauser.is_finished(), "pause must wait for the in-flight request");
        drop(held);
        gate.leave();
        pauser.join().unwrap().unwrap();
        assert!(dev.flushed.load(Ordering::SeqCst));
        assert_eq!(Arc::strong_count(&dev), 1, "the gate dropped its reference");

        let g = gate.clone();
        let waiter = thread::spawn(move || g.enter().map(|d| d.size()));
        thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "requests wait while paused");
        gate.resume(Arc::new(Mem { flushed: AtomicBool::new(false) })).unwrap();
        assert_eq!(waiter.join().unwrap(), Ok(4096));
        gate.leave();
        assert!(gate.resume(dev).is_err(), "resume needs a pause");
    }

    #[test]
    fn stop_wakes_requests_waiting_on_a_paused_device() {
        let gate = Arc::new(Gate::new(Arc::new(Mem { flushed: AtomicBool::new(false) })));
        gate.pause().unwrap();
        let g = gate.clone();
        let waiter = thread::spawn(move || g.enter().map(|_| ()));
        thread::sleep(Duration::from_millis(20));
        gate.stop().unwrap();
        assert_eq!(waiter.join().unwrap(), Err(Closed::Stopping));
    }
}
