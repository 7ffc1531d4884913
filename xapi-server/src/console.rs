//! `/console`: a VM's graphical console (VNC), as xapi serves it.
//!
//! A client sends `CONNECT /console?uuid=<console uuid>&session_id=<session>` (or `ref=<console ref>`; the session
//! may also come as a `session_id` cookie). The daemon checks the session, finds the console's VM and the loopback
//! port of its VNC server, answers `HTTP/1.1 200 OK` (as xapi does, also to an HTTP/1.0 request) and then carries
//! the raw RFB stream both ways. The first request of a connection is recognised before the HTTP server sees it
//! (`front.rs`), so that the answer's version is xapi's; a `CONNECT` later in a kept-alive connection goes through
//! the router. QEMU's VNC server only
//! listens on loopback: the daemon is the only way in, and it lets only authenticated clients through.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use xapi_types::wire::query::{query_param, session_cookie};

use crate::hv::rec::{Rec, class};
use crate::state::{Peer, State};

/// Checks the caller and finds the console's VNC server: the open connection to it, or the HTTP status and reason
/// to refuse with.
async fn open_vnc(
    state: &Arc<State>,
    peer: &Peer,
    query: &str,
    cookie_session: Option<&str>,
) -> Result<tokio::net::TcpStream, (StatusCode, String)> {
    let fail = |status: StatusCode, why: &str| Err((status, why.to_string()));
    let session = query_param(query, "session_id").or(cookie_session);
    let authorised = match session {
        Some(s) => state.check_session(s).is_ok(),
        None => peer.is_local_root(),
    };
    if !authorised {
        return fail(StatusCode::UNAUTHORIZED, "a valid session_id is required");
    }
    let console_c = class("console");
    let console = match (query_param(query, "ref"), query_param(query, "uuid")) {
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
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, format!("cannot reach the VM's console: {e}")))
}

/// `CONNECT /console` as a later request of a kept-alive HTTP/1.1 connection (the first request of a connection is
/// taken by [`raw`]).
pub async fn handler(
    AxState(state): AxState<Arc<State>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    mut req: Request,
) -> Response {
    let query = req.uri().query().unwrap_or_default().to_string();
    let vnc = match open_vnc(
        &state,
        &peer,
        &query,
        session_cookie(req.headers().get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok())),
    )
    .await
    {
        Ok(v) => v,
        Err((status, why)) => return (status, format!("{why}\n")).into_response(),
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

/// The longest request head a console client may send.
const MAX_HEAD: usize = 16 << 10;

/// A connection whose first bytes are `CONNECT /console`: answered here rather than by the HTTP server, so that the
/// answer is xapi's `HTTP/1.1 200 OK` whatever HTTP version the client spoke (hyper answers an HTTP/1.0 request in
/// HTTP/1.0), then the raw VNC stream. `head` holds the bytes read so far.
pub async fn raw<S>(state: Arc<State>, peer: Peer, mut io: S, mut head: Vec<u8>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let end = loop {
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut buf = [0u8; 2048];
        let n = match tokio::time::timeout(std::time::Duration::from_secs(30), io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 && head.len() + n <= MAX_HEAD => n,
            _ => return,
        };
        head.extend_from_slice(&buf[..n]);
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let target = text.lines().next().and_then(|l| l.split_whitespace().nth(1)).unwrap_or_default();
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let cookies =
        text.lines().filter_map(|l| l.split_once(':')).filter(|(k, _)| k.trim().eq_ignore_ascii_case("cookie"));
    let session = session_cookie(cookies.map(|(_, v)| v));
    match open_vnc(&state, &peer, query, session).await {
        Ok(mut vnc) => {
            if io.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.is_err() {
                return;
            }
            if end < head.len() && vnc.write_all(&head[end..]).await.is_err() {
                return;
            }
            let _ = tokio::io::copy_bidirectional(&mut io, &mut vnc).await;
        }
        Err((status, why)) => {
            let body = format!("{why}\n");
            let reason = status.canonical_reason().unwrap_or("Error");
            let answer = format!(
                "HTTP/1.1 {} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                status.as_u16(),
                body.len()
            );
            let _ = io.write_all(answer.as_bytes()).await;
            let _ = io.shutdown().await;
        }
    }
}
