//! `/import_raw_vdi` and `/export_raw_vdi`: a VDI's content over plain HTTP, as xapi serves it (see
//! `docs/import-export.md`).
//!
//! Both authenticate with `session_id` (query or cookie) or HTTP Basic (the password is checked as
//! `session.login_with_password` checks it; no session is made), take `vdi=<ref|uuid>`, `format=raw|vhd` and an
//! optional `task_id` (progress, cancellation and the outcome go through the task). Failures are answered with an
//! HTTP status and the XenAPI error (`CODE param…`) as a plain-text line, and fail the task.
//!
//! **The target of an import is untouched unless the upload succeeds:** the data goes to a new file that replaces
//! the VDI's file only at the end, under the SR's lock ([`import`]). Memory stays bounded: the body is handled in
//! 1 MiB pieces, at most a few of them in flight.

mod export;
mod import;

pub use export::export;
pub use import::import;

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use storage_repo::sr::FileSr;
use uuid::Uuid;
use xapi_types::generated::errors as codes;
use xapi_types::wire::query::param;
use xapi_types::wire::query::{base64_decode, percent_decode, session_cookie};

use crate::error::ApiError;
use crate::hv::rec::{Rec, class};
use crate::state::{Peer, State};
use crate::storage::{self, Backend};
use crate::tasks::TaskHandle;

/// The size of the pieces a body is handled in.
const PIECE: usize = 1 << 20;

/// A refusal: HTTP status and the XenAPI error as a plain-text line.
pub(crate) struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut r = (self.0, format!("{}\n", self.1)).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"xapi\""));
        }
        r
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Refusal {
        let status = match e.code {
            "HANDLE_INVALID" | "UUID_INVALID" => StatusCode::NOT_FOUND,
            "SESSION_INVALID" | "SESSION_AUTHENTICATION_FAILED" => StatusCode::UNAUTHORIZED,
            "VDI_IN_USE" => StatusCode::CONFLICT,
            "RBAC_PERMISSION_DENIED" => StatusCode::FORBIDDEN,
            "VDI_TOO_SMALL" | "IMPORT_ERROR" | "INVALID_VALUE" => StatusCode::BAD_REQUEST,
            "NOT_IMPLEMENTED" => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Refusal(status, e.description().join(" "))
    }
}

/// Checks the caller: `session_id` in the query or a cookie, HTTP Basic, or root on the local socket.
/// Who a request comes from, for the audit log: its session, or the user of its Basic credentials (none: local
/// root).
#[derive(Debug, Clone, Default)]
pub(crate) struct Who {
    pub session: Option<String>,
    pub user: Option<String>,
}

async fn authenticate(state: &Arc<State>, peer: &Peer, query: &str, headers: &HeaderMap) -> Result<Who, Refusal> {
    let unauthorised = |why: &str| Refusal(StatusCode::UNAUTHORIZED, why.to_string());
    let cookie = session_cookie(headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()));
    if let Some(s) = param(query, "session_id").or(cookie.map(percent_decode)) {
        return state
            .check_session(&s)
            .map(|_| Who { session: Some(s.clone()), user: None })
            .map_err(|e| unauthorised(&e.description().join(" ")));
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(base64_decode)
        .and_then(|b| String::from_utf8(b).ok());
    if let Some(creds) = basic {
        let (user, password) = creds.split_once(':').unwrap_or((creds.as_str(), ""));
        let (user, password) = (user.to_string(), password.to_string());
        let (st, u) = (state.clone(), user.clone());
        let ok = tokio::task::spawn_blocking(move || crate::auth::verify(&st.store, &u, &password))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        return if ok {
            Ok(Who { session: None, user: Some(user) })
        } else {
            Err(unauthorised("SESSION_AUTHENTICATION_FAILED"))
        };
    }
    if peer.is_local_root() {
        return Ok(Who { session: None, user: Some("root".into()) });
    }
    Err(unauthorised("a session_id (query or cookie) or HTTP Basic credentials are required"))
}

/// What a request asks for, checked: the VDI (its ref, file UUID, SR and `ext` backend), the format, the task.
pub(crate) struct Target {
    vdi: String,
    uuid: Uuid,
    sr: String,
    fsr: Arc<FileSr>,
    format: Format,
    task: Option<TaskGuard>,
    who: Who,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Raw,
    Vhd,
    /// VMware's disk (monolithicSparse or streamOptimized), converted on the way in; import only.
    Vmdk,
}

