//! Reading XML-RPC: a small, strict XML tokenizer and the `methodCall` / `methodResponse` grammar on top of it.
//!
//! The rules, which follow ocaml-rpc's reader (built on Xmlm) where it matters to clients:
//! * The body must be UTF-8 (an optional BOM is skipped). The prolog may hold the `<?xml …?>` declaration (any
//!   quoting or encoding label), other processing instructions and comments. **`<!DOCTYPE` is rejected**, and
//!   so no entity is ever declared or expanded (no XML bombs).
//! * Text decodes `&lt; &gt; &amp; &quot; &apos;` and numeric character references (an unknown entity is an
//!   error); CDATA sections are text; comments inside text are skipped; line ends (`CRLF`, lone `CR`) become
//!   `LF` as in any XML parser (a `&#13;` reference stays CR).
//! * Whitespace-only text between structural elements is insignificant. Inside `<value>` (bare string) and
//!   `<string>` all text is content: `<value>  a </value>` is `"  a "`, while `<value>\n <int>1</int>\n</value>`
//!   is the int (whitespace next to a type element is layout, as in ocaml-rpc). `<value/>`, `<value></value>`
//!   and `<string/>` are `""`.
//! * `<int>`, `<i4>`, `<i8>` → `Int` (surrounding whitespace tolerated, decimal with optional sign, must fit
//!   i64); `<double>` → `Float` (Rust's float syntax, which includes `NaN`/`inf`/`Infinity`); `<boolean>`
//!   takes `1`/`0`/`true`/`false`; `<dateTime.iso8601>` → `DateTime` with the text as given; `<nil/>` → `Nil`;
//!   `<array>` with or without `<data>`; `<base64>` is rejected (no XenAPI call takes one).
//! * Attributes (e.g. `xmlns`) are parsed and ignored. Arrays and structs nested deeper than
//!   [`MAX_DEPTH`] give [`WireError::TooDeep`]; everything else that is wrong gives [`WireError::Malformed`],
//!   and no input can make the reader panic or recurse without bound.

use std::borrow::Cow;

use crate::value::Value;
use crate::wire::{Call, MAX_DEPTH, WireError};

/// Parses a request body (server side).
pub fn parse_call(body: &[u8]) -> Result<Call, WireError> {
    let mut p = Parser::new(body)?;
    p.expect_start("methodCall")?;
    p.expect_start("methodName")?;
    let method = p.text_content("methodName")?.into_owned();
    let mut params = Vec::new();
    match p.next_structural()? {
        Event::End("methodCall") => return p.finish().map(|()| Call { method, params }),
        Event::Start("params") => {}
        other => return Err(unexpected(&other, "<params>")),
    }
    loop {
        match p.next_structural()? {
            Event::End("params") => break,
            Event::Start("param") => {
                p.expect_start("value")?;
                params.push(p.value_body(0, MAX_DEPTH)?);
                p.expect_end("param")?;
            }
            other => return Err(unexpected(&other, "<param>")),
        }
    }
    p.expect_end("methodCall")?;
    p.finish()?;
    Ok(Call { method, params })
}

/// Parses a response body (client side) and returns its single param's value: for xapi's own responses, the
/// Status struct (see [`super::parse_result`] to unwrap it). A `<fault>` response is an error.
pub fn parse_response(body: &[u8]) -> Result<Value, WireError> {
    let mut p = Parser::new(body)?;
    p.expect_start("methodResponse")?;
    let v = match p.next_structural()? {
        Event::Start("params") => {
            p.expect_start("param")?;
            p.expect_start("value")?;
            // One level of allowance for the Status/Value struct around a result.
            let v = p.value_body(0, MAX_DEPTH + 1)?;
            p.expect_end("param")?;
            p.expect_end("params")?;
            v
        }
        Event::Start("fault") => {
            p.expect_start("value")?;
            let fault = p.value_body(0, MAX_DEPTH)?;
            p.expect_end("fault")?;
            let field = |k| match fault.get(k) {
                Some(Value::Str(s)) => s.clone(),
                Some(Value::Int(i)) => i.to_string(),
                _ => String::new(),
            };
            return Err(WireError::Malformed(format!(
                "XML-RPC fault {}: {}",
                field("faultCode"),
                clip(&field("faultString"))
            )));
        }
        other => return Err(unexpected(&other, "<params> or <fault>")),
    };
    p.expect_end("methodResponse")?;
    p.finish()?;
    Ok(v)
}

