//! Bad input through real HTTP, over a plain `TcpStream` (so that nothing between the test and the daemon fixes
//! the bytes up): malformed XML and JSON, an XML bomb, deep nesting, oversized and chunked bodies, wrong types,
//! counts and methods, garbage after the document, invalid UTF-8, empty bodies, a huge number of parameters.
//! Each must be answered in the protocol's own failure form (or HTTP 413), never with an HTML page, a panic or a
//! hang; afterwards the daemon still serves. The limits are documented in `docs/reliability.md`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use xapi_types::Value;
use xapi_types::wire::{jsonrpc, xmlrpc};

use crate::support::{Daemon, PASSWORD, err, json_call, s, xml_call};

/// The daemon's body limit (`rpc::MAX_BODY`).
const MAX_BODY: usize = xapi_server::rpc::MAX_BODY;

/// An answer, as read off the socket.
#[derive(Debug)]
struct Raw {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Raw {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Never an HTML page, whatever went wrong.
    fn assert_not_html(&self) {
        let t = self.text().to_ascii_lowercase();
        assert!(!self.content_type.contains("html") && !t.contains("<html") && !t.contains("<!doctype"), "{self:?}");
    }

    /// The XML-RPC failure this answer carries (it must be one).
    fn xml_failure(&self) -> Vec<String> {
        self.assert_not_html();
        assert_eq!((self.status, self.content_type.as_str()), (200, "text/xml"), "{}", self.text());
        match xmlrpc::parse_result(&self.body) {
            Ok(Err(description)) => description,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    fn json_failure(&self) -> Vec<String> {
        self.assert_not_html();
        assert_eq!((self.status, self.content_type.as_str()), (200, "application/json"), "{}", self.text());
        match jsonrpc::parse_response(&self.body) {
            Ok(Err(description)) => description,
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}

/// Sends `head` (request line and headers, without the blank line) and `body` on a new connection and reads the
/// answer. The body is written from another thread, so that an answer given before the whole body is read (413)
/// is seen; write errors after it (the daemon closed the connection) are expected and ignored.
fn exchange(addr: SocketAddr, head: &str, body: Vec<u8>) -> Raw {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    conn.write_all(format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut writer = conn.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(&body);
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && complete(&got) => break,
            Err(e) => panic!("reading the answer to {head:?}: {e} (after {} bytes)", got.len()),
        }
    }
    let _ = conn.shutdown(std::net::Shutdown::Both);
    sending.join().unwrap();
    parse_answer(&got)
}

/// Whether `got` holds a whole answer (head and a `Content-Length` body).
fn complete(got: &[u8]) -> bool {
    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    let len = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok());
    len.is_some_and(|n: usize| got.len() >= end + 4 + n)
}

fn parse_answer(got: &[u8]) -> Raw {
    let end = got.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP answer head") + 4;
    let head = String::from_utf8_lossy(&got[..end]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status");
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    let content_type = header("content-type").unwrap_or_default();
    let mut body = got[end..].to_vec();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body);
    }
    Raw { status, content_type, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = b.windows(2).position(|w| w == b"\r\n").expect("a chunk size");
        let size = usize::from_str_radix(std::str::from_utf8(&b[..line]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[line + 2..line + 2 + size]);
        b = &b[line + 2 + size + 2..];
    }
}

/// A POST with a `Content-Length`.
fn post(addr: SocketAddr, path: &str, content_type: &str, body: &[u8]) -> Raw {
    let head = format!("POST {path} HTTP/1.1\r\nContent-Type: {content_type}\r\nContent-Length: {}", body.len());
    exchange(addr, &head, body.to_vec())
}

/// A POST whose body is sent in chunks of `piece` bytes (`Transfer-Encoding: chunked`), without a length.
fn post_chunked(addr: SocketAddr, path: &str, body: &[u8], piece: usize) -> Raw {
    let mut chunked = Vec::with_capacity(body.len() + body.len() / piece * 16 + 16);
    for c in body.chunks(piece) {
        chunked.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        chunked.extend_from_slice(c);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    exchange(addr, &format!("POST {path} HTTP/1.1\r\nTransfer-Encoding: chunked"), chunked)
}

/// Which protocol a case speaks: its path, content type, how a call is written and how a failure is read.
#[derive(Clone, Copy)]
enum Proto {
    Xml,
    Json,
}

impl Proto {
    fn path(self) -> &'static str {
        match self {
            Proto::Xml => "/",
            Proto::Json => "/jsonrpc",
        }
    }

    fn call(self, method: &str, params: &[Value]) -> Vec<u8> {
        match self {
            Proto::Xml => xmlrpc::write_call(method, params),
            Proto::Json => jsonrpc::write_call(method, params, jsonrpc::Version::V2, serde_json::json!(1)),
        }
    }

    fn post(self, addr: SocketAddr, body: &[u8]) -> Raw {
        let ct = match self {
            Proto::Xml => "text/xml",
            Proto::Json => "application/json",
        };
        post(addr, self.path(), ct, body)
    }

    fn failure(self, r: &Raw) -> Vec<String> {
        match self {
            Proto::Xml => r.xml_failure(),
            Proto::Json => r.json_failure(),
        }
    }

    /// The failure of a body that is not a well-formed call: `[XMLRPC_UNMARSHAL_FAILURE, expected, why]`, whose
    /// reason must contain `why`.
    fn assert_unmarshal(self, r: &Raw, why: &str) {
        let d = self.failure(r);
        assert_eq!(d[0], "XMLRPC_UNMARSHAL_FAILURE", "{d:?}");
        assert!(d.len() == 3 && d[2].contains(why), "expected a reason containing {why:?}: {d:?}");
    }
}

/// "Billion laughs": ten levels of ten-fold entity expansion (a 3 GB string if expanded).
fn xml_bomb() -> Vec<u8> {
    let mut b = String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n");
    for i in 1..10 {
        let refs: String =
            (0..10).map(|_| format!("&lol{};", if i == 1 { String::new() } else { (i - 1).to_string() })).collect();
        b.push_str(&format!("<!ENTITY lol{i} \"{refs}\">\n"));
    }
    b.push_str("]>\n<methodCall><methodName>VM.get_all</methodName><params><param><value>&lol9;</value></param></params></methodCall>");
    b.into_bytes()
}

fn deep_xml(levels: usize) -> Vec<u8> {
    let mut b = String::from("<?xml version=\"1.0\"?><methodCall><methodName>VM.get_all</methodName><params><param>");
    b.push_str(&"<value><array><data>".repeat(levels));
    b.push_str(&"</data></array></value>".repeat(levels));
    b.push_str("</param></params></methodCall>");
    b.into_bytes()
}

fn deep_json(levels: usize) -> Vec<u8> {
    format!(
        r#"{{"jsonrpc":"2.0","method":"VM.get_all","params":[{}{}],"id":1}}"#,
        "[".repeat(levels),
        "]".repeat(levels)
    )
    .into_bytes()
}

/// A body of more than `MAX_BODY` bytes that is otherwise a valid call (one long string).
fn oversized(proto: Proto) -> Vec<u8> {
    proto.call("VM.set_name_label", &[s("OpaqueRef:x"), s("OpaqueRef:y"), s(&"a".repeat(MAX_BODY + 1))])
}

#[test]
fn bad_input_is_answered_in_the_protocols_own_form() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path());
    let a = d.addr;
    let sess = s(&d.login());
    let pool = xml_call(a, "pool.get_all", &[sess.clone()]).unwrap().as_array().unwrap()[0].clone();

