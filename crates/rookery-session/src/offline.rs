//! XEP-0160: Best Practices for Handling Offline Messages — messages for an
//! account with no available resource are stored (RFC 6121 §8.5.2.2.1),
//! stamped with XEP-0203 delay, and delivered when a resource becomes
//! available with a non-negative priority.

use async_trait::async_trait;
use rookery_core::Jid;
use rookery_core::users::StoreError;
use rookery_xml::{Element, ns};

/// XEP-0203 namespace.
pub const DELAY: &str = "urn:xmpp:delay";
/// XEP-0334 namespace.
pub const HINTS: &str = "urn:xmpp:hints";

/// Storage of offline messages.
#[async_trait]
pub trait OfflineStore: Send + Sync + std::fmt::Debug {
    /// Appends a message unless `user` already has `max` stored; returns
    /// whether it was stored.
    async fn push(&self, user: &Jid, stanza: &str, max: usize) -> Result<bool, StoreError>;
    /// The stored messages, oldest first, with their ids.
    async fn list(&self, user: &Jid) -> Result<Vec<(i64, String)>, StoreError>;
    /// Removes delivered messages.
    async fn remove(&self, user: &Jid, ids: &[i64]) -> Result<(), StoreError>;
    /// Number stored.
    async fn count(&self, user: &Jid) -> Result<usize, StoreError>;
    /// Forgets everything of `user` (account deletion).
    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError>;
}

/// RFC 6121 §8.5.2.2.1: which messages go to offline storage.
pub fn storable(el: &Element) -> bool {
    let kind = el.attr("type").unwrap_or("normal");
    matches!(kind, "normal" | "chat")
        // XEP-0334 §4: the sender asked not to store it.
        && el.child("no-store", HINTS).is_none()
        && el.child("no-permanent-store", HINTS).is_none()
        // Chat states alone are not worth keeping (XEP-0085 §5.6, XEP-0160 §3).
        && (el.child("body", ns::CLIENT).is_some()
            || el.children().any(|c| c.ns() != ns::CLIENT && c.ns() != "http://jabber.org/protocol/chatstates"))
}

/// Adds the XEP-0203 delay element recording when the server stored it.
pub fn stamp(mut el: Element, domain: &str, stamp: &str) -> Element {
    el.push_child(
        Element::new_static("delay", DELAY)
            .with_attr("from", domain)
            .with_attr("stamp", stamp)
            .with_text("Offline Storage"),
    );
    el
}

/// The conformance suite every [`OfflineStore`] backend runs.
#[cfg(feature = "test-util")]
#[allow(clippy::unwrap_used)]
pub mod conformance {
    use super::*;

    /// Runs every check against an empty store.
    pub async fn run(store: &dyn OfflineStore) {
        let a = Jid::parse("a@example.com").unwrap();
        let b = Jid::parse("b@example.com").unwrap();
        assert!(store.list(&a).await.unwrap().is_empty());
        assert!(store.push(&a, "<message>1</message>", 2).await.unwrap());
        assert!(store.push(&a, "<message>2</message>", 2).await.unwrap());
        assert!(
            !store.push(&a, "<message>3</message>", 2).await.unwrap(),
            "quota"
        );
        assert!(store.push(&b, "<message>b</message>", 2).await.unwrap());
        assert_eq!(store.count(&a).await.unwrap(), 2);
        let list = store.list(&a).await.unwrap();
        assert_eq!(
            list.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
            ["<message>1</message>", "<message>2</message>"]
        );
        store.remove(&a, &[list[0].0]).await.unwrap();
        let list = store.list(&a).await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].1, "<message>2</message>");
        // Ids of other users are not touched.
        let bl = store.list(&b).await.unwrap();
        store.remove(&a, &[bl[0].0]).await.unwrap();
        assert_eq!(store.count(&b).await.unwrap(), 1);
        store.delete_user(&a).await.unwrap();
        assert_eq!(store.count(&a).await.unwrap(), 0);
        assert_eq!(store.count(&b).await.unwrap(), 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_messages_are_stored() {
        let m = |x: &str| Element::parse(x).unwrap();
        assert!(storable(&m(
            "<message xmlns='jabber:client'><body>x</body></message>"
        )));
        assert!(storable(&m(
            "<message xmlns='jabber:client' type='chat'><body>x</body></message>"
        )));
        assert!(!storable(&m(
            "<message xmlns='jabber:client' type='headline'><body>x</body></message>"
        )));
        assert!(!storable(&m(
            "<message xmlns='jabber:client' type='groupchat'><body>x</body></message>"
        )));
        assert!(!storable(&m(
            "<message xmlns='jabber:client' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )));
        assert!(!storable(&m(
            "<message xmlns='jabber:client'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>"
        )));
        assert!(storable(&m(
            "<message xmlns='jabber:client'><x xmlns='jabber:x:conference' jid='r@c'/></message>"
        )));
    }
}