/// A tokenizer event. Self-closing tags come as a `Start` followed by an `End`.
#[derive(Debug)]
enum Event<'a> {
    Start(&'a str),
    End(&'a str),
    Text(Cow<'a, str>),
    Eof,
}

fn malformed(what: impl Into<String>) -> WireError {
    WireError::Malformed(what.into())
}

/// At most 40 characters of `s`, for error messages.
fn clip(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn describe(e: &Event<'_>) -> String {
    match e {
        Event::Start(n) => format!("<{}>", clip(n)),
        Event::End(n) => format!("</{}>", clip(n)),
        Event::Text(t) => format!("text {:?}", clip(t)),
        Event::Eof => "the end of the body".to_owned(),
    }
}

fn unexpected(got: &Event<'_>, expected: &str) -> WireError {
    malformed(format!("expected {expected}, found {}", describe(got)))
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn is_blank(s: &str) -> bool {
    s.chars().all(is_xml_space)
}

struct Tokenizer<'a> {
    src: &'a str,
    pos: usize,
    /// The name of a self-closing tag just returned as `Start`, whose `End` comes next.
    pending_end: Option<&'a str>,
}

impl<'a> Tokenizer<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn next(&mut self) -> Result<Event<'a>, WireError> {
        if let Some(name) = self.pending_end.take() {
            return Ok(Event::End(name));
        }
        loop {
            let rest = self.rest();
            if rest.is_empty() {
                return Ok(Event::Eof);
            }
            if rest.starts_with('<') && !is_textlike_markup(rest) {
                return self.tag();
            }
            let text = self.text()?;
            if !text.is_empty() {
                return Ok(Event::Text(text));
            }
        }
    }

    /// Text up to the next tag, merging character data, CDATA sections and references, and skipping comments
    /// and processing instructions.
    fn text(&mut self) -> Result<Cow<'a, str>, WireError> {
        let mut acc: Cow<'a, str> = Cow::Borrowed("");
        loop {
            let rest = self.rest();
            if let Some(body) = rest.strip_prefix("<!--") {
                let end = body.find("-->").ok_or_else(|| malformed("unterminated comment"))?;
                self.pos += 4 + end + 3;
            } else if rest.starts_with("<?") {
                let end = rest.find("?>").ok_or_else(|| malformed("unterminated processing instruction"))?;
                self.pos += end + 2;
            } else if let Some(body) = rest.strip_prefix("<![CDATA[") {
                let end = body.find("]]>").ok_or_else(|| malformed("unterminated CDATA section"))?;
                push_normalized(&mut acc, &body[..end]);
                self.pos += 9 + end + 3;
            } else if rest.is_empty() || rest.starts_with('<') {
                return Ok(acc);
            } else {
                let end = rest.find('<').unwrap_or(rest.len());
                decode_chars(&mut acc, &rest[..end])?;
                self.pos += end;
            }
        }
    }

    fn tag(&mut self) -> Result<Event<'a>, WireError> {
        let rest = self.rest();
        if rest.starts_with("<!") {
            return Err(malformed(if rest.starts_with("<!DOCTYPE") {
                "DOCTYPE (and so entity declarations) not allowed"
            } else {
                "unexpected <! markup"
            }));
        }
        if let Some(after) = rest.strip_prefix("</") {
            let name = name_prefix(after);
            if name.is_empty() {
                return Err(malformed("end tag without a name"));
            }
            let tail = after[name.len()..].trim_start_matches(is_xml_space);
            if !tail.starts_with('>') {
                return Err(malformed(format!("bad end tag </{}", clip(name))));
            }
            self.pos = self.src.len() - tail.len() + 1;
            return Ok(Event::End(name));
        }
        let after = &rest[1..];
        let name = name_prefix(after);
        if name.is_empty() {
            return Err(malformed("a '<' that starts no tag"));
        }
        let mut tail = &after[name.len()..];
        loop {
            let trimmed = tail.trim_start_matches(is_xml_space);
            if let Some(t) = trimmed.strip_prefix("/>") {
                self.pos = self.src.len() - t.len();
                self.pending_end = Some(name);
                return Ok(Event::Start(name));
            }
            if let Some(t) = trimmed.strip_prefix('>') {
                self.pos = self.src.len() - t.len();
                return Ok(Event::Start(name));
            }
            if trimmed.len() == tail.len() {
                return Err(malformed(format!("bad tag <{}", clip(name))));
            }
            tail = skip_attribute(trimmed)?;
        }
    }
}

