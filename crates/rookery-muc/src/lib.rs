//! XEP-0045: Multi-User Chat, as a service on a domain of its own
//! (`conference.<domain>` by default).
//!
//! The service is one task that owns every room of the node and handles the
//! stanzas for its domain in the order they arrive ([`Muc`] queues them);
//! it answers through a [`ComponentRouter`] (the session service). Rooms
//! live in memory; persistent rooms are also kept in a [`RoomStore`] and
//! loaded when a stanza first reaches them (docs/decisions/0018-muc.md).
//! Rooms may keep a XEP-0313 archive of their messages
//! (docs/decisions/0022-muc-archives.md). In a cluster every session node
//! runs the service and serves the rooms whose shard it owns
//! (docs/decisions/0023-components-in-a-cluster.md).

mod archive;
mod room;
mod service;
pub mod store;

use std::sync::Weak;

use rookery_core::{Component, ComponentRouter, Ownership, Placement, Stanza};
use rookery_mam::ArchiveStore;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::mpsc;

pub use room::{Affiliation, HistoryRequest, Role, RoomConfig, Whois};
pub use store::{NoRoomStore, RoomStore, StoredRoom};

/// XEP-0045 §19.1 namespaces.
pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
/// `muc#user`
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// `muc#admin`
pub const NS_MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
/// `muc#owner`
pub const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// The FORM_TYPE of the room configuration form (§15.5.3).
pub const NS_ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
/// The FORM_TYPE of the room information form (§15.5.4).
pub const NS_ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";
/// XEP-0203 delayed delivery, on history messages.
pub const NS_DELAY: &str = "urn:xmpp:delay";
/// XEP-0410 §3.2: the service answers self-pings itself.
pub const NS_SELF_PING_OPTIMIZATION: &str = "http://jabber.org/protocol/muc#self-ping-optimization";

/// The XEP this crate implements, with the version it follows.
pub const SPEC: (u16, &str) = (45, "1.35.5");

/// `[muc]` section of the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MucConfig {
    /// Runs the service.
    pub enabled: bool,
    /// The service's domain; empty means `conference.<server domain>`.
    pub domain: String,
    /// Occupants of one room at most (owners and admins may still enter a
    /// full room, XEP-0045 §7.2.10); also the cap of `muc#roomconfig_maxusers`.
    pub max_occupants_per_room: usize,
    /// Rooms one user may have created and that still exist; 0 for no limit.
    pub max_rooms_per_user: usize,
    /// Groupchat messages kept per room for the discussion history on join
    /// (§7.2.15); 0 keeps none.
    pub history_max_stanzas: usize,
    /// XEP-0313 room archives: rooms may keep an archive of their messages
    /// (owners switch it with `muc#roomconfig_enablearchiving`).
    pub archive: bool,
    /// Whether a room archives when its owner has not chosen.
    pub archive_by_default: bool,
}

impl Default for MucConfig {
    fn default() -> Self {
        MucConfig {
            enabled: true,
            domain: String::new(),
            max_occupants_per_room: 200,
            max_rooms_per_user: 10,
            history_max_stanzas: 20,
            archive: true,
            archive_by_default: true,
        }
    }
}

/// Where room archives (XEP-0313 §6.1.2) are kept.
#[derive(Clone, Debug)]
pub struct RoomArchive {
    /// The store, shared with user archives.
    pub store: Arc<dyn ArchiveStore>,
    /// Most results one query page sends (the server's `mam_max_page`).
    pub max_page: usize,
}

/// The MUC service as the session service sees it: a [`Component`] that
/// queues stanzas for the rooms' task.
#[derive(Debug)]
pub struct Muc {
    domain: String,
    queue: mpsc::UnboundedSender<Job>,
}

/// What the rooms' task is asked to do, in order.
pub(crate) enum Job {
    /// A stanza for the service or one of its rooms.
    Stanza(Stanza),
    /// Cluster: give up the rooms this node no longer owns; answered once
    /// their occupants' presences are routed.
    Release(Ownership, tokio::sync::oneshot::Sender<()>),
}

impl Muc {
    /// Starts the service for `domain` (prepared): loads the stored rooms and
    /// then handles queued stanzas until the returned handle is dropped.
    /// `router` is weak because the session service holds the component.
    /// Room archives go to `archive` (the store of user archives, keyed by
    /// the room's bare JID).
    pub fn start(
        domain: &str,
        config: MucConfig,
        store: Arc<dyn RoomStore>,
        archive: RoomArchive,
        router: Weak<dyn ComponentRouter>,
    ) -> Arc<Muc> {
        let (tx, rx) = mpsc::unbounded_channel();
        let svc = service::Service::new(domain, config, store, archive, router);
        tokio::spawn(svc.run(rx));
        Arc::new(Muc {
            domain: domain.to_owned(),
            queue: tx,
        })
    }
}

