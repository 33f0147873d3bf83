//! A framed transport for a client stream: whole messages instead of a byte
//! stream (RFC 7395 WebSocket frames, XEP-0206 BOSH payloads).
//!
//! The c2s stream logic in `conn.rs` (SASL, bind, XEP-0198, XEP-0352) runs
//! unchanged over it: on input, an `<open/>` becomes the stream header event,
//! `<close/>` the stream end, and every other message must be exactly one
//! complete element (RFC 7395 §3.3.3); on output, each element the stream
//! writes becomes one message with every namespace declared.
//!
//! The transport itself (the WebSocket, or the BOSH session) sits at the
//! other end of two channels and knows nothing of XMPP streams.

use std::collections::VecDeque;

use rookery_core::StreamError;
use rookery_xml::{Element, Limits, Parser, StreamEvent, StreamHeader, ns};
use tokio::sync::mpsc;

/// A message from the client side of a framed transport.
#[derive(Debug)]
pub(crate) enum FrameIn {
    /// A WebSocket text message: one element, parsed and checked here.
    Text(String),
    /// A binary WebSocket message, which RFC 7395 §3.2 does not allow.
    Binary,
    /// An element already parsed by the transport (a BOSH payload).
    Element(Element),
    /// A (re)start of the stream with the attributes of the client's
    /// `<open/>` (XEP-0206 §3 session creation, §5 `xmpp:restart`).
    Open(Element),
    /// The client closed the stream (BOSH `type='terminate'`).
    Close,
    /// The client is alive (a WebSocket pong, a BOSH request).
    Alive,
}

/// A message for the client.
#[derive(Debug)]
pub(crate) enum FrameOut {
    /// One complete element, all its namespaces declared.
    Text(String),
    /// A keepalive (a WebSocket ping frame, RFC 7395 §3.8).
    Ping,
}

/// Which framing: they differ in keepalives only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// RFC 7395: kept alive with WebSocket pings.
    WebSocket,
    /// XEP-0206: kept alive by the client's requests; the BOSH session
    /// ends the stream after its inactivity period (XEP-0124 §10).
    Bosh,
}

/// The stream's end of a framed transport.
#[derive(Debug)]
pub(crate) struct Framed {
    pub(crate) rx: mpsc::Receiver<FrameIn>,
    pub(crate) tx: mpsc::Sender<FrameOut>,
    /// The transport is encrypted (HTTPS, or plain HTTP behind a
    /// TLS-terminating proxy when configured so): no STARTTLS, PLAIN allowed.
    pub(crate) secure: bool,
    pub(crate) kind: Kind,
    limits: Limits,
    /// Events decoded from messages, not yet handled.
    events: VecDeque<StreamEvent>,
}

impl Framed {
    pub(crate) fn new(
        rx: mpsc::Receiver<FrameIn>,
        tx: mpsc::Sender<FrameOut>,
        secure: bool,
        kind: Kind,
        limits: Limits,
    ) -> Framed {
        Framed {
            rx,
            tx,
            secure,
            kind,
            limits,
            events: VecDeque::new(),
        }
    }

    /// The next decoded event.
    pub(crate) fn next_event(&mut self) -> Option<StreamEvent> {
        self.events.pop_front()
    }

    /// Waits for the next message and decodes it. `Err(None)`: the
    /// transport is gone. Cancel-safe.
    pub(crate) async fn read(&mut self) -> Result<(), Option<StreamError>> {
        let Some(m) = self.rx.recv().await else {
            return Err(None);
        };
        let ev = decode(m, self.limits).map_err(Some)?;
        self.events.extend(ev);
        Ok(())
    }
}

/// The stream header event of an `<open/>` (RFC 7395 §3.4: the same
/// attributes as the `<stream:stream>` tag of RFC 6120 §4.7).
fn header(open: &Element) -> StreamEvent {
    StreamEvent::Open(StreamHeader {
        name: "stream".into(),
        ns: ns::STREAMS.into(),
        default_ns: Some(ns::CLIENT.into()),
        attrs: open.attrs().to_vec(),
    })
}

fn decode(m: FrameIn, limits: Limits) -> Result<Option<StreamEvent>, StreamError> {
    let el = match m {
        FrameIn::Text(text) => parse_message(&text, limits)?,
        FrameIn::Binary => {
            return Err(StreamError::new("bad-format")
                .with_text("RFC 7395 §3.2: XMPP messages are text frames"));
        }
        FrameIn::Element(el) => el,
        FrameIn::Open(el) => return Ok(Some(header(&el))),
        FrameIn::Close => return Ok(Some(StreamEvent::Close)),
        FrameIn::Alive => return Ok(None),
    };
    if el.ns() == ns::FRAMING {
        return match el.name() {
            "open" => Ok(Some(header(&el))),
            "close" => Ok(Some(StreamEvent::Close)),
            _ => Err(StreamError::new("unsupported-stanza-type")
                .with_text("unknown element of the framing namespace")),
        };
    }
    Ok(Some(StreamEvent::Stanza(el)))
}