/// Whether `rest` (which starts with `<`) is markup that belongs to text: a comment, CDATA or a PI.
fn is_textlike_markup(rest: &str) -> bool {
    rest.starts_with("<!--") || rest.starts_with("<![CDATA[") || rest.starts_with("<?")
}

/// The longest prefix of `s` that can be an element name.
fn name_prefix(s: &str) -> &str {
    let end = s
        .find(|c: char| is_xml_space(c) || matches!(c, '>' | '/' | '<' | '=' | '"' | '\'' | '&' | '!' | '?'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Skips one `name="value"` (or single-quoted) attribute at the start of `s`.
fn skip_attribute(s: &str) -> Result<&str, WireError> {
    let name = name_prefix(s);
    if name.is_empty() {
        return Err(malformed("bad attribute"));
    }
    let s = s[name.len()..].trim_start_matches(is_xml_space);
    let s = s.strip_prefix('=').ok_or_else(|| malformed("attribute without a value"))?;
    let s = s.trim_start_matches(is_xml_space);
    let quote = match s.chars().next() {
        Some(q @ ('"' | '\'')) => q,
        _ => return Err(malformed("unquoted attribute value")),
    };
    let body = &s[1..];
    let end = body.find(quote).ok_or_else(|| malformed("unterminated attribute value"))?;
    if body[..end].contains('<') {
        return Err(malformed("'<' in an attribute value"));
    }
    Ok(&body[end + 1..])
}

/// Appends `raw` with its line ends normalised (CRLF and lone CR become LF).
fn push_normalized<'a>(acc: &mut Cow<'a, str>, raw: &'a str) {
    if !raw.contains('\r') {
        if acc.is_empty() {
            *acc = Cow::Borrowed(raw);
        } else {
            acc.to_mut().push_str(raw);
        }
        return;
    }
    let out = acc.to_mut();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' {
            chars.next_if_eq(&'\n');
            out.push('\n');
        } else {
            out.push(c);
        }
    }
}

/// Appends character data `raw` (no `<` in it), decoding references and normalising line ends.
fn decode_chars<'a>(acc: &mut Cow<'a, str>, raw: &'a str) -> Result<(), WireError> {
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        push_normalized(acc, &rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after
            .char_indices()
            .take(12)
            .find(|&(_, c)| c == ';')
            .map(|(i, _)| i)
            .ok_or_else(|| malformed("'&' that starts no reference"))?;
        let c = decode_reference(&after[..semi])?;
        acc.to_mut().push(c);
        rest = &after[semi + 1..];
    }
    push_normalized(acc, rest);
    Ok(())
}