#[async_trait::async_trait]
impl Component for Muc {
    fn domain(&self) -> &str {
        &self.domain
    }

    fn handle(&self, stanza: Stanza) {
        if self.queue.send(Job::Stanza(stanza)).is_err() {
            tracing::warn!(domain = %self.domain, "the MUC service has stopped; stanza dropped");
        }
    }

    /// Rooms are sharded like accounts, by their bare JID
    /// (docs/decisions/0023-components-in-a-cluster.md).
    fn placement(&self) -> Placement {
        Placement::ByBareJid
    }

    async fn release(&self, owns: Ownership) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.queue.send(Job::Release(owns, tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

#[cfg(test)]
mod store_failure {
    use std::sync::Arc;

    use async_trait::async_trait;
    use rookery_core::users::StoreError;
    use rookery_core::{Component, ComponentRouter, Stanza};
    use tokio::sync::mpsc;

    use crate::{Muc, MucConfig, RoomArchive, RoomStore, StoredRoom};

    /// A room store whose backend is down.
    #[derive(Debug)]
    struct Down;

    #[async_trait]
    impl RoomStore for Down {
        async fn rooms(&self, _: &str) -> Result<Vec<StoredRoom>, StoreError> {
            Err(StoreError::Unavailable("down".into()))
        }
        async fn room(&self, _: &str, _: &str) -> Result<Option<StoredRoom>, StoreError> {
            Err(StoreError::Unavailable("down".into()))
        }
        async fn save_room(&self, _: &str, _: &StoredRoom) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("down".into()))
        }
        async fn delete_room(&self, _: &str, _: &str) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("down".into()))
        }
    }

    /// Hands what the service routes to the test.
    #[derive(Debug)]
    struct Out(mpsc::UnboundedSender<Stanza>);

    #[async_trait]
    impl ComponentRouter for Out {
        async fn route_from_component(&self, stanza: Stanza) {
            let _ = self.0.send(stanza);
        }
    }

    /// A join while the store cannot say whether the room exists is
    /// refused with `resource-constraint` (wait), and creates nothing: a
    /// stored room is not replaced by a new one (nor its archive cleared).
    #[tokio::test]
    async fn a_room_the_store_cannot_load_is_not_created() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let router: Arc<dyn ComponentRouter> = Arc::new(Out(tx));
        let archive = RoomArchive {
            store: Arc::new(rookery_mam::NoArchiveStore),
            max_page: 10,
        };
        let muc = Muc::start(
            "conference.example.org",
            MucConfig::default(),
            Arc::new(Down),
            archive,
            Arc::downgrade(&router),
        );
        let join = |id: &str| {
            Stanza::parse(
                rookery_xml::Element::parse(&format!(
                    "<presence xmlns='jabber:client' id='{id}' from='a@example.org/r' to='hall@conference.example.org/A'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
                ))
                .unwrap(),
            )
            .unwrap()
        };
        for id in ["j1", "j2"] {
            muc.handle(join(id));
            let got = rx.recv().await.unwrap();
            let el = got.element();
            assert_eq!(el.attr("type"), Some("error"), "{el}");
            assert_eq!(el.attr("id"), Some(id));
            assert_eq!(el.attr("to"), Some("a@example.org/r"));
            let e = el.child("error", "jabber:client").unwrap();
            assert_eq!(e.attr("type"), Some("wait"), "{el}");
            assert!(
                e.child("resource-constraint", "urn:ietf:params:xml:ns:xmpp-stanzas")
                    .is_some(),
                "{el}"
            );
            // Nothing else: no self-presence, no 201.
            assert!(rx.try_recv().is_err());
        }
    }
}

#[cfg(test)]
mod tests {
    /// docs/xeps.md lists XEP-0045 with the version this crate follows.
    #[test]
    fn xeps_doc_lists_the_spec() {
        let doc = include_str!("../../../docs/xeps.md");
        let row = format!("| XEP-{:04} | {} |", super::SPEC.0, super::SPEC.1);
        assert!(doc.contains(&row), "docs/xeps.md lacks {row}");
    }
}
