//! XEP-0060: Publish-Subscribe. The node engine ([`Engine`]) serves both
//! PEP (XEP-0163, on every account's bare JID, driven by the session
//! service) and the pubsub service on a domain of its own ([`Pubsub`],
//! `pubsub.<domain>`), with XEP-0223 publish-options, the storage trait
//! ([`PubsubStore`]) and the server side of XEP-0115 entity capabilities
//! ([`caps`]) that filtered notifications need
//! (docs/decisions/0019-pubsub-pep.md).

pub mod caps;
pub mod config;
pub mod engine;
mod service;
pub mod store;

use std::sync::{Arc, Weak};

use rookery_core::{Component, ComponentRouter, Stanza};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub use config::{AccessModel, MaxItems, NodeConfig, PublishModel, SendLast};
pub use engine::{Engine, Limits, Node, Notice, Outcome, Relation, Service};
pub use store::{PubsubStore, StoredItem, StoredNode};

/// `http://jabber.org/protocol/pubsub`
pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// `…#owner`
pub const NS_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
/// `…#event`
pub const NS_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// `…#errors`
pub const NS_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
/// The FORM_TYPE of node configuration (§16.4.4).
pub const NS_NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
/// The FORM_TYPE of publish options (XEP-0223, §16.4.5 of XEP-0060).
pub const NS_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

/// The XEPs this crate implements, with the versions it follows.
pub const SPECS: &[(u16, &str)] = &[(60, "1.30.0"), (223, "1.1.1"), (115, "1.6.0")];

/// The pubsub features (XEP-0060 §10) offered by PEP and the service.
pub const FEATURES: &[&str] = &[
    NS_PUBSUB,
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-roster",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#config-node-max",
    "http://jabber.org/protocol/pubsub#create-and-configure",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-items",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#manage-subscriptions",
    "http://jabber.org/protocol/pubsub#modify-affiliations",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#presence-notifications",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-affiliations",
    "http://jabber.org/protocol/pubsub#retrieve-default",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#retrieve-subscriptions",
    "http://jabber.org/protocol/pubsub#subscribe",
];

/// `[pubsub]` section of the configuration: the service on its own
/// domain, and the limits PEP shares with it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PubsubConfig {
    /// Runs the service on `domain` (PEP runs regardless).
    pub enabled: bool,
    /// The service's domain; empty means `pubsub.<server domain>`.
    pub domain: String,
    /// Items one node keeps at most, and what `pubsub#max_items` = `max`
    /// means.
    pub max_items_per_node: usize,
    /// Nodes one account may have: its PEP nodes, and the nodes it
    /// created on the service.
    pub max_nodes_per_user: usize,
    /// Bytes of one item's payload at most (more is `<not-acceptable/>`
    /// with `<payload-too-big/>`).
    pub max_item_bytes: usize,
}

impl Default for PubsubConfig {
    fn default() -> Self {
        let l = Limits::default();
        PubsubConfig {
            enabled: true,
            domain: String::new(),
            max_items_per_node: l.max_items_per_node,
            max_nodes_per_user: l.max_nodes_per_user,
            max_item_bytes: l.max_item_bytes,
        }
    }
}

impl PubsubConfig {
    /// The limits of this configuration.
    pub fn limits(&self) -> Limits {
        Limits {
            max_items_per_node: self.max_items_per_node,
            max_nodes_per_user: self.max_nodes_per_user,
            max_item_bytes: self.max_item_bytes,
        }
    }
}

/// The pubsub service as the session service sees it: a [`Component`]
/// that queues stanzas for the service's task.
#[derive(Debug)]
pub struct Pubsub {
    domain: String,
    queue: mpsc::UnboundedSender<Stanza>,
}

impl Pubsub {
    /// Starts the service for `domain` (prepared) of the server
    /// `server_domain` (whose accounts may create nodes); it handles queued
    /// stanzas until the returned handle is dropped. `router` is weak
    /// because the session service holds the component.
    pub fn start(
        domain: &str,
        server_domain: &str,
        config: &PubsubConfig,
        store: Arc<dyn PubsubStore>,
        router: Weak<dyn ComponentRouter>,
    ) -> Arc<Pubsub> {
        let (tx, rx) = mpsc::unbounded_channel();
        let svc = service::ServiceTask::new(
            domain,
            server_domain,
            Engine::new(store, config.limits()),
            router,
        );
        tokio::spawn(svc.run(rx));
        Arc::new(Pubsub {
            domain: domain.to_owned(),
            queue: tx,
        })
    }
}

impl Component for Pubsub {
    fn domain(&self) -> &str {
        &self.domain
    }

    /// Nodes are sharded by name (docs/decisions/0023): the engine keeps
    /// nothing in memory, so any session node can serve any node, and one
    /// node's requests stay in order on one owner.
    fn placement(&self) -> rookery_core::Placement {
        rookery_core::Placement::ByKey
    }

