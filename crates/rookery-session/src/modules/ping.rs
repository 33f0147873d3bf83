//! XEP-0199: XMPP Ping (server answers, §4.2 client-to-server and §4.5
//! pinging an account on its behalf). Server-to-client pings used as a
//! keepalive live in the connection manager.

use rookery_core::Stanza;
use rookery_xml::{Element, ns};

use super::{IqContext, IqResult, Module, Spec};

#[derive(Debug)]
pub(crate) struct Ping;

#[async_trait::async_trait]
impl Module for Ping {
    fn serves_remote(&self) -> bool {
        true
    }
    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            id: "XEP-0199",
            version: "2.0.1",
            name: "XMPP Ping",
        }]
    }
    fn features(&self) -> &'static [&'static str] {
        &[ns::PING]
    }
    async fn handle_iq(
        &self,
        _ctx: &IqContext<'_>,
        stanza: &Stanza,
        p: &Element,
    ) -> Option<IqResult> {
        if !p.is("ping", ns::PING) {
            return None;
        }
        if stanza.stanza_type() != Some("get") {
            return Some(Err(rookery_core::StanzaError::bad_request("ping is a get")));
        }
        Some(Ok(None))
    }
}
