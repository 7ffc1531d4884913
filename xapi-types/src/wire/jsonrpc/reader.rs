//! Reading JSON-RPC: a strict RFC 8259 parser that builds [`Value`]s directly, and the envelope rules.
//!
//! Our own parser rather than serde_json's `Value`, so that integers and floats stay apart exactly as written
//! (`1` is `Int`, `1.0` and `1e3` are `Float`, an integer that does not fit i64 is an error rather than a
//! rounded float), object members keep their order *and* duplicates (as Yojson's assoc lists do; for the
//! envelope the first of a duplicated member wins, as `List.assoc` does), and nesting is bounded by
//! [`MAX_DEPTH`] with [`WireError::TooDeep`].
//!
//! Envelope rules (ocaml-rpc `version_id_and_call_of_string`):
//! * `"jsonrpc":"2.0"` means v2; no `jsonrpc` member means v1; any other `jsonrpc` value is malformed (as in
//!   xapi).
//! * `method` must be a string.
//! * `params` must be an array in v1; in v2 it may also be missing or `null` (no params) or an object (one
//!   struct param).
//! * `id` must be a string or an integer and is echoed as given; a missing or `null` id (a notification) is
//!   malformed, as in xapi.
//! * The params array and the envelope object do not count towards the depth limit; params' own arrays and
//!   objects do.

use super::{Envelope, Version};
use crate::value::Value;
use crate::wire::{Call, MAX_DEPTH, WireError};

/// Parses a request body (server side).
pub fn parse_call(body: &[u8]) -> Result<(Envelope, Call), WireError> {
    let members = parse_document(body, Some("params"))?;
    let get = |k: &str| members.iter().find(|(n, _)| n == k).map(|(_, v)| v);
    let version = match get("jsonrpc") {
        None => Version::V1,
        Some(Value::Str(s)) if s == "2.0" => Version::V2,
        Some(_) => return Err(malformed("invalid field 'jsonrpc'")),
    };
    let method = match get("method") {
        Some(Value::Str(s)) => s.clone(),
        Some(_) => return Err(malformed("field 'method' is not a string")),
        None => return Err(malformed("missing field 'method'")),
    };
    let params = match (version, get("params")) {
        (_, Some(Value::Array(items))) => items.clone(),
        (Version::V2, None | Some(Value::Nil)) => Vec::new(),
        (Version::V2, Some(s @ Value::Struct(_))) => vec![s.clone()],
        (_, Some(_)) => return Err(malformed("invalid field 'params'")),
        (Version::V1, None) => return Err(malformed("missing field 'params'")),
    };
    let id = match get("id") {
        Some(Value::Str(s)) => serde_json::Value::String(s.clone()),
        Some(Value::Int(i)) => serde_json::Value::from(*i),
        None | Some(Value::Nil) => {
            return Err(malformed("missing field 'id' (notifications are not supported)"));
        }
        Some(_) => return Err(malformed("field 'id' is neither a string nor an integer")),
    };
    Ok((Envelope { version, id }, Call { method, params }))
}

/// Parses a response body (client side): `Ok(Ok(result))`, or `Ok(Err([CODE, param…]))` for a XenAPI failure
/// (v1 `error` list, or v2 error object's `message` followed by its `data`).
pub fn parse_response(body: &[u8]) -> Result<Result<Value, Vec<String>>, WireError> {
    let members = parse_document(body, None)?;
    let get = |k: &str| members.iter().find(|(n, _)| n == k).map(|(_, v)| v);
    match get("jsonrpc") {
        None => match (get("result"), get("error")) {
            (Some(r), Some(Value::Nil)) => Ok(Ok(r.clone())),
            (Some(Value::Nil), Some(e)) => strings(e).map(Err),
            (Some(_), Some(_)) => Err(malformed("response has both a result and an error")),
            _ => Err(malformed("v1 response needs both 'result' and 'error'")),
        },
        Some(Value::Str(s)) if s == "2.0" => match (get("result"), get("error")) {
            (Some(r), None) => Ok(Ok(r.clone())),
            (None, Some(e)) => {
                let message = match e.get("message") {
                    Some(Value::Str(m)) => m.clone(),
                    _ => return Err(malformed("v2 error has no string 'message'")),
                };
                let mut description = vec![message];
                match e.get("data") {
                    None | Some(Value::Nil) => {}
                    Some(d) => description.extend(strings(d)?),
                }
                Ok(Err(description))
            }
            (Some(_), Some(_)) => Err(malformed("response has both a result and an error")),
            (None, None) => Err(malformed("response has neither a result nor an error")),
        },
        Some(_) => Err(malformed("invalid field 'jsonrpc'")),
    }
}

fn strings(v: &Value) -> Result<Vec<String>, WireError> {
    v.as_array()
        .and_then(|items| items.iter().map(|i| i.as_str().map(str::to_owned)).collect())
        .ok_or_else(|| malformed("error description is not a list of strings"))
}

fn malformed(what: impl Into<String>) -> WireError {
    WireError::Malformed(what.into())
}

/// The members of the top-level object of `body`. The member named `flat` (the params), when it is an array,
/// does not count as a level of nesting.
fn parse_document(body: &[u8], flat: Option<&str>) -> Result<Vec<(String, Value)>, WireError> {
    let src = std::str::from_utf8(body).map_err(|e| malformed(format!("body is not UTF-8 ({e})")))?;
    let mut r = Reader { src, pos: 0 };
    r.ws();
    if !r.eat(b'{') {
        return Err(malformed("body is not a JSON object"));
    }
    let mut members = Vec::new();
    r.ws();
    if !r.eat(b'}') {
        loop {
            r.ws();
            let key = r.string()?;
            r.ws();
            r.expect(b':')?;
            r.ws();
            let v =
                if flat == Some(key.as_str()) && r.eat(b'[') { Value::Array(r.array_items(0)?) } else { r.value(0)? };
            members.push((key, v));
            r.ws();
            if r.eat(b'}') {
                break;
            }
            r.expect(b',')?;
        }
    }
    r.ws();
    if r.pos != src.len() {
        return Err(malformed("trailing data after the JSON object"));
    }
    Ok(members)
}