    /// The node a request is about: the `node` of the first child of
    /// `<pubsub/>` (any of the XEP-0060 namespaces), or of a disco query.
    /// Requests about no node (the service's disco, all subscriptions, an
    /// instant node) are served where they arrive.
    fn shard_key(&self, stanza: &Stanza) -> Option<rookery_core::Jid> {
        if stanza.to().is_some_and(|t| t.node().is_some()) {
            return None;
        }
        let q = stanza.element().first_child()?;
        let node = if q.name() == "pubsub" {
            q.children().find_map(|c| c.attr("node"))?
        } else {
            q.attr("node")?
        };
        rookery_core::Jid::parse(&shard_key_of(&self.domain, node)).ok()
    }

    fn handle(&self, stanza: Stanza) {
        if self.queue.send(stanza).is_err() {
            tracing::warn!(domain = %self.domain, "the pubsub service has stopped; stanza dropped");
        }
    }
}

/// The bare JID whose shard owner serves the node `node` of the service
/// `domain` in a cluster: a hash of the name as the localpart, since node
/// names need not be valid localparts.
pub fn shard_key_of(domain: &str, node: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(node.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}@{domain}")
}

/// The notification message of a notice for one recipient (XEP-0060
/// §7.1.2.1: `headline` unless the node says `normal`).
pub fn notification(from: &str, to: &rookery_core::Jid, notice: &Notice) -> rookery_xml::Element {
    let mut m = rookery_xml::Element::new_static("message", rookery_xml::ns::CLIENT)
        .with_attr("from", from)
        .with_attr("to", to.as_str())
        .with_attr("id", rookery_core::new_id());
    if notice.node.config.notification_type != "normal" {
        m.set_attr("type", "headline");
    }
    m.with_child(notice.event.clone())
}

#[cfg(test)]
mod tests {
    /// docs/xeps.md lists the XEPs with the versions this crate follows.
    #[test]
    fn xeps_doc_lists_the_specs() {
        let doc = include_str!("../../../docs/xeps.md");
        for (n, v) in super::SPECS {
            let row = format!("| XEP-{n:04} | {v} |");
            assert!(doc.contains(&row), "docs/xeps.md lacks {row}");
        }
    }
}

#[cfg(test)]
mod shard_tests {
    use super::*;

    fn st(xml: &str) -> Stanza {
        Stanza::parse(rookery_xml::Element::parse(xml).unwrap()).unwrap()
    }

    /// Requests about one node go to one key; requests about none, or to a
    /// JID with a localpart, are served where they arrive.
    #[test]
    fn requests_are_keyed_by_node_name() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let ps = Pubsub {
            domain: "pubsub.example.org".into(),
            queue: tx,
        };
        let key = |xml: &str| ps.shard_key(&st(xml)).map(|j| j.to_string());
        const PS: &str = "http://jabber.org/protocol/pubsub";
        let publish = key(&format!(
            "<iq xmlns='jabber:client' type='set' from='a@example.org/r' to='pubsub.example.org' id='1'><pubsub xmlns='{PS}'><publish node='princely/musings'><item/></publish><publish-options/></pubsub></iq>"
        ));
        let items = key(&format!(
            "<iq xmlns='jabber:client' type='get' from='b@example.org/r' to='pubsub.example.org' id='2'><pubsub xmlns='{PS}'><items node='princely/musings'/></pubsub></iq>"
        ));
        let owner = key(&format!(
            "<iq xmlns='jabber:client' type='set' from='a@example.org/r' to='pubsub.example.org' id='3'><pubsub xmlns='{PS}#owner'><delete node='princely/musings'/></pubsub></iq>"
        ));
        let disco = key(
            "<iq xmlns='jabber:client' type='get' from='b@example.org/r' to='pubsub.example.org' id='4'><query xmlns='http://jabber.org/protocol/disco#info' node='princely/musings'/></iq>",
        );
        let want = Some(shard_key_of("pubsub.example.org", "princely/musings"));
        assert_eq!(publish, want);
        assert_eq!((&items, &owner, &disco), (&want, &want, &want));
        assert!(want.as_deref().unwrap().ends_with("@pubsub.example.org"));
        let other = key(&format!(
            "<iq xmlns='jabber:client' type='get' from='b@example.org/r' to='pubsub.example.org' id='5'><pubsub xmlns='{PS}'><items node='another'/></pubsub></iq>"
        ));
        assert_ne!(other, want);
        // No node: the service's disco, an instant node.
        assert_eq!(
            key(
                "<iq xmlns='jabber:client' type='get' from='b@example.org/r' to='pubsub.example.org' id='6'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"
            ),
            None
        );
        assert_eq!(
            key(&format!(
                "<iq xmlns='jabber:client' type='set' from='a@example.org/r' to='pubsub.example.org' id='7'><pubsub xmlns='{PS}'><create/></pubsub></iq>"
            )),
            None
        );
    }
}
