//! The front door: every accepted connection passes here before the HTTP server.
//!
//! A connection whose first bytes are `CONNECT /console` is a console client: it is handed to
//! [`crate::console::raw`], which answers exactly as xapi does. Every other connection goes on to the HTTP server
//! with the bytes already read put back in front of it ([`Prefixed`]). The first bytes decide as soon as they stop
//! looking like `CONNECT /console`, so an ordinary request waits for nothing.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;

use crate::state::{Peer, State};

const CONSOLE: &[u8] = b"CONNECT /console";

/// A stream with some bytes already read from it, which are read again first.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
    /// The connection's place in its client's count, given back when the connection ends.
    _slot: Option<Slot>,
}

/// Open TCP connections per client address.
#[derive(Default)]
pub struct Connections(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<std::net::IpAddr, usize>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for one more connection from `ip`, or `None` when it has `limit` open already.
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, limit: usize) -> Option<Slot> {
        let mut m = self.lock();
        let n = m.entry(ip).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Slot { all: self.clone(), ip })
    }
}

/// One open connection of a client, counted until dropped.
pub struct Slot {
    all: Arc<Connections>,
    ip: std::net::IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.all.lock();
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// What a client past its connection limit is told before the connection closes.
fn too_many(limit: usize) -> Vec<u8> {
    let body = format!(
        "TOO_MANY_CONNECTIONS this client (address) has {limit} connections open already, the most allowed \
         (--connections-per-client)\n"
    );
    format!(
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nConnection: close\r\nRetry-After: 1\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl<S> Prefixed<S> {
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Who is on the other end of an accepted stream.
pub trait PeerOf: Sized {
    type Addr;
    fn peer(&self, addr: &Self::Addr) -> Peer;
}

impl PeerOf for TcpStream {
    type Addr = std::net::SocketAddr;
    fn peer(&self, addr: &Self::Addr) -> Peer {
        Peer::Tcp(*addr)
    }
}

impl PeerOf for tokio_rustls::server::TlsStream<TcpStream> {
    type Addr = std::net::SocketAddr;
    fn peer(&self, addr: &Self::Addr) -> Peer {
        Peer::Tcp(*addr)
    }
}

impl PeerOf for UnixStream {
    type Addr = tokio::net::unix::SocketAddr;
    fn peer(&self, _: &Self::Addr) -> Peer {
        Peer::Unix { uid: self.peer_cred().ok().map(|c| c.uid()) }
    }
}

/// A listener for the HTTP server that has already sorted the console clients out.
pub struct Front<L: Listener> {
    rx: mpsc::Receiver<(Prefixed<L::Io>, L::Addr)>,
    local: L::Addr,
}

impl<L> Front<L>
where
    L: Listener,
    L::Io: PeerOf<Addr = L::Addr>,
    L::Addr: Clone + Sync + 'static,
{
    /// Starts accepting on `listener`; stops when the returned listener is dropped.
    pub fn new(mut listener: L, state: Arc<State>) -> io::Result<Front<L>> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let connections = Arc::new(Connections::default());
        tokio::spawn(async move {
            loop {
                let (io, addr) = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = tx.closed() => return,
                };
                let (tx, state) = (tx.clone(), state.clone());
                // TCP clients are counted per address; the unix socket is not limited.
                let slot = match io.peer(&addr) {
                    Peer::Tcp(a) => match connections.take(a.ip(), state.settings.connections_per_client) {
                        Some(slot) => Some(slot),
                        None => {
                            tracing::info!(client = %a.ip(), "connection refused: the client's connection limit");
                            let limit = state.settings.connections_per_client;
                            tokio::spawn(async move {
                                let mut io = io;
                                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                                    let _ = tokio::io::AsyncWriteExt::write_all(&mut io, &too_many(limit)).await;
                                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut io).await;
                                })
                                .await;
                            });
                            continue;
                        }
                    },
                    Peer::Unix { .. } => None,
                };
                tokio::spawn(async move {
                    let mut io = io;
                    let Some(head) = first_bytes(&mut io).await else { return };
                    if head.starts_with(CONSOLE) {
                        let peer = io.peer(&addr);
                        let _slot = slot;
                        crate::console::raw(state, peer, io, head).await;
                    } else {
                        let _ = tx.send((Prefixed { prefix: head, pos: 0, inner: io, _slot: slot }, addr)).await;
                    }
                });
            }
        });
        Ok(Front { rx, local })
    }
}

/// Reads until the bytes are `CONNECT /console` or cannot become it; `None` if the client sent nothing for 60 s
/// or closed the connection first.
async fn first_bytes<S: AsyncRead + Unpin>(io: &mut S) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    while head.len() < CONSOLE.len() && CONSOLE.starts_with(&head) {
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_secs(60), io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    Some(head)
}

impl<L> Listener for Front<L>
where
    L: Listener,
    L::Addr: Clone + Sync,
{
    type Io = Prefixed<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The acceptor only ends when this listener is dropped; until then, wait.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local.clone())
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn prefixed_reads_the_prefix_then_the_stream() {
        let (a, mut b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut b, b" world").await.unwrap();
        drop(b);
        let mut p = Prefixed { prefix: b"hello".to_vec(), pos: 0, inner: a, _slot: None };
        let mut out = String::new();
        p.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }

    #[tokio::test]
    async fn first_bytes_decide_early() {
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut b, b"POST / HTTP/1.1\r\n").await.unwrap();
        let head = first_bytes(&mut a).await.unwrap();
        assert!(head.starts_with(b"POST"));
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut b, b"CONN").await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut b, b"ECT /console?uuid=x HTTP/1.0\r\n").await.unwrap();
        assert!(first_bytes(&mut a).await.unwrap().starts_with(CONSOLE));
    }
}
