//! The node engine: every XEP-0060 request on one service (a PEP account
//! or the pubsub domain), checked against the node's access and publish
//! models, with the notifications it causes as [`Notice`]s for the caller
//! to deliver.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use rookery_core::users::StoreError;
use rookery_core::{Jid, StanzaError, new_id};
use rookery_xml::Element;
use tracing::warn;

use crate::config::{AccessModel, NodeConfig, PublishModel, SendLast, form_in, publish_options};
use crate::store::{PubsubStore, StoredItem, StoredNode};
use crate::{NS_ERRORS, NS_EVENT, NS_NODE_CONFIG, NS_OWNER, NS_PUBSUB};

/// The service-wide limits (`[pubsub]`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Items one node keeps at most (also what `max_items=max` means).
    pub max_items_per_node: usize,
    /// Nodes one account may own (its PEP nodes, or nodes it created on
    /// the service).
    pub max_nodes_per_user: usize,
    /// Bytes of one item's payload XML at most.
    pub max_item_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_items_per_node: 256,
            max_nodes_per_user: 100,
            max_item_bytes: 128 * 1024,
        }
    }
}

/// What the service knows of a requester, for the access models
/// (XEP-0060 §4.5).
#[derive(Clone, Debug, Default)]
pub struct Relation {
    /// The requester is the PEP account itself (or a service admin).
    pub owner: bool,
    /// The requester is subscribed to the owner's presence (`presence`).
    pub presence: bool,
    /// The owner's roster groups the requester is in (`roster`).
    pub groups: Vec<String>,
}

/// One node with its parsed configuration.
#[derive(Clone, Debug)]
pub struct Node {
    /// NodeID.
    pub name: String,
    /// Configuration.
    pub config: NodeConfig,
    /// Bare JID → affiliation.
    pub affiliations: BTreeMap<String, String>,
    /// JID → subscription state (`subscribed`).
    pub subscriptions: BTreeMap<String, String>,
}

impl Node {
    fn from_stored(s: StoredNode, defaults: &NodeConfig) -> Node {
        let config = serde_json::from_str(&s.config).unwrap_or_else(|e| {
            warn!(error = %e, node = %s.name, "unreadable node configuration: defaults used");
            defaults.clone()
        });
        Node {
            name: s.name,
            config,
            affiliations: s.affiliations,
            subscriptions: s.subscriptions,
        }
    }

    fn to_stored(&self) -> StoredNode {
        StoredNode {
            name: self.name.clone(),
            config: serde_json::to_string(&self.config).unwrap_or_default(),
            affiliations: self.affiliations.clone(),
            subscriptions: self.subscriptions.clone(),
        }
    }

    fn affiliation(&self, who: &Jid) -> &str {
        self.affiliations
            .get(who.to_bare().as_str())
            .map(String::as_str)
            .unwrap_or("none")
    }

    /// XEP-0060 §4.5 and §6.5.9 / §6.1.3: may `who` see the node's items
    /// and subscribe?
    pub fn may_access(&self, who: &Jid, rel: &Relation) -> Result<(), StanzaError> {
        let aff = self.affiliation(who);
        if rel.owner || aff == "owner" {
            return Ok(());
        }
        if aff == "outcast" {
            return Err(StanzaError::forbidden());
        }
        match self.config.access_model {
            AccessModel::Open => Ok(()),
            AccessModel::Presence if rel.presence => Ok(()),
            AccessModel::Presence => {
                Err(StanzaError::not_authorized()
                    .with_app("presence-subscription-required", NS_ERRORS))
            }
            AccessModel::Roster
                if rel
                    .groups
                    .iter()
                    .any(|g| self.config.roster_groups_allowed.contains(g)) =>
            {
                Ok(())
            }
            AccessModel::Roster => {
                Err(StanzaError::not_authorized().with_app("not-in-roster-group", NS_ERRORS))
            }
            AccessModel::Whitelist if matches!(aff, "publisher" | "member" | "publish-only") => {
                Ok(())
            }
            AccessModel::Whitelist => {
                Err(StanzaError::not_allowed().with_app("closed-node", NS_ERRORS))
            }
        }
    }

    fn is_owner(&self, who: &Jid, rel: &Relation) -> bool {
        rel.owner || self.affiliation(who) == "owner"
    }