/// The character that `&name;` stands for; only the predefined entities and character references exist.
fn decode_reference(name: &str) -> Result<char, WireError> {
    let code = match name {
        "lt" => return Ok('<'),
        "gt" => return Ok('>'),
        "amp" => return Ok('&'),
        "quot" => return Ok('"'),
        "apos" => return Ok('\''),
        _ => {
            if let Some(hex) = name.strip_prefix("#x") {
                u32::from_str_radix(hex, 16).ok().filter(|_| hex.bytes().all(|b| b.is_ascii_hexdigit()))
            } else if let Some(dec) = name.strip_prefix('#') {
                dec.parse::<u32>().ok().filter(|_| dec.bytes().all(|b| b.is_ascii_digit()))
            } else {
                return Err(malformed(format!("unknown entity &{};", clip(name))));
            }
        }
    };
    code.filter(|&c| c != 0)
        .and_then(char::from_u32)
        .ok_or_else(|| malformed(format!("bad character reference &{};", clip(name))))
}

struct Parser<'a> {
    tok: Tokenizer<'a>,
    peeked: Option<Event<'a>>,
}

impl<'a> Parser<'a> {
    fn new(body: &'a [u8]) -> Result<Parser<'a>, WireError> {
        let src = std::str::from_utf8(body).map_err(|e| malformed(format!("body is not UTF-8 ({e})")))?;
        let src = src.strip_prefix('\u{feff}').unwrap_or(src);
        Ok(Parser { tok: Tokenizer { src, pos: 0, pending_end: None }, peeked: None })
    }

    fn next(&mut self) -> Result<Event<'a>, WireError> {
        match self.peeked.take() {
            Some(e) => Ok(e),
            None => self.tok.next(),
        }
    }

    fn peek_is_start(&mut self) -> Result<bool, WireError> {
        if self.peeked.is_none() {
            self.peeked = Some(self.tok.next()?);
        }
        Ok(matches!(self.peeked, Some(Event::Start(_))))
    }

