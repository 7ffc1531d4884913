//! One typed call in, one reply out: the middle between the wire codecs and the handlers.
//!
//! The order of checks is xapi's: the method must exist (`MESSAGE_METHOD_UNKNOWN`), not be removed
//! (`MESSAGE_REMOVED`), have a parameter count the datamodel allows (`MESSAGE_PARAMETER_COUNT_MISMATCH`), a valid
//! session if it takes one (`SESSION_INVALID`), and parameters of the datamodel's types (`FIELD_TYPE_ERROR`). Then a
//! hand-written handler of the class module runs if there is one, else the generic implementation of its kind;
//! a custom message nobody has written yet answers `NOT_IMPLEMENTED`.
//!
//! `Async.<Class>.<message>` runs the same checks, then answers a task ref and does the work in the background
//! (`tasks`). `event.from` and `event.next` wait without holding a thread (`events`).

use std::sync::Arc;

use xapi_types::generated::errors as codes;
use xapi_types::model::{self, Lifecycle};
use xapi_types::wire::Call;
use xapi_types::{Class, Message, MsgKind, Value};

use crate::coerce::coerce;
use crate::db::{Changed, Ref, Row};
use crate::error::ApiError;
use crate::events::{self, Batch};
use crate::state::{Peer, State};
use crate::tasks::{self, TaskHandle};
use crate::{classes, generic};

/// What a call answers. Records are kept as stored rows so that large results are encoded straight from the
/// store.
#[derive(Debug)]
pub enum Reply {
    Value(Value),
    Record(&'static Class, Arc<Row>),
    /// `get_all_records`: a map from ref to record.
    Records(&'static Class, Vec<(Ref, Arc<Row>)>),
    /// A value sent without the `Status`/`Value` envelope (only `system.listMethods`, as xapi does).
    Bare(Value),
    /// `event.from`'s answer.
    Events(Batch),
    /// `event.next`'s answer: a set of legacy event records.
    LegacyEvents(Vec<Changed>),
}

impl Reply {
    pub fn void() -> Reply {
        Reply::Value(Value::Str(String::new()))
    }
}

/// Everything a handler may need to know about the call it serves.
pub struct Ctx<'a> {
    pub state: &'a Arc<State>,
    pub peer: &'a Peer,
    /// The caller's session, already checked, for messages that take one.
    pub session: Option<Ref>,
    /// The fully qualified method name, as called.
    pub method: &'a str,
    /// The task this call runs as, for `Async.` calls.
    pub task: Option<&'a TaskHandle>,
}

impl Ctx<'_> {
    pub fn session(&self) -> &Ref {
        self.session.as_ref().expect("handlers of session-taking messages run with a checked session")
    }
}

