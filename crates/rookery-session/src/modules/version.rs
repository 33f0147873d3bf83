//! XEP-0092: Software Version.

use rookery_core::{Stanza, StanzaError};
use rookery_xml::{Element, ns};

use super::{IqContext, IqResult, Module, Spec};

#[derive(Debug)]
pub(crate) struct Version {
    pub(crate) os: bool,
}

#[async_trait::async_trait]
impl Module for Version {
    fn serves_remote(&self) -> bool {
        true
    }
    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            id: "XEP-0092",
            version: "1.1",
            name: "Software Version",
        }]
    }
    fn features(&self) -> &'static [&'static str] {
        &[ns::VERSION]
    }
    async fn handle_iq(
        &self,
        ctx: &IqContext<'_>,
        stanza: &Stanza,
        p: &Element,
    ) -> Option<IqResult> {
        if !p.is("query", ns::VERSION) {
            return None;
        }
        // §1: the query is for the server; an account's software is its clients'.
        if ctx.account.is_some() {
            return Some(Err(StanzaError::service_unavailable()));
        }
        if stanza.stanza_type() != Some("get") {
            return Some(Err(StanzaError::bad_request("version is a get")));
        }
        let mut q = Element::new_static("query", ns::VERSION)
            .with_child(Element::new_static("name", ns::VERSION).with_text("Rookery"))
            .with_child(
                Element::new_static("version", ns::VERSION).with_text(env!("CARGO_PKG_VERSION")),
            );
        if self.os {
            q.push_child(Element::new_static("os", ns::VERSION).with_text(std::env::consts::OS));
        }
        Some(Ok(Some(q)))
    }
}
