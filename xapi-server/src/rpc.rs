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
use xapi_types::wire::{Call, Sink, jsonrpc, xmlrpc};

use crate::dispatch::{self, Reply};
use crate::encode;
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

/// The protocol a call came in, which its answer goes out in.
enum Proto {
    Xml,
    Json(jsonrpc::Envelope),
}

/// Encoded output is handed on in chunks of about this size, so that a large answer is never whole in memory
/// (and, below glibc's mmap threshold, the chunk buffers are reused rather than kept per thread).
const CHUNK: usize = 64 << 10;

/// A record set larger than this is streamed (chunked transfer encoding) rather than sent in one body.
const STREAM_ROWS: usize = 64;

impl Proto {
    fn content_type(&self) -> &'static str {
        match self {
            Proto::Xml => "text/xml",
            Proto::Json(_) => "application/json",
        }
    }

    fn failure(&self, e: &ApiError) -> Vec<u8> {
        match self {
            Proto::Xml => xmlrpc::failure(&e.description()),
            Proto::Json(env) => jsonrpc::failure(env, &e.description()),
        }
    }

    /// Writes a successful answer, handing each chunk to `flush`; stops early if `flush` answers `false`.
    fn write_success(&self, reply: &Reply, flush: &mut dyn FnMut(Vec<u8>) -> bool) {
        match self {
            Proto::Xml => {
                if let Reply::Bare(v) = reply {
                    flush(xmlrpc::bare(v));
                    return;
                }
                let mut sink = xmlrpc::XmlSink::new();
                xmlrpc::begin_success(&mut sink.out);
                if emit_chunked(reply, &mut sink, flush) {
                    xmlrpc::end_success(&mut sink.out);
                    flush(std::mem::take(&mut sink.out));
                }
            }
            Proto::Json(env) => {
                let mut sink = jsonrpc::JsonSink::new();
                jsonrpc::begin_success(&mut sink.out, env);
                if emit_chunked(reply, &mut sink, flush) {
                    jsonrpc::end_success(&mut sink.out, env);
                    flush(std::mem::take(&mut sink.out));
                }
            }
        }
    }
}

async fn xml_handler(state: Arc<State>, peer: Peer, body: Bytes) -> Response {
    match xmlrpc::parse_call(&body) {
        Ok(call) => run(state, peer, call, Proto::Xml).await,
        Err(e) => {
            let proto = Proto::Xml;
            reply(proto.content_type(), proto.failure(&ApiError::unmarshal("methodCall", &e.to_string())))
        }
    }
}

async fn json_handler(
    AxState(state): AxState<Arc<State>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Bytes,
) -> Response {
    match jsonrpc::parse_call(&body) {
        Ok((env, call)) => run(state, peer, call, Proto::Json(env)).await,
        Err(e) => {
            // Without a well-formed request there is no id to echo.
            let proto = Proto::Json(jsonrpc::Envelope { version: jsonrpc::Version::V2, id: serde_json::Value::Null });
            reply(proto.content_type(), proto.failure(&ApiError::unmarshal("JSON-RPC request", &e.to_string())))
        }
    }
}

/// Dispatches and answers; large answers are encoded on a blocking thread and streamed out in chunks as they are
/// encoded.
async fn run(state: Arc<State>, peer: Peer, call: Call, proto: Proto) -> Response {
    let method = call.method.clone();
    let content_type = proto.content_type();
    let r = match dispatch::call(state, peer, call).await {
        Err(e) => {
            tracing::debug!(method, error = %e, "call failed");
            return reply(content_type, proto.failure(&e));
        }
        Ok(r) => r,
    };
    if r.size() <= STREAM_ROWS {
        let mut out = Vec::new();
        proto.write_success(&r, &mut |chunk| {
            if out.is_empty() {
                out = chunk;
            } else {
                out.extend_from_slice(&chunk);
            }
            true
        });
        return reply(content_type, out);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    tokio::task::spawn_blocking(move || {
        // A client that goes away closes the channel, and the encoding stops.
        proto.write_success(&r, &mut |chunk| tx.blocking_send(chunk).is_ok());
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<_, std::convert::Infallible>(Bytes::from(chunk)), rx))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    with_cors(response)
}

/// Emits a reply's value, handing full chunks to `flush` between records; `false` if `flush` asked to stop.
fn emit_chunked<S: Sink + Default + AsMut<Vec<u8>>>(
    reply: &Reply,
    sink: &mut S,
    flush: &mut dyn FnMut(Vec<u8>) -> bool,
) -> bool {
    encode::emit_reply(reply, sink, &mut |sink: &mut S| {
        if sink.as_mut().len() < CHUNK {
            return true;
        }
        let chunk = std::mem::replace(sink.as_mut(), Vec::with_capacity(CHUNK + CHUNK / 4));
        flush(chunk)
    })
}
