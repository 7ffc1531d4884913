//! XML-RPC, byte for byte as xapi (ocaml-rpc's `Xmlrpc`) writes it, and a strict reader for what clients send.
//!
//! **Writing** is compact (no whitespace between tags: Xen Orchestra parses with `trim:false`):
//! strings and int64 are bare `<value>…</value>`, `I32` is `<i4>`, bools `<boolean>1|0</boolean>`, floats
//! `<double>` in C's `%.16g`, datetimes `<dateTime.iso8601>` as given, `<nil/>`, `<array><data>` and
//! `<struct><member><name>`. Text is escaped the way ocaml-rpc's `encode` does it:
//! * `&`, `<`, `>` and `"` become `&amp;`, `&lt;`, `&gt;` and `&quot;`; `'` is left alone (as xapi does);
//! * C0 control characters other than tab, LF and CR are **dropped** (xapi drops them too: XML 1.0 cannot carry
//!   them at all, not even as character references); we also drop U+FFFE and U+FFFF, which XML 1.0 forbids and
//!   xapi would pass through, breaking strict clients;
//! * CR is written raw, as xapi does, so a receiving XML parser turns it into LF.
//!
//! Unlike xapi we also escape struct member names and datetimes (xapi writes them raw); for every name and
//! datetime xapi itself produces the bytes are the same.
//!
//! Non-finite floats, which `%.16g` would print as `nan`/`inf`, are written `NaN`, `Infinity` and `-Infinity`:
//! Python's `float()`, JavaScript's `Number()`, OCaml's `float_of_string` and our own reader all parse these.
//!
//! **Reading** ([`parse_call`], [`parse_response`]) accepts both Python `xmlrpc.client` requests (indented,
//! `<string>`, `<int>`) and Xen Orchestra's (compact, bare strings, ints as strings); see `reader` for the rules.

mod reader;

use std::io::Write as _;

use super::{Sink, WireError};
use crate::value::Value;

pub use reader::{parse_call, parse_response};

const XML_DECL: &[u8] = b"<?xml version=\"1.0\"?>";
const RESPONSE_OPEN: &[u8] = b"<?xml version=\"1.0\"?><methodResponse><params><param>";
const RESPONSE_CLOSE: &[u8] = b"</param></params></methodResponse>";
const STRUCT_OPEN: &[u8] = b"<value><struct>";
const STRUCT_CLOSE: &[u8] = b"</struct></value>";

/// A [`Sink`] that writes each value as one compact `<value>…</value>` item into `out`.
///
/// `out` may be drained between values (even in the middle of an array or struct): the only state kept outside
/// it is which containers are open.
#[derive(Debug, Default)]
pub struct XmlSink {
    pub out: Vec<u8>,
    /// One entry per open container: `true` for a struct (whose members need closing), `false` for an array.
    open: Vec<bool>,
}

impl XmlSink {
    pub fn new() -> XmlSink {
        XmlSink::default()
    }

    /// A sink that appends to `out` (which may already hold, say, the [`begin_success`] prefix).
    pub fn with_buffer(out: Vec<u8>) -> XmlSink {
        XmlSink { out, open: Vec::new() }
    }

    /// Closes the struct member that a value just finished, if it was one.
    fn done(&mut self) {
        if self.open.last() == Some(&true) {
            self.out.extend_from_slice(b"</member>");
        }
    }

    fn scalar(&mut self, open: &[u8], text: &[u8], close: &[u8]) {
        self.out.extend_from_slice(open);
        self.out.extend_from_slice(text);
        self.out.extend_from_slice(close);
        self.done();
    }
}

impl AsMut<Vec<u8>> for XmlSink {
    fn as_mut(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }
}

impl Sink for XmlSink {
    fn str(&mut self, s: &str) {
        self.out.extend_from_slice(b"<value>");
        escape_into(&mut self.out, s);
        self.out.extend_from_slice(b"</value>");
        self.done();
    }

    fn int(&mut self, i: i64) {
        self.out.extend_from_slice(b"<value>");
        let _ = write!(self.out, "{i}");
        self.out.extend_from_slice(b"</value>");
        self.done();
    }

    fn i32(&mut self, i: i32) {
        self.scalar(b"<value><i4>", i.to_string().as_bytes(), b"</i4></value>");
    }

    fn float(&mut self, f: f64) {
        self.scalar(b"<value><double>", format_xml_double(f).as_bytes(), b"</double></value>");
    }

    fn bool(&mut self, b: bool) {
        self.scalar(b"<value><boolean>", if b { b"1" } else { b"0" }, b"</boolean></value>");
    }

