//! RFC 6120 §8: the three stanza kinds, parsed once at the edge and then
//! passed around as a shared, immutable value.

use std::sync::Arc;

use rookery_jid::Jid;
use rookery_xml::{Element, ns};

use crate::error::StanzaError;

/// RFC 6120 §8.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StanzaKind {
    /// `<message/>`
    Message,
    /// `<presence/>`
    Presence,
    /// `<iq/>`
    Iq,
}

impl StanzaKind {
    /// The kind of a first-level element in the `jabber:client` or
    /// `jabber:server` namespace, if it is a stanza at all.
    pub fn of(el: &Element) -> Option<StanzaKind> {
        if el.ns() != ns::CLIENT && el.ns() != ns::SERVER {
            return None;
        }
        match el.name() {
            "message" => Some(StanzaKind::Message),
            "presence" => Some(StanzaKind::Presence),
            "iq" => Some(StanzaKind::Iq),
            _ => None,
        }
    }

    /// Element name, also the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            StanzaKind::Message => "message",
            StanzaKind::Presence => "presence",
            StanzaKind::Iq => "iq",
        }
    }
}

/// A routed stanza: its addresses parsed once, its tree shared.
#[derive(Clone, Debug)]
pub struct Stanza {
    kind: StanzaKind,
    from: Option<Jid>,
    to: Option<Jid>,
    el: Arc<Element>,
}

impl Stanza {
    /// Wraps an element whose `from` and `to` have already been validated.
    pub fn new(kind: StanzaKind, from: Option<Jid>, to: Option<Jid>, el: Element) -> Stanza {
        Stanza {
            kind,
            from,
            to,
            el: Arc::new(el),
        }
    }

    /// Parses the addresses of an element (RFC 6120 §8.1.1, §8.1.2).
    /// A malformed address is a `jid-malformed` stanza error (§8.3.3.8).
    // The element comes back with the error so that the caller can answer it
    // without a copy; this is the cold path.
    #[allow(clippy::result_large_err)]
    pub fn parse(el: Element) -> Result<Stanza, (Element, StanzaError)> {
        let Some(kind) = StanzaKind::of(&el) else {
            return Err((el, StanzaError::bad_request("not a stanza")));
        };
        let addr = |name: &str| -> Result<Option<Jid>, StanzaError> {
            match el.attr(name) {
                None => Ok(None),
                Some(s) => Jid::parse(s)
                    .map(Some)
                    .map_err(|e| StanzaError::jid_malformed(&format!("'{name}': {e}"))),
            }
        };
        let to = match addr("to") {
            Ok(t) => t,
            Err(e) => return Err((el, e)),
        };
        let from = match addr("from") {
            Ok(f) => f,
            Err(e) => return Err((el, e)),
        };
        if kind == StanzaKind::Iq {
            let t = el.attr("type");
            let ok = matches!(t, Some("get" | "set" | "result" | "error"));
            if !ok || el.attr("id").is_none() {
                // RFC 6120 §8.2.3: id and a valid type are required.
                return Err((
                    el,
                    StanzaError::bad_request("iq needs an id and a valid type"),
                ));
            }
            let payloads = el.children().count();
            if matches!(t, Some("get" | "set")) && payloads != 1 {
                return Err((
                    el,
                    StanzaError::bad_request("iq get/set needs exactly one child"),
                ));
            }
        }
        Ok(Stanza {
            kind,
            from,
            to,
            el: Arc::new(el),
        })
    }