    for proto in [Proto::Xml, Proto::Json] {
        // Malformed documents.
        match proto {
            Proto::Xml => {
                let r = proto.post(a, b"<methodCall><methodName>VM.get_all</methodName><params><param>");
                proto.assert_unmarshal(&r, "expected <value>");
                let r = proto.post(a, b"<methodCall><methodName>VM.get_all</methodName></methodCal>");
                proto.assert_unmarshal(&r, "expected <params>, found </methodCal>");
                let r = proto.post(a, b"<methodCall><methodName>a & b</methodName></methodCall>");
                proto.assert_unmarshal(&r, "'&' that starts no reference");
            }
            Proto::Json => {
                let r = proto.post(a, b"{\"method\":");
                proto.assert_unmarshal(&r, "expected a value");
                let r = proto.post(a, br#"{"jsonrpc":"2.0","method":"VM.get_all","params":["x",],"id":1}"#);
                proto.assert_unmarshal(&r, "expected a value");
                let r = proto.post(a, br#"[{"jsonrpc":"2.0","method":"VM.get_all","params":[],"id":1}]"#);
                proto.assert_unmarshal(&r, "not a JSON object");
                let r = proto.post(a, br#"{"jsonrpc":"2.0","method":"VM.get_all","params":[]}"#);
                proto.assert_unmarshal(&r, "missing field 'id'");
            }
        }

        // An XML bomb (to the XML-RPC endpoint; to the JSON one it is just not JSON): refused outright, at once.
        let started = Instant::now();
        let r = proto.post(a, &xml_bomb());
        match proto {
            Proto::Xml => proto.assert_unmarshal(&r, "DOCTYPE (and so entity declarations) not allowed"),
            Proto::Json => proto.assert_unmarshal(&r, "not a JSON object"),
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the bomb took {:?}", started.elapsed());

        // 10,000 levels of nesting: refused at the depth limit, without recursing 10,000 deep.
        let deep = match proto {
            Proto::Xml => deep_xml(10_000),
            Proto::Json => deep_json(10_000),
        };
        proto.assert_unmarshal(&proto.post(a, &deep), "nests deeper than 64 levels");
        // The limit itself is allowed (and then the call is checked as usual).
        let at_limit = match proto {
            Proto::Xml => deep_xml(64),
            Proto::Json => deep_json(64),
        };
        assert_eq!(proto.failure(&proto.post(a, &at_limit))[0], "SESSION_INVALID");

        // Over the body limit: 413, as xapi answers, with a plain-text line; with a length or chunked.
        for r in [proto.post(a, &oversized(proto)), post_chunked(a, proto.path(), &oversized(proto), 64 << 10)] {
            r.assert_not_html();
            assert_eq!(r.status, 413, "{}", r.text());
            assert!(r.content_type.starts_with("text/plain"), "{r:?}");
        }
        // A length that announces too much is refused before any of the body is read.
        let head = format!("POST {} HTTP/1.1\r\nContent-Length: {}", proto.path(), MAX_BODY + 1);
        let r = exchange(a, &head, Vec::new());
        assert_eq!(r.status, 413, "{}", r.text());

        // Well-formed calls that are wrong for the API.
        let call = |method: &str, params: &[Value]| proto.failure(&proto.post(a, &proto.call(method, params)));
        let strings = |r: Result<Value, Vec<String>>| r.unwrap_err();
        assert_eq!(
            call("pool.set_ha_allow_overcommit", &[sess.clone(), pool.clone(), s("notabool")]),
            strings(err("FIELD_TYPE_ERROR", &["value"]))
        );
        assert_eq!(
            call("VM.get_name_label", &[sess.clone()]),
            strings(err("MESSAGE_PARAMETER_COUNT_MISMATCH", &["VM.get_name_label", "2", "1"]))
        );
        assert_eq!(call("VM.no_such", &[sess.clone()]), strings(err("MESSAGE_METHOD_UNKNOWN", &["VM.no_such"])));
        assert_eq!(call("", &[]), strings(err("MESSAGE_METHOD_UNKNOWN", &[""])));
        // A huge number of parameters (100,000; the body limit bounds them).
        let many: Vec<Value> = std::iter::once(sess.clone()).chain((1..100_000).map(Value::Int)).collect();
        assert_eq!(
            call("pool.get_all", &many),
            strings(err("MESSAGE_PARAMETER_COUNT_MISMATCH", &["pool.get_all", "1", "100000"]))
        );

        // Garbage after the document.
        let mut garbage = proto.call("pool.get_all", &[sess.clone()]);
        garbage.extend_from_slice(b"garbage");
        proto.assert_unmarshal(
            &proto.post(a, &garbage),
            match proto {
                Proto::Xml => "unexpected text \"garbage\"",
                Proto::Json => "trailing data after the JSON object",
            },
        );
        // A second document after the first is garbage too.
        let mut twice = proto.call("pool.get_all", &[sess.clone()]);
        twice.extend_from_slice(&proto.call("pool.get_all", &[sess.clone()]));
        assert_eq!(proto.failure(&proto.post(a, &twice))[0], "XMLRPC_UNMARSHAL_FAILURE");

        // Invalid UTF-8 (a lone continuation byte inside a string).
        let mut bad = proto.call("VM.get_by_name_label", &[sess.clone(), s("é")]);
        let at = bad.windows(2).position(|w| w == "é".as_bytes()).unwrap();
        bad[at] = 0xff;
        proto.assert_unmarshal(&proto.post(a, &bad), "body is not UTF-8");

        // An empty body, with a zero length and with none at all.
        let empty_why = match proto {
            Proto::Xml => "expected <methodCall>, found the end of the body",
            Proto::Json => "body is not a JSON object",
        };
        proto.assert_unmarshal(&proto.post(a, b""), empty_why);
        proto.assert_unmarshal(&exchange(a, &format!("POST {} HTTP/1.1", proto.path()), Vec::new()), empty_why);

        // A chunked body (no length) is read whole, in small chunks too.
        let login = proto.call("session.login_with_password", &[s("root"), s(PASSWORD)]);
        for piece in [1, 7, 4096] {
            let r = post_chunked(a, proto.path(), &login, piece);
            r.assert_not_html();
            assert_eq!(r.status, 200);
            let ok = match proto {
                Proto::Xml => xmlrpc::parse_result(&r.body).unwrap(),
                Proto::Json => jsonrpc::parse_response(&r.body).unwrap(),
            };
            assert!(ok.unwrap().as_str().unwrap().starts_with("OpaqueRef:"));
        }
    }

    // Not HTTP at all: hyper's 400, no page.
    let r = exchange(a, "GARBAGE", Vec::new());
    assert_eq!(r.status, 400);
    r.assert_not_html();

    // After all that, the daemon still serves, over both protocols.
    assert!(d.is_running(), "the daemon died");
    let sess = s(&d.login());
    assert_eq!(xml_call(a, "pool.get_all", &[sess.clone()]).unwrap().as_array().unwrap().len(), 1);
    assert_eq!(json_call(a, "pool.get_all", &[sess]).unwrap().as_array().unwrap().len(), 1);
    assert!(d.is_running(), "the daemon died");
}