/// A hand-written implementation of a message; `args` are typed and exclude the session.
pub type Handler = fn(&Ctx<'_>, &'static Class, &'static Message, Vec<Value>) -> Result<Reply, ApiError>;

/// Looks a method name up in the datamodel.
pub fn resolve(method: &str) -> Result<(&'static Class, &'static Message), ApiError> {
    let (class, msg) = method.split_once('.').ok_or_else(|| ApiError::method_unknown(method))?;
    let class = model::class(class).ok_or_else(|| ApiError::method_unknown(method))?;
    let msg = class.message(msg).ok_or_else(|| ApiError::method_unknown(method))?;
    Ok((class, msg))
}

/// A message the datamodel has removed answers `MESSAGE_REMOVED`. The generic messages of a removed class (its
/// getters, `get_all_records`, …) still answer, over its empty table, so that a client walking every class never
/// trips over one.
pub fn is_removed(msg: &Message) -> bool {
    msg.lifecycle == Lifecycle::Removed && msg.kind == MsgKind::Custom
}

/// Whether `Async.<Class>.<message>` exists: as in xapi, for custom messages that take a session, except the
/// session and event classes'.
pub fn has_async(class: &Class, msg: &Message) -> bool {
    msg.takes_session() && !msg.implicit && !matches!(class.name, "session" | "event")
}

/// Whether a call only reads (it can then run on the async workers without blocking them on disk writes).
fn is_read_only(class: &Class, m: &Message) -> bool {
    let generic_read = matches!(
        m.kind,
        MsgKind::GetRecord
            | MsgKind::GetByUuid
            | MsgKind::GetByNameLabel
            | MsgKind::GetAll
            | MsgKind::GetAllRecords
            | MsgKind::GetAllWhere
            | MsgKind::GetAllRecordsWhere
            | MsgKind::Get(_)
    );
    generic_read && classes::custom(class.name, m.name).is_none()
}

/// A call that passed every check: the message, the caller's session and typed arguments (session excluded).
pub struct Prepared {
    pub class: &'static Class,
    pub msg: &'static Message,
    pub session: Option<Ref>,
    pub args: Vec<Value>,
}

/// Runs every check of the module header on `call`.
pub fn prepare(state: &State, peer: &Peer, method: &str, params: Vec<Value>) -> Result<Prepared, ApiError> {
    let (class, msg) = resolve(method)?;
    if is_removed(msg) {
        return Err(ApiError::new(&codes::MESSAGE_REMOVED, std::iter::empty::<String>()));
    }
    let total = msg.params.len();
    let required = msg.params.iter().filter(|p| p.required).count();
    let received = params.len();
    if received < required || received > total {
        return Err(ApiError::new(
            &codes::MESSAGE_PARAMETER_COUNT_MISMATCH,
            [method.to_string(), total.to_string(), received.to_string()],
        ));
    }
    let mut params = params.into_iter();
    let session = if msg.takes_session() {
        let given = params.next().unwrap_or(Value::Nil);
        let Value::Str(s) = given else {
            return Err(ApiError::session_invalid(&format!("{given:?}")));
        };
        let session = state.check_session(&s)?;
        let bits = crate::rbac::session_bits(&state.store, &session);
        // The arguments after the session: a map write's key is the second.
        let key = crate::rbac::map_key(msg).and_then(|i| params.as_slice().get(i - 1));
        if let Err(e) = crate::rbac::check_call(bits, class, msg, key) {
            // A refusal is audited too (the arguments are not checked yet: the object is named if it is one).
            if !is_read_only(class, msg) {
                crate::audit::Pending::begin(state, peer, Some(&session), class, msg, params.as_slice())
                    .finish(state, Err(&e));
            }
            return Err(e);
        }
        Some(session)
    } else {
        None
    };
    let skip = usize::from(session.is_some());
    let mut args = Vec::with_capacity(total - skip);
    for (p, v) in msg.params[skip..].iter().zip(params.by_ref()) {
        args.push(coerce(&p.ty, v, p.name)?);
    }
    // Optional trailing parameters the caller left out take their empty value.
    for p in &msg.params[skip + args.len()..] {
        args.push(Value::empty_of(&p.ty));
    }
    Ok(Prepared { class, msg, session, args })
}

/// Runs a prepared call's handler.
pub fn execute(
    state: &Arc<State>,
    peer: &Peer,
    method: &str,
    p: Prepared,
    task: Option<&TaskHandle>,
) -> Result<Reply, ApiError> {
    let Prepared { class, msg, session, args } = p;
    // Every call but a plain read goes in the audit log, with its outcome.
    let audit = (!is_read_only(class, msg))
        .then(|| crate::audit::Pending::begin(state, peer, session.as_deref(), class, msg, &args));
    let ctx = Ctx { state, peer, session, method, task };
    let reply = if let Some(handler) = classes::custom(class.name, msg.name) {
        handler(&ctx, class, msg, args)
    } else if msg.kind == MsgKind::Custom || !class.persistent {
        Err(ApiError::not_implemented(method))
    } else {
        generic::run(&ctx, class, msg, args)
    };
    if let Some(a) = audit {
        a.finish(state, reply.as_ref().map(|_| ()));
    }
    reply
}

/// Checks and runs one call from the wire. Cheap reads run on the async worker; calls that may write to disk run
/// where blocking is allowed, so that they never stall other connections; event waits hold no thread.
pub async fn call(state: Arc<State>, peer: Peer, call: Call) -> Result<Reply, ApiError> {
    let method = call.method;
    if method == "system.listMethods" {
        return Ok(Reply::Bare(list_methods()));
    }
    if let Some(inner) = method.strip_prefix("Async.") {
        return start_async(&state, peer, inner, call.params);
    }
    match method.as_str() {
        "event.from" => {
            let p = prepare(&state, &peer, &method, call.params)?;
            let (session, args) = (p.session.expect("event.from takes a session"), p.args);
            let classes = args[0].as_array().unwrap_or_default();
            let token = args[1].as_str().unwrap_or_default();
            let timeout = match args[2] {
                Value::Float(f) => f,
                _ => 0.0,
            };
            return Ok(Reply::Events(events::from(&state, &session, classes, token, timeout).await?));
        }
        "event.next" => {
            let p = prepare(&state, &peer, &method, call.params)?;
            let session = p.session.expect("event.next takes a session");
            return Ok(Reply::LegacyEvents(state.registrations.next(&state, &session).await?));
        }
        _ => {}
    }
    let p = prepare(&state, &peer, &method, call.params)?;
    if is_read_only(p.class, p.msg) {
        return execute(&state, &peer, &method, p, None);
    }
    tokio::task::spawn_blocking(move || execute(&state, &peer, &method, p, None))
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("a call panicked: {e}"))))
}

/// `Async.<Class>.<message>`: the checks now, the work in a task.
fn start_async(state: &Arc<State>, peer: Peer, inner: &str, params: Vec<Value>) -> Result<Reply, ApiError> {
    let full = format!("Async.{inner}");
    let (class, msg) = resolve(inner).map_err(|_| ApiError::method_unknown(&full))?;
    if !has_async(class, msg) {
        return Err(ApiError::method_unknown(&full));
    }
    let p = prepare(state, &peer, inner, params)?;
    let session = p.session.clone().expect("async messages take a session");
    let st = state.clone();
    let method = inner.to_string();
    let task = tasks::spawn(state, &session, &full, move |handle| {
        let reply = execute(&st, &peer, &method, p, Some(handle))?;
        Ok(tasks::result_string(msg, &reply))
    })?;
    Ok(Reply::Value(Value::Str(task.to_string())))
}

/// Every callable method, as `system.listMethods` lists them.
fn list_methods() -> Value {
    let mut names = vec![Value::str("system.listMethods")];
    for class in model::classes() {
        for m in class.messages.iter().filter(|m| !is_removed(m)) {
            names.push(Value::Str(format!("{}.{}", class.name, m.name)));
        }
    }
    Value::Array(names)
}
