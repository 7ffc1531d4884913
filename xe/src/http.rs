//! A tiny blocking HTTP/1.1 client: one request per connection, over the local unix socket, plain TCP or TLS
//! (rustls). `POST /`
//! for XML-RPC; for `vdi-import`/`vdi-export`, a `PUT` streaming a file from disk ([`put_file`]) and a `GET`
//! streaming the answer into a writer ([`get_into`]), 1 MiB at a time, never a whole disk in memory.
//!
//! The answer is read as its headers frame it: `Content-Length`, `Transfer-Encoding: chunked` (the daemon streams
//! big answers chunked), or else up to the end of the connection.
//!
//! TLS verifies nothing by default, as XenServer's xe (its stunnel runs without `verify`): the host's certificate
//! is usually self-signed. With `--cacert FILE` the certificate must chain to a CA of that file and name the host.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
    Tls { host: String, port: u16, verify: Verify },
}

/// How a TLS connection checks the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// Any certificate (XenServer's xe does the same).
    Nothing,
    /// The certificate must chain to a CA of this PEM file and be for the host name.
    Ca(PathBuf),
}

impl Target {
    fn host_header(&self) -> String {
        match self {
            Target::Unix(_) => "localhost".into(),
            Target::Tcp { host, port } | Target::Tls { host, port, .. } => format!("{host}:{port}"),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(path) => write!(f, "{}", path.display()),
            Target::Tcp { host, port } => write!(f, "{host}:{port}"),
            Target::Tls { host, port, .. } => write!(f, "https://{host}:{port}"),
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
    exchange(connect(target)?, head.as_bytes(), body)
}

/// A connection to the daemon, whichever kind.
trait Stream: Read + Write {}
impl<S: Read + Write> Stream for S {}

fn connect(target: &Target) -> io::Result<Box<dyn Stream>> {
    Ok(match target {
        Target::Unix(path) => Box::new(UnixStream::connect(path)?),
        Target::Tcp { host, port } => Box::new(TcpStream::connect((host.as_str(), *port))?),
        Target::Tls { host, port, verify } => {
            let config = client_config(verify)?;
            let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_string())
                .map_err(|_| bad(format!("{host} is not a host name or address")))?;
            let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
            let tcp = TcpStream::connect((host.as_str(), *port))?;
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            // The handshake now, so that a refused certificate is reported as such rather than as a failed write.
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock)?;
            }
            Box::new(tls)
        }
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(verify: &Verify) -> io::Result<Arc<rustls::ClientConfig>> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?;
    let config = match verify {
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth(),
        Verify::Ca(file) => {
            let pem = std::fs::read(file)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot read the CA file {}: {e}", file.display())))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| bad(format!("the CA file {} is not PEM: {e}", file.display())))?;
                roots.add(cert).map_err(|e| bad(format!("the CA file {}: {e}", file.display())))?;
            }
            if roots.is_empty() {
                return Err(bad(format!("the CA file {} holds no certificate", file.display())));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

/// Accepts whatever certificate the server shows; still checks that the server holds its key (the handshake's
/// signatures), which costs nothing and keeps the connection's encryption sound against a passive listener.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The pieces a body is streamed in.
pub const PIECE: usize = 1 << 20;

/// An answer other than `200`: its status line and its body (for the daemon's raw-VDI handlers, one plain-text
/// line `CODE param…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status_line: String,
    pub body: String,
}

/// What went wrong with a streamed transfer.
#[derive(Debug)]
pub enum StreamError {
    Io(io::Error),
    Refused(Refused),
}

impl From<io::Error> for StreamError {
    fn from(e: io::Error) -> Self {
        StreamError::Io(e)
    }
}

/// `PUT path_and_query` with the `length` bytes of `body` (read in [`PIECE`]s) and a `Content-Length`;
/// `progress(sent)` after each piece. When the daemon stops reading early (it answers an error as soon as it knows,
/// e.g. a too long body), its answer is what is reported, not the broken pipe.
pub fn put_file(
    target: &Target,
    path_and_query: &str,
    body: &mut dyn Read,
    length: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<String, StreamError> {
    let mut stream = connect(target)?;
    let head = format!(
        "PUT {path_and_query} HTTP/1.1\r\nHost: {}\r\nUser-Agent: xe\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {length}\r\nConnection: close\r\n\r\n",
        target.host_header()
    );
    let sent = (|| -> io::Result<()> {
        stream.write_all(head.as_bytes())?;
        let mut buf = vec![0u8; PIECE];
        let mut sent = 0u64;
        while sent < length {
            let want = (length - sent).min(PIECE as u64) as usize;
            let n = body.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while it was read"));
            }
            stream.write_all(&buf[..n])?;
            sent += n as u64;
            progress(sent);
        }
        stream.flush()
    })();
    let mut reader = BufReader::new(stream);
    match (sent, read_head(&mut reader)) {
        (_, Ok(head)) if head.status != "200" => {
            let mut body = Vec::new();
            let _ = read_body(&mut reader, &head, &mut body);
            Err(StreamError::Refused(Refused {
                status_line: head.status_line,
                body: String::from_utf8_lossy(&body).trim().to_string(),
            }))
        }
        (Err(e), _) => Err(e.into()),
        (Ok(()), Ok(head)) => {
            let mut body = Vec::new();
            read_body(&mut reader, &head, &mut body)?;
            Ok(String::from_utf8_lossy(&body).trim().to_string())
        }
        (Ok(()), Err(e)) => Err(e.into()),
    }
}

/// `GET path_and_query`, the body of a `200` answer written into `out`; `progress(received, Content-Length)` after
/// each piece. A body shorter than its `Content-Length` (the daemon cut the transfer) is an error.
pub fn get_into(
    target: &Target,
    path_and_query: &str,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<(), StreamError> {
    let mut stream = connect(target)?;
    let head = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {}\r\nUser-Agent: xe\r\nConnection: close\r\n\r\n",
        target.host_header()
    );
    stream.write_all(head.as_bytes())?;
    stream.flush()?;
    let mut reader = BufReader::with_capacity(PIECE, stream);
    let head = read_head(&mut reader)?;
    if head.status != "200" {
        let mut body = Vec::new();
        let _ = read_body(&mut reader, &head, &mut body);
        return Err(StreamError::Refused(Refused {
            status_line: head.status_line,
            body: String::from_utf8_lossy(&body).trim().to_string(),
        }));
    }
    let total = head.length;
    let mut counting = Counting { inner: out, count: 0, progress: &mut |n| progress(n, total) };
    read_body(&mut reader, &head, &mut counting)?;
    Ok(())
}

/// A writer that reports how much went through it.
struct Counting<'a> {
    inner: &'a mut dyn Write,
    count: u64,
    progress: &'a mut dyn FnMut(u64),
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        (self.progress)(self.count);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
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

/// The status line and framing of an answer.
#[derive(Debug)]
struct Head {
    status_line: String,
    status: String,
    length: Option<u64>,
    chunked: bool,
}

fn read_head<R: BufRead>(r: &mut R) -> io::Result<Head> {
    let status_line = read_line(r)?;
    let status = status_line.split_whitespace().nth(1).unwrap_or_default().to_string();
    let mut length = None;
    let mut chunked = false;
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<u64>().map_err(|_| bad(format!("bad Content-Length {value:?}")))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().split(',').any(|t| t.trim() == "chunked");
        }
    }
    Ok(Head { status_line, status, length, chunked })
}

/// Copies exactly `n` bytes from `r` to `out`, in pieces.
fn copy_exact<R: BufRead>(r: &mut R, mut n: u64, out: &mut dyn Write) -> io::Result<()> {
    while n > 0 {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the connection closed {n} bytes before the end of the answer"),
            ));
        }
        let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        out.write_all(&buf[..take])?;
        r.consume(take);
        n -= take as u64;
    }
    Ok(())
}

/// Copies the body the head frames into `out`.
fn read_body<R: BufRead>(r: &mut R, head: &Head, out: &mut dyn Write) -> io::Result<()> {
    if head.chunked {
        loop {
            let line = read_line(r)?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(size, 16).map_err(|_| bad(format!("bad chunk size {size:?}")))?;
            if size == 0 {
                while !read_line(r)?.is_empty() {}
                return Ok(());
            }
            copy_exact(r, size, out)?;
            read_line(r)?;
        }
    } else if let Some(n) = head.length {
        copy_exact(r, n, out)
    } else {
        io::copy(r, out).map(|_| ())
    }
}

/// Reads one HTTP/1.1 response and returns its body, or an error for any status but 200.
pub fn read_response<R: BufRead>(mut r: R) -> io::Result<Vec<u8>> {
    let head = read_head(&mut r)?;
    let mut body = Vec::new();
    read_body(&mut r, &head, &mut body)?;
    if head.status != "200" {
        return Err(bad(format!("the server answered {:?}", head.status_line)));
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
