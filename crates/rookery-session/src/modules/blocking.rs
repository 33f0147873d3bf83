//! XEP-0191: Blocking Command — the iqs (§3.2 retrieve, §3.3 block, §3.4/§3.5
//! unblock) and the pushes to resources that asked for the block list.

use rookery_core::{Stanza, StanzaError};
use rookery_xml::Element;
use tracing::warn;

use super::{After, IqContext, IqResult, Module, Spec};
use crate::blocking::{self, NS};

#[derive(Debug)]
pub(crate) struct Blocking;

fn unavailable(e: impl std::fmt::Display) -> StanzaError {
    warn!(error = %e, "block list store unavailable");
    StanzaError::internal_server_error()
}

#[async_trait::async_trait]
impl Module for Blocking {
    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            id: "XEP-0191",
            version: "1.3",
            name: "Blocking Command",
        }]
    }
    fn features(&self) -> &'static [&'static str] {
        &[NS]
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
        let user = ctx.from.to_bare();
        if ctx.account.is_some_and(|a| *a != user) {
            return Some(Err(StanzaError::forbidden()));
        }
        let store = &ctx.sessions.stores().blocklist;
        Some(match (stanza.stanza_type(), p.name()) {
            (Some("get"), "blocklist") => {
                ctx.sessions.set_blocklist_interested(ctx.from);
                match store.blocklist(&user).await {
                    Ok(list) => {
                        let mut q = Element::new_static("blocklist", NS);
                        for j in list {
                            q.push_child(
                                Element::new_static("item", NS).with_attr("jid", j.as_str()),
                            );
                        }
                        Ok(Some(q))
                    }
                    Err(e) => Err(unavailable(e)),
                }
            }
            (Some("set"), "block") => {
                let jids = match blocking::items(p) {
                    Ok(j) if !j.is_empty() => j,
                    // §3.3: at least one item.
                    Ok(_) => {
                        return Some(Err(StanzaError::bad_request(
                            "block needs at least one item",
                        )));
                    }
                    Err(e) => return Some(Err(e)),
                };
                if let Err(e) = store.block(&user, &jids).await {
                    return Some(Err(unavailable(e)));
                }
                ctx.sessions.blocklist_changed(&user).await;
                // §3.3: the blocked JIDs see the user go offline.
                ctx.sessions.appear_offline_to(&user, &jids).await;
                ctx.after_reply(After::PushBlocklist(user, "block", jids));
                Ok(None)
            }
            (Some("set"), "unblock") => {
                let jids = match blocking::items(p) {
                    Ok(j) => j,
                    Err(e) => return Some(Err(e)),
                };
                if let Err(e) = store.unblock(&user, &jids).await {
                    return Some(Err(unavailable(e)));
                }
                ctx.sessions.blocklist_changed(&user).await;
                ctx.after_reply(After::PushBlocklist(user, "unblock", jids));
                Ok(None)
            }
            _ => Err(StanzaError::bad_request("unknown blocking request")),
        })
    }
}
