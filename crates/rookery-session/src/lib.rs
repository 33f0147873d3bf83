//! The session role: owner of online users' sessions and of routing between
//! them (RFC 6120 §7, §8, §10).
//!
//! [`LocalSessions`] implements [`SessionService`] in one process. Sessions are
//! kept in a fixed number of shards, each behind its own short-held lock, so
//! that routing lookups on different users do not contend.

mod avatar;
pub mod blocking;
pub mod carbons;
pub mod mam;
pub mod modules;
pub mod offline;
pub mod peers;
mod pep;
mod presence;
pub mod roster;
pub mod roster_cache;
pub mod sm;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rookery_core::metrics::Metrics;
use rookery_core::roles::{Resumed, SmError, SmParams};
use rookery_core::telemetry::{self, Hop, KeyValue, SpanKind};
use rookery_core::{
    BindError, BindRequest, ClientLink, DeliverError, Jid, SessionService, Stanza, StanzaError,
    StanzaKind, StoreError, StreamError, UserStore, new_id,
};
use rookery_xml::Element;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

pub use crate::modules::last::{LastActivity, LastActivityStore};
pub use crate::modules::private::{PrivateItem, PrivateStore};
pub use crate::modules::vcard::VCardStore;
use crate::modules::{Modules, ModulesConfig};

/// RFC 6120 §7.7.2.2: what to do when a client binds a resource already in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictPolicy {
    /// Close the old session with a `<conflict/>` stream error (the default,
    /// as Prosody and ejabberd do: the newest login wins).
    #[default]
    Replace,
    /// Refuse the new bind with a `<conflict/>` stanza error.
    Reject,
}

/// `[session]` section of the configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Policy for a resource already bound (RFC 6120 §7.7.2.2).
    pub resource_conflict: ConflictPolicy,
    /// Maximum resources bound at once per account (RFC 6120 §7.6.2.1).
    pub max_resources: usize,
    /// Maximum items in one roster; more get `<policy-violation/>`.
    pub roster_max_items: usize,
    /// Maximum bytes of a roster item's name (RFC 6121 §2.3.3).
    pub roster_max_name_bytes: usize,
    /// Maximum bytes of a roster group name (RFC 6121 §2.3.3).
    pub roster_max_group_bytes: usize,
    /// Messages kept in offline storage per account (XEP-0160); further ones
    /// are bounced with `<service-unavailable/>`.
    pub offline_max_messages: usize,
    /// Most XEP-0313 archive results sent for one query page; a larger (or
    /// no) RSM `<max/>` is capped to it.
    pub mam_max_page: usize,
}

impl SessionConfig {
    /// The roster limits of this configuration.
    pub fn roster_limits(&self) -> roster::RosterLimits {
        roster::RosterLimits {
            max_items: self.roster_max_items,
            max_name_bytes: self.roster_max_name_bytes,
            max_group_bytes: self.roster_max_group_bytes,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            resource_conflict: ConflictPolicy::Replace,
            max_resources: 10,
            roster_max_items: 1000,
            roster_max_name_bytes: 1023,
            roster_max_group_bytes: 1023,
            offline_max_messages: 1000,
            mam_max_page: 250,
        }
    }
}

#[derive(Debug)]
struct Resource {
    jid: Jid,
    conn_id: u64,
    link: Arc<dyn ClientLink>,
    /// `Some(priority)` once the resource sent available presence
    /// (RFC 6121 §4.2); `None` while unavailable.
    presence: Option<i8>,
    /// The resource requested the roster (RFC 6121 §2.1.6 "interested").
    interested: bool,
    /// The last presence it broadcast, to answer probes (RFC 6121 §4.3.2).
    last_presence: Option<Arc<Element>>,
    /// Where it sent directed presence (RFC 6121 §4.6), to be told when it leaves.
    directed: Vec<Jid>,
    /// The resource requested the block list (XEP-0191 §3.3 pushes).
    blocklist_interested: bool,
    /// XEP-0280: the resource enabled carbons.
    carbons: bool,
    /// The status text of its last unavailable presence, until it is
    /// available again (for XEP-0012).
    last_status: Option<String>,
    /// XEP-0198: the stream management state once enabled (`link` is then
    /// this same object).
    sm: Option<Arc<sm::SmLink>>,
}

type Shard = RwLock<HashMap<Jid, Vec<Resource>>>;

/// The recorded state of a resource (cluster handover).
fn state_of(r: &Resource) -> peers::ResourceState {
    peers::ResourceState {
        presence: r.presence,
        last_presence: r.last_presence.as_ref().map(|e| e.to_xml_string()),
        interested: r.interested,
        blocklist_interested: r.blocklist_interested,
        carbons: r.carbons,
        directed: r.directed.iter().map(|j| j.as_str().to_owned()).collect(),
        last_status: r.last_status.clone(),
        sm: r.sm.as_ref().map(|s| peers::SmState {
            id: s.id.clone(),
            timeout_secs: s.params.timeout.as_secs(),
            max_queue: s.params.max_queue,
            detached: s.is_detached(),
            queue: None,
        }),
    }
}

const SHARDS: usize = 64;
const ROSTER_LOCKS: usize = 256;
/// Ordered lanes for stanzas forwarded to components on other nodes.
const COMPONENT_LANES: usize = 16;

/// The storage traits the session features use, one per feature; each has
/// an embedded implementation in `rookery-store`.
#[derive(Clone, Debug)]
pub struct Stores {
    /// Accounts and credentials.
    pub users: Arc<dyn UserStore>,
    /// Rosters (RFC 6121 §2).
    pub roster: Arc<dyn roster::RosterStore>,
    /// Offline messages (XEP-0160).
    pub offline: Arc<dyn offline::OfflineStore>,
    /// Block lists (XEP-0191).
    pub blocklist: Arc<dyn blocking::BlocklistStore>,
    /// XEP-0054 vCards.
    pub vcards: Arc<dyn VCardStore>,
    /// XEP-0049 private XML.
    pub private: Arc<dyn PrivateStore>,
    /// XEP-0012 last activity.
    pub last_activity: Arc<dyn LastActivityStore>,
    /// XEP-0313 message archives.
    pub archive: Arc<dyn mam::ArchiveStore>,
    /// XEP-0163 PEP nodes and items (and those of the pubsub service).
    pub pubsub: Arc<dyn rookery_pubsub::PubsubStore>,
    /// XEP-0357 push registrations.
    pub push: Arc<dyn modules::push::PushStore>,
}

impl Stores {
    /// Deletes an account and everything stored for it (XEP-0077 §3.2,
    /// `rookery user del`); returns whether the account existed. The per-user
    /// data goes first, so that a failure leaves an account that can be
    /// deleted again rather than data without an account.
    pub async fn delete_account(&self, user: &Jid) -> Result<bool, StoreError> {
        self.roster.delete_user(user).await?;
        self.offline.delete_user(user).await?;
        self.blocklist.delete_user(user).await?;
        self.vcards.delete_user(user).await?;
        self.private.delete_user(user).await?;
        self.last_activity.delete_user(user).await?;
        self.archive.delete_user(user).await?;
        self.pubsub.delete_service(user.as_str()).await?;
        self.push.delete_user(user).await?;
        self.users.delete(user.as_str()).await
    }
}