    /// The next tag (or the end), skipping whitespace-only text; other text is an error.
    fn next_structural(&mut self) -> Result<Event<'a>, WireError> {
        loop {
            match self.next()? {
                Event::Text(t) if is_blank(&t) => continue,
                Event::Text(t) => return Err(malformed(format!("unexpected text {:?}", clip(&t)))),
                other => return Ok(other),
            }
        }
    }

    fn expect_start(&mut self, name: &str) -> Result<(), WireError> {
        match self.next_structural()? {
            Event::Start(n) if n == name => Ok(()),
            other => Err(unexpected(&other, &format!("<{name}>"))),
        }
    }

    fn expect_end(&mut self, name: &str) -> Result<(), WireError> {
        match self.next_structural()? {
            Event::End(n) if n == name => Ok(()),
            other => Err(unexpected(&other, &format!("</{name}>"))),
        }
    }

    /// The text of an element whose start tag was just read, up to and including its end tag.
    fn text_content(&mut self, name: &str) -> Result<Cow<'a, str>, WireError> {
        match self.next()? {
            Event::End(n) if n == name => Ok(Cow::Borrowed("")),
            Event::Text(t) => match self.next()? {
                Event::End(n) if n == name => Ok(t),
                other => Err(unexpected(&other, &format!("</{name}>"))),
            },
            other => Err(unexpected(&other, &format!("text or </{name}>"))),
        }
    }

    /// After the document element's end: only whitespace, comments and PIs may follow.
    fn finish(&mut self) -> Result<(), WireError> {
        match self.next_structural()? {
            Event::Eof => Ok(()),
            other => Err(malformed(format!("trailing content after the document: {}", describe(&other)))),
        }
    }

    /// The rest of a `<value>` whose start tag was just read, including its end tag. `depth` is the number of
    /// arrays/structs around it; more than `limit` is [`WireError::TooDeep`].
    fn value_body(&mut self, depth: usize, limit: usize) -> Result<Value, WireError> {
        let v = match self.next()? {
            Event::End("value") => return Ok(Value::Str(String::new())),
            Event::Start(tag) => self.typed(tag, depth, limit)?,
            Event::Text(t) => {
                if is_blank(&t) && self.peek_is_start()? {
                    match self.next()? {
                        Event::Start(tag) => self.typed(tag, depth, limit)?,
                        other => return Err(unexpected(&other, "a type element")),
                    }
                } else {
                    return match self.next()? {
                        Event::End("value") => Ok(Value::Str(t.into_owned())),
                        other => Err(unexpected(&other, "</value>")),
                    };
                }
            }
            other => return Err(unexpected(&other, "a value")),
        };
        self.expect_end("value")?;
        Ok(v)
    }

    /// The typed value whose start tag `<tag>` was just read, up to and including its end tag.
    fn typed(&mut self, tag: &'a str, depth: usize, limit: usize) -> Result<Value, WireError> {
        match tag {
            "string" => Ok(Value::Str(self.text_content(tag)?.into_owned())),
            "int" | "i4" | "i8" => {
                let t = self.text_content(tag)?;
                let t = t.trim_matches(is_xml_space);
                let ok = !t.is_empty() && t.trim_start_matches(['+', '-']).bytes().all(|b| b.is_ascii_digit());
                t.parse::<i64>()
                    .ok()
                    .filter(|_| ok)
                    .map(Value::Int)
                    .ok_or_else(|| malformed(format!("bad <{tag}> {:?}", clip(t))))
            }
            "boolean" => match self.text_content(tag)?.trim_matches(is_xml_space) {
                "1" | "true" => Ok(Value::Bool(true)),
                "0" | "false" => Ok(Value::Bool(false)),
                t => Err(malformed(format!("bad <boolean> {:?}", clip(t)))),
            },
            "double" => {
                let t = self.text_content(tag)?;
                let t = t.trim_matches(is_xml_space);
                t.parse::<f64>().map(Value::Float).map_err(|_| malformed(format!("bad <double> {:?}", clip(t))))
            }
            "dateTime.iso8601" => Ok(Value::DateTime(self.text_content(tag)?.into_owned())),
            "nil" => {
                if is_blank(&self.text_content(tag)?) {
                    Ok(Value::Nil)
                } else {
                    Err(malformed("<nil> with content"))
                }
            }
            "array" => {
                let depth = deeper(depth, limit)?;
                let mut items = Vec::new();
                match self.next_structural()? {
                    Event::End("array") => return Ok(Value::Array(items)),
                    Event::Start("data") => {}
                    other => return Err(unexpected(&other, "<data>")),
                }
                loop {
                    match self.next_structural()? {
                        Event::End("data") => break,
                        Event::Start("value") => items.push(self.value_body(depth, limit)?),
                        other => return Err(unexpected(&other, "<value> or </data>")),
                    }
                }
                self.expect_end("array")?;
                Ok(Value::Array(items))
            }
            "struct" => {
                let depth = deeper(depth, limit)?;
                let mut members = Vec::new();
                loop {
                    match self.next_structural()? {
                        Event::End("struct") => break,
                        Event::Start("member") => {
                            self.expect_start("name")?;
                            let name = self.text_content("name")?.into_owned();
                            self.expect_start("value")?;
                            let v = self.value_body(depth, limit)?;
                            self.expect_end("member")?;
                            members.push((name, v));
                        }
                        other => return Err(unexpected(&other, "<member> or </struct>")),
                    }
                }
                Ok(Value::Struct(members))
            }
            "base64" => Err(malformed("<base64> values are not supported")),
            other => Err(malformed(format!("unknown value type <{}>", clip(other)))),
        }
    }
}

/// The depth of a container opened at `depth`, or [`WireError::TooDeep`].
fn deeper(depth: usize, limit: usize) -> Result<usize, WireError> {
    if depth >= limit { Err(WireError::TooDeep(MAX_DEPTH)) } else { Ok(depth + 1) }
}
