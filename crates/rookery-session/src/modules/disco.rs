//! XEP-0030: Service Discovery (§3 info with identity and features from the
//! modules, §4 items).

use rookery_core::{Stanza, StanzaError};
use rookery_xml::{Element, ns};

use super::{IqContext, IqResult, Module, Spec};

#[derive(Debug)]
pub(crate) struct Disco;

#[async_trait::async_trait]
impl Module for Disco {
    fn serves_remote(&self) -> bool {
        true
    }
    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            id: "XEP-0030",
            version: "2.5rc3",
            name: "Service Discovery",
        }]
    }
    fn features(&self) -> &'static [&'static str] {
        &[ns::DISCO_INFO, ns::DISCO_ITEMS]
    }
    async fn handle_iq(
        &self,
        ctx: &IqContext<'_>,
        stanza: &Stanza,
        p: &Element,
    ) -> Option<IqResult> {
        let info = p.is("query", ns::DISCO_INFO);
        if !info && !p.is("query", ns::DISCO_ITEMS) {
            return None;
        }
        if stanza.stanza_type() != Some("get") {
            return Some(Err(StanzaError::bad_request("disco is a get")));
        }
        // §3.2 / §4.2: nodes we do not have.
        if let Some(node) = p.attr("node") {
            let _ = node;
            return Some(Err(StanzaError::item_not_found()));
        }
        if !info {
            return Some(Ok(Some(Element::new_static("query", ns::DISCO_ITEMS))));
        }
        let mut q = Element::new_static("query", ns::DISCO_INFO);
        match ctx.account {
            // XEP-0030 §3.1 example for an account: category account, type registered.
            Some(_) => {
                q.push_child(
                    Element::new_static("identity", ns::DISCO_INFO)
                        .with_attr("category", "account")
                        .with_attr("type", "registered"),
                );
                // XEP-0313 §7: every account's bare JID hosts its archive.
                for f in [ns::DISCO_INFO, crate::mam::NS, crate::mam::NS_EXTENDED] {
                    q.push_child(
                        Element::new_static("feature", ns::DISCO_INFO).with_attr("var", f),
                    );
                }
            }
            None => {
                q.push_child(
                    Element::new_static("identity", ns::DISCO_INFO)
                        .with_attr("category", "server")
                        .with_attr("type", "im")
                        .with_attr("name", "Rookery"),
                );
                for f in ctx.features {
                    q.push_child(
                        Element::new_static("feature", ns::DISCO_INFO).with_attr("var", *f),
                    );
                }
            }
        }
        Some(Ok(Some(q)))
    }
}