/// In-process session service.
#[derive(Debug)]
pub struct LocalSessions {
    domain: String,
    config: SessionConfig,
    stores: Stores,
    metrics: Arc<Metrics>,
    modules: Modules,
    shards: Vec<Shard>,
    hasher: std::collections::hash_map::RandomState,
    /// Block lists of accounts with online resources (XEP-0191), so that
    /// routing checks them without a store round trip.
    blocklists: std::sync::Mutex<HashMap<Jid, Arc<Vec<Jid>>>>,
    /// Serializes read-modify-write of one account's roster items
    /// (subscription changes, roster sets), striped by bare JID.
    roster_locks: Vec<tokio::sync::Mutex<()>>,
    /// XEP-0441 archiving preferences of accounts with online resources.
    mam_prefs: std::sync::Mutex<HashMap<Jid, Arc<mam::ArchivePrefs>>>,
    /// XEP-0398 §4: the vCard photo hash of accounts with online
    /// resources (`None`: no photo).
    avatar_hashes: std::sync::Mutex<HashMap<Jid, Option<Arc<str>>>>,
    started: Instant,
    /// Itself, for the XEP-0198 resumption timers.
    me: Weak<LocalSessions>,
    /// The other session nodes, in a cluster (set once at start).
    peers: std::sync::OnceLock<Arc<dyn peers::Peers>>,
    /// Federation: where stanzas for other domains go (set once at start;
    /// without it they get `remote-server-not-found`).
    remote: std::sync::OnceLock<Arc<dyn rookery_core::RemoteRouter>>,
    /// Services on domains of their own (MUC), added at start; every
    /// stanza for their domains goes to them.
    components: RwLock<Vec<Arc<dyn rookery_core::Component>>>,
    /// In a cluster: the ordered lanes of stanzas for components served
    /// by another node (started with the first such stanza).
    component_lanes: std::sync::OnceLock<Vec<tokio::sync::mpsc::UnboundedSender<peers::Forward>>>,
    /// XEP-0163: who gets the notifications of the accounts' nodes.
    pep: pep::PepState,
}

