//! XEP-0352: Client State Indication. While a client says it is inactive,
//! stanzas that are not urgent — presence updates and messages carrying only
//! chat states — are held back (the latest presence per sender replaces
//! earlier ones) and written out when something urgent arrives or the client
//! becomes active again. Held stanzas are bounded; a full hold is flushed.
//!
//! Holding happens in the connection manager, on the way to the socket: with
//! XEP-0198 the session side still counts them as unacknowledged, so nothing
//! held is lost if the connection drops.

use std::sync::Arc;

use rookery_xml::Element;

/// XEP-0352 namespace.
pub const NS: &str = "urn:xmpp:csi:0";
const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";

/// Most stanzas held for one inactive client before they are written anyway.
const MAX_HELD: usize = 256;

/// True for stanzas that must reach an inactive client at once.
pub fn urgent(el: &Element) -> bool {
    match el.name() {
        "presence" => {
            // Subscription requests and errors need the user; availability can wait.
            !matches!(el.attr("type"), None | Some("unavailable"))
        }
        "message" => {
            // Only chat states (XEP-0085) with nothing else can wait.
            el.children().any(|c| c.ns() != CHATSTATES) || el.attr("type") == Some("error")
        }
        _ => true,
    }
}

/// The held stanzas of one connection.
#[derive(Debug, Default)]
pub struct Held {
    items: Vec<Arc<Element>>,
}

impl Held {
    /// Holds a non-urgent stanza; returns false if the hold is full (the
    /// caller then flushes).
    pub fn hold(&mut self, el: Arc<Element>) -> bool {
        if el.name() == "presence" {
            let from = el.attr("from");
            self.items
                .retain(|h| !(h.name() == "presence" && h.attr("from") == from));
        }
        self.items.push(el);
        self.items.len() < MAX_HELD
    }

    /// Everything held, in order.
    pub fn take(&mut self) -> Vec<Arc<Element>> {
        std::mem::take(&mut self.items)
    }
}

/// The stream feature (XEP-0352 §3).
pub fn feature() -> Element {
    Element::new_static("csi", NS)
}

/// Is this element an `<active/>` or `<inactive/>` nonza? `Some(true)` for active.
pub fn state(el: &Element) -> Option<bool> {
    if el.ns() != NS {
        return None;
    }
    match el.name() {
        "active" => Some(true),
        "inactive" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(x: &str) -> Arc<Element> {
        Arc::new(Element::parse(x).unwrap())
    }

    #[test]
    fn what_is_urgent() {
        assert!(!urgent(&el(
            "<presence xmlns='jabber:client' from='a@b/c'/>"
        )));
        assert!(!urgent(&el(
            "<presence xmlns='jabber:client' type='unavailable'/>"
        )));
        assert!(urgent(&el(
            "<presence xmlns='jabber:client' type='subscribe'/>"
        )));
        assert!(!urgent(&el(
            "<message xmlns='jabber:client'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )));
        assert!(urgent(&el(
            "<message xmlns='jabber:client'><body>x</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )));
        assert!(urgent(&el("<iq xmlns='jabber:client' type='get' id='1'/>")));
    }

    #[test]
    fn latest_presence_per_sender_wins() {
        let mut h = Held::default();
        h.hold(el(
            "<presence xmlns='jabber:client' from='a@b/c'><show>away</show></presence>",
        ));
        h.hold(el("<message xmlns='jabber:client' from='x@y/z'><paused xmlns='http://jabber.org/protocol/chatstates'/></message>"));
        h.hold(el("<presence xmlns='jabber:client' from='d@e/f'/>"));
        h.hold(el(
            "<presence xmlns='jabber:client' from='a@b/c'><show>xa</show></presence>",
        ));
        let out: Vec<String> = h.take().iter().map(|e| e.to_xml_string()).collect();
        assert_eq!(out.len(), 3);
        assert!(out[0].contains("paused"));
        assert!(out[2].contains("xa"));
        assert!(h.take().is_empty());
    }
}