    /// §7.1.3.1: may `who` publish?
    fn may_publish(&self, who: &Jid, rel: &Relation, pep: bool) -> bool {
        if self.is_owner(who, rel) {
            return true;
        }
        if pep {
            // XEP-0163 §3: only the account publishes to its PEP nodes.
            return false;
        }
        let aff = self.affiliation(who);
        if matches!(aff, "publisher" | "publish-only") {
            return true;
        }
        match self.config.publish_model {
            PublishModel::Publishers => false,
            PublishModel::Subscribers => self
                .subscriptions
                .keys()
                .any(|j| Jid::parse(j).is_ok_and(|j| j.to_bare() == who.to_bare())),
            PublishModel::Open => self.may_access(who, rel).is_ok(),
        }
    }
}

/// A notification to send (XEP-0060 §7.1.2, §7.2.2, §8.2.3, §8.4.2,
/// §8.5.2), with the node as it was, for the caller to choose recipients.
#[derive(Clone, Debug)]
pub struct Notice {
    /// The node (after the change; before it, for a deletion).
    pub node: Arc<Node>,
    /// The `<event/>` element.
    pub event: Element,
    /// Only to this entity (the last item on a new subscription, §6.1.7),
    /// else to every subscriber.
    pub only: Option<Jid>,
}

/// What a request did: the iq's answer payload, and the notifications.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The payload of the result (`None`: an empty result).
    pub reply: Option<Element>,
    /// What to tell subscribers.
    pub notices: Vec<Notice>,
}

fn unavailable(e: StoreError) -> StanzaError {
    warn!(error = %e, "pubsub store unavailable");
    StanzaError::internal_server_error()
}

fn pubsub_error(base: StanzaError, app: &'static str) -> StanzaError {
    base.with_app(app, NS_ERRORS)
}

fn node_attr(el: &Element) -> Result<String, StanzaError> {
    match el.attr("node") {
        Some(n) if !n.is_empty() => Ok(n.to_owned()),
        _ => Err(pubsub_error(
            StanzaError::bad_request("a NodeID is required"),
            "nodeid-required",
        )),
    }
}

/// One service's nodes (a PEP account, or the pubsub domain).
#[derive(Debug)]
pub struct Engine {
    store: Arc<dyn PubsubStore>,
    limits: Limits,
    seq: AtomicI64,
}

/// Which service a request is for.
#[derive(Clone, Copy, Debug)]
pub enum Service<'a> {
    /// XEP-0163: the account with this bare JID.
    Pep(&'a Jid),
    /// The pubsub service with this domain.
    Domain(&'a str),
}

impl Service<'_> {
    /// The store key.
    pub fn key(&self) -> &str {
        match self {
            Service::Pep(j) => j.as_str(),
            Service::Domain(d) => d,
        }
    }
    fn pep(&self) -> bool {
        matches!(self, Service::Pep(_))
    }
    fn defaults(&self) -> NodeConfig {
        match self {
            Service::Pep(_) => NodeConfig::pep(),
            Service::Domain(_) => NodeConfig::service(),
        }
    }
}

impl Engine {
    /// An engine over a store.
    pub fn new(store: Arc<dyn PubsubStore>, limits: Limits) -> Engine {
        Engine {
            store,
            limits,
            seq: AtomicI64::new(0),
        }
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn PubsubStore> {
        &self.store
    }

    /// A publication order number: microseconds, strictly increasing.
    fn next_seq(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let mut prev = self.seq.load(Ordering::Relaxed);
        loop {
            let next = now.max(prev + 1);
            match self
                .seq
                .compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(p) => prev = p,
            }
        }
    }

    /// One node, if it exists.
    pub async fn node(&self, svc: Service<'_>, name: &str) -> Result<Option<Node>, StanzaError> {
        Ok(self
            .store
            .node(svc.key(), name)
            .await
            .map_err(unavailable)?
            .map(|s| Node::from_stored(s, &svc.defaults())))
    }

    /// Every node of a service.
    pub async fn nodes(&self, svc: Service<'_>) -> Result<Vec<Node>, StanzaError> {
        Ok(self
            .store
            .nodes(svc.key())
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(|s| Node::from_stored(s, &svc.defaults()))
            .collect())
    }

    async fn existing(&self, svc: Service<'_>, name: &str) -> Result<Node, StanzaError> {
        self.node(svc, name)
            .await?
            .ok_or_else(StanzaError::item_not_found)
    }

    async fn save(&self, svc: Service<'_>, node: &Node) -> Result<(), StanzaError> {
        self.store
            .save_node(svc.key(), &node.to_stored())
            .await
            .map_err(unavailable)
    }

