//! The HTTP front end: XML-RPC and JSON-RPC in, bytes out, exactly as xapi frames them.
//!
//! Routing is xapi's longest-prefix rule: `POST /jsonrpc` and `/json` are JSON-RPC; `POST` to any other path
//! (`/`, `/RPC2`, `/xmlrpc`, …) is XML-RPC. Responses carry `Content-Type: text/xml` or `application/json`
//! exactly (Xen Orchestra compares it with `!==`) and xapi's CORS headers. A body that is not a well-formed call
//! is answered in the protocol's own failure form (`XMLRPC_UNMARSHAL_FAILURE`), never an HTML page; one over
//! [`MAX_BODY`] with `413` (see `docs/reliability.md`, "Bad input and limits").

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Request, State as AxState};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, get, on, post, put};
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
        .route("/import_raw_vdi", put(crate::vdi_http::import).post(crate::vdi_http::import))
        .route("/export_raw_vdi", get(crate::vdi_http::export))
        .route("/console", on(MethodFilter::CONNECT, crate::console::handler).post(console_post))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(state.clone(), in_flight))
        .with_state(state)
}

/// Requests being handled, counted while their handler runs (an `event.from` waiting counts).
#[derive(Debug, Default)]
pub struct InFlight(std::sync::atomic::AtomicUsize);

struct Counted<'a>(&'a InFlight);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Past `--max-concurrent-requests` requests being handled at once, `429 Too Many Requests` (`TOO_MANY_REQUESTS
/// …`, plain text), at once; the connection stays usable.
async fn in_flight(AxState(state): AxState<Arc<State>>, req: Request, next: axum::middleware::Next) -> Response {
    let n = state.in_flight.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let _counted = Counted(&state.in_flight);
    let limit = state.settings.max_concurrent_requests;
    if n > limit {
        tracing::info!(in_flight = n, limit, "request refused: too many at once");
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            format!("TOO_MANY_REQUESTS the daemon is handling {limit} requests already (--max-concurrent-requests)\n"),
        )
            .into_response();
        r.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        return r;
    }
    next.run(req).await
}

async fn fallback(AxState(state): AxState<Arc<State>>, ConnectInfo(peer): ConnectInfo<Peer>, req: Request) -> Response {
    match *req.method() {
        Method::POST => match read_body(req).await {
            Ok(body) => xml_handler(state, peer, body).await,
            Err(refusal) => refusal,
        },
        Method::OPTIONS => preflight().await,
        Method::GET if req.uri().path() == "/" => {
            (StatusCode::OK, "xapi-rs: the XenAPI is served by POST (XML-RPC on /, JSON-RPC on /jsonrpc)\n")
                .into_response()
        }
        _ => (StatusCode::NOT_FOUND, "no handler for this path\n").into_response(),
    }
}

/// `POST /console` is still XML-RPC (xapi routes by longest prefix only for the handlers it has).
async fn console_post(
    AxState(state): AxState<Arc<State>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
) -> Response {
    match read_body(req).await {
        Ok(body) => xml_handler(state, peer, body).await,
        Err(refusal) => refusal,
    }
}

/// The whole body of an RPC request. One longer than [`MAX_BODY`] is refused with `413` (as xapi refuses one
/// over its limit) and a plain-text line: at once when its `Content-Length` says so, before any of it is read;
/// as soon as the limit is passed when it comes chunked. A body that breaks off is a `400`.
async fn read_body(req: Request) -> Result<Bytes, Response> {
    let refuse = |status: StatusCode, why: &str| with_cors((status, format!("{why}\n")).into_response());
    let too_large = || refuse(StatusCode::PAYLOAD_TOO_LARGE, &format!("request body larger than {MAX_BODY} bytes"));
    let announced = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    Bytes::from_request(req, &()).await.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        status => refuse(status, &e.body_text()),
    })
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

fn reply(content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    with_cors(r)
}

/// The protocol a call came in, which its answer goes out in.
enum Proto {
    Xml,
    Json(jsonrpc::Envelope),
}

/// Encoded output is handed on in chunks of about this size, so that a large answer is never whole in memory; each
/// chunk is one job of a bulk thread (`bulk`), large enough that handing it over costs little.
const CHUNK: usize = 256 << 10;

