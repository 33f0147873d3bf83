//! XEP-0280 §4: enabling and disabling carbons per resource.

use rookery_core::{Stanza, StanzaError};
use rookery_xml::Element;

use super::{IqContext, IqResult, Module, Spec};
use crate::carbons::{NS, NS_RULES};

#[derive(Debug)]
pub(crate) struct Carbons;

#[async_trait::async_trait]
impl Module for Carbons {
    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            id: "XEP-0280",
            version: "1.0.1",
            name: "Message Carbons",
        }]
    }
    fn features(&self) -> &'static [&'static str] {
        &[NS, NS_RULES]
    }
    async fn handle_iq(
        &self,
        ctx: &IqContext<'_>,
        stanza: &Stanza,
        p: &Element,
    ) -> Option<IqResult> {
        if p.ns() != NS {
            return None;
        }
        if ctx.account.is_some_and(|a| *a != ctx.from.to_bare())
            || stanza.stanza_type() != Some("set")
        {
            return Some(Err(StanzaError::bad_request(
                "carbons are enabled with an iq set to the server",
            )));
        }
        Some(match p.name() {
            "enable" => {
                ctx.sessions.set_carbons(ctx.from, true);
                Ok(None)
            }
            "disable" => {
                ctx.sessions.set_carbons(ctx.from, false);
                Ok(None)
            }
            _ => Err(StanzaError::bad_request("enable or disable")),
        })
    }
}