    /// The `<item/>` of an event or an items answer.
    fn item_element(item: &StoredItem, payload: bool) -> Element {
        let mut el = Element::new_static("item", NS_EVENT).with_attr("id", item.id.as_str());
        if payload
            && !item.payload.is_empty()
            && let Ok(p) = Element::parse(&item.payload)
        {
            el.push_child(p);
        }
        el
    }

    /// The notification of published items (§7.1.2.1).
    fn items_event(node: &Node, items: &[StoredItem]) -> Element {
        let mut its = Element::new_static("items", NS_EVENT).with_attr("node", node.name.as_str());
        for i in items {
            its.push_child(Self::item_element(i, node.config.deliver_payloads));
        }
        Element::new_static("event", NS_EVENT).with_child(its)
    }

    /// The last published item of a node as a notice for one entity
    /// (§6.1.7; XEP-0163 §4.3.1 on presence), if the node has one.
    pub async fn last_item_notice(
        &self,
        svc: Service<'_>,
        node: &Node,
        to: &Jid,
    ) -> Result<Option<Notice>, StanzaError> {
        let last = self
            .store
            .items(svc.key(), &node.name, Some(1))
            .await
            .map_err(unavailable)?;
        if last.is_empty() {
            return Ok(None);
        }
        Ok(Some(Notice {
            node: Arc::new(node.clone()),
            event: Self::items_event(node, &last),
            only: Some(to.clone()),
        }))
    }

    /// Handles a request: `payload` is the `<pubsub/>` child of an iq of
    /// type `set` (`set` true) or `get`, from `from`.
    pub async fn handle(
        &self,
        svc: Service<'_>,
        from: &Jid,
        set: bool,
        payload: &Element,
        rel: &Relation,
    ) -> Result<Outcome, StanzaError> {
        let owner_ns = payload.is("pubsub", NS_OWNER);
        // The operation; `<configure/>`, `<publish-options/>` and
        // `<options/>` beside it in the `pubsub` namespace qualify it.
        let Some(op) = payload
            .children()
            .find(|c| owner_ns || !matches!(c.name(), "publish-options" | "configure" | "options"))
        else {
            return Err(StanzaError::bad_request("an empty pubsub request"));
        };
        match (owner_ns, set, op.name()) {
            (false, true, "publish") => self.publish(svc, from, payload, op, rel).await,
            (false, true, "retract") => self.retract(svc, from, op, rel).await,
            (false, false, "items") => self.items(svc, from, op, rel).await,
            (false, true, "subscribe") => self.subscribe(svc, from, op, rel).await,
            (false, true, "unsubscribe") => self.unsubscribe(svc, from, op, rel).await,
            (false, true, "create") => self.create(svc, from, payload, op, rel).await,
            (false, false, "subscriptions") => self.own_subscriptions(svc, from, op).await,
            (false, false, "affiliations") => self.own_affiliations(svc, from, op).await,
            (true, false, "configure") => self.get_configure(svc, from, op, rel).await,
            (true, true, "configure") => self.set_configure(svc, from, op, rel).await,
            (true, false, "default") => Ok(Outcome {
                reply: Some(Element::new_static("pubsub", NS_OWNER).with_child(
                    Element::new_static("default", NS_OWNER).with_child(svc.defaults().to_form()),
                )),
                notices: Vec::new(),
            }),
            (true, true, "delete") => self.delete(svc, from, op, rel).await,
            (true, true, "purge") => self.purge(svc, from, op, rel).await,
            (true, false, "affiliations") => self.get_affiliations(svc, from, op, rel).await,
            (true, true, "affiliations") => self.set_affiliations(svc, from, op, rel).await,
            (true, false, "subscriptions") => self.get_subscriptions(svc, from, op, rel).await,
            (true, true, "subscriptions") => self.set_subscriptions(svc, from, op, rel).await,
            _ => Err(StanzaError::feature_not_implemented()
                .with_text(format!("pubsub request <{}/> is not supported", op.name()))),
        }
    }

    async fn count_owned(&self, svc: Service<'_>, who: &Jid) -> Result<usize, StanzaError> {
        let nodes = self.nodes(svc).await?;
        Ok(match svc {
            Service::Pep(_) => nodes.len(),
            Service::Domain(_) => nodes
                .iter()
                .filter(|n| n.affiliation(who) == "owner")
                .count(),
        })
    }