/// An answer of more items (records, events) than this is streamed (chunked transfer encoding) rather than sent
/// in one body.
const STREAM_ITEMS: usize = 64;

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

    /// Writes what comes before a successful answer's value.
    fn begin_success(&self, out: &mut Vec<u8>) {
        match self {
            Proto::Xml => xmlrpc::begin_success(out),
            Proto::Json(env) => jsonrpc::begin_success(out, env),
        }
    }

    fn end_success(&self, out: &mut Vec<u8>) {
        match self {
            Proto::Xml => xmlrpc::end_success(out),
            Proto::Json(env) => jsonrpc::end_success(out, env),
        }
    }

    /// A successful answer, whole.
    fn success(&self, reply: &Reply) -> Vec<u8> {
        match (self, reply) {
            (Proto::Xml, Reply::Bare(v)) => xmlrpc::bare(v),
            (Proto::Xml, _) => self.whole(reply, xmlrpc::XmlSink::new()),
            (Proto::Json(_), _) => self.whole(reply, jsonrpc::JsonSink::new()),
        }
    }

    fn whole<S: Sink + Default + AsMut<Vec<u8>>>(&self, reply: &Reply, mut sink: S) -> Vec<u8> {
        self.begin_success(sink.as_mut());
        encode::emit_value(reply, &mut sink);
        self.end_success(sink.as_mut());
        std::mem::take(sink.as_mut())
    }

    /// A successful answer as a stream of chunks, each encoded when the connection asks for it: a client that
    /// stops reading stops the encoding, and holds no thread.
    fn stream(self, reply: Reply) -> Body {
        match self {
            Proto::Xml => chunks(self, reply, xmlrpc::XmlSink::new()),
            Proto::Json(_) => chunks(self, reply, jsonrpc::JsonSink::new()),
        }
    }
}

fn chunks<S>(proto: Proto, reply: Reply, sink: S) -> Body
where
    S: Sink + Default + AsMut<Vec<u8>> + Send + 'static,
{
    struct Encoding<S> {
        proto: Proto,
        reply: Reply,
        sink: S,
        /// The next item to write; `None` before the beginning.
        next: Option<usize>,
        done: bool,
    }
    /// Encodes the next chunk; answers it with the state for the one after.
    fn next_chunk<S: Sink + Default + AsMut<Vec<u8>>>(mut st: Encoding<S>) -> (Vec<u8>, Encoding<S>) {
        let n = encode::items(&st.reply);
        let i = st.next.get_or_insert_with(|| {
            st.proto.begin_success(st.sink.as_mut());
            encode::begin(&st.reply, &mut st.sink);
            0
        });
        while *i < n && st.sink.as_mut().len() < CHUNK {
            encode::item(&st.reply, *i, &mut st.sink);
            *i += 1;
        }
        if *i == n {
            encode::end(&st.reply, &mut st.sink);
            st.proto.end_success(st.sink.as_mut());
            st.done = true;
        }
        let chunk = std::mem::replace(st.sink.as_mut(), Vec::with_capacity(CHUNK + CHUNK / 4));
        (chunk, st)
    }
    let first = crate::bulk::spawn(move || next_chunk(Encoding { proto, reply, sink, next: None, done: false }));
    // Chunks are encoded on the bulk threads (`bulk`, `priority`), chunk n+1 while chunk n is sent, no further ahead.
    let stream = futures_util::stream::unfold(Some(first), |pending| async move {
        let (chunk, st) = pending?.await.ok()?;
        let next = if st.done { None } else { Some(crate::bulk::spawn(move || next_chunk(st))) };
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(chunk)), next))
    });
    Body::from_stream(stream)
}

async fn xml_handler(state: Arc<State>, peer: Peer, body: Bytes) -> Response {
    let parsed = xmlrpc::parse_call(&body);
    // The call owns what it needs: the request's buffer is not kept while the call runs (or waits for events).
    drop(body);
    match parsed {
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
    req: Request,
) -> Response {
    let body = match read_body(req).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let parsed = jsonrpc::parse_call(&body);
    drop(body);
    match parsed {
        Ok((env, call)) => run(state, peer, call, Proto::Json(env)).await,
        Err(e) => {
            // Without a well-formed request there is no id to echo.
            let proto = Proto::Json(jsonrpc::Envelope { version: jsonrpc::Version::V2, id: serde_json::Value::Null });
            reply(proto.content_type(), proto.failure(&ApiError::unmarshal("JSON-RPC request", &e.to_string())))
        }
    }
}

/// Dispatches and answers; large answers are streamed out in chunks, each encoded as the connection asks for it.
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
    let body = if encode::items(&r) <= STREAM_ITEMS { Body::from(proto.success(&r)) } else { proto.stream(r) };
    reply(content_type, body)
}
