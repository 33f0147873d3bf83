//! XEP-0280: Message Carbons — copies of a user's chats to the user's other
//! carbons-enabled resources, wrapped with XEP-0297 forwarding.

use rookery_core::Jid;
use rookery_xml::{Element, ns};

/// XEP-0280 namespace.
pub const NS: &str = "urn:xmpp:carbons:2";
/// XEP-0280 §6.1 rules namespace.
pub const NS_RULES: &str = "urn:xmpp:carbons:rules:0";
/// XEP-0297 namespace.
pub const FORWARD: &str = "urn:xmpp:forward:0";

/// XEP-0280 §6.1: is a message eligible for carbons delivery?
pub fn eligible(el: &Element) -> bool {
    if el.child("private", NS).is_some() || el.child("no-copy", crate::offline::HINTS).is_some() {
        return false;
    }
    // A copy of a copy would loop.
    if el.child("sent", NS).is_some() || el.child("received", NS).is_some() {
        return false;
    }
    match el.attr("type").unwrap_or("normal") {
        "chat" => true,
        "groupchat" => false,
        "error" => true,
        t => {
            (t == "normal" && el.child("body", ns::CLIENT).is_some())
                || el.children().any(|c| {
                    matches!(
                        c.ns(),
                        "urn:xmpp:receipts"
                            | "http://jabber.org/protocol/chatstates"
                            | "urn:xmpp:chat-markers:0"
                            | "jabber:x:conference"
                    ) || (c.ns() == "http://jabber.org/protocol/muc#user"
                        && c.child("invite", c.ns()).is_some())
                })
        }
    }
}

/// The forwarded copy (§7 `received`, §8 `sent`) for one resource.
pub fn wrap(direction: &'static str, user: &Jid, to: &Jid, original: &Element) -> Element {
    let mut m = Element::new_static("message", ns::CLIENT)
        .with_attr("from", user.as_str())
        .with_attr("to", to.as_str());
    if let Some(t) = original.attr("type") {
        m.set_attr("type", t);
    }
    m.with_child(
        Element::new_static(direction, NS)
            .with_child(Element::new_static("forwarded", FORWARD).with_child(original.clone())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eligibility_xep0280_6_1() {
        let m = |x: &str| Element::parse(x).unwrap();
        assert!(eligible(&m("<message xmlns='jabber:client' type='chat'/>")));
        assert!(eligible(&m(
            "<message xmlns='jabber:client'><body>x</body></message>"
        )));
        assert!(!eligible(&m("<message xmlns='jabber:client'/>")));
        assert!(eligible(&m(
            "<message xmlns='jabber:client'><received xmlns='urn:xmpp:receipts' id='1'/></message>"
        )));
        assert!(!eligible(&m(
            "<message xmlns='jabber:client' type='groupchat'><body>x</body></message>"
        )));
        assert!(!eligible(&m(
            "<message xmlns='jabber:client' type='headline'><body>x</body></message>"
        )));
        assert!(!eligible(&m(
            "<message xmlns='jabber:client' type='chat'><private xmlns='urn:xmpp:carbons:2'/></message>"
        )));
        assert!(!eligible(&m(
            "<message xmlns='jabber:client' type='chat'><no-copy xmlns='urn:xmpp:hints'/></message>"
        )));
    }
}
