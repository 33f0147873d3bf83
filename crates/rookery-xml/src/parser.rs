//! Incremental XML stream parser (RFC 6120 §4, §11) on top of quick-xml.
//!
//! Bytes are pushed in with [`Parser::feed`] as they arrive and complete
//! top-level events are pulled out with [`Parser::next_event`]. Only the bytes of
//! the current incomplete token are kept between calls; a fully consumed buffer
//! is released, so an idle stream holds no read buffer.
//!
//! Limits are checked on the raw bytes and on each start tag before the
//! corresponding part of the tree is built: the stanza byte limit counts bytes
//! still waiting in the buffer, so a peer cannot make the parser hold more than
//! `max_stanza_bytes` of one stanza, tag or text run.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::errors::{Error as QxError, IllFormedError, SyntaxError};
use quick_xml::events::{BytesStart, Event};

use crate::element::{Attr, Element};
use crate::error::XmlError;
use crate::ns;

/// Parser limits (DESIGN.md "Hard limits"). Every breach is a
/// `<policy-violation/>` stream error (RFC 6120 §4.9.3.14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one top-level element, from its `<` to its end tag, including
    /// bytes that are still buffered. RFC 6120 §13.12 asks for at least 10,000.
    pub max_stanza_bytes: usize,
    /// Nesting depth of a stanza (the stanza element itself is depth 1).
    pub max_depth: usize,
    /// Attributes on one element, namespace declarations included.
    pub max_attrs: usize,
    /// Bytes of an element or attribute name (with prefix).
    pub max_name_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 256 * 1024,
            max_depth: 48,
            max_attrs: 64,
            max_name_len: 256,
        }
    }
}

/// The opening tag of a stream (RFC 6120 §4.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    /// Local name; `stream` for a valid stream.
    pub name: String,
    /// Resolved namespace of the element; [`ns::STREAMS`] for a valid stream.
    pub ns: String,
    /// The default namespace declared (`jabber:client` for c2s), if any.
    pub default_ns: Option<String>,
    /// Non-namespace attributes (`to`, `from`, `version`, `id`, `xml:lang`).
    pub attrs: Vec<Attr>,
}

impl StreamHeader {
    /// Value of an unprefixed attribute.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.is_none() && &*a.name == name)
            .map(|a| a.value.as_str())
    }

    /// `xml:lang`, if sent.
    pub fn lang(&self) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.as_deref() == Some(ns::XML) && &*a.name == "lang")
            .map(|a| a.value.as_str())
    }
}

/// A complete top-level event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// The stream header was received.
    Open(StreamHeader),
    /// A complete first-level element (stanza or nonza).
    Stanza(Element),
    /// `</stream:stream>` was received.
    Close,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// A `<stream:stream>` wraps the elements (TCP, BOSH bodies are not this).
    Stream,
    /// Each top-level element stands alone (RFC 7395 WebSocket frames, stored XML).
    Fragment,
}

#[derive(Debug)]
struct Open {
    el: Element,
    qname: Box<[u8]>,
    scope_len: usize,
}

/// Incremental, limit-enforcing XMPP stream parser.
#[derive(Debug)]
pub struct Parser {
    limits: Limits,
    mode: Mode,
    buf: Vec<u8>,
    /// Offset in `buf` of the first unconsumed byte.
    pos: usize,
    /// Bytes consumed since creation or reset (absolute stream offset of `pos`).
    consumed: u64,
    /// Absolute offset where the current top-level element began.
    stanza_start: Option<u64>,
    header: Option<Box<[u8]>>,
    closed: bool,
    decl_allowed: bool,
    stack: Vec<Open>,
    /// In-scope namespace declarations, innermost last; prefix `""` is the default.
    scopes: Vec<(Box<str>, Cow<'static, str>)>,
}

/// UTF-8 encoding of U+FEFF.
const BOM: &[u8] = b"\xEF\xBB\xBF";

impl Parser {
    /// A parser for a `<stream:stream>`-wrapped stream (c2s, s2s over TCP).
    pub fn new(limits: Limits) -> Parser {
        Parser::with_mode(limits, Mode::Stream)
    }

    /// A parser for standalone top-level elements (RFC 7395 framing).
    pub fn new_fragments(limits: Limits, default_ns: &str) -> Parser {
        let mut p = Parser::with_mode(limits, Mode::Fragment);
        if !default_ns.is_empty() {
            p.scopes.push(("".into(), ns::intern(default_ns)));
        }
        p
    }

