//! XEP-0163: Personal Eventing Protocol, the session service's side: who
//! gets the notifications of an account's nodes. The node engine is
//! `rookery-pubsub`'s; this file keeps what only the owner of the account
//! knows: which entities sent it available presence and with which
//! XEP-0115 capabilities (the `+notify` filter, §4.3.3 of XEP-0163), the
//! caps cache (one disco#info query per new `ver`, checked per XEP-0115
//! §5.4 before it is cached), and the delivery of notifications and of
//! the last items on presence (§4.3.1).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use rookery_core::{Jid, Stanza, new_id};
use rookery_pubsub::caps::{self, Caps};
use rookery_pubsub::{Engine, Limits, Node, Notice, PubsubStore, Relation, SendLast, Service};
use rookery_xml::{Element, ns};
use tracing::{debug, warn};

use crate::LocalSessions;
use crate::roster::Subscription;

/// Verified capabilities kept at most (a new `ver` beyond it is queried
/// again each time).
const CAPS_CACHE: usize = 10_000;
/// disco#info queries in flight at most.
const MAX_PENDING: usize = 1_000;

/// A disco#info query in flight for a `ver`.
#[derive(Debug)]
struct Pending {
    caps: Caps,
    /// Who asked: (PEP account, entity whose presence carried the caps).
    waiting: Vec<(Jid, Jid)>,
}

/// The PEP state of a session service.
#[derive(Debug)]
pub(crate) struct PepState {
    store: Arc<dyn PubsubStore>,
    limits: OnceLock<Limits>,
    engine: OnceLock<Engine>,
    /// Verified caps: `hash ver` → the nodes it wants notifications of
    /// (the `+notify` features without the suffix).
    caps: Mutex<HashMap<String, Arc<HashSet<String>>>>,
    /// Features of entities whose caps hash this server cannot check
    /// (XEP-0115 §5.4 step 2: kept for that JID only).
    by_jid: Mutex<HashMap<Jid, Arc<HashSet<String>>>>,
    /// Queries in flight: iq id → what it is for.
    pending: Mutex<HashMap<String, Pending>>,
    /// Entities available to each account (their available presence
    /// reached the account's bare JID), with their caps.
    seen: Mutex<HashMap<Jid, HashMap<Jid, Option<Caps>>>>,
}

fn caps_key(c: &Caps) -> String {
    format!("{} {}", c.hash, c.ver)
}

/// The nodes of `+notify` features.
fn notify_nodes(features: &[String]) -> HashSet<String> {
    features
        .iter()
        .filter_map(|f| f.strip_suffix("+notify"))
        .map(str::to_owned)
        .collect()
}

impl PepState {
    pub(crate) fn new(store: Arc<dyn PubsubStore>) -> PepState {
        PepState {
            store,
            limits: OnceLock::new(),
            engine: OnceLock::new(),
            caps: Default::default(),
            by_jid: Default::default(),
            pending: Default::default(),
            seen: Default::default(),
        }
    }

    /// The node engine of every account.
    pub(crate) fn engine(&self) -> &Engine {
        self.engine.get_or_init(|| {
            Engine::new(
                self.store.clone(),
                self.limits.get().copied().unwrap_or_default(),
            )
        })
    }

    /// The nodes `who` wants notifications of, if its caps are known.
    fn wanted(&self, who: &Jid, caps: Option<&Caps>) -> Option<Arc<HashSet<String>>> {
        if let Some(c) = caps
            && let Ok(cache) = self.caps.lock()
            && let Some(f) = cache.get(&caps_key(c))
        {
            return Some(f.clone());
        }
        self.by_jid.lock().ok()?.get(who).cloned()
    }
}

impl LocalSessions {
    /// `[pubsub]` limits for PEP nodes; set once, before the first bind.
    pub fn set_pubsub_limits(&self, limits: Limits) {
        let _ = self.pep.limits.set(limits);
    }

    /// The PEP node engine.
    pub(crate) fn pep_engine(&self) -> &Engine {
        self.pep.engine()
    }

    /// What the PEP service of `owner` knows of `who` (XEP-0060 §4.5).
    pub(crate) async fn pep_relation(&self, owner: &Jid, who: &Jid) -> Relation {
        if who.to_bare() == *owner {
            return Relation {
                owner: true,
                ..Relation::default()
            };
        }
        match self.stores().roster.item(owner, &who.to_bare()).await {
            Ok(Some(item)) => Relation {
                owner: false,
                presence: matches!(item.subscription, Subscription::From | Subscription::Both),
                groups: item.groups,
            },
            Ok(None) => Relation::default(),
            Err(e) => {
                warn!(error = %e, "roster unavailable for a PEP access check");
                Relation::default()
            }
        }
    }