impl LocalSessions {
    /// A session service for `domain` (already prepared per RFC 7622).
    pub fn new(
        domain: &str,
        config: SessionConfig,
        modules: ModulesConfig,
        scram_iterations: u32,
        stores: Stores,
        metrics: Arc<Metrics>,
    ) -> Arc<LocalSessions> {
        let roster_limits = config.roster_limits();
        let pep = pep::PepState::new(stores.pubsub.clone());
        Arc::new_cyclic(|me| LocalSessions {
            pep,
            domain: domain.to_owned(),
            config,
            stores,
            metrics,
            modules: Modules::new(modules, scram_iterations, roster_limits),
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: Default::default(),
            blocklists: Default::default(),
            roster_locks: (0..ROSTER_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            mam_prefs: Default::default(),
            avatar_hashes: Default::default(),
            started: Instant::now(),
            me: me.clone(),
            peers: std::sync::OnceLock::new(),
            remote: std::sync::OnceLock::new(),
            components: RwLock::new(Vec::new()),
            component_lanes: std::sync::OnceLock::new(),
        })
    }

    /// Joins a cluster: accounts whose shard `peers` does not give to this
    /// node are handled by their owners. Set once, before the first bind.
    pub fn set_peers(&self, peers: Arc<dyn peers::Peers>) {
        let _ = self.peers.set(peers);
    }

    /// Federation: stanzas for other domains go to `remote` (the s2s role).
    /// Set once, before the first bind.
    pub fn set_remote(&self, remote: Arc<dyn rookery_core::RemoteRouter>) {
        let _ = self.remote.set(remote);
    }

    /// Adds a service with a domain of its own (e.g. MUC): stanzas for
    /// its domain go to it. Added at start, before the first bind.
    pub fn add_component(&self, component: Arc<dyn rookery_core::Component>) {
        if let Ok(mut cs) = self.components.write() {
            cs.push(component);
        }
    }

    /// The domains of the components (server disco#items).
    pub fn component_domains(&self) -> Vec<String> {
        self.components
            .read()
            .map(|cs| cs.iter().map(|c| c.domain().to_owned()).collect())
            .unwrap_or_default()
    }

    /// The component serving `domain`, if any.
    fn component(&self, domain: &str) -> Option<Arc<dyn rookery_core::Component>> {
        let cs = self.components.read().ok()?;
        cs.iter().find(|c| c.domain() == domain).cloned()
    }

    /// Sends a stanza to another domain (RFC 6120 §10.4): one of our
    /// components, or else federation; without federation the sender gets
    /// `remote-server-not-found` at once.
    fn send_remote(&self, stanza: Stanza) {
        if let Some(c) = stanza.to().and_then(|to| self.component(to.domain())) {
            return self.to_component(&c, stanza);
        }
        match self.remote.get() {
            Some(remote) => remote.send_remote(stanza),
            None => {
                if !stanza.is_error()
                    && stanza.kind() != StanzaKind::Presence
                    && let Some(from) = stanza.from().cloned()
                {
                    self.reply_error(&from, &stanza, StanzaError::remote_server_not_found());
                }
            }
        }
    }

    /// Hands a stanza to a component here, or, in a cluster, to the node
    /// that serves it ([`rookery_core::Placement`]). Forwards keep their
    /// order per key: one lane task per hash of the key.
    fn to_component(&self, c: &Arc<dyn rookery_core::Component>, stanza: Stanza) {
        let key = match (c.placement(), stanza.to()) {
            (rookery_core::Placement::Anywhere, _) | (_, None) => None,
            (rookery_core::Placement::ByBareJid, Some(to)) => {
                to.node().is_some().then(|| to.to_bare())
            }
            (rookery_core::Placement::Single, Some(to)) => Jid::parse(to.domain()).ok(),
            (rookery_core::Placement::ByKey, Some(_)) => c.shard_key(&stanza),
        };
        let Some(key) = key.filter(|k| self.remote_owner(k).is_some()) else {
            return c.handle(stanza);
        };
        let Some(from) = stanza.from().cloned() else {
            return;
        };
        let lanes = self.component_lanes.get_or_init(|| {
            (0..COMPONENT_LANES)
                .map(|_| {
                    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<peers::Forward>();
                    let me = self.me.clone();
                    tokio::spawn(async move {
                        while let Some(job) = rx.recv().await {
                            let Some(s) = me.upgrade() else { return };
                            if let Some(peers) = s.peers.get().cloned() {
                                s.forward(&peers, job).await;
                            }
                        }
                    });
                    tx
                })
                .collect()
        });
        let lane = self.hasher.hash_one(key.as_str()) as usize % lanes.len();
        let job = peers::Forward {
            kind: peers::ForwardKind::Component,
            from,
            to: key,
            stanza: stanza.into_element(),
        };
        if lanes[lane].send(job).is_err() {
            warn!("the component forwarding lane has stopped; stanza dropped");
        }
    }

    /// In a cluster, when this node's shards change: tells every component
    /// which addresses it still serves, and returns once they have routed
    /// what that made them send.
    pub async fn release_components(&self, owns: rookery_core::Ownership) {
        let cs = self
            .components
            .read()
            .map(|c| c.clone())
            .unwrap_or_default();
        for c in cs {
            c.release(owns.clone()).await;
        }
    }

    /// The peers that own `bare`'s shard if this node does not.
    fn remote_owner(&self, bare: &Jid) -> Option<&Arc<dyn peers::Peers>> {
        self.peers.get().filter(|p| !p.owns(bare))
    }

    /// Runs a job that another session node forwarded to this one, the
    /// owner of `job.to`'s account ([`peers::Peers::forward`]).
    pub async fn inbound(&self, job: peers::Forward) -> Result<(), StanzaError> {
        let bare = job.to.to_bare();
        if self.remote_owner(&bare).is_some() {
            // A sender with a stale view of the shard map: it retries.
            return Err(
                StanzaError::internal_server_error().with_text("not the owner of the account")
            );
        }
        match job.kind {
            peers::ForwardKind::Route { archived } => {
                let stanza = Stanza::parse(job.stanza)
                    .map_err(|_| StanzaError::bad_request("not a stanza"))?;
                self.route_local_as(&job.from, stanza, job.to, archived)
                    .await;
            }
            peers::ForwardKind::Presence => self.deliver_presence(&job.to, job.stanza).await,
            peers::ForwardKind::Deliver => {
                let _ = self.deliver_full(&job.to, Arc::new(job.stanza));
            }
            peers::ForwardKind::FromRemote => {
                let stanza = Stanza::parse(job.stanza)
                    .map_err(|_| StanzaError::bad_request("not a stanza"))?;
                self.route_from_remote(stanza).await;
            }
            peers::ForwardKind::Component => {
                let stanza = Stanza::parse(job.stanza)
                    .map_err(|_| StanzaError::bad_request("not a stanza"))?;
                let c = self
                    .component(job.to.domain())
                    .ok_or_else(StanzaError::service_unavailable)?;
                c.handle(stanza);
            }
        }
        Ok(())
    }

    /// Hands a job to the owner of its recipient; a failed route is
    /// answered to the sender with the error.
    async fn forward(&self, peers: &Arc<dyn peers::Peers>, job: peers::Forward) {
        let bounce = matches!(
            job.kind,
            peers::ForwardKind::Route { .. } | peers::ForwardKind::Component
        )
        .then(|| (job.from.clone(), job.stanza.clone()));
        if let Err(e) = peers.forward(job).await {
            warn!(error = %e, "a peer session node did not take a stanza");
            if let Some((from, el)) = bounce
                && let Ok(stanza) = Stanza::parse(el)
                && !stanza.is_error()
            {
                self.reply_error(&from, &stanza, e);
            }
        }
    }

    /// The served domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The account store.
    pub fn users(&self) -> &dyn UserStore {
        self.stores.users.as_ref()
    }

    /// Every store.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// Time since the service started (XEP-0012 §5).
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// True if a resource of the account sent available presence.
    pub fn has_available_resource(&self, bare: &Jid) -> bool {
        self.shard(bare).read().is_ok_and(|m| {
            m.get(bare)
                .is_some_and(|rs| rs.iter().any(|r| r.presence.is_some()))
        })
    }

    /// Closes every session of an account with a stream error.
    pub fn close_account(&self, bare: &Jid, error: StreamError) {
        let links: Vec<Arc<dyn ClientLink>> = match self.shard(bare).read() {
            Ok(m) => m
                .get(bare)
                .map(|rs| rs.iter().map(|r| r.link.clone()).collect())
                .unwrap_or_default(),
            Err(_) => return,
        };
        for l in links {
            l.close(error.clone());
        }
    }

    /// Marks a resource as interested in roster pushes.
    pub fn set_interested(&self, jid: &Jid) {
        if let Ok(mut shard) = self.shard(&jid.to_bare()).write()
            && let Some(r) = shard
                .get_mut(&jid.to_bare())
                .and_then(|rs| rs.iter_mut().find(|r| r.jid == *jid))
        {
            r.interested = true;
        }
    }

    /// The resources of an account that satisfy `keep`, with their links
    /// (taken under the shard's read lock, used after it is released).
    fn resources_where(
        &self,
        bare: &Jid,
        keep: impl Fn(&Resource) -> bool,
    ) -> Vec<(Jid, Arc<dyn ClientLink>)> {
        let Ok(shard) = self.shard(bare).read() else {
            return Vec::new();
        };
        shard
            .get(bare)
            .map(|rs| {
                rs.iter()
                    .filter(|r| keep(r))
                    .map(|r| (r.jid.clone(), r.link.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends a roster push to every interested resource of `user` (RFC 6121 §2.1.6).
    pub fn push_roster(&self, user: &Jid, change: &roster::RosterChange, version: u64) {
        let targets = self.resources_where(user, |r| r.interested);
        for (jid, link) in targets {
            let _ = self.push(&link, Arc::new(roster::push(&jid, change, version)));
        }
    }

    /// RFC 6121 §8.5.2.2.1 / XEP-0160: a message for an account with no
    /// available resource is stored, bounced or ignored by its type.
    async fn no_available_resource(&self, from: &Jid, stanza: &Stanza, bare: &Jid, archived: bool) {
        let kind = stanza.stanza_type().unwrap_or("normal");
        if matches!(kind, "headline" | "error") {
            return;
        }
        match self.account_exists(bare).await {
            Ok(true) => {}
            Ok(false) => return self.reply_error(from, stanza, StanzaError::service_unavailable()),
            Err(e) => return self.reply_error(from, stanza, e),
        }
        if kind == "groupchat" || !offline::storable(stanza.element()) {
            if kind == "groupchat" {
                self.reply_error(from, stanza, StanzaError::service_unavailable());
            }
            // Chat states alone and no-store hints are not kept (XEP-0160 §3, XEP-0334).
            return;
        }
        // XEP-0313: archived once stored, with the stanza-id in the stored copy.
        let prepared = if archived {
            None
        } else {
            self.prepare_incoming(from, bare, stanza.element()).await
        };
        let (el, pending) = prepared.unwrap_or_else(|| (stanza.element().clone(), None));
        let stored = offline::stamp(el.clone(), &self.domain, &modules::xep0082_now());
        match self
            .stores
            .offline
            .push(
                bare,
                &stored.to_xml_string(),
                self.config.offline_max_messages,
            )
            .await
        {
            Ok(true) => {
                // XEP-0357: the account's devices learn of it.
                self.push_offline(bare, from, &el).await;
                if let Some(id) = pending {
                    self.append_archive(bare, from, id, el).await;
                }
            }
            Ok(false) => self.reply_error(
                from,
                stanza,
                StanzaError::service_unavailable()
                    .with_text("the recipient's offline storage is full"),
            ),
            Err(e) => {
                warn!(error = %e, "offline store unavailable");
                self.reply_error(from, stanza, StanzaError::internal_server_error());
            }
        }
    }

    /// XEP-0441: the archiving preferences of an account, cached while it is online.
    pub(crate) async fn archive_prefs(&self, user: &Jid) -> Arc<mam::ArchivePrefs> {
        if let Ok(cache) = self.mam_prefs.lock()
            && let Some(p) = cache.get(user)
        {
            return p.clone();
        }
        let prefs = match self.stores.archive.prefs(user).await {
            Ok(p) => Arc::new(p),
            Err(e) => {
                warn!(error = %e, "archive preferences unavailable");
                return Arc::new(mam::ArchivePrefs::default());
            }
        };
        if self.is_online(user)
            && let Ok(mut cache) = self.mam_prefs.lock()
        {
            cache.insert(user.clone(), prefs.clone());
        }
        prefs
    }

    /// Forgets cached preferences after a change.
    pub(crate) fn archive_prefs_changed(&self, user: &Jid) {
        if let Ok(mut cache) = self.mam_prefs.lock() {
            cache.remove(user);
        }
    }

    /// XEP-0441: whether `owner` archives messages with `with`.
    async fn should_archive(&self, owner: &Jid, with: &Jid) -> bool {
        match self.archive_prefs(owner).await.decide(with) {
            Some(d) => d,
            None => match self.stores.roster.item(owner, &with.to_bare()).await {
                Ok(item) => item.is_some(),
                Err(e) => {
                    warn!(error = %e, "roster unavailable for archiving preferences");
                    false
                }
            },
        }
    }

    /// XEP-0313 §3.5 / XEP-0359 §3: the copy of an incoming message for the
    /// local account `bare`: `<stanza-id/>`s claiming to be by the account
    /// removed and, if the message is to be archived, a new one added.
    /// `None` if the message stays as it is; else the new element and the
    /// archive id to append it under.
    async fn prepare_incoming(
        &self,
        from: &Jid,
        bare: &Jid,
        el: &Element,
    ) -> Option<(Element, Option<String>)> {
        let strip = mam::has_stanza_id_by(el, bare);
        let archive = mam::archivable(el) && self.should_archive(bare, from).await;
        if !strip && !archive {
            return None;
        }
        let mut el = el.clone();
        mam::strip_stanza_ids(&mut el, bare);
        let id = archive.then(new_id);
        if let Some(id) = &id {
            mam::add_stanza_id(&mut el, bare, id);
        }
        Some((el, id))
    }

    /// Appends a message to an archive; a store failure is logged, the
    /// message is still delivered.
    async fn append_archive(&self, owner: &Jid, with: &Jid, id: String, el: Element) {
        let item = mam::ArchivedMessage {
            id,
            ts: mam::now_micros(),
            with: with.to_bare(),
            stanza: el.to_xml_string(),
        };
        if let Err(e) = self.stores.archive.append(owner, &item).await {
            warn!(error = %e, "message archive unavailable");
        }
    }

    /// XEP-0313 §6.1.1: a message a local user sent, into the sender's
    /// archive (the recipient's copy is archived by [`Self::route_local`]).
    async fn archive_outgoing(&self, from: &Jid, stanza: &Stanza) {
        let owner = from.to_bare();
        let Some(to) = stanza.to() else {
            return;
        };
        if !mam::archivable(stanza.element())
            || to.to_bare() == owner
            || to.node().is_none()
            || !self.should_archive(&owner, to).await
        {
            return;
        }
        let mut el = stanza.element().clone();
        mam::strip_stanza_ids(&mut el, &owner);
        self.append_archive(&owner, to, new_id(), el).await;
    }

    /// XEP-0160 §3: hands stored messages to a resource that became
    /// available with a non-negative priority; removes what was queued.
    pub(crate) async fn flush_offline(&self, to: &Jid) {
        let bare = to.to_bare();
        let stored = match self.stores.offline.list(&bare).await {
            Ok(s) => s,
            Err(e) => return warn!(error = %e, "offline store unavailable"),
        };
        if stored.is_empty() {
            return;
        }
        let mut done = Vec::new();
        for (id, xml) in stored {
            match Element::parse(&xml) {
                Ok(el) => {
                    if self.deliver_full(to, Arc::new(el)).is_err() {
                        break;
                    }
                }
                Err(e) => warn!(error = %e, id, "unreadable offline message dropped"),
            }
            done.push(id);
        }
        if let Err(e) = self.stores.offline.remove(&bare, &done).await {
            warn!(error = %e, "delivered offline messages could not be removed");
        }
    }

    /// The lock under which `user`'s roster items are read and changed.
    pub(crate) async fn roster_lock(&self, user: &Jid) -> tokio::sync::MutexGuard<'_, ()> {
        let i = (self.hasher.hash_one(user) as usize) % ROSTER_LOCKS;
        self.roster_locks[i].lock().await
    }

    fn is_online(&self, bare: &Jid) -> bool {
        self.shard(bare)
            .read()
            .map(|m| m.contains_key(bare))
            .unwrap_or(false)
    }

    /// The block list of an account (XEP-0191), cached while it is online.
    pub(crate) async fn blocklist_of(&self, user: &Jid) -> Arc<Vec<Jid>> {
        if let Ok(cache) = self.blocklists.lock()
            && let Some(l) = cache.get(user)
        {
            return l.clone();
        }
        let list = match self.stores.blocklist.blocklist(user).await {
            Ok(l) => Arc::new(l),
            Err(e) => {
                warn!(error = %e, "block list unavailable");
                return Arc::new(Vec::new());
            }
        };
        if self.is_online(user)
            && let Ok(mut cache) = self.blocklists.lock()
        {
            cache.insert(user.clone(), list.clone());
        }
        list
    }

    /// True if `user` blocks the address `addr` (XEP-0191 §6 matching).
    pub(crate) async fn blocks(&self, user: &Jid, addr: &Jid) -> bool {
        let list = self.blocklist_of(user).await;
        !list.is_empty() && blocking::is_blocked(&list, addr)
    }

    /// Reloads a changed block list into the cache.
    pub(crate) async fn blocklist_changed(&self, user: &Jid) {
        if let Ok(mut cache) = self.blocklists.lock() {
            cache.remove(user);
        }
        self.blocklist_of(user).await;
    }

    /// Marks a resource as interested in block list pushes.
    pub(crate) fn set_blocklist_interested(&self, jid: &Jid) {
        self.with_resource(jid, |r| r.blocklist_interested = true);
    }

    /// XEP-0191 §3.3–§3.5: pushes a block or unblock to the interested resources.
    pub(crate) fn push_blocklist(&self, user: &Jid, kind: &'static str, jids: &[Jid]) {
        let targets = self.resources_where(user, |r| r.blocklist_interested);
        for (to, link) in targets {
            let mut b = Element::new_static(kind, blocking::NS);
            for j in jids {
                b.push_child(
                    Element::new_static("item", blocking::NS).with_attr("jid", j.as_str()),
                );
            }
            let iq = Element::new_static("iq", rookery_xml::ns::CLIENT)
                .with_attr("type", "set")
                .with_attr("id", new_id())
                .with_attr("to", to.as_str())
                .with_child(b);
            let _ = self.push(&link, Arc::new(iq));
        }
    }

    /// XEP-0280 §4: turns carbons on or off for a resource.
    pub(crate) fn set_carbons(&self, jid: &Jid, on: bool) {
        self.with_resource(jid, |r| r.carbons = on);
    }

    /// XEP-0280 §7/§8: copies of `original` to the carbons-enabled resources
    /// of `user` other than those in `except`.
    /// Returns the resources copied.
    fn send_carbons(
        &self,
        direction: &'static str,
        user: &Jid,
        except: &[Jid],
        original: &Element,
    ) -> Vec<Jid> {
        if !carbons::eligible(original) {
            return Vec::new();
        }
        let targets = self.resources_where(user, |r| r.carbons && !except.contains(&r.jid));
        let mut copied = Vec::with_capacity(targets.len());
        for (to, link) in targets {
            let _ = self.push(
                &link,
                Arc::new(carbons::wrap(direction, user, &to, original)),
            );
            copied.push(to);
        }
        copied
    }

    fn with_resource<T>(&self, jid: &Jid, f: impl FnOnce(&mut Resource) -> T) -> Option<T> {
        let bare = jid.to_bare();
        let out = {
            let mut shard = self.shard(&bare).write().ok()?;
            shard
                .get_mut(&bare)
                .and_then(|rs| rs.iter_mut().find(|r| r.jid == *jid))
                .map(f)
        };
        if out.is_some() {
            self.notify(jid);
        }
        out
    }

    /// Tells the peers (cluster mode) the current state of a resource.
    fn notify(&self, jid: &Jid) {
        let Some(peers) = self.peers.get() else {
            return;
        };
        let bare = jid.to_bare();
        let found = self.shard(&bare).read().ok().and_then(|m| {
            m.get(&bare)?
                .iter()
                .find(|r| r.jid == *jid)
                .map(|r| (r.conn_id, state_of(r)))
        });
        if let Some((conn_id, state)) = found {
            peers.resource_changed(jid, conn_id, Some(state));
        }
    }

    /// Rebuilds a resource of an account this node took over (cluster
    /// handover), from the state its previous owner recorded. `link` is
    /// the client's connection, or `None` if its cm is gone: then only a
    /// resumable session is kept (detached, until resumed or timed out).
    /// Returns whether the resource was restored.
    pub fn restore(
        &self,
        jid: Jid,
        conn_id: u64,
        link: Option<Arc<dyn ClientLink>>,
        state: peers::ResourceState,
    ) -> bool {
        let bare = jid.to_bare();
        let sm = state.sm.as_ref().map(|s| {
            let params = SmParams {
                resume: s.id.is_some(),
                timeout: Duration::from_secs(s.timeout_secs),
                max_queue: s.max_queue,
            };
            let inner = if s.detached { None } else { link.clone() };
            Arc::new(match &s.queue {
                Some(q) => sm::SmLink::handed(s.id.clone(), params, inner, q),
                None => sm::SmLink::rebuilt(s.id.clone(), params, inner),
            })
        });
        let handed = state.sm.as_ref().is_some_and(|s| s.queue.is_some());
        let link: Arc<dyn ClientLink> = match (&sm, link) {
            (Some(sm), _) if sm.id.is_some() || !sm.is_detached() => sm.clone(),
            (None, Some(l)) => l,
            _ => return false,
        };
        let detached = sm.as_ref().is_some_and(|s| s.is_detached());
        let timeout = sm.as_ref().map(|s| s.params.timeout);
        let resource = Resource {
            jid: jid.clone(),
            conn_id,
            link,
            presence: state.presence,
            interested: state.interested,
            last_presence: state
                .last_presence
                .as_deref()
                .and_then(|x| Element::parse(x).ok())
                .map(Arc::new),
            directed: state
                .directed
                .iter()
                .filter_map(|j| Jid::parse(j).ok())
                .collect(),
            blocklist_interested: state.blocklist_interested,
            carbons: state.carbons,
            last_status: state.last_status,
            sm,
        };
        {
            let Ok(mut shard) = self.shard(&bare).write() else {
                return false;
            };
            let rs = shard.entry(bare).or_default();
            if let Some(i) = rs.iter().position(|r| r.jid == jid) {
                rs[i] = resource;
            } else {
                rs.push(resource);
                self.metrics.sessions.inc();
            }
        }
        if handed {
            // The queue in Redis is a one-time hand-over: the state written
            // now replaces it, so that a later takeover cannot replay it.
            self.notify(&jid);
        }
        if detached && let Some(wait) = timeout {
            self.expire_later(jid, conn_id, wait);
        }
        true
    }

    /// Forgets every resource of an account without a word to anyone: its
    /// shard moved to another node, which took the sessions over.
    pub fn forget(&self, bare: &Jid) {
        let removed = self
            .shard(bare)
            .write()
            .ok()
            .and_then(|mut m| m.remove(bare))
            .map(|rs| rs.len())
            .unwrap_or(0);
        for _ in 0..removed {
            self.metrics.sessions.dec();
        }
        self.forget_caches(bare);
    }

    /// Drops what is cached for an account while it is online.
    fn forget_caches(&self, bare: &Jid) {
        if let Ok(mut cache) = self.blocklists.lock() {
            cache.remove(bare);
        }
        if let Ok(mut cache) = self.mam_prefs.lock() {
            cache.remove(bare);
        }
        self.vcard_changed(bare);
    }

    /// The bound resources of an account with their connection ids.
    pub fn connections_of(&self, bare: &Jid) -> Vec<(Jid, u64)> {
        self.shard(bare)
            .read()
            .ok()
            .and_then(|m| {
                m.get(bare)
                    .map(|rs| rs.iter().map(|r| (r.jid.clone(), r.conn_id)).collect())
            })
            .unwrap_or_default()
    }

    /// Tells the peers the state of every resource again (after the
    /// cluster state was lost); returns how many.
    pub fn republish(&self) -> usize {
        let mut n = 0;
        for bare in self.bound_accounts() {
            for (jid, _) in self.connections_of(&bare) {
                self.notify(&jid);
                n += 1;
            }
        }
        n
    }

    /// Graceful handover of `accounts`: writes each of their resources'
    /// state through [`peers::Peers::resource_changed`] with the XEP-0198
    /// counters and unacknowledged stanzas included, so that the next owner
    /// continues them exactly. The caller stops serving these accounts
    /// first, and flushes the writes before releasing them. Returns the
    /// number of resources written.
    pub fn hand_over(&self, accounts: &[Jid]) -> usize {
        let Some(peers) = self.peers.get() else {
            return 0;
        };
        let mut n = 0;
        for bare in accounts {
            let states: Vec<(Jid, u64, peers::ResourceState)> = match self.shard(bare).read() {
                Ok(m) => m
                    .get(bare)
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        let mut state = state_of(r);
                        if let (Some(s), Some(link)) = (state.sm.as_mut(), r.sm.as_ref()) {
                            s.queue = Some(link.snapshot());
                        }
                        (r.jid.clone(), r.conn_id, state)
                    })
                    .collect(),
                Err(_) => continue,
            };
            for (jid, conn_id, state) in states {
                peers.resource_changed(&jid, conn_id, Some(state));
                n += 1;
            }
        }
        n
    }

    /// The accounts with bound resources on this node.
    pub fn bound_accounts(&self) -> Vec<Jid> {
        self.shards
            .iter()
            .filter_map(|s| s.read().ok().map(|m| m.keys().cloned().collect::<Vec<_>>()))
            .flatten()
            .collect()
    }

    /// The connection of a session went away without the cm saying so (its
    /// cm died): a resumable session waits for its client to resume on
    /// another cm, any other ends as if the stream had closed.
    pub async fn connection_lost(&self, jid: &Jid, conn_id: u64) {
        match self.sm_of(jid, conn_id) {
            Some(sm) if sm.id.is_some() => {
                let inbound = sm.inbound();
                self.detach(jid, conn_id, inbound).await;
            }
            _ => self.unbind(jid, conn_id).await,
        }
    }

    fn expire_later(&self, jid: Jid, conn_id: u64, wait: Duration) {
        let me = self.me.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(s) = me.upgrade() {
                s.sm_expire(&jid, conn_id).await;
            }
        });
    }

    /// Records a resource's presence; returns whether it was available before.
    pub(crate) fn update_presence(
        &self,
        jid: &Jid,
        priority: Option<i8>,
        last: Option<Arc<Element>>,
    ) -> bool {
        self.with_resource(jid, |r| {
            let was = r.presence.is_some();
            r.presence = priority;
            r.last_presence = if priority.is_some() { last } else { None };
            was
        })
        .unwrap_or(false)
    }

    /// RFC 6121 §4.6.2: remembers (or, for unavailable, forgets) a directed
    /// presence target of a resource.
    pub(crate) fn note_directed(&self, from: &Jid, to: &Jid, available: bool) {
        self.with_resource(from, |r| {
            r.directed.retain(|j| j != to);
            if available && r.presence.is_some() {
                r.directed.push(to.clone());
            }
        });
    }

    /// Takes the directed presence targets of a resource.
    pub(crate) fn take_directed(&self, from: &Jid) -> Vec<Jid> {
        self.with_resource(from, |r| std::mem::take(&mut r.directed))
            .unwrap_or_default()
    }

    /// The available resources of an account with their last presence.
    pub(crate) fn current_presence(&self, bare: &Jid) -> Vec<(Jid, Element)> {
        let Ok(shard) = self.shard(bare).read() else {
            return Vec::new();
        };
        shard
            .get(bare)
            .map(|rs| {
                rs.iter()
                    .filter(|r| r.presence.is_some())
                    .map(|r| {
                        let el = r.last_presence.as_deref().cloned().unwrap_or_else(|| {
                            Element::new_static("presence", rookery_xml::ns::CLIENT)
                        });
                        (r.jid.clone(), el)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Links of the available resources of an account.
    pub(crate) fn available_links_of(&self, bare: &Jid) -> Vec<Arc<dyn ClientLink>> {
        self.available_links(bare)
    }

    /// Links of the resources that requested the roster.
    pub(crate) fn interested_links_of(&self, bare: &Jid) -> Vec<Arc<dyn ClientLink>> {
        self.resources_where(bare, |r| r.interested)
            .into_iter()
            .map(|(_, l)| l)
            .collect()
    }

    /// Queues for one link, handling a full queue.
    pub(crate) fn push_link(
        &self,
        link: &Arc<dyn ClientLink>,
        el: Arc<Element>,
    ) -> Result<(), DeliverError> {
        self.push(link, el)
    }

    /// Delivers to one bound full JID.
    pub(crate) fn deliver_to_full(&self, to: &Jid, el: Arc<Element>) -> Result<(), DeliverError> {
        self.deliver_full(to, el)
    }

    /// The server modules (for disco and docs).
    pub fn modules(&self) -> &Modules {
        &self.modules
    }

    fn shard(&self, bare: &Jid) -> &Shard {
        &self.shards[(self.hasher.hash_one(bare) as usize) % SHARDS]
    }

    /// Number of bound sessions.
    pub fn session_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.read()
                    .map(|m| m.values().map(Vec::len).sum::<usize>())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Closes every session with `<system-shutdown/>` (RFC 6120 §4.9.3.17).
    pub fn shutdown(&self) {
        for shard in &self.shards {
            let links: Vec<Arc<dyn ClientLink>> = match shard.read() {
                Ok(m) => m.values().flatten().map(|r| r.link.clone()).collect(),
                Err(_) => continue,
            };
            for l in links {
                l.close(StreamError::new("system-shutdown"));
            }
        }
    }

    fn is_local_domain(&self, jid: &Jid) -> bool {
        jid.domain() == self.domain
    }

    /// Sends a reply to a session of ours, or over federation to a sender
    /// on another server.
    fn reply(&self, to: &Jid, el: Element) {
        if !self.is_local_domain(to) {
            match Stanza::parse(el) {
                Ok(st) => self.send_remote(st),
                Err((_, e)) => warn!(error = %e, "a reply to a remote sender is not a stanza"),
            }
            return;
        }
        if let Some(peers) = self.remote_owner(&to.to_bare()) {
            // A reply to a sender on another node (an error from the
            // recipient's side): delivered in the background, in order with
            // nothing else, as replies are.
            let (peers, to) = (peers.clone(), to.clone());
            let from = Jid::parse(self.domain()).unwrap_or_else(|_| to.clone());
            tokio::spawn(async move {
                let job = peers::Forward {
                    kind: peers::ForwardKind::Deliver,
                    from,
                    to,
                    stanza: el,
                };
                if let Err(e) = peers.forward(job).await {
                    warn!(error = %e, "a reply to another node's session was lost");
                }
            });
            return;
        }
        if to.node().is_none() {
            // An answer to the server itself: an error it caused for one
            // of its own requests (a push notification, XEP-0357 §7.1).
            return self.answer_to_server(el);
        }
        let _ = self.deliver_full(to, Arc::new(el));
    }

    fn reply_error(&self, from: &Jid, stanza: &Stanza, err: StanzaError) {
        if let Some(r) = stanza.error_reply(&err) {
            self.reply(from, r);
        }
    }

    /// Delivers to one full JID, if bound.
    fn deliver_full(&self, to: &Jid, el: Arc<Element>) -> Result<(), DeliverError> {
        let link = {
            let Ok(shard) = self.shard(&to.to_bare()).read() else {
                return Err(DeliverError::Closed);
            };
            let Some(r) = shard
                .get(&to.to_bare())
                .and_then(|rs| rs.iter().find(|r| r.jid == *to))
            else {
                return Err(DeliverError::Closed);
            };
            r.link.clone()
        };
        self.push(&link, el)
    }

    fn push(&self, link: &Arc<dyn ClientLink>, el: Arc<Element>) -> Result<(), DeliverError> {
        let r = link.deliver(el);
        if r == Err(DeliverError::Full) {
            // The client stopped reading: drop it rather than queue without
            // bound; its messages are bounced to the sender.
            self.metrics.slow_consumers.inc();
            link.close(StreamError::new("policy-violation").with_text("client is not reading"));
        }
        r
    }

    /// The links of a user's resources that should get a message sent to the
    /// bare JID: the available resources with the highest non-negative
    /// priority (RFC 6121 §8.5.2.1.1; all of them on a tie).
    fn bare_targets(&self, bare: &Jid, all_non_negative: bool) -> Vec<(Jid, Arc<dyn ClientLink>)> {
        let Ok(shard) = self.shard(bare).read() else {
            return Vec::new();
        };
        let Some(rs) = shard.get(bare) else {
            return Vec::new();
        };
        let best = rs
            .iter()
            .filter_map(|r| r.presence)
            .filter(|p| *p >= 0)
            .max();
        rs.iter()
            .filter(|r| match (all_non_negative, best) {
                // RFC 6121 §8.5.2.1.1: headlines go to every non-negative resource.
                (true, _) => r.presence.is_some_and(|p| p >= 0),
                (false, Some(best)) => r.presence == Some(best),
                (false, None) => false,
            })
            .map(|r| (r.jid.clone(), r.link.clone()))
            .collect()
    }

    fn available_links(&self, bare: &Jid) -> Vec<Arc<dyn ClientLink>> {
        self.resources_where(bare, |r| r.presence.is_some())
            .into_iter()
            .map(|(_, l)| l)
            .collect()
    }

    /// Handles an iq addressed to the server, or to an account on its behalf.
    async fn server_iq(&self, from: &Jid, stanza: &Stanza) {
        if !stanza.is_iq_request() {
            // Results and errors to the server: the caps queries of PEP
            // (XEP-0115, sent from the account) and the answers to push
            // notifications (XEP-0357 §7.1, sent from the domain).
            if stanza.to().is_some_and(|t| t.node().is_some()) {
                self.pep_iq_response(from, stanza).await;
            } else {
                self.push_answer(from, stanza).await;
            }
            return;
        }
        let target = stanza.to().cloned();
        let (result, after) = self
            .modules
            .handle_iq(self, from, target.as_ref(), stanza)
            .await;
        match result {
            Ok(payload) => self.reply(from, stanza.iq_result(payload)),
            Err(e) => self.reply_error(from, stanza, e),
        }
        for action in after {
            match action {
                modules::After::CloseAccount(bare, err) => self.close_account(&bare, err),
                modules::After::Deliver(to, el) => self.reply(&to, el),
                modules::After::PushRoster(user, change, v) => self.push_roster(&user, &change, v),
                modules::After::Route(from, st) => Box::pin(self.route(&from, st)).await,
                modules::After::PushBlocklist(user, kind, jids) => {
                    self.push_blocklist(&user, kind, &jids)
                }
                modules::After::Pep(owner, notices) => self.pep_notify(&owner, notices).await,
            }
        }
    }

    async fn account_exists(&self, bare: &Jid) -> Result<bool, StanzaError> {
        self.stores.users.exists(bare.as_str()).await.map_err(|e| {
            warn!(error = %e, "user store unavailable");
            StanzaError::internal_server_error()
        })
    }

    /// RFC 6120 §10.5: a stanza for a local account.
    async fn route_local(&self, from: &Jid, stanza: Stanza, to: Jid) {
        self.route_local_as(from, stanza, to, false).await;
    }

    /// [`Self::route_local`]; `archived` for a message already in the
    /// recipient's archive (XEP-0198 rerouting of unacknowledged messages).
    async fn route_local_as(&self, from: &Jid, mut stanza: Stanza, to: Jid, archived: bool) {
        let bare = to.to_bare();
        if let Some(peers) = self.remote_owner(&bare) {
            let job = peers::Forward {
                kind: peers::ForwardKind::Route { archived },
                from: from.clone(),
                to,
                stanza: stanza.element().clone(),
            };
            return self.forward(peers, job).await;
        }
        let mut archived = archived;
        // XEP-0191 §3.3: the recipient blocks the sender — appear offline.
        if from.to_bare() != bare && self.blocks(&bare, from).await {
            let answer = match stanza.kind() {
                StanzaKind::Message => !stanza.is_error(),
                StanzaKind::Iq => stanza.is_iq_request(),
                StanzaKind::Presence => false,
            };
            if answer {
                self.reply_error(from, &stanza, StanzaError::service_unavailable());
            }
            return;
        }
        // XEP-0357 §8: a push service revoking the account's registration.
        if stanza.kind() == StanzaKind::Message
            && to.resource().is_none()
            && self
                .push_affiliation_notice(&bare, from, stanza.element())
                .await
        {
            return;
        }
        // XEP-0313: archived for an online account now, else once stored offline.
        if !archived && stanza.kind() == StanzaKind::Message && self.is_online(&bare) {
            if let Some((el, id)) = self.prepare_incoming(from, &bare, stanza.element()).await {
                if let Some(id) = id {
                    self.append_archive(&bare, from, id, el.clone()).await;
                }
                stanza = Stanza::new(
                    stanza.kind(),
                    stanza.from().cloned(),
                    stanza.to().cloned(),
                    el,
                );
            }
            archived = true;
        }
        if to.resource().is_some() {
            match self.deliver_full(&to, stanza.shared()) {
                Ok(()) => {
                    if stanza.kind() == StanzaKind::Message {
                        let copied = self.send_carbons(
                            "received",
                            &bare,
                            std::slice::from_ref(&to),
                            stanza.element(),
                        );
                        // XEP-0357: to hibernated sessions.
                        let got = [std::slice::from_ref(&to), &copied];
                        self.push_delivered(&bare, &got, from, stanza.element())
                            .await;
                    }
                    return;
                }
                Err(DeliverError::Full) => {
                    if !stanza.is_error() && stanza.kind() != StanzaKind::Presence {
                        self.reply_error(from, &stanza, StanzaError::resource_constraint());
                    }
                    return;
                }
                Err(DeliverError::Closed) => {}
            }
            // §10.5.4 / RFC 6121 §8.5.3.2: no such resource.
            match stanza.kind() {
                StanzaKind::Iq => {
                    self.reply_error(from, &stanza, StanzaError::service_unavailable());
                    return;
                }
                StanzaKind::Presence => return,
                StanzaKind::Message => {
                    if matches!(stanza.stanza_type(), Some("groupchat" | "error")) {
                        self.reply_error(from, &stanza, StanzaError::service_unavailable());
                        return;
                    }
                    // chat/normal/headline: treated as sent to the bare JID.
                }
            }
        }
        match stanza.kind() {
            StanzaKind::Iq => {
                // §10.5.3.2... RFC 6120 §10.3.3/§10.5: the server answers iqs to an
                // account's bare JID on the account's behalf.
                match self.account_exists(&bare).await {
                    Ok(true) => self.server_iq(from, &stanza).await,
                    Ok(false) => {
                        self.reply_error(from, &stanza, StanzaError::service_unavailable())
                    }
                    Err(e) => self.reply_error(from, &stanza, e),
                }
            }
            StanzaKind::Message => {
                let targets = self.bare_targets(&bare, stanza.stanza_type() == Some("headline"));
                if targets.is_empty() {
                    self.no_available_resource(from, &stanza, &bare, archived)
                        .await;
                    return;
                }
                let mut delivered = false;
                for (_, link) in &targets {
                    delivered |= self.push(link, stanza.shared()).is_ok();
                }
                if !delivered && !stanza.is_error() {
                    self.reply_error(from, &stanza, StanzaError::resource_constraint());
                }
                if delivered {
                    let got: Vec<Jid> = targets.into_iter().map(|(j, _)| j).collect();
                    let copied = self.send_carbons("received", &bare, &got, stanza.element());
                    // XEP-0357: to hibernated sessions.
                    self.push_delivered(&bare, &[&got, &copied], from, stanza.element())
                        .await;
                }
            }
            StanzaKind::Presence => {
                // Directed presence to a bare JID goes to every available resource
                // (RFC 6121 §4.6); subscription handling is the IM issue's.
                for link in self.available_links(&bare) {
                    let _ = self.push(&link, stanza.shared());
                }
            }
        }
    }
}

#[async_trait]
impl SessionService for LocalSessions {
    async fn bind(&self, req: BindRequest) -> Result<Jid, BindError> {
        let bare = req.user.to_bare();
        let resource = req.resource.unwrap_or_else(new_id);
        let jid = bare
            .with_resource(&resource)
            .map_err(|e| BindError::Internal(e.to_string()))?;
        let replaced = {
            let mut shard = self
                .shard(&bare)
                .write()
                .map_err(|_| BindError::Internal("lock poisoned".into()))?;
            let rs = shard.entry(bare.clone()).or_default();
            let existing = rs.iter().position(|r| r.jid == jid);
            match (existing, self.config.resource_conflict) {
                (Some(_), ConflictPolicy::Reject) => return Err(BindError::Conflict),
                (None, _) if rs.len() >= self.config.max_resources => {
                    return Err(BindError::ResourceConstraint);
                }
                _ => {}
            }
            let new = Resource {
                jid: jid.clone(),
                conn_id: req.conn_id,
                link: req.link,
                presence: None,
                interested: false,
                last_presence: None,
                directed: Vec::new(),
                blocklist_interested: false,
                carbons: false,
                last_status: None,
                sm: None,
            };
            match existing {
                Some(i) => Some(std::mem::replace(&mut rs[i], new)),
                None => {
                    rs.push(new);
                    None
                }
            }
        };
        // What the replaced session's client never acknowledged (XEP-0198)
        // goes to the new one, which is the same full JID: a client that
        // logs in again instead of resuming loses nothing.
        let mut unacked = Vec::new();
        if let Some(old) = replaced {
            info!(jid = %jid, "resource conflict: replacing the old session");
            old.link
                .close(StreamError::new("conflict").with_text("replaced by a new session"));
            if let Some(sm) = &old.sm {
                unacked = sm.take_unacked();
            }
        } else {
            self.metrics.sessions.inc();
        }
        debug!(jid = %jid, "bound");
        self.notify(&jid);
        self.push_client_back(&jid);
        if !unacked.is_empty() {
            self.reroute_unacked(&jid, unacked).await;
        }
        Ok(jid)
    }

    async fn unbind(&self, jid: &Jid, conn_id: u64) {
        let bare = jid.to_bare();
        let (removed, offline_now) = {
            let Ok(mut shard) = self.shard(&bare).write() else {
                return;
            };
            let mut removed = None;
            let mut offline_now = false;
            if let Some(rs) = shard.get_mut(&bare) {
                if let Some(i) = rs
                    .iter()
                    .position(|r| r.jid == *jid && r.conn_id == conn_id)
                {
                    let r = rs.remove(i);
                    self.metrics.sessions.dec();
                    // XEP-0012 §3: the account's last session, or its last
                    // available resource, is gone.
                    offline_now = rs.is_empty()
                        || (r.presence.is_some() && !rs.iter().any(|r| r.presence.is_some()));
                    removed = Some(r);
                }
                if rs.is_empty() {
                    shard.remove(&bare);
                    self.forget_caches(&bare);
                }
            }
            (removed, offline_now)
        };
        if let Some(r) = removed {
            if let Some(peers) = self.peers.get() {
                peers.resource_changed(jid, conn_id, None);
            }
            let status = r.last_status.unwrap_or_default();
            // RFC 6121 §4.5.2: gone without unavailable presence.
            self.went_offline(jid, r.presence.is_some(), r.directed)
                .await;
            if offline_now {
                modules::last::record(&self.stores, &bare, status).await;
            }
            if let Some(sm) = r.sm {
                self.reroute_unacked(jid, sm.take_unacked()).await;
            }
        }
    }

    async fn sm_enable(
        &self,
        jid: &Jid,
        conn_id: u64,
        params: SmParams,
    ) -> Result<Option<String>, SmError> {
        let bare = jid.to_bare();
        let Ok(mut shard) = self.shard(&bare).write() else {
            return Err(SmError::NotFound);
        };
        let Some(r) = shard.get_mut(&bare).and_then(|rs| {
            rs.iter_mut()
                .find(|r| r.jid == *jid && r.conn_id == conn_id)
        }) else {
            return Err(SmError::NotFound);
        };
        if r.sm.is_some() {
            return Err(SmError::Unexpected);
        }
        let id = params.resume.then(new_id);
        let mut enabled = Element::new_static("enabled", sm::NS);
        if let Some(id) = &id {
            enabled.set_attr("id", id.as_str());
            enabled.set_attr("resume", "true");
            enabled.set_attr("max", params.timeout.as_secs().to_string());
        }
        // Queued before the first counted stanza, on the same channel.
        let _ = r.link.deliver(Arc::new(enabled));
        let link = Arc::new(sm::SmLink::new(id.clone(), params, r.link.clone()));
        r.link = link.clone();
        r.sm = Some(link);
        drop(shard);
        self.notify(jid);
        Ok(id)
    }

    async fn sm_ack(&self, jid: &Jid, conn_id: u64, h: u32, inbound: u32) -> Result<(), SmError> {
        match self.sm_of(jid, conn_id) {
            Some(sm) => sm.ack(h, Some(inbound)),
            None => Err(SmError::NotFound),
        }
    }

    fn sm_send(&self, jid: &Jid, conn_id: u64, stanza: Element) {
        if let Some(sm) = self.sm_of(jid, conn_id) {
            let link: Arc<dyn ClientLink> = sm;
            let _ = self.push(&link, Arc::new(stanza));
        }
    }

    async fn detach(&self, jid: &Jid, conn_id: u64, inbound: u32) {
        match self.sm_of(jid, conn_id) {
            Some(sm) if sm.id.is_some() => {
                sm.detach(inbound);
                debug!(jid = %jid, "detached, waiting for resumption");
                self.notify(jid);
                self.expire_later(jid.clone(), conn_id, sm.params.timeout);
            }
            _ => self.unbind(jid, conn_id).await,
        }
    }

    async fn resume(
        &self,
        user: &Jid,
        previd: &str,
        h: u32,
        link: Arc<dyn ClientLink>,
        conn_id: u64,
    ) -> Result<Resumed, SmError> {
        let bare = user.to_bare();
        let Ok(mut shard) = self.shard(&bare).write() else {
            return Err(SmError::NotFound);
        };
        let Some(r) = shard.get_mut(&bare).and_then(|rs| {
            rs.iter_mut().find(|r| {
                r.sm.as_ref()
                    .is_some_and(|s| s.id.as_deref() == Some(previd))
            })
        }) else {
            return Err(SmError::NotFound);
        };
        let Some(sm) = r.sm.clone() else {
            return Err(SmError::NotFound);
        };
        let inbound = sm.attach(h, link)?;
        let old_conn = std::mem::replace(&mut r.conn_id, conn_id);
        let jid = r.jid.clone();
        drop(shard);
        debug!(jid = %jid, "resumed");
        self.push_client_back(&jid);
        if let Some(peers) = self.peers.get() {
            peers.resource_changed(&jid, old_conn, None);
        }
        self.notify(&jid);
        Ok(Resumed { jid, h: inbound })
    }

    async fn route(&self, from: &Jid, stanza: Stanza) {
        // A child of the caller's span: the cm's receive span in one
        // process, the Route call's in a cluster (nothing when tracing is off).
        let hop = Hop::child(telemetry::names::ROUTE, SpanKind::Internal, || {
            vec![KeyValue::new("xmpp.stanza.kind", stanza.kind().as_str())]
        });
        telemetry::within(hop.as_ref(), self.route_traced(from, stanza)).await;
    }
}

impl LocalSessions {
    /// [`SessionService::route`] within its span.
    async fn route_traced(&self, from: &Jid, stanza: Stanza) {
        let sent_copy = (stanza.kind() == StanzaKind::Message).then(|| stanza.clone());
        let routed = self.route_stanza(from, stanza).await;
        if let Some(st) = sent_copy.filter(|_| routed) {
            self.archive_outgoing(from, &st).await;
            // XEP-0280 §8: the sender's other carbons-enabled resources.
            self.send_carbons(
                "sent",
                &from.to_bare(),
                std::slice::from_ref(from),
                st.element(),
            );
        }
    }
}

impl LocalSessions {
    /// XEP-0198: messages the client of a session that ended never
    /// acknowledged are routed again as if that resource were not available:
    /// to other resources, or else to offline storage. Other stanzas are
    /// dropped, as for a session that ends without stream management.
    async fn reroute_unacked(&self, jid: &Jid, unacked: Vec<Arc<Element>>) {
        for el in unacked {
            if el.name() != "message"
                || el.child("received", carbons::NS).is_some()
                || el.child("sent", carbons::NS).is_some()
            {
                continue;
            }
            let Ok(stanza) = Stanza::parse((*el).clone()) else {
                continue;
            };
            let from = stanza.from().cloned().unwrap_or_else(|| jid.to_bare());
            // Already archived for this account when first delivered.
            self.route_local_as(&from, stanza, jid.clone(), true).await;
        }
    }

    /// XEP-0198 §5: the resumption timeout of a detached session passed.
    async fn sm_expire(&self, jid: &Jid, conn_id: u64) {
        let still_detached = self.shard(&jid.to_bare()).read().is_ok_and(|m| {
            m.get(&jid.to_bare()).is_some_and(|rs| {
                rs.iter().any(|r| {
                    r.jid == *jid
                        && r.conn_id == conn_id
                        && r.sm.as_ref().is_some_and(|s| s.is_detached())
                })
            })
        });
        if still_detached {
            debug!(jid = %jid, "stream resumption timed out");
            self.unbind(jid, conn_id).await;
        }
    }

    /// The SM state of the session `jid` on connection `conn_id`.
    fn sm_of(&self, jid: &Jid, conn_id: u64) -> Option<Arc<sm::SmLink>> {
        let shard = self.shard(&jid.to_bare()).read().ok()?;
        shard
            .get(&jid.to_bare())?
            .iter()
            .find(|r| r.jid == *jid && r.conn_id == conn_id)?
            .sm
            .clone()
    }

    /// Routes one stanza; `false` if it was refused because the sender blocks the recipient.
    async fn route_stanza(&self, from: &Jid, stanza: Stanza) -> bool {
        let to = match stanza.to() {
            None => {
                // RFC 6120 §10.3: no 'to' means the account itself.
                match stanza.kind() {
                    StanzaKind::Presence => self.outbound_presence(from, stanza).await,
                    StanzaKind::Iq => self.server_iq(from, &stanza).await,
                    StanzaKind::Message => {
                        self.route_local(from, stanza.clone(), from.to_bare()).await
                    }
                }
                return true;
            }
            Some(to) => to.clone(),
        };
        // XEP-0191 §3.3: nothing goes to a JID the sender blocks.
        if self.blocks(&from.to_bare(), &to).await {
            if !stanza.is_error() && stanza.kind() != StanzaKind::Presence {
                let mut err =
                    StanzaError::not_acceptable().with_app("blocked", blocking::NS_ERRORS);
                err.error_type = rookery_core::ErrorType::Cancel;
                self.reply_error(from, &stanza, err);
            }
            return false;
        }
        if presence::is_presence(&stanza) {
            self.outbound_presence(from, stanza).await;
            return true;
        }
        if to.node().is_none() && self.is_local_domain(&to) {
            match stanza.kind() {
                StanzaKind::Iq => self.server_iq(from, &stanza).await,
                // RFC 6120 §10.4: messages and presence to the server itself
                // have nobody to read them.
                StanzaKind::Message | StanzaKind::Presence => {}
            }
            return true;
        }
        if self.is_local_domain(&to) && to.node().is_some() {
            self.route_local(from, stanza, to).await;
            return true;
        }
        // RFC 6120 §10.4: a remote domain.
        self.send_remote(stanza);
        true
    }

    /// A stanza that arrived over federation, for a local address
    /// ([`InboundRouter::route_inbound`]), on the owner of its recipient.
    async fn route_from_remote(&self, stanza: Stanza) {
        let (Some(from), Some(to)) = (stanza.from().cloned(), stanza.to().cloned()) else {
            debug!("a stanza from a remote server without from or to dropped");
            return;
        };
        if let Some(c) = self.component(to.domain()) {
            return self.to_component(&c, stanza);
        }
        if !self.is_local_domain(&to) || self.is_local_domain(&from) {
            debug!(from = %from, to = %to, "a stanza from a remote server with local from or remote to dropped");
            return;
        }
        if stanza.kind() == StanzaKind::Presence {
            if to.node().is_some() {
                self.deliver_presence(&to, stanza.element().clone()).await;
            }
            return;
        }
        if to.node().is_none() {
            // RFC 6120 §10.4 / §10.3: the server itself answers iqs; messages
            // to the server have nobody to read them.
            if stanza.kind() == StanzaKind::Iq {
                self.server_iq(&from, &stanza).await;
            }
            return;
        }
        self.route_local(&from, stanza, to).await;
    }
}

#[async_trait]
impl rookery_core::InboundRouter for LocalSessions {
    fn serves(&self, domain: &str) -> bool {
        domain == self.domain || self.component(domain).is_some()
    }

    async fn route_inbound(&self, stanza: Stanza) {
        let hop = Hop::child(telemetry::names::ROUTE, SpanKind::Internal, || {
            vec![KeyValue::new("xmpp.stanza.kind", stanza.kind().as_str())]
        });
        telemetry::within(hop.as_ref(), self.route_from_remote(stanza)).await;
    }
}

#[async_trait]
impl rookery_core::ComponentRouter for LocalSessions {
    async fn route_from_component(&self, stanza: Stanza) {
        let (Some(from), Some(to)) = (stanza.from().cloned(), stanza.to().cloned()) else {
            debug!("a stanza from a component without from or to dropped");
            return;
        };
        if !self.is_local_domain(&to) {
            // Another component, or a remote user.
            return self.send_remote(stanza);
        }
        match (stanza.kind(), to.node().is_some()) {
            (StanzaKind::Presence, true) => {
                self.deliver_presence(&to, stanza.element().clone()).await
            }
            (StanzaKind::Presence, false) => {}
            (_, true) => self.route_local(&from, stanza, to).await,
            (StanzaKind::Iq, false) => self.server_iq(&from, &stanza).await,
            (StanzaKind::Message, false) => {}
        }
    }
}
