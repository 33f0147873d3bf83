//! XEP-0313: Message Archive Management — user archives. Which messages are
//! archived (§6.1.1); the storage trait, the `<stanza-id/>` stamped on the
//! recipient's copy (§3.5) and XEP-0441 preferences are in `rookery-mam`,
//! shared with room archives. The iqs are in `modules/mam.rs`.

use rookery_xml::{Element, ns};

pub use rookery_mam::*;

/// XEP-0313 §6.1.1: messages of type chat or normal with a body, without a
/// XEP-0334 no-store / no-permanent-store hint.
pub fn archivable(el: &Element) -> bool {
    matches!(el.attr("type").unwrap_or("normal"), "chat" | "normal")
        && el.child("body", ns::CLIENT).is_some()
        && el.child("no-store", crate::offline::HINTS).is_none()
        && el
            .child("no-permanent-store", crate::offline::HINTS)
            .is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_messages_are_archived() {
        let m = |x: &str| Element::parse(x).unwrap();
        assert!(archivable(&m(
            "<message xmlns='jabber:client' type='chat'><body>x</body></message>"
        )));
        assert!(archivable(&m(
            "<message xmlns='jabber:client'><body>x</body></message>"
        )));
        assert!(!archivable(&m(
            "<message xmlns='jabber:client' type='headline'><body>x</body></message>"
        )));
        assert!(!archivable(&m(
            "<message xmlns='jabber:client' type='groupchat'><body>x</body></message>"
        )));
        assert!(!archivable(&m(
            "<message xmlns='jabber:client' type='error'><body>x</body></message>"
        )));
        assert!(!archivable(&m(
            "<message xmlns='jabber:client' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )));
        assert!(!archivable(&m(
            "<message xmlns='jabber:client'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>"
        )));
        assert!(!archivable(&m(
            "<message xmlns='jabber:client'><body>x</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>"
        )));
    }
}
