//! The socket of a client stream: plain TCP until STARTTLS, then TLS; or a
//! framed transport (WebSocket, BOSH) that carries whole messages.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A client socket. The TLS variant is boxed: its buffers are large and most
/// of a connection's life is spent in that state anyway.
#[derive(Debug)]
pub(crate) enum Socket {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Whole messages (RFC 7395, XEP-0206): never read or written as bytes.
    Framed(Box<crate::framed::Framed>),
}

fn framed_io() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "a framed transport has no bytes",
    )
}

impl Socket {
    pub(crate) fn is_tls(&self) -> bool {
        match self {
            Socket::Plain(_) => false,
            Socket::Tls(_) => true,
            Socket::Framed(f) => f.secure,
        }
    }

    /// RFC 9266 `tls-exporter` channel-binding data. Only for TLS 1.3: with
    /// TLS 1.2 the exporter is unsafe without the extended master secret
    /// (RFC 9266 §3), so -PLUS is not offered there.
    pub(crate) fn tls_exporter(&self) -> Option<Vec<u8>> {
        let Socket::Tls(s) = self else { return None };
        let (_, conn) = s.get_ref();
        if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
            return None;
        }
        conn.export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
            .ok()
            .map(|k| k.to_vec())
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Socket::Framed(_) => Poll::Ready(Err(framed_io())),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Socket::Framed(_) => Poll::Ready(Err(framed_io())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_flush(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Socket::Framed(_) => Poll::Ready(Err(framed_io())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Socket::Framed(_) => Poll::Ready(Err(framed_io())),
        }
    }
}
