//! JSON-RPC (`POST /jsonrpc`), v1 and v2, as xapi (ocaml-rpc's `Jsonrpc` and `api_server.ml`) speaks it.
//!
//! Responses, compact, members in xapi's order:
//! * v1 success `{"result":…,"error":null,"id":…}`, failure `{"result":null,"error":["CODE",…],"id":…}`;
//! * v2 success `{"jsonrpc":"2.0","result":…,"id":…}` (**no `error` member**: Xen Orchestra rejects
//!   `"error":null`), failure `{"jsonrpc":"2.0","error":{"code":1,"message":"CODE","data":[…]},"id":…}`.
//!
//! Values are unwrapped: int64 and Int32 are JSON numbers, datetimes strings, `Nil` is `null`. Strings are
//! escaped by serde_json. Floats are written as xapi's JSON library (Yojson) writes them: `%.16g`, or `%.17g`
//! when that does not read back as the same number, with `.0` added when the result looks like an integer
//! (`1.0`, `1e+20`, `0.1`). Yojson would write `NaN`/`Infinity`, which is not JSON and breaks every client's
//! `JSON.parse`; we write `null` instead.
//!
//! Requests: see `reader` for the parsing rules.

mod reader;

use super::Sink;
use std::io::Write as _;

use crate::value::Value;

/// Which JSON-RPC a request spoke; a response answers in the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// What a response must echo from its request.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub version: Version,
    /// A JSON string or integer, exactly as the request gave it.
    pub id: serde_json::Value,
}

pub use reader::{parse_call, parse_response};

/// A [`Sink`] that writes compact JSON into `out`.
///
/// `out` may be drained at any point; the comma state lives in the sink, not in the buffer.
#[derive(Debug, Default)]
pub struct JsonSink {
    pub out: Vec<u8>,
    /// One entry per open container: whether it still has no element.
    first: Vec<bool>,
    /// A struct key was just written, so the next value takes no comma.
    after_key: bool,
}

impl JsonSink {
    pub fn new() -> JsonSink {
        JsonSink::default()
    }

    /// A sink that appends to `out` (which may already hold, say, the [`begin_success`] prefix).
    pub fn with_buffer(out: Vec<u8>) -> JsonSink {
        JsonSink { out, first: Vec::new(), after_key: false }
    }

    /// Writes the comma that separates this item from the previous one in its container, if any.
    fn separate(&mut self) {
        if std::mem::take(&mut self.after_key) {
            return;
        }
        if let Some(first) = self.first.last_mut() {
            if !*first {
                self.out.push(b',');
            }
            *first = false;
        }
    }
}

impl AsMut<Vec<u8>> for JsonSink {
    fn as_mut(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }
}

impl Sink for JsonSink {
    fn str(&mut self, s: &str) {
        self.separate();
        write_json_str(&mut self.out, s);
    }

    fn int(&mut self, i: i64) {
        self.separate();
        let _ = write!(self.out, "{i}");
    }

    fn i32(&mut self, i: i32) {
        self.separate();
        self.out.extend_from_slice(i.to_string().as_bytes());
    }

    fn float(&mut self, f: f64) {
        self.separate();
        self.out.extend_from_slice(format_json_float(f).as_bytes());
    }

    fn bool(&mut self, b: bool) {
        self.separate();
        self.out.extend_from_slice(if b { b"true" } else { b"false" });
    }

    fn datetime(&mut self, s: &str) {
        self.separate();
        write_json_str(&mut self.out, s);
    }

    fn nil(&mut self) {
        self.separate();
        self.out.extend_from_slice(b"null");
    }

    fn begin_array(&mut self) {
        self.separate();
        self.out.push(b'[');
        self.first.push(true);
    }

    fn end_array(&mut self) {
        self.first.pop();
        self.out.push(b']');
    }

    fn begin_struct(&mut self) {
        self.separate();
        self.out.push(b'{');
        self.first.push(true);
    }

    fn key(&mut self, k: &str) {
        self.separate();
        write_json_str(&mut self.out, k);
        self.out.push(b':');
        self.after_key = true;
    }

    fn end_struct(&mut self) {
        self.first.pop();
        self.out.push(b'}');
    }

