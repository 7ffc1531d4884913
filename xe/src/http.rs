//! A tiny blocking HTTP/1.1 client: one `POST /` per connection, over the local unix socket or plain TCP.
//!
//! The answer is read as its headers frame it: `Content-Length`, `Transfer-Encoding: chunked` (the daemon streams
//! big answers chunked), or else up to the end of the connection. No TLS.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

impl Target {
    fn host_header(&self) -> String {
        match self {
            Target::Unix(_) => "localhost".into(),
            Target::Tcp { host, port } => format!("{host}:{port}"),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(path) => write!(f, "{}", path.display()),
            Target::Tcp { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Posts `body` (an XML-RPC call) to `/` and returns the body of a `200` answer.
pub fn post(target: &Target, body: &[u8]) -> io::Result<Vec<u8>> {
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nUser-Agent: xe\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        target.host_header(),
        body.len()
    );
    match target {
        Target::Unix(path) => exchange(UnixStream::connect(path)?, head.as_bytes(), body),
        Target::Tcp { host, port } => exchange(TcpStream::connect((host.as_str(), *port))?, head.as_bytes(), body),
    }
}

fn exchange<S: Read + Write>(mut stream: S, head: &[u8], body: &[u8]) -> io::Result<Vec<u8>> {
    stream.write_all(head)?;
    stream.write_all(body)?;
    stream.flush()?;
    read_response(BufReader::new(stream))
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_line<R: BufRead>(r: &mut R) -> io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(bad("the connection closed in the middle of an HTTP answer"));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads one HTTP/1.1 response and returns its body, or an error for any status but 200.
pub fn read_response<R: BufRead>(mut r: R) -> io::Result<Vec<u8>> {
    let status_line = read_line(&mut r)?;
    let status = status_line.split_whitespace().nth(1).unwrap_or_default().to_string();
    let mut length = None;
    let mut chunked = false;
    loop {
        let line = read_line(&mut r)?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| bad(format!("bad Content-Length {value:?}")))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().split(',').any(|t| t.trim() == "chunked");
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let line = read_line(&mut r)?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| bad(format!("bad chunk size {size:?}")))?;
            if size == 0 {
                while !read_line(&mut r)?.is_empty() {}
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            read_line(&mut r)?;
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    if status != "200" {
        return Err(bad(format!("the server answered {status_line:?}")));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_content_length_and_chunked_bodies() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, and more";
        assert_eq!(read_response(&plain[..]).unwrap(), b"hello");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\nT: 1\r\n\r\n";
        assert_eq!(read_response(&chunked[..]).unwrap(), b"hello, world");
        let eof = b"HTTP/1.0 200 OK\r\n\r\nto the end";
        assert_eq!(read_response(&eof[..]).unwrap(), b"to the end");
        let err = read_response(&b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"[..]).unwrap_err();
        assert!(err.to_string().contains("404"), "{err}");
    }
}
