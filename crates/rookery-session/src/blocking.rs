//! XEP-0191: Blocking Command — the block list, its storage trait and the
//! JID matching rules (§6). The iq handling is the `blocking` module; the
//! enforcement sits in the router (`LocalSessions`).

use async_trait::async_trait;
use rookery_core::Jid;
use rookery_core::users::StoreError;
use rookery_xml::Element;

/// XEP-0191 namespace.
pub const NS: &str = "urn:xmpp:blocking";
/// XEP-0191 §3.3 application error namespace.
pub const NS_ERRORS: &str = "urn:xmpp:blocking:errors";

/// Storage of block lists.
#[async_trait]
pub trait BlocklistStore: Send + Sync + std::fmt::Debug {
    /// The blocked JIDs of `user`, sorted.
    async fn blocklist(&self, user: &Jid) -> Result<Vec<Jid>, StoreError>;
    /// Adds JIDs (already blocked ones are ignored).
    async fn block(&self, user: &Jid, jids: &[Jid]) -> Result<(), StoreError>;
    /// Removes JIDs; all of them when `jids` is empty.
    async fn unblock(&self, user: &Jid, jids: &[Jid]) -> Result<(), StoreError>;
    /// Forgets everything of `user` (account deletion).
    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError>;
}

/// XEP-0191 §6: does the blocked item `item` cover the address `addr`?
pub fn matches(item: &Jid, addr: &Jid) -> bool {
    match (item.node(), item.resource()) {
        // user@domain/resource: only that resource.
        (Some(_), Some(_)) => item == addr,
        // user@domain: any resource.
        (Some(n), None) => addr.node() == Some(n) && addr.domain() == item.domain(),
        // domain/resource: only that resource of the domain itself.
        (None, Some(r)) => {
            addr.node().is_none() && addr.domain() == item.domain() && addr.resource() == Some(r)
        }
        // domain: the domain and everything at it.
        (None, None) => addr.domain() == item.domain(),
    }
}

/// True if any item of `list` covers `addr`.
pub fn is_blocked(list: &[Jid], addr: &Jid) -> bool {
    list.iter().any(|i| matches(i, addr))
}

/// The items of a `<block/>` or `<unblock/>` element.
pub fn items(el: &Element) -> Result<Vec<Jid>, rookery_core::StanzaError> {
    el.children()
        .filter(|c| c.is("item", NS))
        .map(|c| {
            c.attr("jid")
                .ok_or_else(|| rookery_core::StanzaError::bad_request("item without jid"))
                .and_then(|j| {
                    Jid::parse(j)
                        .map_err(|e| rookery_core::StanzaError::jid_malformed(&e.to_string()))
                })
        })
        .collect()
}

/// The conformance suite every [`BlocklistStore`] backend runs.
#[cfg(feature = "test-util")]
#[allow(clippy::unwrap_used)]
pub mod conformance {
    use super::*;

    /// Runs every check against an empty store.
    pub async fn run(store: &dyn BlocklistStore) {
        let u = Jid::parse("juliet@example.com").unwrap();
        let v = Jid::parse("romeo@example.net").unwrap();
        let j = |s: &str| Jid::parse(s).unwrap();
        assert!(store.blocklist(&u).await.unwrap().is_empty());
        store
            .block(&u, &[j("b@x"), j("a@x"), j("x/r")])
            .await
            .unwrap();
        store.block(&u, &[j("a@x")]).await.unwrap();
        store.block(&v, &[j("z@x")]).await.unwrap();
        assert_eq!(
            store.blocklist(&u).await.unwrap(),
            vec![j("a@x"), j("b@x"), j("x/r")]
        );
        store
            .unblock(&u, &[j("b@x"), j("not@there")])
            .await
            .unwrap();
        assert_eq!(store.blocklist(&u).await.unwrap(), vec![j("a@x"), j("x/r")]);
        store.unblock(&u, &[]).await.unwrap();
        assert!(store.blocklist(&u).await.unwrap().is_empty());
        assert_eq!(store.blocklist(&v).await.unwrap(), vec![j("z@x")]);
        store.delete_user(&v).await.unwrap();
        assert!(store.blocklist(&v).await.unwrap().is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jid_matching_xep0191_6() {
        let j = |s: &str| Jid::parse(s).unwrap();
        assert!(matches(
            &j("romeo@example.net/orchard"),
            &j("romeo@example.net/orchard")
        ));
        assert!(!matches(
            &j("romeo@example.net/orchard"),
            &j("romeo@example.net/other")
        ));
        assert!(!matches(
            &j("romeo@example.net/orchard"),
            &j("romeo@example.net")
        ));
        assert!(matches(
            &j("romeo@example.net"),
            &j("romeo@example.net/any")
        ));
        assert!(matches(&j("romeo@example.net"), &j("romeo@example.net")));
        assert!(!matches(&j("romeo@example.net"), &j("example.net")));
        assert!(matches(&j("example.net/res"), &j("example.net/res")));
        assert!(!matches(&j("example.net/res"), &j("user@example.net/res")));
        assert!(matches(&j("example.net"), &j("anyone@example.net/x")));
        assert!(matches(&j("example.net"), &j("example.net")));
        assert!(!matches(&j("example.net"), &j("example.org")));
    }
}