/// RFC 7395 §3.3.3: a message is a standalone XML document holding exactly
/// one element. Anything else (half an element, two elements, text that is
/// not XML) is not a well-formed document: `<not-well-formed/>`
/// (RFC 6120 §4.9.3.13). An XML declaration is tolerated ("NOT
/// RECOMMENDED"); stanzas that declare no namespace are read as
/// `jabber:client`, as clients written for TCP streams send them.
pub(crate) fn parse_message(text: &str, limits: Limits) -> Result<Element, StreamError> {
    let mut body = text.trim_start();
    if body.starts_with("<?xml") {
        let Some(end) = body.find("?>") else {
            return Err(not_one_element("an unterminated XML declaration"));
        };
        body = &body[end + 2..];
    }
    let mut p = Parser::new_fragments(limits, ns::CLIENT);
    p.feed(body.as_bytes()).map_err(StreamError::from)?;
    let el = match p.next_event().map_err(StreamError::from)? {
        Some(StreamEvent::Stanza(el)) => el,
        Some(_) => return Err(not_one_element("not an element")),
        None => return Err(not_one_element("an incomplete element")),
    };
    match p.next_event().map_err(StreamError::from)? {
        None if p.is_idle() => Ok(el),
        Some(StreamEvent::Stanza(_)) => Err(not_one_element("more than one element")),
        _ => Err(not_one_element("content after the element")),
    }
}

fn not_one_element(what: &str) -> StreamError {
    StreamError::new("not-well-formed").with_text(format!(
        "RFC 7395 §3.3.3: a message must be exactly one complete element, not {what}"
    ))
}

/// Serializes `el` as one message (RFC 7395 §3.3.3): every namespace
/// declared, and the `stream:` prefix of features and errors declared on
/// the element itself.
pub(crate) fn serialize(el: &Element, out: &mut Vec<u8>) {
    let start = out.len();
    el.write_to(out, "");
    if el.ns() == ns::STREAMS {
        let at = start + "<stream:".len() + el.name().len();
        let decl = format!(" xmlns:stream='{}'", ns::STREAMS);
        out.splice(at..at, decl.into_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Element, StreamError> {
        parse_message(t, Limits::default())
    }

    /// RFC 7395 §3.3.3 and §3.4 examples.
    #[test]
    fn spec_examples_parse() {
        let m = parse(
            "<message xmlns=\"jabber:client\" xml:lang=\"en\">\n  <body>Every WebSocket message is parsable by itself.</body>\n</message>",
        )
        .unwrap();
        assert!(m.is("message", ns::CLIENT));
        let open = parse(
            "<open xmlns=\"urn:ietf:params:xml:ns:xmpp-framing\"\n      to=\"example.com\"\n      version=\"1.0\" />",
        )
        .unwrap();
        match decode(FrameIn::Element(open), Limits::default()).unwrap() {
            Some(StreamEvent::Open(h)) => {
                assert_eq!(h.attr("to"), Some("example.com"));
                assert_eq!(h.attr("version"), Some("1.0"));
                assert_eq!(h.ns, ns::STREAMS);
            }
            other => panic!("{other:?}"),
        }
        let close = FrameIn::Text("<close xmlns=\"urn:ietf:params:xml:ns:xmpp-framing\" />".into());
        assert_eq!(
            decode(close, Limits::default()).unwrap(),
            Some(StreamEvent::Close)
        );
        // No namespace: jabber:client. A declaration is tolerated.
        assert!(
            parse("<?xml version='1.0'?><presence/>")
                .unwrap()
                .is("presence", ns::CLIENT)
        );
    }

    #[test]
    fn anything_but_one_element_is_not_well_formed() {
        for bad in [
            "<message><body>hi</body></message><presence/>",
            "<message><body>hi</bo",
            "hello",
            "",
            "<presence/>trailing",
            "<!-- c --><presence/>",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                matches!(e.condition, "not-well-formed" | "restricted-xml"),
                "{bad}: {e:?}"
            );
        }
        assert_eq!(
            decode(FrameIn::Binary, Limits::default())
                .unwrap_err()
                .condition,
            "bad-format"
        );
    }

    /// RFC 7395 §3.3.3: the stream prefix is declared on features and errors.
    #[test]
    fn serialized_messages_stand_alone() {
        let f = Element::new_static("features", ns::STREAMS)
            .with_child(Element::new_static("bind", ns::BIND));
        let mut out = Vec::new();
        serialize(&f, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
        );
        let again = parse(&text).unwrap();
        assert!(again.is("features", ns::STREAMS));
        let m = Element::new_static("message", ns::CLIENT).with_attr("to", "a@b");
        let mut out = Vec::new();
        serialize(&m, &mut out);
        assert_eq!(out, b"<message xmlns='jabber:client' to='a@b'/>");
    }
}
