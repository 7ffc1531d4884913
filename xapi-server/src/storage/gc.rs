//! The collector thread: after a VDI is destroyed or a block server stops, and every 30 s, each attached `ext` SR
//! gets collection passes (`storage_repo::sr` merges single-child base copies away; trees in use by a block server
//! are left alone), and the store follows.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::state::State;

use super::Backend;

#[derive(Default)]
pub struct Kick {
    pending: Mutex<bool>,
    cv: Condvar,
}

impl Kick {
    pub fn kick(&self) {
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    fn wait(&self, timeout: Duration) {
        let g = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (mut g, _) = self.cv.wait_timeout_while(g, timeout, |p| !*p).unwrap_or_else(|e| e.into_inner());
        *g = false;
    }
}

/// One round over every attached `ext` SR; returns how many steps were done.
pub fn run_once(state: &State) -> usize {
    let mut done = 0;
    for (sr, b) in state.storage.attached() {
        let Backend::Ext(fsr) = b else { continue };
        let in_use = |u: &uuid::Uuid| state.storage.tapdisks.running(&u.to_string());
        // Under the SR's lock: no operation's files and records are seen half-way, and the store follows each step.
        let result = state.storage.with_srs(&[&sr], || {
            let steps = fsr.collect_all(&in_use, 64)?;
            if !steps.is_empty()
                && let Err(e) = super::sync::sr_held(state, &sr)
            {
                tracing::warn!(sr, error = %e.description().join(" "), "could not rescan an SR after collecting");
            }
            Ok::<_, storage_repo::Error>(steps)
        });
        match result {
            Ok(steps) => {
                for s in &steps {
                    tracing::info!(sr, step = ?s, "storage collector");
                }
                done += steps.len();
            }
            Err(e) => tracing::error!(sr, error = %e, "the storage collector failed; it will try again"),
        }
    }
    done
}

pub fn spawn(state: Arc<State>) {
    let _ = std::thread::Builder::new().name("storage-gc".into()).spawn(move || {
        loop {
            state.storage.gc.wait(Duration::from_secs(30));
            run_once(&state);
        }
    });
}
