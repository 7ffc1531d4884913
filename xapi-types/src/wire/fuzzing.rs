//! The entry points of the `cargo fuzz` targets in `xapi-types/fuzz/`, with the invariants every input must keep
//! (each one panics when an invariant breaks). `tests/fuzz_seeds.rs` runs them over the committed seeds in a
//! plain `cargo test`.
//!
//! * [`xmlrpc_call`], [`xmlrpc_response`], [`jsonrpc_call`]: no input panics the reader; what it accepts nests at
//!   most [`MAX_DEPTH`] containers deep; and what it accepts, written by our writer and read again, is the same
//!   value up to what the encoding cannot carry (see [`xml_canonical`]; JSON carries everything but non-finite
//!   floats).
//! * [`http_query`]: the query, cookie and Basic-credential helpers ([`super::query`]) never panic, agree with
//!   simple reference definitions, and round-trip what they are meant to.

use super::MAX_DEPTH;
use super::jsonrpc::{self, Envelope, Version};
use super::query;
use super::xmlrpc;
use crate::value::Value;

/// How many arrays and structs nest in `v` (a scalar is 0).
pub fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Struct(members) => 1 + members.iter().map(|(_, v)| depth(v)).max().unwrap_or(0),
        _ => 0,
    }
}

/// `s` as XML-RPC carries it: the characters our writer drops (C0 controls but tab, LF and CR; U+FFFE, U+FFFF)
/// dropped, and then line ends read back as an XML reader reads them (the writer sends CR raw, so CRLF and a lone
/// CR become LF). Dropping comes first: a CR and an LF with only dropped characters between them arrive as CRLF.
pub fn xml_text(s: &str) -> String {
    let kept: String = s
        .chars()
        .filter(|&c| !matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}'))
        .collect();
    let mut out = String::with_capacity(kept.len());
    let mut chars = kept.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' {
            chars.next_if_eq(&'\n');
            out.push('\n');
        } else {
            out.push(c);
        }
    }
    out
}

/// `v` as it reads back after a trip through our XML-RPC writer: text as [`xml_text`], `Int` as a bare string
/// (xapi writes int64 so), `I32` as `Int`. Floats are left alone; [`same`] compares them to `%.16g`'s precision.
pub fn xml_canonical(v: &Value) -> Value {
    match v {
        Value::Str(s) => Value::Str(xml_text(s)),
        Value::Int(i) => Value::Str(i.to_string()),
        Value::I32(i) => Value::Int(i64::from(*i)),
        Value::DateTime(s) => Value::DateTime(xml_text(s)),
        Value::Array(items) => Value::Array(items.iter().map(xml_canonical).collect()),
        Value::Struct(members) => Value::Struct(members.iter().map(|(k, v)| (xml_text(k), xml_canonical(v))).collect()),
        Value::Float(_) | Value::Bool(_) | Value::Nil => v.clone(),
    }
}

/// `v` as it reads back after a trip through our JSON-RPC writer: non-finite floats become `null`.
pub fn json_canonical(v: &Value) -> Value {
    match v {
        Value::Float(f) if !f.is_finite() => Value::Nil,
        Value::I32(i) => Value::Int(i64::from(*i)),
        Value::DateTime(s) => Value::Str(s.clone()),
        Value::Array(items) => Value::Array(items.iter().map(json_canonical).collect()),
        Value::Struct(members) => Value::Struct(members.iter().map(|(k, v)| (k.clone(), json_canonical(v))).collect()),
        _ => v.clone(),
    }
}

/// Equality, with NaN equal to NaN and finite floats equal within `%.16g`'s rounding.
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => {
            (x.is_nan() && y.is_nan())
                || x == y
                || (x.is_finite() && y.is_finite() && (x - y).abs() <= x.abs().max(y.abs()) * 1e-15)
        }
        (Value::Array(xs), Value::Array(ys)) => xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same(x, y)),
        (Value::Struct(xs), Value::Struct(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|((kx, x), (ky, y))| kx == ky && same(x, y))
        }
        _ => a == b,
    }
}

fn assert_same(want: &Value, got: &Value, what: &str) {
    assert!(same(want, got), "{what} changed on a round trip:\nwant {want:?}\ngot  {got:?}");
}

/// A `methodCall` body, as the daemon reads it on `POST /`.
pub fn xmlrpc_call(data: &[u8]) {
    let Ok(call) = xmlrpc::parse_call(data) else { return };
    for p in &call.params {
        assert!(depth(p) <= MAX_DEPTH, "a param nests {} deep", depth(p));
    }
    let written = xmlrpc::write_call(&call.method, &call.params);
    let again = xmlrpc::parse_call(&written).expect("a call we write reads back");
    assert_eq!(again.method, xml_text(&call.method));
    assert_same(&Value::Array(call.params.iter().map(xml_canonical).collect()), &Value::Array(again.params), "params");
}