impl Who {
    /// `RBAC_PERMISSION_DENIED` unless the caller's roles may call `class.message`, which stands for `action`.
    fn may(&self, state: &State, action: &str, class: &str, message: &str) -> Result<(), ApiError> {
        let bits = match (&self.session, &self.user) {
            (Some(s), _) => crate::rbac::session_bits(&state.store, s),
            (None, Some(u)) => crate::rbac::user_bits(&state.store, u),
            (None, None) => 0,
        };
        crate::rbac::check_http(bits, action, class, message)
    }
}

/// What both handlers do first: the request's query, its login checked, and the VDI it names.
async fn prelude(state: &Arc<State>, peer: &Peer, query: &str, headers: &HeaderMap) -> Result<Target, Response> {
    let who = authenticate(state, peer, query, headers).await.map_err(IntoResponse::into_response)?;
    let mut t = target(state, query).map_err(|e| Refusal::from(e).into_response())?;
    t.who = who;
    Ok(t)
}

fn target(state: &Arc<State>, query: &str) -> Result<Target, ApiError> {
    let vdi_c = class("VDI");
    let v = param(query, "vdi").ok_or_else(|| ApiError::invalid_value("vdi", ""))?;
    let vdi = if state.store.get(vdi_c, &v).is_ok() {
        v
    } else {
        state.store.by_uuid(vdi_c, &v).map_err(|_| ApiError::handle_invalid("VDI", &v))?.to_string()
    };
    let format = format_of(query)?;
    let row = state.store.get(vdi_c, &vdi)?;
    if !Rec::new(vdi_c, &row.fields).bool("managed") {
        return Err(ApiError::new(&codes::VDI_NOT_MANAGED, [vdi.as_str()]));
    }
    let (uuid, sr) = storage::vdi_uuid(state, &vdi)?;
    let fsr = match state.storage.backend(&sr)? {
        Backend::Ext(f) => f,
        Backend::Iso(_) => return Err(ApiError::new(&codes::SR_OPERATION_NOT_SUPPORTED, [sr.as_str()])),
    };
    let task = task_of(state, query)?;
    Ok(Target { vdi, uuid, sr, fsr, format, task, who: Who::default() })
}

/// `format=` (default raw).
fn format_of(query: &str) -> Result<Format, ApiError> {
    match param(query, "format").as_deref() {
        None | Some("raw") => Ok(Format::Raw),
        Some("vhd") => Ok(Format::Vhd),
        Some("vmdk") => Ok(Format::Vmdk),
        Some(other) => Err(ApiError::new(
            &codes::IMPORT_ERROR,
            [format!("format {other} is not supported (raw, vhd; vmdk for imports)")],
        )),
    }
}

/// `task_id=`: a task to report through (none for an empty or null ref).
fn task_of(state: &Arc<State>, query: &str) -> Result<Option<TaskGuard>, ApiError> {
    match param(query, "task_id") {
        Some(t) if !t.is_empty() && t != "OpaqueRef:NULL" => {
            Ok(Some(TaskGuard(Some(TaskHandle::attach(state.clone(), &t)?))))
        }
        _ => Ok(None),
    }
}

/// A task being worked on: finished with a failure if dropped unfinished (the client went away, the handler was
/// dropped), so that no task stays pending.
struct TaskGuard(Option<TaskHandle>);

impl TaskGuard {
    fn progress(&self, f: f64) {
        if let Some(t) = &self.0 {
            t.progress(f);
        }
    }

    fn check_cancelled(&self) -> Result<(), ApiError> {
        self.0.as_ref().map_or(Ok(()), TaskHandle::check_cancelled)
    }

    fn finish(mut self, outcome: Result<String, ApiError>) {
        if let Some(t) = self.0.take() {
            t.finish(outcome);
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.finish(Err(ApiError::new(&codes::VDI_IO_ERROR, ["the connection closed before the end"])));
        }
    }
}

/// Finishes the task (if any) with the outcome and answers: 200 with an empty body, or the refusal.
fn conclude(task: Option<TaskGuard>, outcome: Result<String, ApiError>) -> Response {
    let response = match &outcome {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => {
            tracing::info!(error = ?e.description(), "VDI transfer failed");
            Refusal::from(e.clone()).into_response()
        }
    };
    if let Some(t) = task {
        t.finish(outcome);
    }
    response
}

/// `[VDI_IN_USE vdi operation]` if a VBD has the VDI attached, an NBD export reads it or its block server runs.
fn check_unused(state: &State, t: &Target, operation: &str) -> Result<(), ApiError> {
    if storage::attached_vbds(state, &t.vdi).next().is_some()
        || storage::exported(state, &t.vdi)
        || state.storage.tapdisks.running(&t.uuid.to_string())
    {
        return Err(ApiError::new(&codes::VDI_IN_USE, [t.vdi.as_str(), operation]));
    }
    Ok(())
}