    fn datetime(&mut self, s: &str) {
        self.out.extend_from_slice(b"<value><dateTime.iso8601>");
        escape_into(&mut self.out, s);
        self.out.extend_from_slice(b"</dateTime.iso8601></value>");
        self.done();
    }

    fn nil(&mut self) {
        self.scalar(b"<value><nil/></value>", b"", b"");
    }

    fn begin_array(&mut self) {
        self.out.extend_from_slice(b"<value><array><data>");
        self.open.push(false);
    }

    fn end_array(&mut self) {
        self.open.pop();
        self.scalar(b"</data></array></value>", b"", b"");
    }

    fn begin_struct(&mut self) {
        self.out.extend_from_slice(STRUCT_OPEN);
        self.open.push(true);
    }

    fn key(&mut self, k: &str) {
        self.out.extend_from_slice(b"<member><name>");
        escape_into(&mut self.out, k);
        self.out.extend_from_slice(b"</name>");
    }

    fn end_struct(&mut self) {
        self.open.pop();
        self.scalar(STRUCT_CLOSE, b"", b"");
    }

    fn encoding(&self) -> &'static str {
        "xmlrpc"
    }

    fn raw_value(&mut self, encoded: &[u8]) {
        self.scalar(encoded, b"", b"");
    }
}

/// Writes everything of a success response up to where its `Value` goes; follow it with exactly one value
/// (through an [`XmlSink`] writing into the same or a later-concatenated buffer) and then [`end_success`].
pub fn begin_success(out: &mut Vec<u8>) {
    out.extend_from_slice(RESPONSE_OPEN);
    out.extend_from_slice(STRUCT_OPEN);
    out.extend_from_slice(b"<member><name>Status</name><value>Success</value></member><member><name>Value</name>");
}

/// Closes what [`begin_success`] opened.
pub fn end_success(out: &mut Vec<u8>) {
    out.extend_from_slice(b"</member>");
    out.extend_from_slice(STRUCT_CLOSE);
    out.extend_from_slice(RESPONSE_CLOSE);
}

/// A whole `Status=Success` response carrying `v`.
pub fn success(v: &Value) -> Vec<u8> {
    let mut sink = XmlSink::new();
    begin_success(&mut sink.out);
    v.emit(&mut sink);
    end_success(&mut sink.out);
    sink.out
}

/// A whole `Status=Failure` response; `description` is `[CODE, param…]`.
pub fn failure(description: &[String]) -> Vec<u8> {
    let mut sink = XmlSink::new();
    sink.out.extend_from_slice(RESPONSE_OPEN);
    sink.out.extend_from_slice(STRUCT_OPEN);
    sink.out.extend_from_slice(
        b"<member><name>Status</name><value>Failure</value></member><member><name>ErrorDescription</name>",
    );
    sink.begin_array();
    for s in description {
        sink.str(s);
    }
    sink.end_array();
    sink.out.extend_from_slice(b"</member>");
    sink.out.extend_from_slice(STRUCT_CLOSE);
    sink.out.extend_from_slice(RESPONSE_CLOSE);
    sink.out
}

/// A response whose single param is `v` itself, without Status/Value (xapi answers `system.listMethods` so).
pub fn bare(v: &Value) -> Vec<u8> {
    let mut sink = XmlSink::new();
    sink.out.extend_from_slice(RESPONSE_OPEN);
    v.emit(&mut sink);
    sink.out.extend_from_slice(RESPONSE_CLOSE);
    sink.out
}

/// A request, as ocaml-rpc's `string_of_call` writes it (what our `xe` sends).
pub fn write_call(method: &str, params: &[Value]) -> Vec<u8> {
    let mut sink = XmlSink::new();
    sink.out.extend_from_slice(XML_DECL);
    sink.out.extend_from_slice(b"<methodCall><methodName>");
    escape_into(&mut sink.out, method);
    sink.out.extend_from_slice(b"</methodName><params>");
    for p in params {
        sink.out.extend_from_slice(b"<param>");
        p.emit(&mut sink);
        sink.out.extend_from_slice(b"</param>");
    }
    sink.out.extend_from_slice(b"</params></methodCall>");
    sink.out
}