    /// Kind.
    pub fn kind(&self) -> StanzaKind {
        self.kind
    }
    /// The validated `from` address.
    pub fn from(&self) -> Option<&Jid> {
        self.from.as_ref()
    }
    /// The validated `to` address.
    pub fn to(&self) -> Option<&Jid> {
        self.to.as_ref()
    }
    /// The `type` attribute.
    pub fn stanza_type(&self) -> Option<&str> {
        self.el.attr("type")
    }
    /// The `id` attribute.
    pub fn id(&self) -> Option<&str> {
        self.el.attr("id")
    }
    /// The tree.
    pub fn element(&self) -> &Element {
        &self.el
    }
    /// The shared tree, for delivery without a copy.
    pub fn shared(&self) -> Arc<Element> {
        self.el.clone()
    }
    /// The tree, copied only if it is still shared.
    pub fn into_element(self) -> Element {
        Arc::unwrap_or_clone(self.el)
    }
    /// True for `type='error'` stanzas, which are never answered with an error
    /// (RFC 6120 §8.3.1).
    pub fn is_error(&self) -> bool {
        self.stanza_type() == Some("error")
    }
    /// True for iq get/set, which must be answered (RFC 6120 §8.2.3).
    pub fn is_iq_request(&self) -> bool {
        self.kind == StanzaKind::Iq && matches!(self.stanza_type(), Some("get" | "set"))
    }

    /// Builds the error reply (RFC 6120 §8.3.1): addresses swapped, `type='error'`,
    /// the original payload kept, and the `<error/>` child appended.
    pub fn error_reply(&self, err: &StanzaError) -> Option<Element> {
        error_reply(&self.el, err)
    }

    /// Builds an empty `type='result'` reply to an iq request.
    pub fn iq_result(&self, payload: Option<Element>) -> Element {
        let mut r = Element::new_static("iq", ns::CLIENT)
            .with_attr("type", "result")
            .with_attr("id", self.id().unwrap_or_default());
        if let Some(f) = self.el.attr("from") {
            r.set_attr("to", f);
        }
        if let Some(t) = self.el.attr("to") {
            r.set_attr("from", t);
        }
        if let Some(p) = payload {
            r.push_child(p);
        }
        r
    }
}

/// Builds an error reply for any element (RFC 6120 §8.3.1); `None` for errors.
pub fn error_reply(el: &Element, err: &StanzaError) -> Option<Element> {
    if el.attr("type") == Some("error") {
        return None;
    }
    let mut r = el.clone();
    let from = r.remove_attr("from");
    let to = r.remove_attr("to");
    if let Some(f) = from {
        r.set_attr("to", f);
    }
    if let Some(t) = to {
        r.set_attr("from", t);
    }
    r.set_attr("type", "error");
    r.push_child(err.to_element());
    Some(r)
}

/// A random identifier for stream ids, iq ids and generated resources.
pub fn new_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..16)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_rejects_bad_ones() {
        let el = Element::parse(
            "<message xmlns='jabber:client' to='Juliet@Example.com/Balcony' type='chat'><body>x</body></message>",
        )
        .unwrap();
        let s = Stanza::parse(el).unwrap();
        assert_eq!(s.kind(), StanzaKind::Message);
        assert_eq!(s.to().unwrap().as_str(), "juliet@example.com/Balcony");
        let bad = Element::parse("<message xmlns='jabber:client' to='@example.com'/>").unwrap();
        let (_, e) = Stanza::parse(bad).unwrap_err();
        assert_eq!(e.condition, "jid-malformed");
        let noid = Element::parse(
            "<iq xmlns='jabber:client' type='get'><ping xmlns='urn:xmpp:ping'/></iq>",
        )
        .unwrap();
        assert_eq!(Stanza::parse(noid).unwrap_err().1.condition, "bad-request");
    }

    #[test]
    fn error_reply_swaps_addresses() {
        let el = Element::parse(
            "<iq xmlns='jabber:client' from='a@b/c' to='b' type='get' id='1'><query xmlns='urn:x'/></iq>",
        )
        .unwrap();
        let s = Stanza::parse(el).unwrap();
        let r = s.error_reply(&StanzaError::service_unavailable()).unwrap();
        assert_eq!(
            r.to_xml_string(),
            "<iq xmlns='jabber:client' type='error' id='1' to='a@b/c' from='b'><query xmlns='urn:x'/><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        );
        let again = Stanza::parse(r).unwrap();
        assert!(
            again
                .error_reply(&StanzaError::service_unavailable())
                .is_none()
        );
    }
}
