//! RFC 6121 §3 (subscriptions) and §4 (presence) between accounts of this
//! server. Remote contacts follow with federation: their presence goes to the
//! s2s role through the same [`LocalSessions::deliver_presence`] decision.
//!
//! State lives in the roster (subscription, `ask`, `approved`) plus the
//! stored inbound requests ("Pending In", Appendix A), and in the online
//! resources (their last presence and the targets of directed presence).

use std::sync::Arc;

use rookery_core::{Jid, Stanza, StanzaKind};
use rookery_xml::{Element, ns};
use tracing::{debug, warn};

use crate::LocalSessions;
use crate::roster::{RosterChange, RosterItem, Subscription};

/// Presence types that manage subscriptions (RFC 6121 §3).
fn is_subscription_type(t: &str) -> bool {
    matches!(
        t,
        "subscribe" | "subscribed" | "unsubscribe" | "unsubscribed"
    )
}

/// A presence stanza with fresh addresses (the element is copied once per
/// recipient, as RFC 6121's examples carry the recipient in `to`).
fn readdress(el: &Element, from: &Jid, to: &Jid) -> Element {
    let mut e = el.clone();
    e.set_attr("from", from.as_str());
    e.set_attr("to", to.as_str());
    e
}

fn presence(kind: Option<&str>, from: &Jid, to: &Jid) -> Element {
    let mut e = Element::new_static("presence", ns::CLIENT)
        .with_attr("from", from.as_str())
        .with_attr("to", to.as_str());
    if let Some(k) = kind {
        e.set_attr("type", k);
    }
    e
}

impl LocalSessions {
    /// A presence stanza sent by the local session `from` (RFC 6121 §3, §4).
    pub(crate) async fn outbound_presence(&self, from: &Jid, stanza: Stanza) {
        let kind = stanza.stanza_type().map(str::to_owned);
        // XEP-0398 §4: the avatar hash in every available presence.
        let stanza = if kind.is_none() {
            self.with_avatar_hash(from, stanza).await
        } else {
            stanza
        };
        match (kind.as_deref(), stanza.to().cloned()) {
            // §4.2, §4.4, §4.5: broadcast of the session's own presence.
            (None | Some("unavailable"), None) => self.broadcast(from, &stanza).await,
            // §4.6: directed presence.
            (None | Some("unavailable"), Some(to)) => {
                self.note_directed(from, &to, kind.is_none());
                self.deliver_presence(&to, stanza.element().clone()).await;
            }
            (Some(t), Some(to)) if is_subscription_type(t) => {
                self.outbound_subscription(from, t, to.to_bare(), stanza.element())
                    .await;
            }
            // §4.3.1: probes are the server's business, not the client's.
            (Some("probe"), _) => {}
            (Some("error"), Some(to)) => self.deliver_presence(&to, stanza.element().clone()).await,
            _ => {}
        }
    }

    /// Routes a presence stanza to its recipient: for a local account, the
    /// inbound rules of RFC 6121 apply; another domain's go over federation.
    pub(crate) async fn deliver_presence(&self, to: &Jid, el: Element) {
        if to.domain() != self.domain() {
            match Stanza::parse(el) {
                Ok(st) => self.send_remote(st),
                Err((_, e)) => debug!(error = %e, "presence for a remote address dropped"),
            }
            return;
        }
        if to.node().is_none() {
            debug!(to = %to, "presence to the server dropped");
            return;
        }
        if let Some(peers) = self.remote_owner(&to.to_bare()) {
            let job = crate::peers::Forward {
                kind: crate::peers::ForwardKind::Presence,
                from: to.clone(),
                to: to.clone(),
                stanza: el,
            };
            return Box::pin(self.forward(peers, job)).await;
        }
        Box::pin(self.inbound_presence(to, el)).await;
    }

