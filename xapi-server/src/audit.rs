//! The audit log: one JSON line per state-changing call (every call that is not a plain read: setters, creates,
//! destroys, custom messages, logins, and the disk upload handler), saying who made it, what, on which object, and
//! how it ended. It goes to `DATA_DIR/audit.log` (appended, one `write` per line) and to the `audit` tracing target.
//!
//! ```json
//! {"time":"20261126T16:50:01Z","user":"root","session":"<session uuid>","originator":"XenCenter",
//!  "peer":"127.0.0.1:51234","call":"VM.set_name_label","class":"VM","object":"<vm uuid>",
//!  "result":"ok","ms":3}
//! ```
//!
//! Secrets never go in: a session is named by its UUID (its ref is the login token), and no argument but the
//! target object (and a login's user name) is written. A failure gives `"result":"error"` with the XenAPI error
//! code and parameters in `"error"`.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::json;
use xapi_types::model::{self, Class, Ty};
use xapi_types::{Message, Value};

use crate::coerce::now_datetime;
use crate::error::ApiError;
use crate::hv::rec::{Rec, class};
use crate::state::{Peer, State};

/// Where audit lines go; [`Audit::none`] drops them (tests that build a state by hand).
#[derive(Debug, Default)]
pub struct Audit {
    file: Option<Mutex<File>>,
}

impl Audit {
    pub fn none() -> Audit {
        Audit::default()
    }

    /// Appends to `path` (created 0600 if missing).
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        Ok(Audit { file: Some(Mutex::new(f)) })
    }

    fn write(&self, line: &serde_json::Value) {
        tracing::info!(target: "audit", "{line}");
        if let Some(f) = &self.file {
            let mut text = line.to_string();
            text.push('\n');
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = f.write_all(text.as_bytes()) {
                tracing::warn!(error = %e, "the audit log could not be written");
            }
        }
    }
}

/// The caller, as the audit log names it: user, session UUID and originator of a session ref.
fn caller(state: &State, session: Option<&str>) -> (String, String, String) {
    let Some(s) = session else { return Default::default() };
    let c = class("session");
    match state.store.get(c, s) {
        Ok(row) => {
            let r = Rec::new(c, &row.fields);
            (r.str("auth_user_name").to_string(), r.str("uuid").to_string(), r.str("originator").to_string())
        }
        Err(_) => (String::new(), String::new(), String::new()),
    }
}

/// The object a call is on: its first argument when the message types it as a ref (given as that class and the
/// object's UUID), else nothing.
fn object(state: &State, msg: &Message, args: &[Value]) -> (String, String) {
    let skip = usize::from(msg.takes_session());
    let Some(Ty::Ref(cname)) = msg.params.get(skip).map(|p| &p.ty) else { return Default::default() };
    let (Some(Value::Str(r)), Some(c)) = (args.first(), model::class(cname)) else { return Default::default() };
    let uuid = match state.store.get(c, r) {
        Ok(row) => Rec::new(c, &row.fields).str("uuid").to_string(),
        // Gone (a destroy) or never there: the ref names it.
        Err(_) => r.clone(),
    };
    (c.name.to_string(), uuid)
}

/// A state-changing call being made: who and on what are taken before it runs (a logout ends the session, a
/// destroy the object), the outcome when it ends.
pub struct Pending {
    line: serde_json::Value,
    started: Instant,
}

impl Pending {
    /// `session` is the caller's session ref (none for logins); `args` exclude it.
    pub fn begin(
        state: &State,
        peer: &Peer,
        session: Option<&str>,
        class: &Class,
        msg: &Message,
        args: &[Value],
    ) -> Pending {
        let login_user = match args.first() {
            Some(Value::Str(u)) if session.is_none() && msg.name.starts_with("login") => Some(u.as_str()),
            _ => None,
        };
        let (object_class, object) = object(state, msg, args);
        let call = format!("{}.{}", class.name, msg.name);
        let line = line(state, peer, session, login_user, &call, &object_class, &object);
        Pending { line, started: Instant::now() }
    }

    pub fn finish(mut self, state: &State, outcome: Result<(), &ApiError>) {
        self.line["ms"] = json!(self.started.elapsed().as_millis() as u64);
        result(&mut self.line, outcome);
        state.audit.write(&self.line);
    }
}

/// An audit line without its outcome: the caller (its session's user, or `user` when given), where it calls
/// from, the call and its object.
fn line(
    state: &State,
    peer: &Peer,
    session: Option<&str>,
    user: Option<&str>,
    call: &str,
    class: &str,
    object: &str,
) -> serde_json::Value {
    let (session_user, session_uuid, originator) = caller(state, session);
    json!({
        "time": now_datetime(),
        "user": user.map_or(session_user, str::to_string),
        "session": session_uuid,
        "originator": originator,
        "peer": peer.to_string(),
        "call": call,
        "class": class,
        "object": object,
    })
}

fn result(line: &mut serde_json::Value, outcome: Result<(), &ApiError>) {
    match outcome {
        Ok(()) => line["result"] = json!("ok"),
        Err(e) => {
            line["result"] = json!("error");
            line["error"] = json!(e.description());
        }
    }
}

/// Records an HTTP handler's work (an import): `what` is the handler, `object` the VDI's UUID; the caller is a
/// session or a user (HTTP Basic, local root).
pub fn http(
    state: &State,
    peer: &Peer,
    session: Option<&str>,
    user: Option<&str>,
    what: &str,
    object: &str,
    outcome: Result<(), &ApiError>,
) {
    let mut line = line(state, peer, session, user, what, "VDI", object);
    result(&mut line, outcome);
    state.audit.write(&line);
}
