//! The parsed tree of a stanza and its canonical serializer.
//!
//! Elements keep no prefixes: each element and attribute carries its resolved
//! namespace, and the serializer writes fresh declarations. Re-serializing every
//! forwarded stanza from this tree means no downstream parser can read a stanza
//! differently from the way Rookery read it (stanza smuggling).

use std::borrow::Cow;

use crate::ns;

/// An attribute with its resolved namespace (`None` for unprefixed attributes,
/// which are in no namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Local name.
    pub name: Box<str>,
    /// Namespace of a prefixed attribute (`xml:lang` has [`ns::XML`]).
    pub ns: Option<Cow<'static, str>>,
    /// Unescaped value.
    pub value: String,
}

/// A child of an element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Character data, unescaped.
    Text(String),
}

/// An XML element with resolved namespaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    name: Box<str>,
    ns: Cow<'static, str>,
    attrs: Vec<Attr>,
    children: Vec<Node>,
}

impl Element {
    /// A new empty element. Known namespaces are interned.
    pub fn new(name: &str, ns: &str) -> Element {
        Element {
            name: name.into(),
            ns: ns::intern(ns),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Same as [`Element::new`] for a `'static` namespace, without lookup.
    pub fn new_static(name: &str, ns: &'static str) -> Element {
        Element {
            name: name.into(),
            ns: Cow::Borrowed(ns),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    pub(crate) fn from_parts(name: Box<str>, ns: Cow<'static, str>, attrs: Vec<Attr>) -> Element {
        Element {
            name,
            ns,
            attrs,
            children: Vec::new(),
        }
    }

    /// Local name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Namespace.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// True if the element has this local name and namespace.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        *self.name == *name && *self.ns == *ns
    }

    /// Changes the namespace (e.g. `jabber:client` to `jabber:server` at a hop).
    pub fn set_ns(&mut self, ns: &str) {
        self.ns = ns::intern(ns);
    }

    /// Value of an unprefixed attribute.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.is_none() && *a.name == *name)
            .map(|a| a.value.as_str())
    }

    /// Value of a namespaced attribute (e.g. `xml:lang`).
    pub fn attr_ns(&self, name: &str, ns: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.as_deref() == Some(ns) && *a.name == *name)
            .map(|a| a.value.as_str())
    }

    /// All attributes, in document order.
    pub fn attrs(&self) -> &[Attr] {
        &self.attrs
    }

    /// Sets (or replaces) an unprefixed attribute.
    pub fn set_attr(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self
            .attrs
            .iter_mut()
            .find(|a| a.ns.is_none() && *a.name == *name)
        {
            Some(a) => a.value = value,
            None => self.attrs.push(Attr {
                name: name.into(),
                ns: None,
                value,
            }),
        }
    }

    /// Removes an unprefixed attribute, returning its value.
    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let i = self
            .attrs
            .iter()
            .position(|a| a.ns.is_none() && *a.name == *name)?;
        Some(self.attrs.remove(i).value)
    }

    /// Sets a namespaced attribute such as `xml:lang`.
    pub fn set_attr_ns(&mut self, name: &str, ns: &str, value: impl Into<String>) {
        let value = value.into();
        match self
            .attrs
            .iter_mut()
            .find(|a| a.ns.as_deref() == Some(ns) && *a.name == *name)
        {
            Some(a) => a.value = value,
            None => self.attrs.push(Attr {
                name: name.into(),
                ns: Some(ns::intern(ns)),
                value,
            }),
        }
    }

    /// Builder form of [`Element::set_attr`].
    #[must_use]
    pub fn with_attr(mut self, name: &str, value: impl Into<String>) -> Element {
        self.set_attr(name, value);
        self
    }

    /// Builder form of [`Element::push_child`].
    #[must_use]
    pub fn with_child(mut self, child: Element) -> Element {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder form of [`Element::push_text`].
    #[must_use]
    pub fn with_text(mut self, text: impl Into<String>) -> Element {
        self.push_text(text);
        self
    }

    /// Appends a child element.
    pub fn push_child(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// Appends character data, merging with a preceding text node.
    pub fn push_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        if text.is_empty() {
            return;
        }
        match self.children.last_mut() {
            Some(Node::Text(t)) => t.push_str(&text),
            _ => self.children.push(Node::Text(text)),
        }
    }

    pub(crate) fn push_text_str(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        match self.children.last_mut() {
            Some(Node::Text(t)) => t.push_str(text),
            _ => self.children.push(Node::Text(text.to_owned())),
        }
    }

    /// All child nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.children
    }

