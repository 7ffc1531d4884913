//! The HTTP front end: XML-RPC and JSON-RPC in, bytes out, exactly as xapi frames them.
//!
//! Routing is xapi's longest-prefix rule: `POST /jsonrpc` and `/json` are JSON-RPC; `POST` to any other path
//! (`/`, `/RPC2`, `/xmlrpc`, …) is XML-RPC. Responses carry `Content-Type: text/xml` or `application/json`
//! exactly (Xen Orchestra compares it with `!==`) and xapi's CORS headers. A body that is not a well-formed call
//! is answered in the protocol's own failure form (`XMLRPC_UNMARSHAL_FAILURE`), never an HTML page.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State as AxState};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use xapi_types::Class;
use xapi_types::wire::{Call, Sink, jsonrpc, xmlrpc};

use crate::db::Row;
use crate::dispatch::{self, Reply};
use crate::error::ApiError;
use crate::state::{Peer, State};

/// Largest request body accepted (xapi: 300 KiB; we allow more for large `create` records).
pub const MAX_BODY: usize = 8 << 20;

pub fn app(state: Arc<State>) -> Router {
    Router::new()
        .route("/jsonrpc", post(json_handler).options(preflight))
        .route("/json", post(json_handler).options(preflight))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn fallback(AxState(state): AxState<Arc<State>>, ConnectInfo(peer): ConnectInfo<Peer>, req: Request) -> Response {
    match *req.method() {
        Method::POST => {
            let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
                Ok(b) => b,
                Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response(),
            };
            xml_handler(state, peer, body).await
        }
        Method::OPTIONS => preflight().await,
        Method::GET if req.uri().path() == "/" => {
            (StatusCode::OK, "xapi-rs: the XenAPI is served by POST (XML-RPC on /, JSON-RPC on /jsonrpc)\n")
                .into_response()
        }
        _ => (StatusCode::NOT_FOUND, "no handler for this path\n").into_response(),
    }
}

async fn preflight() -> Response {
    with_cors(StatusCode::OK.into_response())
}

fn with_cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("X-Requested-With"));
    r
}

fn reply(content_type: &'static str, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    with_cors(r)
}

async fn xml_handler(state: Arc<State>, peer: Peer, body: Bytes) -> Response {
    let bytes = match xmlrpc::parse_call(&body) {
        Ok(call) => {
            run(state, peer, call, |result| match result {
                Ok(Reply::Bare(v)) => xmlrpc::bare(&v),
                Ok(r) => {
                    let mut sink = xmlrpc::XmlSink::new();
                    xmlrpc::begin_success(&mut sink.out);
                    emit_reply(&r, &mut sink);
                    xmlrpc::end_success(&mut sink.out);
                    sink.out
                }
                Err(e) => xmlrpc::failure(&e.description()),
            })
            .await
        }
        Err(e) => xmlrpc::failure(&ApiError::unmarshal("methodCall", &e.to_string()).description()),
    };
    reply("text/xml", bytes)
}

async fn json_handler(
    AxState(state): AxState<Arc<State>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Bytes,
) -> Response {
    let bytes = match jsonrpc::parse_call(&body) {
        Ok((env, call)) => {
            run(state, peer, call, move |result| match result {
                Ok(r) => {
                    let mut sink = jsonrpc::JsonSink::new();
                    jsonrpc::begin_success(&mut sink.out, &env);
                    emit_reply(&r, &mut sink);
                    jsonrpc::end_success(&mut sink.out, &env);
                    sink.out
                }
                Err(e) => jsonrpc::failure(&env, &e.description()),
            })
            .await
        }
        Err(e) => {
            let env = jsonrpc::Envelope { version: jsonrpc::Version::V2, id: serde_json::Value::Null };
            jsonrpc::failure(&env, &ApiError::unmarshal("JSON-RPC request", &e.to_string()).description())
        }
    };
    reply("application/json", bytes)
}

/// Dispatches and encodes. Cheap reads run on the async worker; calls that write to disk, and the encoding of
/// many records, run where blocking is allowed, so that they never stall other connections.
async fn run(
    state: Arc<State>,
    peer: Peer,
    call: Call,
    encode: impl FnOnce(Result<Reply, ApiError>) -> Vec<u8> + Send + 'static,
) -> Vec<u8> {
    let method = call.method.clone();
    let result = if dispatch::is_read_only(&method) {
        dispatch::dispatch(&state, &peer, call)
    } else {
        tokio::task::spawn_blocking(move || dispatch::dispatch(&state, &peer, call))
            .await
            .unwrap_or_else(|e| Err(ApiError::internal(format!("{method} panicked: {e}"))))
    };
    if let Err(e) = &result {
        tracing::debug!(method, error = %e, "call failed");
    }
    if matches!(result, Ok(Reply::Records(_, ref rows)) if rows.len() > 16) {
        tokio::task::spawn_blocking(move || encode(result)).await.expect("encoding does not panic")
    } else {
        encode(result)
    }
}

fn emit_record<S: Sink>(class: &Class, row: &Row, sink: &mut S) {
    sink.begin_struct();
    for (f, v) in class.fields.iter().zip(&row.fields) {
        sink.key(f.name);
        v.emit(sink);
    }
    sink.end_struct();
}

pub fn emit_reply<S: Sink>(reply: &Reply, sink: &mut S) {
    match reply {
        Reply::Value(v) | Reply::Bare(v) => v.emit(sink),
        Reply::Record(class, row) => emit_record(class, row, sink),
        Reply::Records(class, rows) => {
            sink.begin_struct();
            for (r, row) in rows {
                sink.key(r);
                emit_record(class, row, sink);
            }
            sink.end_struct();
        }
    }
}