    fn with_mode(limits: Limits, mode: Mode) -> Parser {
        Parser {
            limits,
            mode,
            buf: Vec::new(),
            pos: 0,
            consumed: 0,
            stanza_start: None,
            header: None,
            closed: false,
            decl_allowed: mode == Mode::Stream,
            stack: Vec::new(),
            scopes: Vec::new(),
        }
    }

    /// Parses exactly one element from `xml`.
    pub fn parse_fragment(xml: &[u8], limits: Limits) -> Result<Element, XmlError> {
        let mut p = Parser::new_fragments(limits, "");
        p.feed(xml)?;
        let el = match p.next_event()? {
            Some(StreamEvent::Stanza(el)) => el,
            _ => return Err(XmlError::NotWellFormed("incomplete element".into())),
        };
        if p.next_event()?.is_some() || !p.is_idle() {
            return Err(XmlError::NotWellFormed("content after the element".into()));
        }
        Ok(el)
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Restarts the stream (RFC 6120 §4.3.3) after STARTTLS or SASL.
    /// With `keep_buffered`, bytes already received are parsed as part of the
    /// new stream (SASL restart); after STARTTLS they must be dropped (§5.4.3.3).
    pub fn reset(&mut self, keep_buffered: bool) {
        if !keep_buffered {
            self.buf = Vec::new();
            self.pos = 0;
        }
        self.consumed = 0;
        self.stanza_start = None;
        self.header = None;
        self.closed = false;
        self.decl_allowed = self.mode == Mode::Stream;
        self.stack.clear();
        self.scopes.clear();
    }

    /// True when no partial element is pending (nothing but whitespace buffered).
    pub fn is_idle(&self) -> bool {
        self.stack.is_empty()
            && self.buf[self.pos..]
                .iter()
                .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    }

    /// Bytes currently held in the read buffer (for memory accounting).
    pub fn buffered_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Appends received bytes. The size limit is checked by
    /// [`Parser::next_event`] once complete elements have been taken out, so one
    /// read may carry many small stanzas; callers bound the size of one read.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), XmlError> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn check_size(&self) -> Result<(), XmlError> {
        let pending = (self.buf.len() - self.pos) as u64;
        let used = match self.stanza_start {
            Some(start) => self.consumed - start + pending,
            None => pending,
        };
        if used > self.limits.max_stanza_bytes as u64 {
            return Err(XmlError::PolicyViolation("stanza too large"));
        }
        Ok(())
    }

    fn advance(&mut self, n: usize) {
        self.pos += n;
        self.consumed += n as u64;
    }