    /// Mutable access to the child nodes.
    pub fn nodes_mut(&mut self) -> &mut Vec<Node> {
        &mut self.children
    }

    /// Child elements.
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child with this name and namespace.
    pub fn child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children().find(|c| c.is(name, ns))
    }

    /// The first child element, whatever it is (the payload of an iq).
    pub fn first_child(&self) -> Option<&Element> {
        self.children().next()
    }

    /// Removes children matching the predicate.
    pub fn retain_children(&mut self, mut keep: impl FnMut(&Element) -> bool) {
        self.children.retain(|n| match n {
            Node::Element(e) => keep(e),
            Node::Text(_) => true,
        });
    }

    /// Concatenated character data of the direct text children.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                s.push_str(t);
            }
        }
        s
    }

    /// Serializes with `parent_ns` as the default namespace in scope; stream-level
    /// elements (namespace [`ns::STREAMS`]) are written with the `stream:` prefix
    /// that every stream header declares.
    pub fn write_to(&self, out: &mut Vec<u8>, parent_ns: &str) {
        self.write_mapped(out, parent_ns, None);
    }

    /// [`Element::write_to`], writing every element in namespace `map.0` as
    /// if it were in `map.1`: a stanza parsed from a `jabber:client` stream
    /// goes out on a `jabber:server` stream (RFC 6120 §4.8.3) without a copy
    /// of its tree.
    pub fn write_to_mapped(&self, out: &mut Vec<u8>, parent_ns: &str, map: (&str, &str)) {
        self.write_mapped(out, parent_ns, Some(map));
    }

    /// Renames namespace `from` to `to` on this element and its descendants
    /// (a stanza received on a `jabber:server` stream becomes the
    /// `jabber:client` tree the rest of the server handles).
    pub fn map_ns(&mut self, from: &str, to: &str) {
        if *self.ns == *from {
            self.ns = ns::intern(to);
        }
        for n in &mut self.children {
            if let Node::Element(e) = n {
                e.map_ns(from, to);
            }
        }
    }

    fn write_mapped(&self, out: &mut Vec<u8>, parent_ns: &str, map: Option<(&str, &str)>) {
        let prefixed = *self.ns == *ns::STREAMS;
        let own_ns: &str = match map {
            Some((from, to)) if *self.ns == *from => to,
            _ => &self.ns,
        };
        out.push(b'<');
        if prefixed {
            out.extend_from_slice(b"stream:");
        }
        out.extend_from_slice(self.name.as_bytes());
        let default_ns = if prefixed {
            parent_ns
        } else {
            if own_ns != parent_ns {
                out.extend_from_slice(b" xmlns='");
                escape_attr(out, own_ns);
                out.push(b'\'');
            }
            own_ns
        };
        let mut generated = 0usize;
        for a in &self.attrs {
            out.push(b' ');
            match a.ns.as_deref() {
                None => {}
                Some(ns::XML) => out.extend_from_slice(b"xml:"),
                Some(other) => {
                    // A prefix of our own, declared on this element.
                    generated += 1;
                    let p = format!("ns{generated}");
                    out.extend_from_slice(b"xmlns:");
                    out.extend_from_slice(p.as_bytes());
                    out.extend_from_slice(b"='");
                    escape_attr(out, other);
                    out.extend_from_slice(b"' ");
                    out.extend_from_slice(p.as_bytes());
                    out.push(b':');
                }
            }
            out.extend_from_slice(a.name.as_bytes());
            out.extend_from_slice(b"='");
            escape_attr(out, &a.value);
            out.push(b'\'');
        }
        if self.children.is_empty() {
            out.extend_from_slice(b"/>");
            return;
        }
        out.push(b'>');
        for n in &self.children {
            match n {
                Node::Element(e) => e.write_mapped(out, default_ns, map),
                Node::Text(t) => escape_text(out, t),
            }
        }
        out.extend_from_slice(b"</");
        if prefixed {
            out.extend_from_slice(b"stream:");
        }
        out.extend_from_slice(self.name.as_bytes());
        out.push(b'>');
    }

    /// Serializes as a top-level element of a stream whose content namespace is
    /// `stream_ns` (`jabber:client` for c2s).
    pub fn to_bytes(&self, stream_ns: &str) -> Vec<u8> {
        let mut v = Vec::with_capacity(128);
        self.write_to(&mut v, stream_ns);
        v
    }

    /// Serializes as a standalone document fragment (every namespace declared).
    pub fn to_xml_string(&self) -> String {
        let mut v = Vec::with_capacity(128);
        self.write_to(&mut v, "");
        // The serializer writes only UTF-8 taken from `&str`s.
        String::from_utf8_lossy(&v).into_owned()
    }

    /// Parses one standalone element (test fixtures, stored XML).
    pub fn parse(xml: &str) -> Result<Element, crate::XmlError> {
        crate::Parser::parse_fragment(xml.as_bytes(), crate::Limits::default())
    }

    /// Approximate heap size of the tree (for quotas and metrics).
    pub fn heap_size(&self) -> usize {
        let mut n = self.name.len()
            + match &self.ns {
                Cow::Owned(s) => s.len(),
                Cow::Borrowed(_) => 0,
            }
            + self.attrs.capacity() * std::mem::size_of::<Attr>()
            + self.children.capacity() * std::mem::size_of::<Node>();
        for a in &self.attrs {
            n += a.name.len() + a.value.capacity();
        }
        for c in &self.children {
            n += match c {
                Node::Element(e) => e.heap_size(),
                Node::Text(t) => t.capacity(),
            };
        }
        n
    }
}