    async fn new_node(
        &self,
        svc: Service<'_>,
        from: &Jid,
        name: String,
        config: NodeConfig,
    ) -> Result<Node, StanzaError> {
        if self.count_owned(svc, from).await? >= self.limits.max_nodes_per_user {
            return Err(StanzaError::not_allowed().with_text(format!(
                "at most {} nodes per account",
                self.limits.max_nodes_per_user
            )));
        }
        let owner = match svc {
            Service::Pep(o) => o.clone(),
            Service::Domain(_) => from.to_bare(),
        };
        let node = Node {
            name,
            config,
            affiliations: BTreeMap::from([(owner.as_str().to_owned(), "owner".to_owned())]),
            subscriptions: BTreeMap::new(),
        };
        self.save(svc, &node).await?;
        Ok(node)
    }

    /// §7.1 publish, with §7.1.4 auto-create and §7.1.5 publish-options.
    async fn publish(
        &self,
        svc: Service<'_>,
        from: &Jid,
        pubsub: &Element,
        op: &Element,
        rel: &Relation,
    ) -> Result<Outcome, StanzaError> {
        let name = node_attr(op)?;
        let items: Vec<&Element> = op.children().filter(|c| c.name() == "item").collect();
        // §7.1.3.6: exactly one item (batches are not offered).
        if items.len() > 1 {
            return Err(pubsub_error(
                StanzaError::bad_request("one item per publish"),
                "invalid-payload",
            ));
        }
        let item = items.first().copied();
        let payloads: Vec<&Element> = item.map(|i| i.children().collect()).unwrap_or_default();
        if payloads.len() > 1 {
            return Err(pubsub_error(
                StanzaError::bad_request("one payload per item"),
                "invalid-payload",
            ));
        }
        let payload_xml = payloads
            .first()
            .map(|p| p.to_xml_string())
            .unwrap_or_default();
        if payload_xml.len() > self.limits.max_item_bytes {
            return Err(pubsub_error(
                StanzaError::not_acceptable().with_text(format!(
                    "items are limited to {} bytes",
                    self.limits.max_item_bytes
                )),
                "payload-too-big",
            ));
        }
        let options = publish_options(pubsub)?;
        let node = match self.node(svc, &name).await? {
            Some(node) => {
                if !node.may_publish(from, rel, svc.pep()) {
                    return Err(StanzaError::forbidden());
                }
                if let Some(form) = options {
                    node.config.check_preconditions(form)?;
                }
                node
            }
            None => {
                if svc.pep() && !rel.owner {
                    return Err(StanzaError::forbidden());
                }
                let config = match options {
                    Some(form) => svc
                        .defaults()
                        .with_preconditions(form, self.limits.max_items_per_node)?,
                    None => svc.defaults(),
                };
                self.new_node(svc, from, name.clone(), config).await?
            }
        };
        // §7.1.3.6: a persistent node needs an item; a payload-delivering
        // one needs a payload.
        if item.is_none() && node.config.persist_items {
            return Err(pubsub_error(
                StanzaError::bad_request("the node needs an item"),
                "item-required",
            ));
        }
        if payload_xml.is_empty() && node.config.deliver_payloads && item.is_some() {
            return Err(pubsub_error(
                StanzaError::bad_request("the node needs a payload"),
                "payload-required",
            ));
        }
        let id = item
            .and_then(|i| i.attr("id"))
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(new_id);
        let stored = StoredItem {
            id: id.clone(),
            seq: self.next_seq(),
            publisher: from.to_bare().as_str().to_owned(),
            payload: payload_xml,
        };
        self.store
            .put_item(
                svc.key(),
                &name,
                &stored,
                node.config.keep(self.limits.max_items_per_node),
            )
            .await
            .map_err(unavailable)?;
        let mut notices = Vec::new();
        if node.config.deliver_notifications {
            notices.push(Notice {
                event: Self::items_event(&node, std::slice::from_ref(&stored)),
                node: Arc::new(node),
                only: None,
            });
        }
        // §7.1.2 example 100: the ItemID in the answer.
        let reply = Element::new_static("pubsub", NS_PUBSUB).with_child(
            Element::new_static("publish", NS_PUBSUB)
                .with_attr("node", name)
                .with_child(Element::new_static("item", NS_PUBSUB).with_attr("id", id)),
        );
        Ok(Outcome {
            reply: Some(reply),
            notices,
        })
    }

