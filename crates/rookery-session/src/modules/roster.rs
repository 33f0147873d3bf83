//! RFC 6121 §2 roster iqs: get (with versioning), set, remove.

use rookery_core::{Stanza, StanzaError, StanzaKind};
use rookery_xml::{Element, ns};
use tracing::warn;

use super::{After, IqContext, IqResult, Module, Spec};
use crate::roster::{self, RosterChange, RosterLimits, RosterSet, Subscription};

#[derive(Debug)]
pub(crate) struct RosterModule {
    pub(crate) limits: RosterLimits,
}

fn unavailable(e: impl std::fmt::Display) -> StanzaError {
    warn!(error = %e, "roster store unavailable");
    StanzaError::internal_server_error()
}

#[async_trait::async_trait]
impl Module for RosterModule {
    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            id: "RFC 6121",
            version: "—",
            name: "XMPP IM: roster management (§2)",
        }]
    }
    fn features(&self) -> &'static [&'static str] {
        &[]
    }
    async fn handle_iq(
        &self,
        ctx: &IqContext<'_>,
        stanza: &Stanza,
        p: &Element,
    ) -> Option<IqResult> {
        if !p.is("query", ns::ROSTER) {
            return None;
        }
        let user = ctx.from.to_bare();
        // §2.1.5 security warning: only the account itself edits its roster.
        if ctx.account.is_some_and(|a| *a != user) {
            return Some(Err(StanzaError::forbidden()));
        }
        let store = &ctx.sessions.stores().roster;
        Some(match stanza.stanza_type() {
            Some("get") => {
                // §2.1.6 / §2.2: a resource that asked for the roster is "interested".
                ctx.sessions.set_interested(ctx.from);
                let cached = p
                    .attr("ver")
                    .filter(|v| !v.is_empty())
                    .and_then(|v| v.parse::<u64>().ok());
                if let Some(v) = cached {
                    match store.changes_since(&user, v).await {
                        Ok(Some((current, changes))) => {
                            // §2.6.3: empty result, then one interim push per change.
                            for change in changes {
                                ctx.after_reply(After::Deliver(
                                    ctx.from.clone(),
                                    roster::push(ctx.from, &change, current),
                                ));
                            }
                            return Some(Ok(None));
                        }
                        Ok(None) => {}
                        Err(e) => return Some(Err(unavailable(e))),
                    }
                }
                match store.roster(&user).await {
                    Ok(r) => Ok(Some(roster::result_query(&r))),
                    Err(e) => Err(unavailable(e)),
                }
            }
            Some("set") => match roster::parse_set(p, &self.limits) {
                Ok(set) => {
                    // The same lock as subscription changes (presence.rs).
                    let _guard = ctx.sessions.roster_lock(&user).await;
                    self.set(ctx, &user, set).await
                }
                Err(e) => Err(e),
            },
            _ => Err(StanzaError::bad_request("roster iqs are get or set")),
        })
    }
}

impl RosterModule {
    /// §2.3–§2.5: one validated roster set, under the user's roster lock.
    async fn set(&self, ctx: &IqContext<'_>, user: &rookery_core::Jid, set: RosterSet) -> IqResult {
        let store = &ctx.sessions.stores().roster;
        let user = user.clone();
        match set {
            RosterSet::Update(mut item) => {
                let existing = store.item(&user, &item.jid).await.map_err(unavailable)?;
                match &existing {
                    Some(old) => {
                        // Only name and groups come from the client (§2.1.5 rule 2).
                        item.subscription = old.subscription;
                        item.ask = old.ask;
                        item.approved = old.approved;
                    }
                    None => {
                        if store.count(&user).await.map_err(unavailable)? >= self.limits.max_items {
                            return Err(
                                StanzaError::policy_violation().with_text("the roster is full")
                            );
                        }
                    }
                }
                let v = store.put(&user, &item).await.map_err(unavailable)?;
                ctx.after_reply(After::PushRoster(user, RosterChange::Updated(item), v));
                Ok(None)
            }
            RosterSet::Remove(contact) => {
                // §2.5.3
                let existing = store
                    .item(&user, &contact)
                    .await
                    .map_err(unavailable)?
                    .ok_or_else(StanzaError::item_not_found)?;
                let v = store
                    .remove(&user, &contact)
                    .await
                    .map_err(unavailable)?
                    .ok_or_else(StanzaError::item_not_found)?;
                // §2.5.2: cancel subscriptions both ways as they stand.
                let to_contact =
                    matches!(existing.subscription, Subscription::To | Subscription::Both)
                        || existing.ask;
                let from_contact = matches!(
                    existing.subscription,
                    Subscription::From | Subscription::Both
                );
                for (cond, kind) in [(to_contact, "unsubscribe"), (from_contact, "unsubscribed")] {
                    if cond {
                        let el = Element::new_static("presence", ns::CLIENT)
                            .with_attr("type", kind)
                            .with_attr("from", user.as_str())
                            .with_attr("to", contact.as_str());
                        let st = Stanza::new(
                            StanzaKind::Presence,
                            Some(user.clone()),
                            Some(contact.clone()),
                            el,
                        );
                        ctx.after_reply(After::Route(ctx.from.clone(), st));
                    }
                }
                ctx.after_reply(After::PushRoster(user, RosterChange::Removed(contact), v));
                Ok(None)
            }
        }
    }
}