    /// Presence arriving for a local account (RFC 6121 §3.1.3–§3.3.3, §4.3.2, §4.2.3).
    async fn inbound_presence(&self, to: &Jid, el: Element) {
        let Some(from) = el.attr("from").and_then(|f| Jid::parse(f).ok()) else {
            return;
        };
        // XEP-0191 §3.3: presence from a blocked JID is dropped without a word.
        if self.blocks(&to.to_bare(), &from).await {
            return;
        }
        let kind = el.attr("type").map(str::to_owned);
        match kind.as_deref() {
            Some(t) if is_subscription_type(t) => {
                self.inbound_subscription(&to.to_bare(), &from, t, el).await
            }
            Some("probe") => self.answer_probe(&to.to_bare(), &from).await,
            _ => {
                if to.resource().is_none() {
                    // XEP-0163 §4.3: the account's PEP service sees it.
                    self.pep_presence(to, &from, &el).await;
                }
                let el = Arc::new(el);
                if to.resource().is_some() {
                    // §4.6.3 / RFC 6120 §10.5.3: a full JID that is not online drops it.
                    let _ = self.deliver_to_full(to, el);
                } else {
                    for link in self.available_links_of(to) {
                        let _ = self.push_link(&link, el.clone());
                    }
                }
            }
        }
    }

