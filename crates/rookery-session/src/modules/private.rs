//! XEP-0049: Private XML Storage (`jabber:iq:private`). An account stores
//! arbitrary XML elements on the server and reads them back; nobody else can
//! read or write them (§4).
//!
//! Each stored element is keyed by its (namespace, local name), as Prosody and
//! ejabberd do, and stored as its canonical XML. The total per account is
//! limited by `[modules] private_max_bytes`.

use async_trait::async_trait;
use rookery_core::users::StoreError;
use rookery_core::{Jid, Stanza, StanzaError};
use rookery_xml::{Element, ns};
use tracing::warn;

use super::{IqContext, IqResult, Module, Spec, Target, parse_stored};

/// One stored element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivateItem {
    /// The element's namespace.
    pub namespace: String,
    /// The element's local name.
    pub name: String,
    /// The element's canonical XML.
    pub xml: String,
}

/// The private XML storage of XEP-0049, keyed by bare JID and (namespace,
/// name).
#[async_trait]
pub trait PrivateStore: Send + Sync + std::fmt::Debug {
    /// The stored XML of one element, if any.
    async fn private_item(
        &self,
        user: &Jid,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, StoreError>;
    /// Stores every item (replacing those with the same namespace and name),
    /// all or none. If the account's stored bytes (the sum of every `xml`'s
    /// length) would then exceed `quota`, nothing is written and the answer is
    /// `Ok(false)`.
    async fn put_private(
        &self,
        user: &Jid,
        items: &[PrivateItem],
        quota: u64,
    ) -> Result<bool, StoreError>;
    /// Deletes every item of the account (account removal); no error if none.
    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError>;
}

/// The conformance suite every [`PrivateStore`] backend runs: invoke it once
/// per backend with an expression that builds a fresh, empty store.
#[cfg(feature = "test-util")]
#[macro_export]
macro_rules! private_store_conformance {
    ($make:expr) => {
        #[tokio::test]
        async fn private_store_conformance() {
            let store = $make;
            $crate::modules::private::conformance::run(&store).await;
        }
    };
}

/// The body of [`private_store_conformance!`].
#[cfg(feature = "test-util")]
#[allow(clippy::unwrap_used)]
pub mod conformance {
    use super::*;

    fn item(namespace: &str, name: &str, xml: &str) -> PrivateItem {
        PrivateItem {
            namespace: namespace.into(),
            name: name.into(),
            xml: xml.into(),
        }
    }

