//! One typed call in, one reply out: the middle between the wire codecs and the handlers.
//!
//! The order of checks is xapi's: the method must exist (`MESSAGE_METHOD_UNKNOWN`), not be removed
//! (`MESSAGE_REMOVED`), have a parameter count the datamodel allows (`MESSAGE_PARAMETER_COUNT_MISMATCH`), a valid
//! session if it takes one (`SESSION_INVALID`), and parameters of the datamodel's types (`FIELD_TYPE_ERROR`). Then a
//! hand-written handler of the class module runs if there is one, else the generic implementation of its kind;
//! a custom message nobody has written yet answers `NOT_IMPLEMENTED`.

use std::sync::Arc;

use xapi_types::generated::errors as codes;
use xapi_types::model::{self, Lifecycle};
use xapi_types::wire::Call;
use xapi_types::{Class, Message, MsgKind, Value};

use crate::coerce::coerce;
use crate::db::{Ref, Row};
use crate::error::ApiError;
use crate::state::{Peer, State};
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
}

impl Reply {
    pub fn void() -> Reply {
        Reply::Value(Value::Str(String::new()))
    }
}

/// Everything a handler may need to know about the call it serves.
pub struct Ctx<'a> {
    pub state: &'a State,
    pub peer: &'a Peer,
    /// The caller's session, already checked, for messages that take one.
    pub session: Option<Ref>,
    /// The fully qualified method name, as called.
    pub method: &'a str,
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

/// Whether a call only reads (it can then run on the async workers without blocking them on disk writes).
pub fn is_read_only(method: &str) -> bool {
    let Ok((class, m)) = resolve(method) else {
        return true; // system.listMethods, or an error answered without touching the store
    };
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

pub fn dispatch(state: &State, peer: &Peer, call: Call) -> Result<Reply, ApiError> {
    let method = call.method.as_str();
    if method == "system.listMethods" {
        return Ok(Reply::Bare(list_methods()));
    }
    // `Async.` variants come with tasks (the events and tasks issue); until then they are unknown, not faked.
    let (class, msg) = resolve(method)?;
    if is_removed(msg) {
        return Err(ApiError::new(&codes::MESSAGE_REMOVED, std::iter::empty::<String>()));
    }
    let total = msg.params.len();
    let required = msg.params.iter().filter(|p| p.required).count();
    let received = call.params.len();
    if received < required || received > total {
        return Err(ApiError::new(
            &codes::MESSAGE_PARAMETER_COUNT_MISMATCH,
            [method.to_string(), total.to_string(), received.to_string()],
        ));
    }
    let mut params = call.params.into_iter();
    let session = if msg.takes_session() {
        let given = params.next().unwrap_or(Value::Nil);
        let Value::Str(s) = given else {
            return Err(ApiError::session_invalid(&format!("{given:?}")));
        };
        Some(state.check_session(&s)?)
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
    let ctx = Ctx { state, peer, session, method };
    if let Some(handler) = classes::custom(class.name, msg.name) {
        return handler(&ctx, class, msg, args);
    }
    if msg.kind == MsgKind::Custom || !class.persistent {
        return Err(ApiError::not_implemented(method));
    }
    generic::run(&ctx, class, msg, args)
}

/// A message the datamodel has removed answers `MESSAGE_REMOVED`. The generic messages of a removed class (its
/// getters, `get_all_records`, …) still answer, over its empty table, so that a client walking every class never
/// trips over one.
pub fn is_removed(msg: &Message) -> bool {
    msg.lifecycle == Lifecycle::Removed && msg.kind == MsgKind::Custom
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