/// Client side: a response body read through [`parse_response`] and unwrapped from its Status struct:
/// `Ok(Ok(Value))` on success, `Ok(Err([CODE, param…]))` on a XenAPI failure. A response without `Status`
/// (`system.listMethods`) is returned whole.
pub fn parse_result(body: &[u8]) -> Result<Result<Value, Vec<String>>, WireError> {
    let v = parse_response(body)?;
    let status = match v.get("Status") {
        None => return Ok(Ok(v)),
        Some(s) => s.as_str().map(str::to_owned),
    };
    match status.as_deref() {
        Some("Success") => match v {
            Value::Struct(members) => members
                .into_iter()
                .find(|(k, _)| k == "Value")
                .map(|(_, v)| Ok(v))
                .ok_or_else(|| WireError::Malformed("a Success response has no Value".into())),
            _ => Err(WireError::Malformed("response is not a struct".into())),
        },
        Some("Failure") => match v.get("ErrorDescription") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .map(Err)
                .ok_or_else(|| WireError::Malformed("ErrorDescription is not a list of strings".into())),
            _ => Err(WireError::Malformed("a Failure response has no ErrorDescription list".into())),
        },
        _ => Err(WireError::Malformed("response Status is neither Success nor Failure".into())),
    }
}

/// Appends `s` escaped as XML character data (see the module documentation for the rules).
fn escape_into(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (replacement, len): (&[u8], usize) = match b {
            b'&' => (b"&amp;", 1),
            b'<' => (b"&lt;", 1),
            b'>' => (b"&gt;", 1),
            b'"' => (b"&quot;", 1),
            b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            0..=0x1f => (b"", 1),
            // U+FFFE and U+FFFF are EF BF BE / EF BF BF; `s` is UTF-8, so this byte pattern is exactly them.
            0xef if bytes.get(i + 1) == Some(&0xbf) && matches!(bytes.get(i + 2), Some(0xbe | 0xbf)) => (b"", 3),
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(replacement);
        i += len;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// `f` as xapi writes a `<double>`: C's `%.16g`, with readable names for the non-finite values.
fn format_xml_double(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity".into() } else { "-Infinity".into() }
    } else {
        format_g(f, 16)
    }
}

/// C's `printf("%.{precision}g", x)` for a finite `x` (`precision` ≥ 1): `precision` significant digits,
/// fixed notation when the decimal exponent is in `-4..precision`, otherwise `d.ddde±XX`; trailing zeros
/// (and a trailing point) removed.
pub(super) fn format_g(x: f64, precision: usize) -> String {
    let precision = precision.max(1);
    // Rust's `{:.N e}` is correctly rounded, as glibc's printf is; its exponent is that of the rounded value,
    // which is what %g's style choice is defined on.
    let sci = format!("{:.*e}", precision - 1, x);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let all: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = match all.trim_end_matches('0') {
        "" => "0",
        d => d,
    };
    let mut out = String::with_capacity(precision + 8);
    if negative {
        out.push('-');
    }
    if exp < -4 || exp >= precision as i32 {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let e = exp.unsigned_abs();
        if e < 10 {
            out.push('0');
        }
        out.push_str(&e.to_string());
    } else if exp >= 0 {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(digits);
            out.extend(std::iter::repeat_n('0', int_len - digits.len()));
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
        out.push_str(digits);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_16g_matches_c() {
        // Expected strings are C's (Python's `'%.16g' % v`).
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (1.0 / 3.0, "0.3333333333333333"),
            (2.0 / 3.0, "0.6666666666666666"),
            (1e15, "1000000000000000"),
            (1e16, "1e+16"),
            (1e20, "1e+20"),
            (123456789012345678.0, "1.234567890123457e+17"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1.23456, "1.23456"),
            (1e300, "1e+300"),
            (5e-324, "4.940656458412465e-324"),
            (f64::MAX, "1.797693134862316e+308"),
            (60.1, "60.1"),
            (100.0, "100"),
            (1234567.0, "1234567"),
            (0.30000000000000004, "0.3"),
            (9007199254740993.0, "9007199254740992"),
            (2.5e-5, "2.5e-05"),
            (-123.456, "-123.456"),
        ];
        for &(v, want) in cases {
            assert_eq!(format_g(v, 16), want, "{v:e}");
        }
        assert_eq!(format_g(0.1, 17), "0.10000000000000001");
        assert_eq!(format_g(5e-324, 17), "4.9406564584124654e-324");
    }

    #[test]
    fn escaping() {
        let mut out = Vec::new();
        escape_into(&mut out, "a&b<c>d\"e'f\tg\nh\ri\u{1}j\u{7f}k\u{fffe}l\u{ffff}m\u{fffd}é");
        assert_eq!(String::from_utf8(out).unwrap(), "a&amp;b&lt;c&gt;d&quot;e'f\tg\nh\rij\u{7f}klm\u{fffd}é");
    }
}
