//! The XML stream of one s2s connection, either direction: the socket
//! (plain until STARTTLS, or TLS), the limit-enforcing parser shared with
//! c2s (rookery-xml), and the output buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rookery_core::StreamError;
use rookery_xml::{Element, Limits, Parser, StreamEvent, StreamHeader, escape_attr, ns};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Read chunk size: bounds how many bytes one read adds to the parser.
const READ_CHUNK: usize = 4096;

/// A server-to-server socket.
#[derive(Debug)]
pub(crate) enum Socket {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Socket {
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Socket::Tls(_))
    }

    /// The peer's certificate chain, leaf first.
    pub(crate) fn peer_certificates(&self) -> Vec<CertificateDer<'static>> {
        let Socket::Tls(s) = self else {
            return Vec::new();
        };
        let certs = match s.as_ref() {
            tokio_rustls::TlsStream::Client(c) => c.get_ref().1.peer_certificates(),
            tokio_rustls::TlsStream::Server(c) => c.get_ref().1.peer_certificates(),
        };
        certs
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default()
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
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_write(cx, b),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, b),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_flush(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why a stream ended or a step failed.
#[derive(Debug)]
pub(crate) enum Fail {
    /// We send this stream error, then close.
    Stream(StreamError),
    /// The peer sent a stream error (its condition).
    Peer(String),
    /// The peer closed the stream.
    Closed,
    /// The socket failed or hit EOF.
    Gone,
    /// Something else went wrong (TLS handshake, refused negotiation).
    Other(String),
}

impl From<StreamError> for Fail {
    fn from(e: StreamError) -> Fail {
        Fail::Stream(e)
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Stream(e) => write!(f, "stream error {}", e.condition),
            Fail::Peer(c) => write!(f, "the peer sent stream error {c}"),
            Fail::Closed => f.write_str("the peer closed the stream"),
            Fail::Gone => f.write_str("connection lost"),
            Fail::Other(s) => f.write_str(s),
        }
    }
}

pub(crate) fn stream_err(condition: &'static str, text: &str) -> Fail {
    Fail::Stream(StreamError::new(condition).with_text(text))
}

/// One s2s XML stream.
#[derive(Debug)]
pub(crate) struct XmlStream {
    pub(crate) socket: Option<Socket>,
    pub(crate) parser: Parser,
    pub(crate) out: Vec<u8>,
    pub(crate) header_sent: bool,
    write_timeout: Duration,
}

impl XmlStream {
    pub(crate) fn new(socket: Socket, limits: Limits, write_timeout: Duration) -> XmlStream {
        XmlStream {
            socket: Some(socket),
            parser: Parser::new(limits),
            out: Vec::new(),
            header_sent: false,
            write_timeout,
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        self.socket.as_ref().is_some_and(Socket::is_tls)
    }

    /// RFC 6120 §4.7 (§9.1.1 for s2s): our stream header, declaring the
    /// dialback namespace (XEP-0220 §2.4.1).
    pub(crate) fn write_header(&mut self, from: &str, to: Option<&str>, id: Option<&str>) {
        self.out.extend_from_slice(
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='",
        );
        escape_attr(&mut self.out, from);
        if let Some(to) = to {
            self.out.extend_from_slice(b"' to='");
            escape_attr(&mut self.out, to);
        }
        if let Some(id) = id {
            self.out.extend_from_slice(b"' id='");
            escape_attr(&mut self.out, id);
        }
        self.out
            .extend_from_slice(b"' version='1.0' xml:lang='en'>");
        self.header_sent = true;
    }

    /// Queues an element of the stream (nonzas, stream features).
    pub(crate) fn push(&mut self, el: &Element) {
        el.write_to(&mut self.out, ns::SERVER);
    }

    pub(crate) async fn flush(&mut self) -> Result<(), Fail> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let s = self.socket.as_mut().ok_or(Fail::Gone)?;
        match tokio::time::timeout(self.write_timeout, async {
            s.write_all(&out).await?;
            s.flush().await
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            _ => Err(Fail::Gone),
        }
    }

    pub(crate) async fn send(&mut self, el: &Element) -> Result<(), Fail> {
        self.push(el);
        self.flush().await
    }

    async fn read_more(&mut self) -> Result<(), Fail> {
        let s = self.socket.as_mut().ok_or(Fail::Gone)?;
        let mut buf = [0u8; READ_CHUNK];
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => Err(Fail::Gone),
            Ok(n) => self
                .parser
                .feed(&buf[..n])
                .map_err(|e| Fail::Stream(StreamError::from(e))),
        }
    }

    /// The next event; a `<stream:error/>` from the peer is [`Fail::Peer`].
    /// Cancel-safe between reads (bytes read are fed at once).
    pub(crate) async fn next_event(&mut self) -> Result<StreamEvent, Fail> {
        loop {
            match self.parser.next_event().map_err(StreamError::from)? {
                Some(StreamEvent::Stanza(el)) if el.is("error", ns::STREAMS) => {
                    let cond = el
                        .children()
                        .find(|c| c.ns() == ns::STREAM_ERRORS && c.name() != "text")
                        .map(|c| c.name().to_owned())
                        .unwrap_or_else(|| "undefined-condition".into());
                    return Err(Fail::Peer(cond));
                }
                Some(ev) => return Ok(ev),
                None => self.read_more().await?,
            }
        }
    }

    pub(crate) async fn next_element(&mut self) -> Result<Element, Fail> {
        match self.next_event().await? {
            StreamEvent::Stanza(el) => Ok(el),
            StreamEvent::Close => Err(Fail::Closed),
            StreamEvent::Open(_) => Err(stream_err("not-well-formed", "unexpected stream header")),
        }
    }

    /// Reads the peer's stream header and checks the namespaces and
    /// version (RFC 6120 §4.7, §4.8, §4.9.3.10, §4.9.3.25).
    pub(crate) async fn read_header(&mut self) -> Result<StreamHeader, Fail> {
        let header = match self.next_event().await? {
            StreamEvent::Open(h) => h,
            _ => return Err(stream_err("not-well-formed", "expected a stream header")),
        };
        if header.name != "stream" || header.ns != ns::STREAMS {
            return Err(stream_err("invalid-namespace", "not an XMPP stream"));
        }
        if header.default_ns.as_deref() != Some(ns::SERVER) {
            return Err(stream_err(
                "invalid-namespace",
                "content namespace must be jabber:server",
            ));
        }
        Ok(header)
    }

    /// Sends the closing error or tag and shuts the socket down.
    pub(crate) async fn close(&mut self, error: Option<&StreamError>, local: &str) {
        if let Some(e) = error {
            if !self.header_sent {
                self.write_header(local, None, None);
            }
            e.to_element().write_to(&mut self.out, ns::SERVER);
        }
        if self.header_sent {
            self.out.extend_from_slice(b"</stream:stream>");
        }
        if let Some(mut s) = self.socket.take() {
            let out = std::mem::take(&mut self.out);
            let _ = tokio::time::timeout(self.write_timeout, async {
                if !out.is_empty() {
                    s.write_all(&out).await?;
                }
                s.shutdown().await
            })
            .await;
        }
    }
}