    /// §7.2 retract.
    async fn retract(
        &self,
        svc: Service<'_>,
        from: &Jid,
        op: &Element,
        rel: &Relation,
    ) -> Result<Outcome, StanzaError> {
        let name = node_attr(op)?;
        let node = self.existing(svc, &name).await?;
        let ids: Vec<&str> = op
            .children()
            .filter(|c| c.name() == "item")
            .filter_map(|c| c.attr("id"))
            .collect();
        if ids.is_empty() {
            return Err(pubsub_error(
                StanzaError::bad_request("an ItemID is required"),
                "item-required",
            ));
        }
        if !node.may_publish(from, rel, svc.pep()) {
            return Err(StanzaError::forbidden());
        }
        let mut gone = Vec::new();
        for id in ids {
            if self
                .store
                .retract_item(svc.key(), &name, id)
                .await
                .map_err(unavailable)?
            {
                gone.push(id.to_owned());
            }
        }
        if gone.is_empty() {
            return Err(StanzaError::item_not_found());
        }
        let notify = matches!(op.attr("notify"), Some("1" | "true")) || node.config.notify_retract;
        let mut notices = Vec::new();
        if notify && node.config.deliver_notifications {
            let mut its = Element::new_static("items", NS_EVENT).with_attr("node", name.as_str());
            for id in gone {
                its.push_child(Element::new_static("retract", NS_EVENT).with_attr("id", id));
            }
            notices.push(Notice {
                node: Arc::new(node),
                event: Element::new_static("event", NS_EVENT).with_child(its),
                only: None,
            });
        }
        Ok(Outcome {
            reply: None,
            notices,
        })
    }

    /// §6.5 items retrieval: all, the last N (§6.5.7) or by id (§6.5.8).
    async fn items(
        &self,
        svc: Service<'_>,
        from: &Jid,
        op: &Element,
        rel: &Relation,
    ) -> Result<Outcome, StanzaError> {
        let name = node_attr(op)?;
        let node = self.existing(svc, &name).await?;
        node.may_access(from, rel)?;
        if !node.config.persist_items {
            return Err(StanzaError::feature_not_implemented()
                .with_app("unsupported", NS_ERRORS)
                .with_text("the node does not keep items"));
        }
        let ids: Vec<&str> = op
            .children()
            .filter(|c| c.name() == "item")
            .filter_map(|c| c.attr("id"))
            .collect();
        let items = if ids.is_empty() {
            let last = match op.attr("max_items") {
                Some(m) => Some(
                    m.trim()
                        .parse::<usize>()
                        .map_err(|_| StanzaError::bad_request("max_items is a positive number"))?,
                ),
                None => None,
            };
            self.store
                .items(svc.key(), &name, last)
                .await
                .map_err(unavailable)?
        } else {
            let mut v = Vec::new();
            for id in ids {
                if let Some(i) = self
                    .store
                    .item(svc.key(), &name, id)
                    .await
                    .map_err(unavailable)?
                {
                    v.push(i);
                }
            }
            v
        };
        let mut its = Element::new_static("items", NS_PUBSUB).with_attr("node", name.as_str());
        for i in &items {
            let mut el = Self::item_element(i, true);
            el.set_ns(NS_PUBSUB);
            its.push_child(el);
        }
        Ok(Outcome {
            reply: Some(Element::new_static("pubsub", NS_PUBSUB).with_child(its)),
            notices: Vec::new(),
        })
    }

    /// The JID of a (un)subscription: §6.1.3.1, only one's own (bare or
    /// full) JID, unless one owns the node.
    fn subscriber(op: &Element, from: &Jid, owner: bool) -> Result<Jid, StanzaError> {
        let jid = op
            .attr("jid")
            .ok_or_else(|| {
                pubsub_error(
                    StanzaError::bad_request("a JID is required"),
                    "jid-required",
                )
            })
            .and_then(|j| {
                Jid::parse(j)
                    .map_err(|_| pubsub_error(StanzaError::bad_request("a bad JID"), "invalid-jid"))
            })?;
        if jid.to_bare() != from.to_bare() && !owner {
            return Err(pubsub_error(
                StanzaError::bad_request("one subscribes one's own JID"),
                "invalid-jid",
            ));
        }
        Ok(jid)
    }

