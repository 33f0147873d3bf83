//! XEP-0030: Service Discovery (§3 info with identity and features from the
//! modules, §4 items).

use rookery_core::{Stanza, StanzaError};
use rookery_xml::{Element, ns};

use super::{IqContext, IqResult, Module, Spec};

/// XEP-0157 §7.1: the FORM_TYPE of the contact addresses form.
const SERVERINFO: &str = "http://jabber.org/network/serverinfo";

#[derive(Debug)]
pub(crate) struct Disco {
    /// XEP-0157 contact addresses.
    pub(crate) contact: super::ContactAddresses,
    /// XEP-0357 §4.1: push notifications are offered on accounts.
    pub(crate) push: bool,
}

impl Disco {
    /// XEP-0157 §3 (and XEP-0128): the contact addresses as a data form
    /// extending the server's disco#info; `None` when none are configured.
    fn serverinfo(&self) -> Option<Element> {
        let fields = self.contact.fields();
        if fields.is_empty() {
            return None;
        }
        let field = |var: &str| Element::new_static("field", ns::DATA_FORMS).with_attr("var", var);
        let value = |v: &str| Element::new_static("value", ns::DATA_FORMS).with_text(v);
        let mut x = Element::new_static("x", ns::DATA_FORMS)
            .with_attr("type", "result")
            .with_child(
                field("FORM_TYPE")
                    .with_attr("type", "hidden")
                    .with_child(value(SERVERINFO)),
            );
        for (var, values) in fields {
            let mut f = field(var);
            for v in values {
                f.push_child(value(v));
            }
            x.push_child(f);
        }
        Some(x)
    }
}

#[async_trait::async_trait]
impl Module for Disco {
    fn serves_remote(&self) -> bool {
        true
    }
    fn specs(&self) -> &'static [Spec] {
        &[
            Spec {
                id: "XEP-0030",
                version: "2.5rc3",
                name: "Service Discovery",
            },
            Spec {
                id: "XEP-0157",
                version: "1.1.1",
                name: "Contact Addresses for XMPP Services",
            },
        ]
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
        // XEP-0060 §5: an account's PEP nodes and items.
        if let Some(account) = ctx.account
            && let Some(r) =
                super::pep::disco(ctx.sessions, account, ctx.from, info, p.attr("node")).await
        {
            return Some(r.map(Some));
        }
        // §3.2 / §4.2: nodes we do not have.
        if p.attr("node").is_some() {
            return Some(Err(StanzaError::item_not_found()));
        }
        if !info {
            let mut items = Element::new_static("query", ns::DISCO_ITEMS);
            // XEP-0030 §4: the server lists its services (XEP-0045 §6.1).
            if ctx.account.is_none() {
                for d in ctx.sessions.component_domains() {
                    items.push_child(
                        Element::new_static("item", ns::DISCO_ITEMS).with_attr("jid", d),
                    );
                }
            }
            return Some(Ok(Some(items)));
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
                // XEP-0163 §6.1: and it is a PEP service.
                q.push_child(
                    Element::new_static("identity", ns::DISCO_INFO)
                        .with_attr("category", "pubsub")
                        .with_attr("type", "pep"),
                );
                // XEP-0313 §7: every account's bare JID hosts its archive.
                let pep = super::pep::account_features();
                let push = self.push.then_some(super::push::NS);
                for f in [ns::DISCO_INFO, crate::mam::NS, crate::mam::NS_EXTENDED]
                    .into_iter()
                    .chain(pep)
                    .chain(push)
                {
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
                if let Some(x) = self.serverinfo() {
                    q.push_child(x);
                }
            }
        }
        Some(Ok(Some(q)))
    }
}