    fn encoding(&self) -> &'static str {
        "jsonrpc"
    }

    fn raw_value(&mut self, encoded: &[u8]) {
        self.separate();
        self.out.extend_from_slice(encoded);
    }
}

/// Writes everything of a success response up to its `result`; follow it with exactly one value (through a
/// [`JsonSink`] writing into the same buffer, or a later-concatenated one) and then [`end_success`].
pub fn begin_success(out: &mut Vec<u8>, env: &Envelope) {
    out.extend_from_slice(match env.version {
        Version::V1 => b"{\"result\":".as_slice(),
        Version::V2 => b"{\"jsonrpc\":\"2.0\",\"result\":".as_slice(),
    });
}

/// Closes what [`begin_success`] opened.
pub fn end_success(out: &mut Vec<u8>, env: &Envelope) {
    if env.version == Version::V1 {
        out.extend_from_slice(b",\"error\":null");
    }
    write_id(out, &env.id);
}

/// A whole success response carrying `v`.
pub fn success(env: &Envelope, v: &Value) -> Vec<u8> {
    let mut sink = JsonSink::new();
    begin_success(&mut sink.out, env);
    v.emit(&mut sink);
    end_success(&mut sink.out, env);
    sink.out
}

/// A whole failure response; `description` is `[CODE, param…]`.
pub fn failure(env: &Envelope, description: &[String]) -> Vec<u8> {
    let mut sink = JsonSink::new();
    let strings = |sink: &mut JsonSink, items: &[String]| {
        sink.begin_array();
        for s in items {
            sink.str(s);
        }
        sink.end_array();
    };
    match env.version {
        Version::V1 => {
            sink.out.extend_from_slice(b"{\"result\":null,\"error\":");
            strings(&mut sink, description);
        }
        Version::V2 => {
            // As api_server.ml: message = the code ("" if there is none), data = the rest, always present.
            let (code, params) = description.split_first().map_or(("", &[][..]), |(c, p)| (c.as_str(), p));
            sink.out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,\"message\":");
            write_json_str(&mut sink.out, code);
            sink.out.extend_from_slice(b",\"data\":");
            strings(&mut sink, params);
            sink.out.push(b'}');
        }
    }
    write_id(&mut sink.out, &env.id);
    sink.out
}

/// A request (what our `xe` would send): `{"jsonrpc":"2.0","method":…,"params":[…],"id":…}` (v2) or
/// `{"method":…,"params":[…],"id":…}` (v1).
pub fn write_call(method: &str, params: &[Value], version: Version, id: serde_json::Value) -> Vec<u8> {
    let mut sink = JsonSink::new();
    if version == Version::V2 {
        sink.out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"method\":");
    } else {
        sink.out.extend_from_slice(b"{\"method\":");
    }
    write_json_str(&mut sink.out, method);
    sink.out.extend_from_slice(b",\"params\":");
    sink.begin_array();
    for p in params {
        p.emit(&mut sink);
    }
    sink.end_array();
    write_id(&mut sink.out, &id);
    sink.out
}

/// `,"id":<id>}`.
fn write_id(out: &mut Vec<u8>, id: &serde_json::Value) {
    out.extend_from_slice(b",\"id\":");
    // Serializing a serde_json::Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, id);
    out.push(b'}');
}

/// `s` as a JSON string literal, escaped by serde_json.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Most strings (field names, refs, uuids, labels) need no escaping: copy them as they are.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // Serializing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// `f` as Yojson writes it (see the module documentation), `null` when not finite.
fn format_json_float(f: f64) -> String {
    if !f.is_finite() {
        return "null".into();
    }
    let short = super::xmlrpc::format_g(f, 16);
    let mut s = if short.parse::<f64>() == Ok(f) { short } else { super::xmlrpc::format_g(f, 17) };
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        s.push_str(".0");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_as_yojson() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (1e20, "1e+20"),
            (1e15, "1000000000000000.0"),
            (60.1, "60.1"),
            (0.30000000000000004, "0.30000000000000004"),
            (1.5e-7, "1.5e-07"),
            (5e-324, "4.940656458412465e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::NAN, "null"),
            (f64::NEG_INFINITY, "null"),
        ];
        for &(v, want) in cases {
            assert_eq!(format_json_float(v), want, "{v:e}");
        }
    }
}