    /// §6.1 subscribe (and §6.1.7, the last item).
    async fn subscribe(
        &self,
        svc: Service<'_>,
        from: &Jid,
        op: &Element,
        rel: &Relation,
    ) -> Result<Outcome, StanzaError> {
        let name = node_attr(op)?;
        let mut node = self.existing(svc, &name).await?;
        let jid = Self::subscriber(op, from, node.is_owner(from, rel))?;
        node.may_access(&jid, rel)?;
        node.subscriptions
            .insert(jid.as_str().to_owned(), "subscribed".into());
        self.save(svc, &node).await?;
        let mut notices = Vec::new();
        if node.config.send_last_published_item != SendLast::Never
            && let Some(n) = self.last_item_notice(svc, &node, &jid).await?
        {
            notices.push(n);
        }
        let reply = Element::new_static("pubsub", NS_PUBSUB).with_child(
            Element::new_static("subscription", NS_PUBSUB)
                .with_attr("node", name)
                .with_attr("jid", jid.as_str())
                .with_attr("subscription", "subscribed"),
        );
        Ok(Outcome {
            reply: Some(reply),
            notices,
        })
    }

    /// §6.2 unsubscribe.
    async fn unsubscribe(
        &self,
        svc: Service<'_>,
        from: &Jid,
        op: &Element,
        rel: &Relation,
    ) -> Result<Outcome, StanzaError> {
        let name = node_attr(op)?;
        let mut node = self.existing(svc, &name).await?;
        let jid = Self::subscriber(op, from, node.is_owner(from, rel))?;
        if node.subscriptions.remove(jid.as_str()).is_none() {
            return Err(pubsub_error(
                StanzaError::unexpected_request().with_text("not subscribed"),
                "not-subscribed",
            ));
        }
        self.save(svc, &node).await?;
        Ok(Outcome::default())
    }

    /// §8.1 create, with §8.1.3 configuration; an instant node (§8.1.2)
    /// on the pubsub service only.
    async fn create(
        &self,
        svc: Service<'_>,
        from: &Jid,
        pubsub: &Element,
        op: &Element,
        rel: &Relation,
    ) -> Result<Outcome, StanzaError> {
        if svc.pep() && !rel.owner {
            return Err(StanzaError::forbidden());
        }
        let instant = op.attr("node").is_none_or(str::is_empty);
        let name = if instant && !svc.pep() {
            new_id()
        } else {
            // PEP nodes are named by their payload namespace: no instant ones.
            node_attr(op)?
        };
        if self.node(svc, &name).await?.is_some() {
            return Err(StanzaError::conflict().with_text("the node exists"));
        }
        let mut config = svc.defaults();
        if let Some(form) = form_in(pubsub.child("configure", NS_PUBSUB), NS_NODE_CONFIG)? {
            config.apply_form(form, self.limits.max_items_per_node)?;
        }
        if matches!(svc, Service::Domain(_))
            && matches!(
                config.access_model,
                AccessModel::Presence | AccessModel::Roster
            )
        {
            return Err(StanzaError::not_acceptable()
                .with_text("the presence and roster access models are for PEP nodes"));
        }
        self.new_node(svc, from, name.clone(), config).await?;
        Ok(Outcome {
            reply: instant.then(|| {
                Element::new_static("pubsub", NS_PUBSUB)
                    .with_child(Element::new_static("create", NS_PUBSUB).with_attr("node", name))
            }),
            notices: Vec::new(),
        })
    }

    /// §5.6 the requester's subscriptions.
    async fn own_subscriptions(
        &self,
        svc: Service<'_>,
        from: &Jid,
        op: &Element,
    ) -> Result<Outcome, StanzaError> {
        let only = op.attr("node");
        let mut subs = Element::new_static("subscriptions", NS_PUBSUB);
        if let Some(n) = only {
            subs.set_attr("node", n);
        }
        for node in self.nodes(svc).await? {
            if only.is_some_and(|n| n != node.name) {
                continue;
            }
            for (jid, state) in &node.subscriptions {
                if Jid::parse(jid).is_ok_and(|j| j.to_bare() == from.to_bare()) {
                    subs.push_child(
                        Element::new_static("subscription", NS_PUBSUB)
                            .with_attr("node", node.name.as_str())
                            .with_attr("jid", jid.as_str())
                            .with_attr("subscription", state.as_str()),
                    );
                }
            }
        }
        Ok(Outcome {
            reply: Some(Element::new_static("pubsub", NS_PUBSUB).with_child(subs)),
            notices: Vec::new(),
        })
    }