    /// Drops consumed bytes, releasing large buffers.
    fn compact(&mut self) {
        if self.pos == self.buf.len() {
            // Everything was consumed: give the memory back, so that a
            // connection waiting for its next stanza holds no buffer (the
            // next read allocates just what it brings).
            self.buf = Vec::new();
            self.pos = 0;
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// Returns the next complete top-level event, or `None` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, XmlError> {
        let r = self.next_inner();
        if let Ok(None) = r {
            // Only an incomplete element is left: it may not outgrow the limit.
            self.check_size()?;
            self.compact();
        }
        r
    }

    fn next_inner(&mut self) -> Result<Option<StreamEvent>, XmlError> {
        if self.closed {
            return Ok(None);
        }
        // The slice is borrowed from `self.buf`; take it out to appease the
        // borrow checker while the handlers mutate `self`.
        let buf = std::mem::take(&mut self.buf);
        let r = self.run(&buf);
        self.buf = buf;
        r
    }

    fn run(&mut self, buf: &[u8]) -> Result<Option<StreamEvent>, XmlError> {
        // quick-xml drops a byte-order mark at the start of its input without
        // counting it. Each call starts a new reader mid-stream, so a U+FEFF
        // that happens to start the unconsumed bytes is handled here: at the
        // very start of a stream it is the BOM (RFC 6120 §11.6 allows it),
        // anywhere else it is character data.
        while buf[self.pos..].starts_with(BOM) {
            if self.consumed == 0 && self.header.is_none() && self.stack.is_empty() {
                self.advance(BOM.len());
                continue;
            }
            self.text(BOM)?;
            self.advance(BOM.len());
        }
        let slice = &buf[self.pos..];
        if slice.is_empty() {
            return Ok(None);
        }
        let mut reader = Reader::from_reader(slice);
        {
            let c = reader.config_mut();
            c.check_end_names = false;
            c.expand_empty_elements = false;
            c.trim_text(false);
            c.allow_dangling_amp = false;
            c.check_comments = false;
            c.allow_unmatched_ends = true;
        }
        let mut done = 0usize;
        loop {
            let ev = reader.read_event();
            let end = reader.buffer_position() as usize;
            let produced = match ev {
                Ok(Event::Eof) => {
                    self.advance(end - done);
                    return Ok(None);
                }
                Ok(Event::Text(t)) => {
                    let raw: &[u8] = &t;
                    if end == slice.len() {
                        // Text runs to the end of what we have: keep a split
                        // UTF-8 sequence for the next call.
                        let valid = match std::str::from_utf8(raw) {
                            Ok(_) => raw.len(),
                            Err(e) if e.error_len().is_none() => e.valid_up_to(),
                            Err(_) => return Err(bad_utf8()),
                        };
                        self.text(&raw[..valid])?;
                        self.advance(end - done - (raw.len() - valid));
                        return Ok(None);
                    }
                    self.text(raw)?;
                    None
                }
                Ok(Event::CData(t)) => {
                    let raw: &[u8] = &t;
                    self.text(raw)?;
                    None
                }
                Ok(Event::GeneralRef(r)) => {
                    let name = std::str::from_utf8(&r).map_err(|_| bad_utf8())?;
                    let ch = match name {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "apos" => '\'',
                        "quot" => '"',
                        _ if name.starts_with('#') => match r.resolve_char_ref() {
                            Ok(Some(c)) if is_xml_char(c) => c,
                            _ => {
                                return Err(XmlError::NotWellFormed(format!(
                                    "invalid character reference &{name};"
                                )));
                            }
                        },
                        // RFC 6120 §11.1: no entity references beyond the predefined ones.
                        _ => return Err(XmlError::RestrictedXml("entity reference")),
                    };
                    let mut tmp = [0u8; 4];
                    self.text(ch.encode_utf8(&mut tmp).as_bytes())?;
                    None
                }
                Ok(Event::Start(s)) => self.start(&s, false)?,
                Ok(Event::Empty(s)) => self.start(&s, true)?,
                Ok(Event::End(e)) => self.end(e.name().as_ref())?,
                Ok(Event::Decl(d)) => {
                    if !self.decl_allowed {
                        return Err(XmlError::RestrictedXml("processing instruction"));
                    }
                    if let Some(Ok(enc)) = d.encoding()
                        && !enc.eq_ignore_ascii_case(b"utf-8")
                    {
                        return Err(XmlError::UnsupportedEncoding);
                    }
                    None
                }
                Ok(Event::PI(_)) => return Err(XmlError::RestrictedXml("processing instruction")),
                Ok(Event::Comment(_)) => return Err(XmlError::RestrictedXml("comment")),
                Ok(Event::DocType(_)) => return Err(XmlError::RestrictedXml("DTD")),
                Err(QxError::Syntax(kind)) => {
                    // The slice ends inside markup that starts at `done`: wait for
                    // more bytes unless we can already tell it is forbidden.
                    return self.incomplete(&slice[done..], kind);
                }
                Err(QxError::IllFormed(IllFormedError::UnclosedReference)) => {
                    let tail = slice.get(done + 1..).unwrap_or_default();
                    if tail.iter().any(|b| matches!(b, b'<' | b'&' | b';')) || tail.len() > 32 {
                        return Err(XmlError::NotWellFormed("unterminated reference".into()));
                    }
                    return Ok(None);
                }
                Err(e) => return Err(XmlError::NotWellFormed(e.to_string())),
            };
            self.advance(end - done);
            done = end;
            if let Some(start) = self.stanza_start
                && self.consumed - start > self.limits.max_stanza_bytes as u64
            {
                return Err(XmlError::PolicyViolation("stanza too large"));
            }
            if produced.is_some() {
                if matches!(produced, Some(StreamEvent::Stanza(_))) {
                    self.stanza_start = None;
                }
                return Ok(produced);
            }
        }
    }

    /// Decides what an unterminated token at the end of the buffer means.
    fn incomplete(&self, rest: &[u8], kind: SyntaxError) -> Result<Option<StreamEvent>, XmlError> {
        let starts = |p: &[u8]| {
            let n = p.len().min(rest.len());
            rest[..n] == p[..n]
        };
        match kind {
            SyntaxError::UnclosedComment => Err(XmlError::RestrictedXml("comment")),
            SyntaxError::UnclosedDoctype => Err(XmlError::RestrictedXml("DTD")),
            SyntaxError::UnclosedPIOrXmlDecl => {
                // `<?xml` followed by whitespace or `?` (or not yet followed by
                // anything) may still become the XML declaration.
                let decl = starts(b"<?xml")
                    && rest
                        .get(5)
                        .is_none_or(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'?'));
                if self.decl_allowed && decl {
                    Ok(None)
                } else {
                    Err(XmlError::RestrictedXml("processing instruction"))
                }
            }
            SyntaxError::InvalidBangMarkup => {
                if starts(b"<![CDATA[") {
                    Ok(None)
                } else if starts(b"<!--") {
                    Err(XmlError::RestrictedXml("comment"))
                } else if starts(b"<!DOCTYPE") {
                    Err(XmlError::RestrictedXml("DTD"))
                } else {
                    Err(XmlError::NotWellFormed("unknown markup".into()))
                }
            }
            SyntaxError::UnclosedCData | SyntaxError::UnclosedTag => Ok(None),
        }
    }