    /// §4.2–§4.5: the session's own presence, broadcast to the contacts
    /// subscribed to it and to the account's available resources.
    async fn broadcast(&self, from: &Jid, stanza: &Stanza) {
        let user = from.to_bare();
        let available = stanza.stanza_type().is_none();
        let priority = stanza
            .element()
            .child("priority", ns::CLIENT)
            .and_then(|p| p.text().trim().parse::<i8>().ok())
            .unwrap_or(0);
        let was_available = self.update_presence(
            from,
            available.then_some(priority),
            Some(Arc::new(stanza.element().clone())),
        );
        // XEP-0012 §3: when the account was last seen, and what it said.
        self.last_activity_presence(from, stanza.element(), available, was_available)
            .await;
        // XEP-0163: the account's own resources get its PEP notifications.
        self.pep_presence(&user, from, stanza.element()).await;
        let roster = match self.stores().roster.roster(&user).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, user = %user, "roster unavailable: presence not broadcast");
                return;
            }
        };
        // To every contact with a subscription from (§4.2.2, §4.4.2, §4.5.2),
        // unless blocked (XEP-0191 §3.3).
        let blocked = self.blocklist_of(&user).await;
        for item in &roster.items {
            if matches!(item.subscription, Subscription::From | Subscription::Both)
                && !crate::blocking::is_blocked(&blocked, &item.jid)
            {
                self.deliver_presence(&item.jid, readdress(stanza.element(), from, &item.jid))
                    .await;
            }
        }
        // And to all of the user's available resources, the sender included (§4.2.2).
        let own = Arc::new(stanza.element().clone());
        for link in self.available_links_of(&user) {
            let _ = self.push_link(&link, own.clone());
        }
        if available && !was_available {
            // §4.2.2: initial presence — probe the contacts we are subscribed to,
            // then hand over the subscription requests that waited (§3.1.3).
            for item in &roster.items {
                if matches!(item.subscription, Subscription::To | Subscription::Both) {
                    self.deliver_presence(&item.jid, presence(Some("probe"), &user, &item.jid))
                        .await;
                }
            }
            match self.stores().roster.pending_in(&user).await {
                Ok(pending) => {
                    for (_, xml) in pending {
                        if let Ok(el) = Element::parse(&xml) {
                            let _ = self.deliver_to_full(from, Arc::new(el));
                        }
                    }
                }
                Err(e) => warn!(error = %e, "pending subscription requests unavailable"),
            }
        }
        if available && priority >= 0 {
            // XEP-0160 §3: stored messages go to a non-negative available resource.
            self.flush_offline(from).await;
        }
        if !available {
            // §4.6.3: directed presence is cancelled by unavailable presence.
            for to in self.take_directed(from) {
                self.deliver_presence(&to, readdress(stanza.element(), from, &to))
                    .await;
            }
        }
    }

    /// XEP-0191 §3.3: newly blocked JIDs that could see the user's presence
    /// get unavailable presence from each available resource.
    pub(crate) async fn appear_offline_to(&self, user: &Jid, jids: &[Jid]) {
        let current = self.current_presence(user);
        if current.is_empty() {
            return;
        }
        for j in jids {
            let sees = matches!(
                self.roster_item(user, &j.to_bare()).await,
                Some(i) if matches!(i.subscription, Subscription::From | Subscription::Both)
            );
            if sees {
                for (full, _) in &current {
                    let el = presence(Some("unavailable"), full, j);
                    Box::pin(self.inbound_presence_unchecked(j, el)).await;
                }
            }
        }
    }

    /// Delivers presence to a local account without the sender's block check
    /// (the block itself is what is being announced).
    async fn inbound_presence_unchecked(&self, to: &Jid, el: Element) {
        if to.domain() != self.domain() || to.node().is_none() {
            return;
        }
        let el = Arc::new(el);
        for link in self.available_links_of(&to.to_bare()) {
            let _ = self.push_link(&link, el.clone());
        }
    }

    /// §4.5.2 / §4.6.3: the connection of an available resource ended
    /// without unavailable presence; the server sends it on its behalf.
    pub(crate) async fn went_offline(&self, full: &Jid, was_available: bool, directed: Vec<Jid>) {
        if !was_available && directed.is_empty() {
            return;
        }
        let el = Element::new_static("presence", ns::CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("from", full.as_str());
        if was_available {
            let user = full.to_bare();
            self.pep_gone(&user, full);
            match self.stores().roster.roster(&user).await {
                Ok(roster) => {
                    for item in roster.items {
                        if matches!(item.subscription, Subscription::From | Subscription::Both) {
                            self.deliver_presence(&item.jid, readdress(&el, full, &item.jid))
                                .await;
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "roster unavailable: unavailable presence not broadcast")
                }
            }
            let own = Arc::new(el.clone());
            for link in self.available_links_of(&user) {
                let _ = self.push_link(&link, own.clone());
            }
        }
        for to in directed {
            self.deliver_presence(&to, readdress(&el, full, &to)).await;
        }
    }

    /// §4.3.2: a probe from `prober` for `user`'s presence.
    async fn answer_probe(&self, user: &Jid, prober: &Jid) {
        let item = match self.stores().roster.item(user, &prober.to_bare()).await {
            Ok(i) => i,
            Err(e) => {
                warn!(error = %e, "roster unavailable: probe unanswered");
                return;
            }
        };
        if !item.is_some_and(|i| matches!(i.subscription, Subscription::From | Subscription::Both))
        {
            // Not subscribed: presence is not revealed (§4.3.2, §8.5.3.1).
            return;
        }
        let current = self.current_presence(user);
        if current.is_empty() {
            // No available resource: unavailable presence (§4.3.2).
            self.deliver_presence(prober, presence(Some("unavailable"), user, prober))
                .await;
            return;
        }
        for (full, el) in current {
            self.deliver_presence(prober, readdress(&el, &full, prober))
                .await;
        }
    }

    async fn roster_item(&self, user: &Jid, contact: &Jid) -> Option<RosterItem> {
        match self.stores().roster.item(user, contact).await {
            Ok(i) => i,
            Err(e) => {
                warn!(error = %e, "roster unavailable");
                None
            }
        }
    }

    async fn save_item(&self, user: &Jid, item: RosterItem) {
        match self.stores().roster.put(user, &item).await {
            Ok(v) => self.push_roster(user, &RosterChange::Updated(item), v),
            Err(e) => warn!(error = %e, "roster update failed"),
        }
    }

    /// §3.1.2, §3.2.2, §3.3.2, §3.4: a subscription stanza the user sends.
    async fn outbound_subscription(&self, from: &Jid, kind: &str, contact: Jid, el: &Element) {
        // The roster item is read, changed and written under the user's lock
        // (two connections may change the same item at once); what goes to
        // other accounts is sent after the lock is released, so that two
        // users subscribing to each other cannot wait on each other.
        let deliveries = {
            let _guard = self.roster_lock(&from.to_bare()).await;
            let mut out_q: Vec<(Jid, Element)> = Vec::new();
            self.outbound_subscription_locked(from, kind, contact, el, &mut out_q)
                .await;
            out_q
        };
        for (to, el) in deliveries {
            self.deliver_presence(&to, el).await;
        }
    }

    async fn outbound_subscription_locked(
        &self,
        from: &Jid,
        kind: &str,
        contact: Jid,
        el: &Element,
        out_q: &mut Vec<(Jid, Element)>,
    ) {
        let user = from.to_bare();
        if contact == user {
            // A subscription to oneself has no meaning (the account always
            // sees its own presence); nothing is stored or sent.
            return;
        }
        // §3.1.2: stamped with the bare JID of the user.
        let out = readdress(el, &user, &contact);
        let existing = self.roster_item(&user, &contact).await;
        let pending_in = matches!(self.stores().roster.pending_in(&user).await, Ok(p) if p.iter().any(|(j, _)| *j == contact));
        match kind {
            "subscribe" => {
                let mut item = existing
                    .clone()
                    .unwrap_or_else(|| RosterItem::new(contact.clone()));
                if !matches!(item.subscription, Subscription::To | Subscription::Both) && !item.ask
                {
                    item.ask = true;
                    self.save_item(&user, item).await;
                }
                out_q.push((contact.clone(), out));
            }
            "unsubscribe" => {
                if let Some(mut item) = existing {
                    let before = (item.subscription, item.ask);
                    item.subscription = match item.subscription {
                        Subscription::To => Subscription::None,
                        Subscription::Both => Subscription::From,
                        s => s,
                    };
                    item.ask = false;
                    if (item.subscription, item.ask) != before {
                        self.save_item(&user, item).await;
                    }
                }
                out_q.push((contact.clone(), out));
            }
            "subscribed" => {
                if pending_in {
                    // §3.1.5: approval of a pending request.
                    let mut item = existing.unwrap_or_else(|| RosterItem::new(contact.clone()));
                    item.subscription = match item.subscription {
                        Subscription::None => Subscription::From,
                        Subscription::To => Subscription::Both,
                        s => s,
                    };
                    item.approved = false;
                    let _ = self
                        .stores()
                        .roster
                        .remove_pending_in(&user, &contact)
                        .await;
                    self.save_item(&user, item).await;
                    out_q.push((contact.clone(), out));
                    // Then the user's current presence goes to the new subscriber.
                    for (full, el) in self.current_presence(&user) {
                        out_q.push((contact.clone(), readdress(&el, &full, &contact)));
                    }
                } else if existing
                    .as_ref()
                    .is_none_or(|i| matches!(i.subscription, Subscription::None | Subscription::To))
                {
                    // §3.4: pre-approval, kept in the roster and not sent.
                    let mut item = existing.unwrap_or_else(|| RosterItem::new(contact.clone()));
                    if !item.approved {
                        item.approved = true;
                        self.save_item(&user, item).await;
                    }
                }
            }
            "unsubscribed" => {
                if pending_in {
                    // §3.2.2: denial of a pending request.
                    let _ = self
                        .stores()
                        .roster
                        .remove_pending_in(&user, &contact)
                        .await;
                }
                if let Some(mut item) = existing {
                    let before = (item.subscription, item.approved);
                    item.subscription = match item.subscription {
                        Subscription::From => Subscription::None,
                        Subscription::Both => Subscription::To,
                        s => s,
                    };
                    item.approved = false;
                    let cancelled = before.0 != item.subscription;
                    if (item.subscription, item.approved) != before {
                        self.save_item(&user, item).await;
                    }
                    if cancelled {
                        // §3.2.2: the former subscriber sees the user go offline.
                        for (full, _) in self.current_presence(&user) {
                            out_q.push((
                                contact.clone(),
                                presence(Some("unavailable"), &full, &contact),
                            ));
                        }
                    }
                }
                out_q.push((contact.clone(), out));
            }
            _ => {}
        }
    }

    /// §3.1.3, §3.1.6, §3.2.3, §3.3.3: a subscription stanza for `user`.
    async fn inbound_subscription(&self, user: &Jid, from: &Jid, kind: &str, el: Element) {
        let deliveries = {
            let _guard = self.roster_lock(user).await;
            let mut out_q: Vec<(Jid, Element)> = Vec::new();
            self.inbound_subscription_locked(user, from, kind, el, &mut out_q)
                .await;
            out_q
        };
        for (to, el) in deliveries {
            self.deliver_presence(&to, el).await;
        }
    }

    async fn inbound_subscription_locked(
        &self,
        user: &Jid,
        from: &Jid,
        kind: &str,
        el: Element,
        out_q: &mut Vec<(Jid, Element)>,
    ) {
        let contact = from.to_bare();
        let existing = self.roster_item(user, &contact).await;
        match kind {
            "subscribe" => {
                if let Some(mut item) = existing.clone() {
                    if matches!(item.subscription, Subscription::From | Subscription::Both) {
                        // §3.1.3: already subscribed — answer on the user's behalf.
                        out_q.push((
                            contact.clone(),
                            presence(Some("subscribed"), user, &contact),
                        ));
                        return;
                    }
                    if item.approved {
                        // §3.4: pre-approved.
                        item.approved = false;
                        item.subscription = match item.subscription {
                            Subscription::None => Subscription::From,
                            _ => Subscription::Both,
                        };
                        self.save_item(user, item).await;
                        out_q.push((
                            contact.clone(),
                            presence(Some("subscribed"), user, &contact),
                        ));
                        for (full, pel) in self.current_presence(user) {
                            out_q.push((contact.clone(), readdress(&pel, &full, &contact)));
                        }
                        return;
                    }
                }
                // §3.1.3: kept until answered, and shown to every available resource now.
                let el = readdress(&el, &contact, user);
                if let Err(e) = self
                    .stores()
                    .roster
                    .add_pending_in(user, &contact, &el.to_xml_string())
                    .await
                {
                    warn!(error = %e, "could not store a subscription request");
                }
                let el = Arc::new(el);
                for link in self.available_links_of(user) {
                    let _ = self.push_link(&link, el.clone());
                }
            }
            "subscribed" => {
                let Some(mut item) = existing else { return };
                if !item.ask {
                    // §3.1.6: not requested — ignored.
                    return;
                }
                item.ask = false;
                item.subscription = match item.subscription {
                    Subscription::None => Subscription::To,
                    Subscription::From => Subscription::Both,
                    s => s,
                };
                self.save_item(user, item).await;
                self.deliver_to_interested(user, readdress(&el, &contact, user));
            }
            "unsubscribe" => {
                let had_pending = self
                    .stores()
                    .roster
                    .remove_pending_in(user, &contact)
                    .await
                    .unwrap_or(false);
                let mut changed = had_pending;
                if let Some(mut item) = existing
                    && matches!(item.subscription, Subscription::From | Subscription::Both)
                {
                    item.subscription = match item.subscription {
                        Subscription::From => Subscription::None,
                        _ => Subscription::To,
                    };
                    self.save_item(user, item).await;
                    changed = true;
                }
                if changed {
                    self.deliver_to_interested(user, readdress(&el, &contact, user));
                }
            }
            "unsubscribed" => {
                let Some(mut item) = existing else { return };
                if !(item.ask || matches!(item.subscription, Subscription::To | Subscription::Both))
                {
                    return;
                }
                item.ask = false;
                item.subscription = match item.subscription {
                    Subscription::To => Subscription::None,
                    Subscription::Both => Subscription::From,
                    s => s,
                };
                self.save_item(user, item).await;
                self.deliver_to_interested(user, readdress(&el, &contact, user));
            }
            _ => {}
        }
    }

    fn deliver_to_interested(&self, user: &Jid, el: Element) {
        let el = Arc::new(el);
        for link in self.interested_links_of(user) {
            let _ = self.push_link(&link, el.clone());
        }
    }
}

/// True if a stanza is presence (for the router).
pub(crate) fn is_presence(stanza: &Stanza) -> bool {
    stanza.kind() == StanzaKind::Presence
}