    /// §5.7 the requester's affiliations.
    async fn own_affiliations(
        &self,
        svc: Service<'_>,
        from: &Jid,
        op: &Element,
    ) -> Result<Outcome, StanzaError> {
        let only = op.attr("node");
        let mut affs = Element::new_static("affiliations", NS_PUBSUB);
        for node in self.nodes(svc).await? {
            if only.is_some_and(|n| n != node.name) {
                continue;
            }
            let a = node.affiliation(from);
            if a != "none" {
                affs.push_child(
                    Element::new_static("affiliation", NS_PUBSUB)
                        .with_attr("node", node.name.as_str())
                        .with_attr("affiliation", a),
                );
            }
        }
        Ok(Outcome {
            reply: Some(Element::new_static("pubsub", NS_PUBSUB).with_child(affs)),
            notices: Vec::new(),
        })
    }

    async fn owned(
        &self,
        svc: Service<'_>,
        from: &Jid,
        op: &Element,
        rel: &Relation,
    ) -> Result<Node, StanzaError> {
        let name = node_attr(op)?;
        let node = self.existing(svc, &name).await?;
        if !node.is_owner(from, rel) {
            return Err(StanzaError::forbidden());
        }
        Ok(node)
    }

    /// §8.2.1 the configuration form.
    async fn get_configure(
        &self,
        svc: Service<'_>,
        from: &Jid,
        op: &Element,
        rel: &Relation,
    ) -> Result<Outcome, StanzaError> {
        let node = self.owned(svc, from, op, rel).await?;
        Ok(Outcome {
            reply: Some(
                Element::new_static("pubsub", NS_OWNER).with_child(
                    Element::new_static("configure", NS_OWNER)
                        .with_attr("node", node.name.as_str())
                        .with_child(node.config.to_form()),
                ),
            ),
            notices: Vec::new(),
        })
    }

    /// §8.2.4 a submitted configuration (§8.2.3 the notification).
    async fn set_configure(
        &self,
        svc: Service<'_>,
        from: &Jid,
        op: &Element,
        rel: &Relation,
    ) -> Result<Outcome, StanzaError> {
        let mut node = self.owned(svc, from, op, rel).await?;
        let Some(form) = form_in(Some(op), NS_NODE_CONFIG)? else {
            // §8.2.5: a cancelled form changes nothing.
            return Ok(Outcome::default());
        };
        node.config
            .apply_form(form, self.limits.max_items_per_node)?;
        if matches!(svc, Service::Domain(_))
            && matches!(
                node.config.access_model,
                AccessModel::Presence | AccessModel::Roster
            )
        {
            return Err(StanzaError::not_acceptable()
                .with_text("the presence and roster access models are for PEP nodes"));
        }
        self.save(svc, &node).await?;
        // Fewer items allowed now: the oldest go.
        let keep = node.config.keep(self.limits.max_items_per_node);
        let items = self
            .store
            .items(svc.key(), &node.name, None)
            .await
            .map_err(unavailable)?;
        if items.len() > keep {
            for i in &items[..items.len() - keep] {
                self.store
                    .retract_item(svc.key(), &node.name, &i.id)
                    .await
                    .map_err(unavailable)?;
            }
        }
        let notify = node.config.notify_config;
        Ok(node_event(node, notify, "configuration"))
    }

    /// §8.4 delete.
    async fn delete(
        &self,
        svc: Service<'_>,
        from: &Jid,
        op: &Element,
        rel: &Relation,
    ) -> Result<Outcome, StanzaError> {
        let node = self.owned(svc, from, op, rel).await?;
        self.store
            .delete_node(svc.key(), &node.name)
            .await
            .map_err(unavailable)?;
        let notify = node.config.notify_delete;
        Ok(node_event(node, notify, "delete"))
    }

    /// §8.5 purge.
    async fn purge(
        &self,
        svc: Service<'_>,
        from: &Jid,
        op: &Element,
        rel: &Relation,
    ) -> Result<Outcome, StanzaError> {
        let node = self.owned(svc, from, op, rel).await?;
        self.store
            .purge(svc.key(), &node.name)
            .await
            .map_err(unavailable)?;
        let notify = node.config.notify_retract;
        Ok(node_event(node, notify, "purge"))
    }

    /// §8.9.1 the affiliations of a node.
    async fn get_affiliations(
        &self,
        svc: Service<'_>,
        from: &Jid,
        op: &Element,
        rel: &Relation,
    ) -> Result<Outcome, StanzaError> {
        let node = self.owned(svc, from, op, rel).await?;
        Ok(owner_list(
            &node.name,
            "affiliations",
            "affiliation",
            &node.affiliations,
        ))
    }

