//! `task` and `Async.*`: long operations that answer at once with a task ref and report through the task.
//!
//! A task is an ordinary stored object, so its every change (status, progress, result) reaches clients as events.
//! Status moves pending → success | failure | cancelling → cancelled. `result` is the XML-RPC serialisation of the
//! return value, as a string, whatever protocol the call came in (xapi does this, and Xen Orchestra parses it).
//!
//! **No ghost tasks:** a task still pending when the daemon stopped is marked failed at the next start, which
//! clients see as an event. Finished tasks are destroyed after [`FINISHED_TASK_TTL`], and at most
//! [`MAX_FINISHED_TASKS`] are kept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xapi_types::generated::errors as codes;
use xapi_types::model::{self, Class};
use xapi_types::wire::xmlrpc;
use xapi_types::{Message, Value};

use crate::coerce::now_datetime;
use crate::db::{self, DbError, Ref};
use crate::dispatch::Reply;
use crate::encode::emit_value;
use crate::error::ApiError;
use crate::state::State;

/// Finished tasks are destroyed this long after they finish (xapi: 65 minutes).
pub const FINISHED_TASK_TTL: Duration = Duration::from_secs(65 * 60);
/// Beyond this many finished tasks, the oldest are destroyed (xapi keeps 200).
pub const MAX_FINISHED_TASKS: usize = 1000;
/// More `Async.` calls than this running at once get `TOO_MANY_PENDING_TASKS` (`--max-pending-tasks`).
pub const MAX_RUNNING: usize = 100;
/// A progress report is written at most this often (each write is a disk commit and an event).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

pub fn class() -> &'static Class {
    model::class("task").expect("task class")
}

fn field(name: &str) -> usize {
    class().field(name).map(|(i, _)| i).unwrap_or_else(|| panic!("task.{name}"))
}

/// Tasks whose work runs in this daemon: their cancellation flags.
#[derive(Default)]
pub struct Running(Mutex<HashMap<Ref, Arc<AtomicBool>>>);

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Ref, Arc<AtomicBool>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn flag(&self, task: &str) -> Option<Arc<AtomicBool>> {
        self.lock().get(task).cloned()
    }
}

/// The work of one task, as the code doing it sees it: report progress, notice cancellation, finish.
pub struct TaskHandle {
    state: Arc<State>,
    task: Ref,
    cancel: Arc<AtomicBool>,
    last_progress: Mutex<Option<Instant>>,
}