    fn j(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    /// Runs every check against an empty store.
    pub async fn run(store: &dyn PrivateStore) {
        let a = &j("a@example.org");
        let q = 1000;
        assert_eq!(store.private_item(a, "urn:x", "p").await.unwrap(), None);
        let p1 = "<p xmlns='urn:x'>1 &amp; ü</p>";
        assert!(
            store
                .put_private(a, &[item("urn:x", "p", p1)], q)
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .private_item(a, "urn:x", "p")
                .await
                .unwrap()
                .as_deref(),
            Some(p1)
        );
        // Keyed by namespace and name.
        assert_eq!(store.private_item(a, "urn:y", "p").await.unwrap(), None);
        assert_eq!(store.private_item(a, "urn:x", "q").await.unwrap(), None);
        // Several items at once; the same key is replaced.
        let p2 = "<p xmlns='urn:x'>2</p>";
        let r = "<r xmlns='urn:x'/>";
        assert!(
            store
                .put_private(a, &[item("urn:x", "p", p2), item("urn:x", "r", r)], q)
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .private_item(a, "urn:x", "p")
                .await
                .unwrap()
                .as_deref(),
            Some(p2)
        );
        assert_eq!(
            store
                .private_item(a, "urn:x", "r")
                .await
                .unwrap()
                .as_deref(),
            Some(r)
        );
        // Quota: the bytes of every item of the account after the write.
        let used = (p2.len() + r.len()) as u64;
        let fill = format!("<f xmlns='urn:x'>{}</f>", "z".repeat(100));
        let exact = used + fill.len() as u64;
        assert!(
            !store
                .put_private(a, &[item("urn:x", "f", &fill)], exact - 1)
                .await
                .unwrap()
        );
        assert_eq!(store.private_item(a, "urn:x", "f").await.unwrap(), None);
        // Refused batches write nothing, not even their first items.
        assert!(
            !store
                .put_private(
                    a,
                    &[
                        item("urn:x", "p", "<p xmlns='urn:x'>3</p>"),
                        item("urn:x", "f", &fill)
                    ],
                    exact - 1
                )
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .private_item(a, "urn:x", "p")
                .await
                .unwrap()
                .as_deref(),
            Some(p2)
        );
        assert!(
            store
                .put_private(a, &[item("urn:x", "f", &fill)], exact)
                .await
                .unwrap()
        );
        // A replacement counts its new size, not old plus new.
        assert!(
            store
                .put_private(a, &[item("urn:x", "f", &fill)], exact)
                .await
                .unwrap()
        );
        // Shrinking below the quota is always possible.
        assert!(
            store
                .put_private(a, &[item("urn:x", "f", "<f xmlns='urn:x'/>")], exact)
                .await
                .unwrap()
        );
        // Accounts are separate, also for the quota.
        let b = &j("b@example.org");
        assert_eq!(store.private_item(b, "urn:x", "p").await.unwrap(), None);
        assert!(
            store
                .put_private(b, &[item("urn:x", "f", &fill)], fill.len() as u64)
                .await
                .unwrap()
        );
        store.delete_user(a).await.unwrap();
        assert_eq!(store.private_item(a, "urn:x", "p").await.unwrap(), None);
        assert_eq!(store.private_item(a, "urn:x", "r").await.unwrap(), None);
        assert_eq!(
            store
                .private_item(b, "urn:x", "f")
                .await
                .unwrap()
                .as_deref(),
            Some(fill.as_str())
        );
        store.delete_user(a).await.unwrap();
    }
}

#[derive(Debug)]
pub(crate) struct Private {
    /// Bytes of canonical XML an account may store in all.
    pub(crate) max_bytes: usize,
}

fn unavailable(e: StoreError) -> StanzaError {
    warn!(error = %e, "private XML store unavailable");
    StanzaError::internal_server_error()
}

/// §2.3 and §3: namespaces that cannot be stored. A child in `jabber:client`
/// (or none) has no namespace of its own, and `jabber:iq:private` inside
/// itself is meaningless.
fn reserved(namespace: &str) -> bool {
    matches!(namespace, "" | ns::CLIENT | ns::SERVER | ns::PRIVATE)
}

#[async_trait]
impl Module for Private {
    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            id: "XEP-0049",
            version: "1.2",
            name: "Private XML Storage",
        }]
    }
    fn features(&self) -> &'static [&'static str] {
        &[ns::PRIVATE]
    }
    async fn handle_iq(
        &self,
        ctx: &IqContext<'_>,
        stanza: &Stanza,
        p: &Element,
    ) -> Option<IqResult> {
        if !p.is("query", ns::PRIVATE) {
            return None;
        }
        // §2.3 example 3, §3, §4: only the account itself, with no 'to' or
        // its own bare JID.
        let Target::Own(me) = ctx.target(stanza) else {
            return Some(Err(StanzaError::forbidden()));
        };
        let children: Vec<&Element> = p.children().collect();
        // §2.3: at least one child element with its own namespace.
        if children.is_empty() {
            return Some(Err(StanzaError::not_acceptable()
                .with_text("private XML storage needs a child element")));
        }
        if children.iter().any(|c| reserved(c.ns())) {
            return Some(Err(
                StanzaError::not_acceptable().with_text("that namespace cannot be stored")
            ));
        }
        let store = ctx.sessions.stores().private.as_ref();
        if stanza.stanza_type() == Some("get") {
            // §2.3: one namespace per get; several elements of it are answered
            // together.
            if children.iter().any(|c| c.ns() != children[0].ns()) {
                return Some(Err(StanzaError::bad_request(
                    "one namespace per private XML get",
                )));
            }
            let mut q = Element::new_static("query", ns::PRIVATE);
            for c in children {
                // XEP-0402 §5.3: bookmarks are the native ones, if any.
                if c.is("storage", super::pep::NS_BOOKMARKS) {
                    match super::pep::bookmarks_as_storage(ctx.sessions, &me).await {
                        Ok(Some(el)) => {
                            q.push_child(el);
                            continue;
                        }
                        Ok(None) => {}
                        Err(e) => return Some(Err(e)),
                    }
                }
                match store.private_item(&me, c.ns(), c.name()).await {
                    Ok(Some(xml)) => match parse_stored(&xml) {
                        Ok(el) => q.push_child(el),
                        Err(e) => return Some(Err(e)),
                    },
                    // §2.3: nothing stored yet is the requested element, empty.
                    Ok(None) => q.push_child(Element::new(c.name(), c.ns())),
                    Err(e) => return Some(Err(unavailable(e))),
                }
            }
            return Some(Ok(Some(q)));
        }
        let mut items: Vec<PrivateItem> = Vec::with_capacity(children.len());
        for c in children {
            // XEP-0402 §5.3.2: written as native bookmarks instead.
            if c.is("storage", super::pep::NS_BOOKMARKS) {
                match super::pep::storage_to_bookmarks(ctx.sessions, &me, c).await {
                    Ok(notices) => {
                        if !notices.is_empty() {
                            ctx.after_reply(super::After::Pep(me.clone(), notices));
                        }
                        continue;
                    }
                    Err(e) => return Some(Err(e)),
                }
            }
            let item = PrivateItem {
                namespace: c.ns().to_owned(),
                name: c.name().to_owned(),
                xml: c.to_xml_string(),
            };
            // The last of several elements with one key wins.
            items.retain(|i| (&i.namespace, &i.name) != (&item.namespace, &item.name));
            items.push(item);
        }
        if items.is_empty() {
            return Some(Ok(None));
        }
        Some(
            match store.put_private(&me, &items, self.max_bytes as u64).await {
                Ok(true) => Ok(None),
                Ok(false) => Err(StanzaError::policy_violation().with_text(format!(
                    "private XML storage is limited to {} bytes per account",
                    self.max_bytes
                ))),
                Err(e) => Err(unavailable(e)),
            },
        )
    }
}
