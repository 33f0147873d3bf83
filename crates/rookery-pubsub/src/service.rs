//! The pubsub service's task: every stanza for its domain, in order.

use std::sync::Weak;

use rookery_core::{ComponentRouter, Jid, Stanza, StanzaError, StanzaKind};
use rookery_xml::{Element, ns};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::engine::{Engine, Notice, Relation, Service};
use crate::{FEATURES, NS_OWNER, NS_PUBSUB, notification};

pub(crate) struct ServiceTask {
    domain: String,
    server_domain: String,
    engine: Engine,
    router: Weak<dyn ComponentRouter>,
}

impl ServiceTask {
    pub(crate) fn new(
        domain: &str,
        server_domain: &str,
        engine: Engine,
        router: Weak<dyn ComponentRouter>,
    ) -> ServiceTask {
        ServiceTask {
            domain: domain.to_owned(),
            server_domain: server_domain.to_owned(),
            engine,
            router,
        }
    }

    pub(crate) async fn run(self, mut rx: mpsc::UnboundedReceiver<Stanza>) {
        while let Some(st) = rx.recv().await {
            let out = self.handle(&st).await;
            let Some(router) = self.router.upgrade() else {
                return;
            };
            for el in out {
                match Stanza::parse(el) {
                    Ok(st) => router.route_from_component(st).await,
                    Err((_, e)) => warn!(error = %e, "the pubsub service built a bad stanza"),
                }
            }
        }
        debug!(domain = %self.domain, "pubsub service stopped");
    }

    /// The stanzas to send in answer to one stanza.
    async fn handle(&self, st: &Stanza) -> Vec<Element> {
        let Some(from) = st.from().cloned() else {
            return Vec::new();
        };
        if st.kind() != StanzaKind::Iq || !st.is_iq_request() {
            // Messages and presence for the service have no meaning here;
            // RFC 6120 §8.3.1: errors are not answered.
            if st.kind() == StanzaKind::Message && !st.is_error() {
                return st
                    .error_reply(&StanzaError::service_unavailable())
                    .into_iter()
                    .collect();
            }
            return Vec::new();
        }
        let set = st.stanza_type() == Some("set");
        let Some(p) = st.element().first_child() else {
            return st
                .error_reply(&StanzaError::bad_request("iq without payload"))
                .into_iter()
                .collect();
        };
        let to_node = st
            .to()
            .is_some_and(|t| t.node().is_some() || t.resource().is_some());
        let result = if to_node {
            Err(StanzaError::service_unavailable())
        } else if p.is("query", ns::DISCO_INFO) && !set {
            self.disco_info(p).await
        } else if p.is("query", ns::DISCO_ITEMS) && !set {
            self.disco_items(p).await
        } else if p.is("pubsub", NS_PUBSUB) || p.is("pubsub", NS_OWNER) {
            return self.pubsub(st, &from, set, p).await;
        } else {
            Err(StanzaError::service_unavailable())
        };
        let reply = match result {
            Ok(payload) => Some(st.iq_result(Some(payload))),
            Err(e) => st.error_reply(&e),
        };
        reply.into_iter().collect()
    }

    async fn pubsub(&self, st: &Stanza, from: &Jid, set: bool, p: &Element) -> Vec<Element> {
        // Creating nodes is for the server's own accounts (their count is
        // limited per account); everything else is open to any entity the
        // node's access model lets in.
        if set && p.child("create", NS_PUBSUB).is_some() && from.domain() != self.server_domain {
            return st
                .error_reply(
                    &StanzaError::forbidden().with_text("nodes are created by local accounts"),
                )
                .into_iter()
                .collect();
        }
        let rel = Relation::default();
        let svc = Service::Domain(&self.domain);
        match self.engine.handle(svc, from, set, p, &rel).await {
            Ok(outcome) => {
                let mut out = vec![st.iq_result(outcome.reply)];
                for n in &outcome.notices {
                    out.extend(self.deliver(n));
                }
                out
            }
            Err(e) => st.error_reply(&e).into_iter().collect(),
        }
    }

    /// The messages of a notice: to its one recipient, or to every
    /// subscriber (XEP-0060 §7.1.2).
    fn deliver(&self, n: &Notice) -> Vec<Element> {
        let to: Vec<Jid> = match &n.only {
            Some(j) => vec![j.clone()],
            None => n
                .node
                .subscriptions
                .iter()
                .filter(|(_, s)| s.as_str() == "subscribed")
                .filter_map(|(j, _)| Jid::parse(j).ok())
                .collect(),
        };
        to.iter()
            .map(|j| notification(&self.domain, j, n))
            .collect()
    }

    /// XEP-0060 §5.1 (the service) and §5.3 (a node).
    async fn disco_info(&self, q: &Element) -> Result<Element, StanzaError> {
        let mut out = Element::new_static("query", ns::DISCO_INFO);
        let identity = |t: &str| {
            Element::new_static("identity", ns::DISCO_INFO)
                .with_attr("category", "pubsub")
                .with_attr("type", t)
        };
        let feature = |f: &str| Element::new_static("feature", ns::DISCO_INFO).with_attr("var", f);
        match q.attr("node") {
            Some(name) => {
                let node = self
                    .engine
                    .node(Service::Domain(&self.domain), name)
                    .await?
                    .ok_or_else(StanzaError::item_not_found)?;
                out.set_attr("node", node.name.as_str());
                out.push_child(identity("leaf"));
                out.push_child(feature(ns::DISCO_INFO));
                out.push_child(feature(NS_PUBSUB));
            }
            None => {
                out.push_child(identity("service").with_attr("name", "Publish-Subscribe"));
                out.push_child(feature(ns::DISCO_INFO));
                out.push_child(feature(ns::DISCO_ITEMS));
                for f in FEATURES {
                    out.push_child(feature(f));
                }
                out.push_child(feature("http://jabber.org/protocol/pubsub#instant-nodes"));
            }
        }
        Ok(out)
    }

    /// XEP-0060 §5.2: the nodes (a flat service: a node has no items in
    /// disco).
    async fn disco_items(&self, q: &Element) -> Result<Element, StanzaError> {
        let mut out = Element::new_static("query", ns::DISCO_ITEMS);
        if let Some(name) = q.attr("node") {
            // §5.5: a node's items by disco; only their ids.
            let svc = Service::Domain(&self.domain);
            let node = self
                .engine
                .node(svc, name)
                .await?
                .ok_or_else(StanzaError::item_not_found)?;
            out.set_attr("node", name);
            if node.config.access_model == crate::AccessModel::Open {
                let items = self
                    .engine
                    .store()
                    .items(svc.key(), name, None)
                    .await
                    .map_err(|_| StanzaError::internal_server_error())?;
                for i in items {
                    out.push_child(
                        Element::new_static("item", ns::DISCO_ITEMS)
                            .with_attr("jid", self.domain.as_str())
                            .with_attr("name", i.id),
                    );
                }
            }
            return Ok(out);
        }
        for node in self.engine.nodes(Service::Domain(&self.domain)).await? {
            out.push_child(
                Element::new_static("item", ns::DISCO_ITEMS)
                    .with_attr("jid", self.domain.as_str())
                    .with_attr("node", node.name.as_str()),
            );
        }
        Ok(out)
    }
}