impl TaskHandle {
    /// Takes on an existing pending task (an HTTP handler's `task_id`), or `HANDLE_INVALID`.
    pub fn attach(state: Arc<State>, task: &str) -> Result<TaskHandle, ApiError> {
        let row = state.store.get(class(), task)?;
        if row.fields[field("status")].as_str() != Some("pending") {
            return Err(ApiError::new(&codes::OPERATION_NOT_ALLOWED, [format!("task {task} is not pending")]));
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let task: Ref = task.into();
        state.tasks.lock().insert(task.clone(), cancel.clone());
        Ok(TaskHandle { state, task, cancel, last_progress: Mutex::new(None) })
    }

    pub fn task(&self) -> &Ref {
        &self.task
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// `TASK_CANCELLED [task]` once the task has been cancelled: long operations call this between steps.
    pub fn check_cancelled(&self) -> Result<(), ApiError> {
        if self.is_cancelled() { Err(ApiError::new(&codes::TASK_CANCELLED, [self.task.to_string()])) } else { Ok(()) }
    }

    /// Reports progress (0–1); written at most every 200 ms.
    pub fn progress(&self, fraction: f64) {
        let mut last = self.last_progress.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < PROGRESS_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        let fraction = fraction.clamp(0.0, 1.0);
        let r =
            self.state.store.transaction(|tx| tx.set(class(), &self.task, field("progress"), Value::Float(fraction)));
        if let Err(e) = r {
            tracing::debug!(task = %self.task, error = %e, "progress not recorded");
        }
    }

    /// Records the outcome: success with the result, cancelled, or failure with the error.
    pub fn finish(self, outcome: Result<String, ApiError>) {
        self.state.tasks.lock().remove(&self.task);
        let (status, result, error) = match outcome {
            Ok(result) => ("success", result, Vec::new()),
            Err(e) if e.code == codes::TASK_CANCELLED.name => ("cancelled", String::new(), e.description()),
            Err(e) => ("failure", String::new(), e.description()),
        };
        let r = self.state.store.transaction(|tx| {
            tx.update(class(), &self.task, |f| {
                f[field("status")] = Value::str(status);
                f[field("result")] = Value::Str(result);
                f[field("error_info")] = Value::Array(error.into_iter().map(Value::Str).collect());
                f[field("finished")] = Value::DateTime(now_datetime());
                f[field("allowed_operations")] = Value::Array(vec![]);
                if status == "success" {
                    f[field("progress")] = Value::Float(1.0);
                }
            })
        });
        if let Err(e) = r {
            tracing::debug!(task = %self.task, error = %e, "task gone before it finished");
        }
    }
}

/// A new pending task, linked to the session that owns it.
pub fn create(state: &State, session: &Ref, label: &str, description: &str) -> Result<Ref, ApiError> {
    let r = db::new_ref();
    let mut fields = db::default_row(class());
    let now = Value::DateTime(now_datetime());
    fields[field("uuid")] = Value::Str(db::new_uuid());
    fields[field("name_label")] = Value::str(label);
    fields[field("name_description")] = Value::str(description);
    fields[field("allowed_operations")] = Value::Array(vec![Value::str("cancel")]);
    fields[field("created")] = now;
    fields[field("status")] = Value::str("pending");
    fields[field("resident_on")] = Value::Str(state.host.to_string());
    let session_c = model::class("session").expect("session class");
    let (tasks_i, _) = session_c.field("tasks").expect("session.tasks");
    state.store.transaction(|tx| {
        tx.insert(class(), &r, fields)?;
        tx.update(session_c, session, |f| {
            if let Value::Array(tasks) = &mut f[tasks_i] {
                tasks.push(Value::Str(r.clone()));
            }
        })
    })?;
    Ok(r.into())
}

/// The XML-RPC `<value>` of a reply, as a task's `result` carries it; `""` for void messages.
pub fn result_string(msg: &Message, reply: &Reply) -> String {
    if msg.result.is_none() {
        return String::new();
    }
    let mut sink = xmlrpc::XmlSink::new();
    emit_value(reply, &mut sink);
    String::from_utf8(sink.out).unwrap_or_default()
}

/// Starts `work` as a task of `session` named `label`; answers the task ref at once.
pub fn spawn(
    state: &Arc<State>,
    session: &Ref,
    label: &str,
    work: impl FnOnce(&TaskHandle) -> Result<String, ApiError> + Send + 'static,
) -> Result<Ref, ApiError> {
    if state.tasks.lock().len() >= state.settings.max_pending_tasks {
        return Err(ApiError::new(&codes::TOO_MANY_PENDING_TASKS, std::iter::empty::<String>()));
    }
    let task = create(state, session, label, "")?;
    let handle = TaskHandle::attach(state.clone(), &task)?;
    tokio::task::spawn_blocking(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&handle)))
            .unwrap_or_else(|_| Err(ApiError::internal("the task's work panicked")));
        handle.finish(outcome);
    });
    Ok(task)
}

/// `task.cancel`: a running task is asked to stop (`cancelling`, then `cancelled` when its work notices); a pending
/// task nobody here runs (made by `task.create`) is cancelled at once; a finished one cannot be.
pub fn cancel(state: &State, task: &str) -> Result<(), ApiError> {
    let row = state.store.get(class(), task)?;
    if row.fields[field("status")].as_str() != Some("pending") {
        return Err(ApiError::new(&codes::OPERATION_NOT_ALLOWED, [format!("task {task} has already finished")]));
    }
    match state.tasks.flag(task) {
        Some(flag) => {
            flag.store(true, Ordering::Relaxed);
            state.store.transaction(|tx| tx.set(class(), task, field("status"), Value::str("cancelling")))?;
        }
        None => {
            state.store.transaction(|tx| {
                tx.update(class(), task, |f| {
                    f[field("status")] = Value::str("cancelled");
                    f[field("finished")] = Value::DateTime(now_datetime());
                    f[field("allowed_operations")] = Value::Array(vec![]);
                    f[field("error_info")] =
                        Value::Array(vec![Value::str(codes::TASK_CANCELLED.name), Value::str(task)]);
                })
            })?;
        }
    }
    Ok(())
}

/// `task.destroy`: the task goes, and with it its place in its session's `tasks`.
pub fn destroy(state: &State, task: &str) -> Result<(), ApiError> {
    state.store.get(class(), task)?;
    if let Some(flag) = state.tasks.flag(task) {
        flag.store(true, Ordering::Relaxed);
    }
    let session_c = model::class("session").expect("session class");
    let (tasks_i, _) = session_c.field("tasks").expect("session.tasks");
    let owners: Vec<Ref> = state
        .store
        .filter(session_c, |row| {
            row.fields[tasks_i].as_array().is_some_and(|t| t.iter().any(|v| v.as_str() == Some(task)))
        })
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    state.store.transaction(|tx| {
        tx.delete(class(), task)?;
        for s in &owners {
            tx.update(session_c, s, |f| {
                if let Value::Array(tasks) = &mut f[tasks_i] {
                    tasks.retain(|v| v.as_str() != Some(task));
                }
            })?;
        }
        Ok::<_, DbError>(())
    })?;
    Ok(())
}