impl std::fmt::Display for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_xml_string())
    }
}

/// Escapes character data: `&`, `<` and `>` (the last so that `]]>` can never appear).
pub fn escape_text(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let rep: &[u8] = match c {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        out.extend_from_slice(rep);
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
}

/// Escapes an attribute value for either quote style; also writes tab, newline
/// and carriage return as character references so they survive attribute-value
/// normalization at the receiver.
pub fn escape_attr(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let rep: &[u8] = match c {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'\'' => b"&apos;",
            b'"' => b"&quot;",
            b'\t' => b"&#9;",
            b'\n' => b"&#10;",
            b'\r' => b"&#13;",
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        out.extend_from_slice(rep);
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_serializes_with_namespaces() {
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "result")
            .with_attr("id", "a'b\"c<&>")
            .with_child(Element::new("bind", ns::BIND).with_child(
                Element::new("jid", ns::BIND).with_text("juliet@example.com/<balcony>&"),
            ));
        let s = String::from_utf8(iq.to_bytes(ns::CLIENT)).unwrap();
        assert_eq!(
            s,
            "<iq type='result' id='a&apos;b&quot;c&lt;&amp;&gt;'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>juliet@example.com/&lt;balcony&gt;&amp;</jid></bind></iq>"
        );
    }

    #[test]
    fn stream_elements_use_the_stream_prefix() {
        let f = Element::new("features", ns::STREAMS).with_child(
            Element::new("starttls", ns::TLS).with_child(Element::new("required", ns::TLS)),
        );
        assert_eq!(
            String::from_utf8(f.to_bytes(ns::CLIENT)).unwrap(),
            "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>"
        );
    }

    #[test]
    fn xml_lang_and_foreign_attributes() {
        let mut m = Element::new("message", ns::CLIENT);
        m.set_attr_ns("lang", ns::XML, "en");
        m.set_attr_ns("x", "urn:example", "1");
        assert_eq!(
            String::from_utf8(m.to_bytes(ns::CLIENT)).unwrap(),
            "<message xml:lang='en' xmlns:ns1='urn:example' ns1:x='1'/>"
        );
        let back = Element::parse(&m.to_xml_string()).unwrap();
        assert_eq!(back.attr_ns("lang", ns::XML), Some("en"));
        assert_eq!(back.attr_ns("x", "urn:example"), Some("1"));
    }

    #[test]
    fn accessors() {
        let mut e = Element::parse("<a xmlns='u'><b xmlns='v'>x</b>t<c/>u</a>").unwrap();
        assert!(e.is("a", "u"));
        assert_eq!(e.child("b", "v").unwrap().text(), "x");
        assert_eq!(e.text(), "tu");
        assert_eq!(e.children().count(), 2);
        e.retain_children(|c| c.name() != "b");
        assert_eq!(e.children().count(), 1);
        e.set_attr("k", "1");
        e.set_attr("k", "2");
        assert_eq!(e.attr("k"), Some("2"));
        assert_eq!(e.remove_attr("k").as_deref(), Some("2"));
        assert!(e.heap_size() > 0);
    }
}