    /// §8.9.2 changing affiliations (the whitelist, publishers, outcasts).
    async fn set_affiliations(
        &self,
        svc: Service<'_>,
        from: &Jid,
        op: &Element,
        rel: &Relation,
    ) -> Result<Outcome, StanzaError> {
        let mut node = self.owned(svc, from, op, rel).await?;
        let mut next = node.affiliations.clone();
        for a in op.children().filter(|c| c.name() == "affiliation") {
            let jid = a
                .attr("jid")
                .and_then(|j| Jid::parse(j).ok())
                .ok_or_else(|| StanzaError::bad_request("an affiliation needs a JID"))?
                .to_bare();
            let kind = a.attr("affiliation").unwrap_or("");
            if !matches!(
                kind,
                "owner" | "publisher" | "publish-only" | "member" | "none" | "outcast"
            ) {
                return Err(StanzaError::bad_request("unknown affiliation"));
            }
            if let Service::Pep(o) = svc
                && jid == *o
            {
                return Err(StanzaError::not_acceptable()
                    .with_text("the account always owns its PEP nodes"));
            }
            if kind == "none" {
                next.remove(jid.as_str());
            } else {
                next.insert(jid.as_str().to_owned(), kind.to_owned());
            }
        }
        // §8.9.2.4: a node keeps an owner.
        if !next.values().any(|a| a == "owner") {
            return Err(StanzaError::not_acceptable().with_text("the node needs an owner"));
        }
        node.affiliations = next;
        self.save(svc, &node).await?;
        Ok(Outcome::default())
    }

    /// §8.8.1 the subscriptions of a node.
    async fn get_subscriptions(
        &self,
        svc: Service<'_>,
        from: &Jid,
        op: &Element,
        rel: &Relation,
    ) -> Result<Outcome, StanzaError> {
        let node = self.owned(svc, from, op, rel).await?;
        Ok(owner_list(
            &node.name,
            "subscriptions",
            "subscription",
            &node.subscriptions,
        ))
    }

    /// §8.8.2 changing subscriptions (`subscribed` or `none`).
    async fn set_subscriptions(
        &self,
        svc: Service<'_>,
        from: &Jid,
        op: &Element,
        rel: &Relation,
    ) -> Result<Outcome, StanzaError> {
        let mut node = self.owned(svc, from, op, rel).await?;
        for s in op.children().filter(|c| c.name() == "subscription") {
            let jid = s
                .attr("jid")
                .and_then(|j| Jid::parse(j).ok())
                .ok_or_else(|| StanzaError::bad_request("a subscription needs a JID"))?;
            match s.attr("subscription") {
                Some("none") => {
                    node.subscriptions.remove(jid.as_str());
                }
                Some("subscribed") => {
                    node.subscriptions
                        .insert(jid.as_str().to_owned(), "subscribed".into());
                }
                _ => return Err(StanzaError::bad_request("subscribed or none")),
            }
        }
        self.save(svc, &node).await?;
        Ok(Outcome::default())
    }
}

/// §8.2.5.1, §8.4.2, §8.5.2: when `notify`, the owner's change as an
/// `<event><{kind} node/></event>` to the node's subscribers.
fn node_event(node: Node, notify: bool, kind: &'static str) -> Outcome {
    let mut notices = Vec::new();
    if notify {
        let event = Element::new_static("event", NS_EVENT)
            .with_child(Element::new_static(kind, NS_EVENT).with_attr("node", node.name.as_str()));
        notices.push(Notice {
            node: Arc::new(node),
            event,
            only: None,
        });
    }
    Outcome {
        reply: None,
        notices,
    }
}

/// §8.8.1 / §8.9.1: a node's `<subscriptions/>` or `<affiliations/>` as its
/// owner sees them: `<{list} node>` with one `<{kind} jid {kind}=…/>` per
/// entry of `entries`.
fn owner_list<'a>(
    node: &str,
    list_name: &'static str,
    kind: &'static str,
    entries: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Outcome {
    let mut list = Element::new_static(list_name, NS_OWNER).with_attr("node", node);
    for (jid, value) in entries {
        list.push_child(
            Element::new_static(kind, NS_OWNER)
                .with_attr("jid", jid.as_str())
                .with_attr(kind, value.as_str()),
        );
    }
    Outcome {
        reply: Some(Element::new_static("pubsub", NS_OWNER).with_child(list)),
        notices: Vec::new(),
    }
}