/// At start: every task still pending or cancelling belonged to a daemon that is gone; it failed.
pub fn fail_interrupted(store: &db::Store) -> Result<usize, DbError> {
    let status = field("status");
    let stale: Vec<Ref> = store
        .filter(class(), |row| matches!(row.fields[status].as_str(), Some("pending" | "cancelling")))
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    if stale.is_empty() {
        return Ok(0);
    }
    let message = "the daemon stopped while this task was running; its outcome is unknown";
    store.transaction(|tx| {
        for r in &stale {
            tx.update(class(), r, |f| {
                f[status] = Value::str("failure");
                f[field("finished")] = Value::DateTime(now_datetime());
                f[field("allowed_operations")] = Value::Array(vec![]);
                f[field("error_info")] =
                    Value::Array(vec![Value::str(codes::INTERNAL_ERROR.name), Value::str(message)]);
            })?;
        }
        Ok::<_, DbError>(())
    })?;
    tracing::warn!(count = stale.len(), "marked tasks interrupted by the last stop as failed");
    Ok(stale.len())
}

/// Finished tasks to collect: those finished before `cutoff` (xapi datetime), and the oldest beyond the limit.
pub fn expired(store: &db::Store, cutoff: &str) -> Vec<Ref> {
    let (status, finished) = (field("status"), field("finished"));
    let mut done: Vec<(String, Ref)> = store
        .filter(class(), |row| !matches!(row.fields[status].as_str(), Some("pending" | "cancelling")))
        .into_iter()
        .map(|(r, row)| {
            let at = match &row.fields[finished] {
                Value::DateTime(d) | Value::Str(d) => d.clone(),
                _ => String::new(),
            };
            (at, r)
        })
        .collect();
    done.sort();
    let over = done.len().saturating_sub(MAX_FINISHED_TASKS);
    done.into_iter().enumerate().filter(|(i, (at, _))| *i < over || at.as_str() < cutoff).map(|(_, (_, r))| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(store: &db::Store, status: &str, finished: &str) -> Ref {
        let r = db::new_ref();
        let mut fields = db::default_row(class());
        fields[field("uuid")] = Value::Str(db::new_uuid());
        fields[field("status")] = Value::str(status);
        fields[field("finished")] = Value::DateTime(finished.into());
        store.transaction(|tx| tx.insert(class(), &r, fields)).unwrap();
        r.into()
    }

    #[test]
    fn finished_tasks_expire_by_age_and_count_pending_ones_never() {
        let store = db::Store::open_in_memory().unwrap();
        let old = task(&store, "success", "20260101T00:00:00Z");
        let failed_old = task(&store, "failure", "20260102T00:00:00Z");
        let recent = task(&store, "success", "20261126T12:00:00Z");
        let pending = task(&store, "pending", xapi_types::value::EPOCH);
        let mut gone = expired(&store, "20261126T00:00:00Z");
        gone.sort();
        let mut want = vec![old.clone(), failed_old];
        want.sort();
        assert_eq!(gone, want);
        assert!(!gone.contains(&recent) && !gone.contains(&pending));
        // Past the count limit the oldest finished go first, whatever their age.
        for _ in 0..MAX_FINISHED_TASKS {
            task(&store, "success", "20261126T13:00:00Z");
        }
        let gone = expired(&store, "19700101T00:00:00Z");
        assert_eq!(gone.len(), 3);
        assert!(gone.contains(&old) && gone.contains(&recent) && !gone.contains(&pending));
    }

    #[test]
    fn interrupted_tasks_fail_at_start() {
        let store = db::Store::open_in_memory().unwrap();
        let pending = task(&store, "pending", xapi_types::value::EPOCH);
        let cancelling = task(&store, "cancelling", xapi_types::value::EPOCH);
        let done = task(&store, "success", "20261126T13:00:00Z");
        assert_eq!(fail_interrupted(&store).unwrap(), 2);
        for (r, status) in [(pending, "failure"), (cancelling, "failure"), (done, "success")] {
            assert_eq!(store.get(class(), &r).unwrap().fields[field("status")], Value::str(status));
        }
        assert_eq!(fail_interrupted(&store).unwrap(), 0);
    }
}