/// A `methodResponse` body, as `xe` and the tests read it.
pub fn xmlrpc_response(data: &[u8]) {
    let Ok(whole) = xmlrpc::parse_response(data) else { return };
    assert!(depth(&whole) <= MAX_DEPTH + 1, "a response nests {} deep", depth(&whole));
    let Ok(result) = xmlrpc::parse_result(data) else { return };
    let (written, want) = match &result {
        Ok(v) if whole.get("Status").is_some() => (xmlrpc::success(v), Ok(xml_canonical(v))),
        Ok(v) => {
            let want = xml_canonical(v);
            if want.get("Status").is_some() {
                // A member name that becomes `Status` once its control characters are dropped.
                return;
            }
            (xmlrpc::bare(v), Ok(want))
        }
        Err(description) => (xmlrpc::failure(description), Err(description.iter().map(|s| xml_text(s)).collect())),
    };
    let again = xmlrpc::parse_result(&written).expect("a response we write reads back");
    match (&want, &again) {
        (Ok(w), Ok(g)) => assert_same(w, g, "the result"),
        _ => assert_eq!(want, again),
    }
}

/// A JSON-RPC request body, as the daemon reads it on `POST /jsonrpc`, and the same bytes as a response.
pub fn jsonrpc_call(data: &[u8]) {
    if let Ok((env, call)) = jsonrpc::parse_call(data) {
        for p in &call.params {
            assert!(depth(p) <= MAX_DEPTH, "a param nests {} deep", depth(p));
        }
        let written = jsonrpc::write_call(&call.method, &call.params, env.version, env.id.clone());
        let (env2, again) = jsonrpc::parse_call(&written).expect("a call we write reads back");
        assert_eq!(env2, env);
        assert_eq!(again.method, call.method);
        assert_same(
            &Value::Array(call.params.iter().map(json_canonical).collect()),
            &Value::Array(again.params),
            "params",
        );
    }
    if let Ok(result) = jsonrpc::parse_response(data) {
        for version in [Version::V1, Version::V2] {
            let env = Envelope { version, id: serde_json::json!(1) };
            let (written, want) = match &result {
                Ok(v) => (jsonrpc::success(&env, v), Ok(json_canonical(v))),
                // A v2 error always has a message (the code); v1 can carry an empty list.
                Err(d) if d.is_empty() && version == Version::V2 => continue,
                Err(d) => (jsonrpc::failure(&env, d), Err(d.clone())),
            };
            let again = jsonrpc::parse_response(&written).expect("a response we write reads back");
            match (&want, &again) {
                (Ok(w), Ok(g)) => assert_same(w, g, "the result"),
                _ => assert_eq!(want, again),
            }
        }
    }
}

/// The reference meaning of `%XX`: exactly two hex digits.
fn reference_percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            (b'+', ..) => out.push(b' '),
            (c, ..) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &[u8]) -> String {
    s.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn base64_encode(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &c)| n | (u32::from(c) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

/// The keys the handlers look up.
const KEYS: &[&str] = &[
    "session_id",
    "vdi",
    "format",
    "task_id",
    "sr_id",
    "sr",
    "virtual_size",
    "name_label",
    "name_description",
    "base",
    "uuid",
    "ref",
];

/// A request's query and headers, as the plain-HTTP handlers read them: the first line of `data` is the query,
/// the others are `Cookie` header values; the whole input is also tried as Basic credentials.
pub fn http_query(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (query, rest) = text.split_once('\n').unwrap_or((&text, ""));
    for key in KEYS.iter().copied().chain(query.split(['&', '=']).take(4)) {
        if let Some(raw) = query::query_param(query, key) {
            assert!(query.contains(&format!("{key}={raw}")));
            let decoded = query::param(query, key).expect("a parameter that is there decodes");
            assert_eq!(decoded, reference_percent_decode(raw), "percent-decoding {raw:?}");
            assert!(decoded.len() <= 3 * raw.len());
        }
    }
    let encoded = percent_encode(query.as_bytes());
    assert_eq!(query::percent_decode(&encoded), query, "percent-decoding what was percent-encoded");
    assert_eq!(query::param(&format!("a=1&session_id={encoded}&b"), "session_id").as_deref(), Some(query));

    if let Some(v) = query::session_cookie(rest.lines()) {
        assert!(rest.lines().any(|l| l.split(';').any(|kv| kv.trim() == format!("session_id={v}"))));
    }

    match query::base64_decode(&text) {
        Some(bytes) => {
            assert!(bytes.len() <= text.len() * 3 / 4 + 1);
            assert_eq!(query::base64_decode(&base64_encode(&bytes)), Some(bytes.clone()));
        }
        None => assert!(
            text.trim().trim_end_matches('=').bytes().any(|b| !(b.is_ascii_alphanumeric() || b == b'+' || b == b'/'))
        ),
    }
    assert_eq!(query::base64_decode(&base64_encode(data)).as_deref(), Some(data));
}

/// Runs every entry point over `data` (what the seed tests do with each committed seed).
pub fn all(data: &[u8]) {
    xmlrpc_call(data);
    xmlrpc_response(data);
    jsonrpc_call(data);
    http_query(data);
}
