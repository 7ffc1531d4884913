//! `/console`: a VM's graphical console (VNC), as xapi serves it.
//!
//! A client sends `CONNECT /console?uuid=<console uuid>&session_id=<session>` (or `ref=<console ref>`; the session
//! may also come as a `session_id` cookie). The daemon checks the session, finds the console's VM and the loopback
//! port of its VNC server, answers `200 OK` and then carries the raw RFB stream both ways. QEMU's VNC server only
//! listens on loopback: the daemon is the only way in, and it lets only authenticated clients through.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

use crate::hv::rec::{Rec, class};
use crate::state::{Peer, State};

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn cookie<'a>(req: &'a Request, key: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn fail(status: StatusCode, why: &str) -> Response {
    (status, format!("{why}\n")).into_response()
}

pub async fn handler(
    AxState(state): AxState<Arc<State>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    mut req: Request,
) -> Response {
    let query = req.uri().query().unwrap_or_default().to_string();
    let session = query_param(&query, "session_id").or_else(|| cookie(&req, "session_id")).map(str::to_string);
    let authorised = match &session {
        Some(s) => state.check_session(s).is_ok(),
        None => peer.is_local_root(),
    };
    if !authorised {
        return fail(StatusCode::UNAUTHORIZED, "a valid session_id is required");
    }
    let console_c = class("console");
    let console = match (query_param(&query, "ref"), query_param(&query, "uuid")) {
        (Some(r), _) => Some(r.to_string()),
        (None, Some(u)) => state.store.by_uuid(console_c, u).ok().map(|r| r.to_string()),
        (None, None) => None,
    };
    let Some(row) = console.and_then(|c| state.store.get(console_c, &c).ok()) else {
        return fail(StatusCode::NOT_FOUND, "no such console");
    };
    let vm_ref = Rec::new(console_c, &row.fields).str("VM").to_string();
    let vm_c = class("VM");
    let Ok(vm) = state.store.get(vm_c, &vm_ref) else { return fail(StatusCode::NOT_FOUND, "the console's VM is gone") };
    let uuid = Rec::new(vm_c, &vm.fields).str("uuid").to_string();
    let st = state.clone();
    let port =
        tokio::task::spawn_blocking(move || st.hv.agent(&st).ok().and_then(|a| a.vnc_port(&uuid).ok().flatten()))
            .await
            .ok()
            .flatten();
    let Some(port) = port else { return fail(StatusCode::NOT_FOUND, "the VM has no running console") };
    let vnc = match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
        Ok(s) => s,
        Err(e) => return fail(StatusCode::BAD_GATEWAY, &format!("cannot reach the VM's console: {e}")),
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let mut vnc = vnc;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut vnc).await;
            }
            Err(e) => tracing::debug!(error = %e, "console connection was not upgraded"),
        }
    });
    StatusCode::OK.into_response()
}

#[cfg(test)]
mod tests {
    use super::query_param;

    #[test]
    fn query_parameters() {
        let q = "uuid=abc&session_id=OpaqueRef:1";
        assert_eq!(query_param(q, "uuid"), Some("abc"));
        assert_eq!(query_param(q, "session_id"), Some("OpaqueRef:1"));
        assert_eq!(query_param(q, "ref"), None);
    }
}