    fn text(&mut self, raw: &[u8]) -> Result<(), XmlError> {
        let s = std::str::from_utf8(raw).map_err(|_| bad_utf8())?;
        check_chars(s)?;
        match self.stack.last_mut() {
            Some(open) => {
                open.el.push_text_str(s);
                Ok(())
            }
            None if s.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')) => Ok(()),
            None => Err(XmlError::NotWellFormed(
                "character data outside a stanza".into(),
            )),
        }
    }

    fn lookup(&self, prefix: &str) -> Option<&Cow<'static, str>> {
        self.scopes
            .iter()
            .rev()
            .find(|(p, _)| &**p == prefix)
            .map(|(_, n)| n)
    }

    fn start(&mut self, s: &BytesStart<'_>, empty: bool) -> Result<Option<StreamEvent>, XmlError> {
        let qname = s.name();
        let qname = qname.as_ref();
        if qname.len() > self.limits.max_name_len {
            return Err(XmlError::PolicyViolation("name too long"));
        }
        let at_top = self.stack.is_empty();
        let is_header = self.mode == Mode::Stream && self.header.is_none();
        if !is_header && self.stack.len() + 1 > self.limits.max_depth {
            return Err(XmlError::PolicyViolation("too deeply nested"));
        }
        if at_top && !is_header {
            self.stanza_start = Some(self.consumed);
        }
        let scope_len = self.scopes.len();

        // Attributes: namespace declarations first, so that prefixes resolve.
        let mut raw_attrs: Vec<(&[u8], Cow<'_, [u8]>)> = Vec::new();
        for (i, a) in s.attributes().enumerate() {
            if i >= self.limits.max_attrs {
                return Err(XmlError::PolicyViolation("too many attributes"));
            }
            let a = a.map_err(|e| XmlError::NotWellFormed(e.to_string()))?;
            let key: &[u8] = a.key.into_inner();
            if key.len() > self.limits.max_name_len {
                return Err(XmlError::PolicyViolation("name too long"));
            }
            if key == b"xmlns" || key.starts_with(b"xmlns:") {
                let value = unescape_attr(&a.value)?;
                let prefix = if key == b"xmlns" {
                    ""
                } else {
                    std::str::from_utf8(&key[6..]).map_err(|_| bad_utf8())?
                };
                if prefix == "xml" || prefix == "xmlns" {
                    return Err(XmlError::NotWellFormed("reserved prefix declared".into()));
                }
                if !prefix.is_empty() && value.is_empty() {
                    return Err(XmlError::NotWellFormed("empty prefix binding".into()));
                }
                self.scopes.push((prefix.into(), ns::intern(&value)));
            } else {
                raw_attrs.push((key, a.value));
            }
        }

        let (prefix, local) = split_qname(qname)?;
        let el_ns = match self.lookup(prefix) {
            Some(n) => n.clone(),
            None if prefix.is_empty() => Cow::Borrowed(""),
            None => return Err(XmlError::NotWellFormed(format!("unbound prefix {prefix}"))),
        };
        let mut attrs = Vec::with_capacity(raw_attrs.len());
        for (key, value) in raw_attrs {
            let (p, l) = split_qname(key)?;
            let ans = match p {
                "" => None,
                "xml" => Some(Cow::Borrowed(ns::XML)),
                p => match self.lookup(p) {
                    Some(n) => Some(n.clone()),
                    None => return Err(XmlError::NotWellFormed(format!("unbound prefix {p}"))),
                },
            };
            let value = unescape_attr(&value)?;
            // Namespaces in XML §6.3: no two attributes with the same local
            // name and namespace, whatever their prefixes.
            if attrs.iter().any(|a: &Attr| &*a.name == l && a.ns == ans) {
                return Err(XmlError::NotWellFormed(format!("duplicate attribute {l}")));
            }
            attrs.push(Attr {
                name: l.into(),
                ns: ans,
                value,
            });
        }

        if is_header {
            let default_ns = self.lookup("").map(|n| n.to_string());
            self.header = Some(qname.into());
            self.decl_allowed = false;
            let header = StreamHeader {
                name: local.to_owned(),
                ns: el_ns.into_owned(),
                default_ns,
                attrs,
            };
            if empty {
                self.closed = true;
            }
            return Ok(Some(StreamEvent::Open(header)));
        }

        let el = Element::from_parts(local.into(), el_ns, attrs);
        self.stack.push(Open {
            el,
            qname: qname.into(),
            scope_len,
        });
        if empty {
            return self.end(qname);
        }
        Ok(None)
    }

    fn end(&mut self, qname: &[u8]) -> Result<Option<StreamEvent>, XmlError> {
        let Some(open) = self.stack.pop() else {
            return match &self.header {
                Some(h) if **h == *qname => {
                    self.closed = true;
                    Ok(Some(StreamEvent::Close))
                }
                _ => Err(XmlError::NotWellFormed("unexpected end tag".into())),
            };
        };
        if *open.qname != *qname {
            return Err(XmlError::NotWellFormed("mismatched end tag".into()));
        }
        self.scopes.truncate(open.scope_len);
        match self.stack.last_mut() {
            Some(parent) => {
                parent.el.push_child(open.el);
                Ok(None)
            }
            None => Ok(Some(StreamEvent::Stanza(open.el))),
        }
    }
}

fn bad_utf8() -> XmlError {
    XmlError::NotWellFormed("invalid UTF-8".into())
}

fn split_qname(q: &[u8]) -> Result<(&str, &str), XmlError> {
    let q = std::str::from_utf8(q).map_err(|_| bad_utf8())?;
    let (p, l, prefixed) = match q.split_once(':') {
        Some((p, l)) => (p, l, true),
        None => ("", q, false),
    };
    // A colon always introduces a non-empty prefix (Namespaces in XML §3):
    // `:from` must not pass for `from`.
    if !is_name(l) || (prefixed && !is_name(p)) || q.matches(':').count() > 1 {
        return Err(XmlError::NotWellFormed(format!("invalid name {q:?}")));
    }
    Ok((p, l))
}

/// A conservative check of the XML `Name` production: rejects the ASCII
/// characters that can never appear in a name, and names that start with a digit,
/// `-` or `.`.
fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    if first.is_ascii_digit() || first == '-' || first == '.' {
        return false;
    }
    s.chars().all(|c| {
        if c.is_ascii() {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
        } else {
            is_xml_char(c)
        }
    })
}