    /// Presence from `from` reached `owner`'s bare JID (a contact's
    /// broadcast, directed presence, or one of the owner's own resources):
    /// XEP-0163 §4.3.1 and §4.3.3.
    pub(crate) async fn pep_presence(&self, owner: &Jid, from: &Jid, el: &Element) {
        if from.resource().is_none() {
            return;
        }
        let available = el.attr("type").is_none();
        let caps = available.then(|| Caps::of_presence(el)).flatten();
        let changed = {
            let Ok(mut seen) = self.pep.seen.lock() else {
                return;
            };
            if !available {
                if let Some(m) = seen.get_mut(owner) {
                    m.remove(from);
                    if m.is_empty() {
                        seen.remove(owner);
                    }
                }
                return;
            }
            let m = seen.entry(owner.clone()).or_default();
            let before = m.insert(from.clone(), caps.clone());
            // A presence update with the same caps changes nothing (the
            // last items went out with the first).
            before.as_ref() != Some(&caps)
        };
        if !changed {
            return;
        }
        if let Some(wanted) = self.pep.wanted(from, caps.as_ref()) {
            self.pep_send_last(owner, from, &wanted).await;
            return;
        }
        if let Some(c) = caps {
            self.pep_query_caps(owner, from, c).await;
        }
    }

    /// The account's resource `full` is gone without unavailable presence.
    pub(crate) fn pep_gone(&self, owner: &Jid, full: &Jid) {
        if let Ok(mut seen) = self.pep.seen.lock()
            && let Some(m) = seen.get_mut(owner)
        {
            m.remove(full);
            if m.is_empty() {
                seen.remove(owner);
            }
        }
    }

