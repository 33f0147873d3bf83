//! XEP-0054: vcard-temp. The server keeps one vCard per account and answers
//! for it: the account's own sessions read and replace it (§3.1, §3.2), anyone
//! may read it at the account's bare JID (§3.3).
//!
//! The vCard is stored as the canonical XML of the `<vCard/>` element (the
//! serializer of `rookery-xml`), so a backend stores an opaque string.
//! XEP-0153 avatar hashes in presence are not computed here.

use async_trait::async_trait;
use rookery_core::users::StoreError;
use rookery_core::{Jid, Stanza, StanzaError};
use rookery_xml::{Element, ns};
use tracing::warn;

use super::{IqContext, IqResult, Module, Spec, Target, parse_stored};

/// The vCard storage of XEP-0054, keyed by bare JID.
#[async_trait]
pub trait VCardStore: Send + Sync + std::fmt::Debug {
    /// The stored vCard of an account (canonical XML of `<vCard/>`), if any.
    async fn vcard(&self, user: &Jid) -> Result<Option<String>, StoreError>;
    /// Stores an account's vCard, replacing any previous one (XEP-0054 §3.2:
    /// there are no partial updates).
    async fn set_vcard(&self, user: &Jid, xml: &str) -> Result<(), StoreError>;
    /// Deletes the account's vCard (account removal); no error if none.
    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError>;
}

/// The conformance suite every [`VCardStore`] backend runs: invoke it once per
/// backend with an expression that builds a fresh, empty store.
#[cfg(feature = "test-util")]
#[macro_export]
macro_rules! vcard_store_conformance {
    ($make:expr) => {
        #[tokio::test]
        async fn vcard_store_conformance() {
            let store = $make;
            $crate::modules::vcard::conformance::run(&store).await;
        }
    };
}

/// The body of [`vcard_store_conformance!`].
#[cfg(feature = "test-util")]
#[allow(clippy::unwrap_used)]
pub mod conformance {
    use super::*;

    fn j(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    /// Runs every check against an empty store.
    pub async fn run(store: &dyn VCardStore) {
        let (a, b) = (&j("a@example.org"), &j("b@example.org"));
        assert_eq!(store.vcard(a).await.unwrap(), None);
        let v1 = "<vCard xmlns='vcard-temp'><FN>Änne &amp; Bob</FN></vCard>";
        store.set_vcard(a, v1).await.unwrap();
        assert_eq!(store.vcard(a).await.unwrap().as_deref(), Some(v1));
        // Replaced whole, not merged.
        let v2 = "<vCard xmlns='vcard-temp'><NICKNAME>a</NICKNAME></vCard>";
        store.set_vcard(a, v2).await.unwrap();
        assert_eq!(store.vcard(a).await.unwrap().as_deref(), Some(v2));
        // Large values survive intact.
        let big = format!(
            "<vCard xmlns='vcard-temp'><PHOTO><BINVAL>{}</BINVAL></PHOTO></vCard>",
            "A".repeat(60_000)
        );
        store.set_vcard(b, &big).await.unwrap();
        assert_eq!(store.vcard(b).await.unwrap().as_deref(), Some(big.as_str()));
        // Accounts and domains are separate.
        assert_eq!(store.vcard(&j("a@example.com")).await.unwrap(), None);
        store.delete_user(a).await.unwrap();
        assert_eq!(store.vcard(a).await.unwrap(), None);
        assert!(store.vcard(b).await.unwrap().is_some());
        // Deleting what is not there is not an error.
        store.delete_user(a).await.unwrap();
        store.delete_user(&j("nobody@example.org")).await.unwrap();
    }
}

#[derive(Debug)]
pub(crate) struct VCard {
    /// Largest vCard accepted, in bytes of canonical XML.
    pub(crate) max_bytes: usize,
}

fn unavailable(e: StoreError) -> StanzaError {
    warn!(error = %e, "vCard store unavailable");
    StanzaError::internal_server_error()
}

fn empty() -> Element {
    Element::new_static("vCard", ns::VCARD)
}

#[async_trait]
impl Module for VCard {
    fn serves_remote(&self) -> bool {
        true
    }
    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            id: "XEP-0054",
            version: "1.3.0",
            name: "vcard-temp",
        }]
    }
    fn features(&self) -> &'static [&'static str] {
        // §4: "vcard-temp" in the server's disco#info.
        &[ns::VCARD]
    }
    async fn handle_iq(
        &self,
        ctx: &IqContext<'_>,
        stanza: &Stanza,
        p: &Element,
    ) -> Option<IqResult> {
        if !p.is("vCard", ns::VCARD) {
            return None;
        }
        let store = ctx.sessions.stores().vcards.as_ref();
        let get = stanza.stanza_type() == Some("get");
        Some(match (ctx.target(stanza), get) {
            // §3.1: one's own vCard; none yet is an empty <vCard/>.
            (Target::Own(me), true) => match store.vcard(&me).await {
                Ok(Some(xml)) => parse_stored(&xml).map(Some),
                Ok(None) => Ok(Some(empty())),
                Err(e) => Err(unavailable(e)),
            },
            // §3.2: the whole vCard is replaced.
            (Target::Own(me), false) => {
                let xml = p.to_xml_string();
                if xml.len() > self.max_bytes {
                    return Some(Err(StanzaError::not_acceptable().with_text(format!(
                        "a vCard may have at most {} bytes",
                        self.max_bytes
                    ))));
                }
                let r = store.set_vcard(&me, &xml).await;
                ctx.sessions.vcard_changed(&me);
                r.map(|()| None).map_err(unavailable)
            }
            // §3.3: another account's vCard, answered on its behalf. No vCard
            // gets the same <service-unavailable/> as no account (which the
            // router answers before any module), against directory harvesting.
            (Target::Other(who), true) => match store.vcard(&who).await {
                Ok(Some(xml)) => parse_stored(&xml).map(Some),
                Ok(None) => Err(StanzaError::service_unavailable()),
                Err(e) => Err(unavailable(e)),
            },
            // §3.2: setting another entity's vCard is <forbidden/>.
            (Target::Other(_), false) => Err(StanzaError::forbidden()),
            // §3.3 note: the server has no vCard of its own.
            (Target::Server, true) => Err(StanzaError::service_unavailable()),
            (Target::Server, false) => Err(StanzaError::forbidden()),
        })
    }
}