/// XML 1.0 `Char` production.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Rejects characters outside the XML `Char` production (RFC 6120 §11.6 via XML 1.0).
fn check_chars(s: &str) -> Result<(), XmlError> {
    let bad = s.bytes().enumerate().any(|(i, b)| {
        (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
            || (b == 0xEF
                && s.as_bytes().get(i + 1) == Some(&0xBF)
                && matches!(s.as_bytes().get(i + 2), Some(0xBE | 0xBF)))
    });
    if bad {
        return Err(XmlError::NotWellFormed(
            "character not allowed in XML".into(),
        ));
    }
    Ok(())
}

/// Unescapes an attribute value: only the predefined entities and character
/// references; whitespace is normalized as XML 1.0 §3.3.3 says.
fn unescape_attr(raw: &[u8]) -> Result<String, XmlError> {
    let s = std::str::from_utf8(raw).map_err(|_| bad_utf8())?;
    if s.contains('<') {
        return Err(XmlError::NotWellFormed("'<' in attribute value".into()));
    }
    let normalized: Cow<'_, str> = if s.contains(['\t', '\n', '\r']) {
        Cow::Owned(s.replace(['\t', '\n', '\r'], " "))
    } else {
        Cow::Borrowed(s)
    };
    let v = quick_xml::escape::unescape(&normalized).map_err(|e| match e {
        quick_xml::escape::EscapeError::UnrecognizedEntity(..) => {
            XmlError::RestrictedXml("entity reference")
        }
        other => XmlError::NotWellFormed(other.to_string()),
    })?;
    check_chars(&v)?;
    Ok(v.into_owned())
}