struct Reader<'a> {
    src: &'a str,
    pos: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn expect(&mut self, b: u8) -> Result<(), WireError> {
        if self.eat(b) { Ok(()) } else { Err(self.unexpected(&format!("'{}'", b as char))) }
    }

    fn unexpected(&self, expected: &str) -> WireError {
        match self.src[self.pos..].chars().next() {
            Some(c) => malformed(format!("expected {expected} at byte {}, found {c:?}", self.pos)),
            None => malformed(format!("expected {expected}, found the end of the body")),
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// One value. `depth` is the number of arrays/objects around it.
    fn value(&mut self, depth: usize) -> Result<Value, WireError> {
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                let depth = deeper(depth)?;
                let mut members = Vec::new();
                self.ws();
                if self.eat(b'}') {
                    return Ok(Value::Struct(members));
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.ws();
                    self.expect(b':')?;
                    self.ws();
                    members.push((key, self.value(depth)?));
                    self.ws();
                    if self.eat(b'}') {
                        return Ok(Value::Struct(members));
                    }
                    self.expect(b',')?;
                }
            }
            Some(b'[') => {
                self.pos += 1;
                let depth = deeper(depth)?;
                self.array_items(depth).map(Value::Array)
            }
            Some(b'"') => self.string().map(Value::Str),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Nil),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.unexpected("a value")),
        }
    }

    /// The items of an array whose `[` was just read, up to and including its `]`; they sit at `depth`.
    fn array_items(&mut self, depth: usize) -> Result<Vec<Value>, WireError> {
        let mut items = Vec::new();
        self.ws();
        if self.eat(b']') {
            return Ok(items);
        }
        loop {
            self.ws();
            items.push(self.value(depth)?);
            self.ws();
            if self.eat(b']') {
                return Ok(items);
            }
            self.expect(b',')?;
        }
    }

    fn literal(&mut self, word: &str, v: Value) -> Result<Value, WireError> {
        if self.src[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(v)
        } else {
            Err(self.unexpected("a value"))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`: `Int` without fraction and exponent, else `Float`.
    fn number(&mut self) -> Result<Value, WireError> {
        let start = self.pos;
        self.eat(b'-');
        let int_start = self.pos;
        let n = self.digits();
        if n == 0 || (n > 1 && self.src.as_bytes()[int_start] == b'0') {
            return Err(malformed(format!("bad number at byte {start}")));
        }
        let mut float = false;
        if self.eat(b'.') {
            float = true;
            if self.digits() == 0 {
                return Err(malformed(format!("bad number at byte {start}")));
            }
        }
        if self.eat(b'e') || self.eat(b'E') {
            float = true;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return Err(malformed(format!("bad number at byte {start}")));
            }
        }
        let text = &self.src[start..self.pos];
        if float {
            text.parse::<f64>().map(Value::Float).map_err(|_| malformed(format!("bad number at byte {start}")))
        } else {
            text.parse::<i64>().map(Value::Int).map_err(|_| malformed(format!("integer out of range at byte {start}")))
        }
    }

    /// A string literal, starting at its opening quote.
    fn string(&mut self) -> Result<String, WireError> {
        if !self.eat(b'"') {
            return Err(self.unexpected("a string"));
        }
        let mut out = String::new();
        loop {
            let rest = &self.src[self.pos..];
            let stop = rest
                .bytes()
                .position(|b| b == b'"' || b == b'\\' || b < 0x20)
                .ok_or_else(|| malformed("unterminated string"))?;
            out.push_str(&rest[..stop]);
            self.pos += stop;
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = self.escape()?;
                    out.push(c);
                }
                _ => {
                    return Err(malformed(format!("control character in a string at byte {}", self.pos)));
                }
            }
        }
    }

    /// The character of an escape whose `\` was just read.
    fn escape(&mut self) -> Result<char, WireError> {
        let c = match self.peek() {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                self.pos += 1;
                let hi = self.hex4()?;
                return match hi {
                    0xd800..=0xdbff => {
                        if !self.src[self.pos..].starts_with("\\u") {
                            return Err(malformed("unpaired surrogate in a string"));
                        }
                        self.pos += 2;
                        let lo = self.hex4()?;
                        if !(0xdc00..=0xdfff).contains(&lo) {
                            return Err(malformed("unpaired surrogate in a string"));
                        }
                        char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))
                            .ok_or_else(|| malformed("bad \\u escape"))
                    }
                    _ => char::from_u32(hi).ok_or_else(|| malformed("unpaired surrogate in a string")),
                };
            }
            _ => {
                return Err(malformed(format!("bad escape in a string at byte {}", self.pos)));
            }
        };
        self.pos += 1;
        Ok(c)
    }

    fn hex4(&mut self) -> Result<u32, WireError> {
        let hex = self.src.get(self.pos..self.pos + 4).filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
        let code = hex.and_then(|h| u32::from_str_radix(h, 16).ok()).ok_or_else(|| malformed("bad \\u escape"))?;
        self.pos += 4;
        Ok(code)
    }
}

/// The depth of a container opened at `depth`, or [`WireError::TooDeep`].
fn deeper(depth: usize) -> Result<usize, WireError> {
    if depth >= MAX_DEPTH { Err(WireError::TooDeep(MAX_DEPTH)) } else { Ok(depth + 1) }
}
