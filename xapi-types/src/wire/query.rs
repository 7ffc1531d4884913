//! What the daemon's plain-HTTP handlers (`/import_raw_vdi`, `/export_raw_vdi`, `/console`) read from a request
//! besides its body: query parameters, the `session_id` cookie and HTTP Basic credentials.
//!
//! Pure functions over strings, here rather than in the daemon so that the `http_query` fuzz target
//! (`xapi-types/fuzz`) runs exactly the code the handlers run. None of them can panic, and every output is
//! bounded by its input's length.

/// The raw (still percent-encoded) value of the first `key=value` pair of `query` whose key is `key`; pairs
/// without `=` are skipped.
pub fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// A query parameter, percent-decoded.
pub fn param(query: &str, key: &str) -> Option<String> {
    query_param(query, key).map(percent_decode)
}

/// The `session_id` among `Cookie` header values (raw, as the cookie carries it).
pub fn session_cookie<'a>(cookie_headers: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    cookie_headers
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == "session_id")
        .map(|(_, v)| v)
}

/// `application/x-www-form-urlencoded` decoding: `%XX` is the byte `XX`, `+` a space; a `%` not followed by two
/// hex digits stays as it is, and bytes that are not UTF-8 become U+FFFD.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            // Exactly two hex digits: `u8::from_str_radix` alone would also take `+1` (a sign) as `01`.
            b'%' if i + 2 < b.len() => match (hex_digit(b[i + 1]), hex_digit(b[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Standard base64 (with or without padding, surrounding whitespace ignored); `None` if it is not.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters() {
        let q = "uuid=abc&session_id=OpaqueRef:1";
        assert_eq!(query_param(q, "uuid"), Some("abc"));
        assert_eq!(query_param(q, "session_id"), Some("OpaqueRef:1"));
        assert_eq!(query_param(q, "ref"), None);
        assert_eq!(param("vdi=OpaqueRef%3Aab&x", "vdi").as_deref(), Some("OpaqueRef:ab"));
        assert_eq!(session_cookie(["a=b; session_id=OpaqueRef:2", "session_id=no"].into_iter()), Some("OpaqueRef:2"));
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("OpaqueRef%3Aab+c%2"), "OpaqueRef:ab c%2");
        assert_eq!(percent_decode("%c3%A9%zz%4"), "é%zz%4");
        // Found by the `http_query` fuzz target: a sign is not a hex digit (this was "\u{1}\u{3}A").
        assert_eq!(percent_decode("%+1%+3A%-1"), "% 1% 3A%-1");
        assert_eq!(base64_decode("cm9vdDpzM2NyZXQ=").unwrap(), b"root:s3cret");
        assert_eq!(base64_decode("cm9vdDpz").unwrap(), b"root:s");
        assert!(base64_decode("a*b").is_none());
    }
}