    /// XEP-0115 §6.2: asks `from` what its `ver` means, once per `ver`
    /// in flight.
    async fn pep_query_caps(&self, owner: &Jid, from: &Jid, c: Caps) {
        let id = {
            let Ok(mut pending) = self.pep.pending.lock() else {
                return;
            };
            if c.hash_supported()
                && let Some(p) = pending.values_mut().find(|p| p.caps == c)
            {
                p.waiting.push((owner.clone(), from.clone()));
                return;
            }
            if pending.len() >= MAX_PENDING {
                debug!("too many caps queries in flight; one skipped");
                return;
            }
            let id = format!("caps-{}", new_id());
            pending.insert(
                id.clone(),
                Pending {
                    caps: c.clone(),
                    waiting: vec![(owner.clone(), from.clone())],
                },
            );
            id
        };
        let iq = Element::new_static("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("id", id)
            .with_attr("from", owner.as_str())
            .with_attr("to", from.as_str())
            .with_child(
                Element::new_static("query", ns::DISCO_INFO).with_attr("node", c.disco_node()),
            );
        self.pep_send(owner, from, iq).await;
    }

    /// An iq result or error addressed to an account: the answer to a caps
    /// query of ours? Returns whether it was.
    pub(crate) async fn pep_iq_response(&self, from: &Jid, stanza: &Stanza) -> bool {
        let Some(id) = stanza.id().filter(|id| id.starts_with("caps-")) else {
            return false;
        };
        let Some(p) = self.pep.pending.lock().ok().and_then(|mut m| m.remove(id)) else {
            return false;
        };
        if p.waiting.iter().all(|(_, w)| w != from) {
            // Not from whom we asked: nobody's answer.
            if let Ok(mut m) = self.pep.pending.lock() {
                m.insert(id.to_owned(), p);
            }
            return true;
        }
        let query = stanza
            .element()
            .child("query", ns::DISCO_INFO)
            .filter(|_| stanza.stanza_type() == Some("result"));
        let Some(query) = query else {
            debug!(from = %from, "caps query refused");
            return true;
        };
        let wanted = Arc::new(notify_nodes(&caps::features(query)));
        if p.caps.hash_supported() {
            if !caps::verify(&p.caps, query) {
                // §5.4 step 3.9: not cached; the next presence with this
                // ver asks again.
                warn!(from = %from, ver = %p.caps.ver, "caps verification failed");
                return true;
            }
            if let Ok(mut cache) = self.pep.caps.lock() {
                if cache.len() >= CAPS_CACHE {
                    cache.clear();
                }
                cache.insert(caps_key(&p.caps), wanted.clone());
            }
        } else if let Ok(mut m) = self.pep.by_jid.lock() {
            if m.len() >= CAPS_CACHE {
                m.clear();
            }
            m.insert(from.clone(), wanted.clone());
        }
        for (owner, who) in p.waiting {
            // Still there with these caps?
            let current = self
                .pep
                .seen
                .lock()
                .ok()
                .and_then(|s| s.get(&owner).and_then(|m| m.get(&who).cloned()));
            if current == Some(Some(p.caps.clone())) {
                let w = self
                    .pep
                    .wanted(&who, Some(&p.caps))
                    .unwrap_or(wanted.clone());
                self.pep_send_last(&owner, &who, &w).await;
            }
        }
        true
    }

    /// XEP-0163 §4.3.1: the last item of each node `who` wants and may
    /// see, to `who`.
    async fn pep_send_last(&self, owner: &Jid, who: &Jid, wanted: &HashSet<String>) {
        if wanted.is_empty() {
            return;
        }
        let engine = self.pep.engine();
        let svc = Service::Pep(owner);
        let nodes = match engine.nodes(svc).await {
            Ok(n) => n,
            Err(_) => return,
        };
        let mut rel: Option<Relation> = None;
        for node in nodes.iter().filter(|n| wanted.contains(&n.name)) {
            if node.config.send_last_published_item != SendLast::OnSubAndPresence
                || !node.config.deliver_notifications
            {
                continue;
            }
            if rel.is_none() {
                rel = Some(self.pep_relation(owner, who).await);
            }
            let Some(r) = rel.as_ref() else { continue };
            if node.may_access(who, r).is_err() {
                continue;
            }
            if let Ok(Some(n)) = engine.last_item_notice(svc, node, who).await {
                self.pep_send(
                    owner,
                    who,
                    rookery_pubsub::notification(owner.as_str(), who, &n),
                )
                .await;
            }
        }
    }

    /// Delivers notices of `owner`'s nodes (XEP-0163 §4.3.3): to the
    /// available entities whose caps ask for the node and whom the access
    /// model lets in, and to explicit subscribers.
    pub(crate) async fn pep_notify(&self, owner: &Jid, notices: Vec<Notice>) {
        for n in notices {
            if let Some(only) = &n.only {
                self.pep_send(
                    owner,
                    only,
                    rookery_pubsub::notification(owner.as_str(), only, &n),
                )
                .await;
                continue;
            }
            for to in self.pep_recipients(owner, &n.node).await {
                self.pep_send(
                    owner,
                    &to,
                    rookery_pubsub::notification(owner.as_str(), &to, &n),
                )
                .await;
            }
        }
    }

    async fn pep_recipients(&self, owner: &Jid, node: &Node) -> Vec<Jid> {
        let present: Vec<(Jid, Option<Caps>)> = self
            .pep
            .seen
            .lock()
            .ok()
            .and_then(|s| {
                s.get(owner)
                    .map(|m| m.iter().map(|(j, c)| (j.clone(), c.clone())).collect())
            })
            .unwrap_or_default();
        let mut out: Vec<Jid> = Vec::new();
        let mut relations: HashMap<Jid, Relation> = HashMap::new();
        for (who, c) in present {
            let wants = self
                .pep
                .wanted(&who, c.as_ref())
                .is_some_and(|w| w.contains(&node.name));
            if !wants {
                continue;
            }
            let bare = who.to_bare();
            if !relations.contains_key(&bare) {
                let r = self.pep_relation(owner, &who).await;
                relations.insert(bare.clone(), r);
            }
            if relations
                .get(&bare)
                .is_some_and(|r| node.may_access(&who, r).is_ok())
            {
                out.push(who);
            }
        }
        for (j, state) in &node.subscriptions {
            if state != "subscribed" {
                continue;
            }
            if let Ok(j) = Jid::parse(j)
                && !out.contains(&j)
            {
                out.push(j);
            }
        }
        out
    }

    /// Sends a stanza of `owner`'s PEP service to `to`: to a local full
    /// JID only if that resource is bound (a notification is never
    /// re-addressed to other resources), else routed as any stanza.
    async fn pep_send(&self, owner: &Jid, to: &Jid, el: Element) {
        let local = to.domain() == self.domain();
        if local && to.node().is_some() && self.blocks(&to.to_bare(), owner).await {
            // XEP-0191 §3.3: the recipient blocks the account.
            return;
        }
        if local && to.resource().is_some() && self.remote_owner(&to.to_bare()).is_none() {
            let _ = self.deliver_to_full(to, Arc::new(el));
            return;
        }
        let Ok(st) = Stanza::parse(el) else { return };
        if local {
            Box::pin(self.route_local(owner, st, to.clone())).await;
        } else {
            self.send_remote(st);
        }
    }
}
