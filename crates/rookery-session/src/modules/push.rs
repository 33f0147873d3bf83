//! XEP-0357: Push Notifications. A client registers an app server's
//! XEP-0060 node (`<enable/>`, §5) and removes it (`<disable/>`, §6); while
//! that client cannot get a message — its session is detached by XEP-0198
//! (hibernated) or the account has no available resource and the message
//! went to offline storage — the server publishes a `<notification/>` to the
//! node (§7). An error answer other than a temporary one disables the
//! registration (§7.1). Decision record: `docs/decisions/0021-push.md`.
//!
//! Registrations are stored per account, keyed by (app server JID, node),
//! with the full JID of the session that enabled them and the client's
//! publish-options form, through [`PushStore`]. What the server remembers in
//! memory (the throttle and the notifications awaiting an answer) is
//! per session node and lost on restart, which costs at most one extra
//! notification.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rookery_core::users::StoreError;
use rookery_core::{ErrorType, Jid, Stanza, StanzaError, new_id};
use rookery_xml::{Element, ns};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::{IqContext, IqResult, Module, Spec, Target, parse_stored};
use crate::LocalSessions;

/// `urn:xmpp:push:0` (§11.1).
pub const NS: &str = "urn:xmpp:push:0";
/// XEP-0060 namespace of the publish request.
pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// FORM_TYPE of the summary form (§11.3.1).
pub const SUMMARY: &str = "urn:xmpp:push:summary";
/// FORM_TYPE of the publish options a client may give (§5, XEP-0060 §7.1.5).
pub const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

/// Largest publish-options form kept, in bytes of its XML. App servers ask
/// for a secret or a token (Conversations: one `secret` field); a larger
/// form is refused with `<policy-violation/>` rather than stored.
pub const MAX_OPTIONS_BYTES: usize = 4096;
/// Largest app server JID or node accepted, in bytes.
const MAX_NODE_BYTES: usize = 1023;
/// XEP-0060 (§8 affiliation notices).
const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// How long an unanswered notification is remembered (for §7.1).
const ANSWER_WAIT: Duration = Duration::from_secs(300);

/// `[modules.push]` section of the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Offer XEP-0357 (the `urn:xmpp:push:0` feature, `<enable/>`,
    /// `<disable/>`) and send notifications.
    pub enabled: bool,
    /// Put the message's body into the notification
    /// (`last-message-body`). Off by default: the app server is a third
    /// party (§9).
    pub include_body: bool,
    /// Put the sender's full JID into the notification
    /// (`last-message-sender`). Off by default, as in Prosody and
    /// ejabberd: it tells the app server who writes to whom (§9).
    pub include_sender: bool,
    /// Registrations one account may have at once; an `<enable/>` for
    /// one more gets `<policy-violation/>`.
    pub max_registrations: usize,
    /// After a notification, further messages for the same registration
    /// send none for this many seconds (they are counted into the next
    /// one's `message-count`), unless the client that enabled it came back
    /// in between. 0 sends one per message.
    pub throttle_secs: u64,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            enabled: true,
            include_body: false,
            include_sender: false,
            max_registrations: 10,
            throttle_secs: 30,
        }
    }
}

/// One registration (§5): where to publish for an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushRegistration {
    /// The app server (XMPP Push Service) JID.
    pub service: String,
    /// Its node.
    pub node: String,
    /// The full JID of the session that enabled it.
    pub client: String,
    /// The client's publish-options form (canonical XML), if it gave one.
    pub options: Option<String>,
}

/// Storage of the push registrations of each account, keyed by (service,
/// node).
#[async_trait]
pub trait PushStore: Send + Sync + std::fmt::Debug {
    /// Adds a registration, or replaces the one with the same service and
    /// node (§5: the last request's options win). A new one is refused
    /// (`Ok(false)`, nothing written) when the account already has `max`.
    async fn put_push(
        &self,
        user: &Jid,
        reg: &PushRegistration,
        max: usize,
    ) -> Result<bool, StoreError>;
    /// The account's registrations, in no particular order.
    async fn push_registrations(&self, user: &Jid) -> Result<Vec<PushRegistration>, StoreError>;
    /// Removes the registration of `service` and `node`, or every one of
    /// `service` when `node` is `None` (§6); returns how many.
    async fn remove_push(
        &self,
        user: &Jid,
        service: &str,
        node: Option<&str>,
    ) -> Result<usize, StoreError>;
    /// Removes every registration of the account (account removal).
    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError>;
}

/// The conformance suite every [`PushStore`] backend runs: invoke it once
/// per backend with an expression that builds a fresh, empty store.
#[cfg(feature = "test-util")]
#[macro_export]
macro_rules! push_store_conformance {
    ($make:expr) => {
        #[tokio::test]
        async fn push_store_conformance() {
            let store = $make;
            $crate::modules::push::conformance::run(&store).await;
        }
    };
}

/// The body of [`push_store_conformance!`].
#[cfg(feature = "test-util")]
#[allow(clippy::unwrap_used)]
pub mod conformance {
    use super::*;

    fn reg(service: &str, node: &str, client: &str, options: Option<&str>) -> PushRegistration {
        PushRegistration {
            service: service.into(),
            node: node.into(),
            client: client.into(),
            options: options.map(Into::into),
        }
    }

    async fn sorted(store: &dyn PushStore, user: &Jid) -> Vec<PushRegistration> {
        let mut v = store.push_registrations(user).await.unwrap();
        v.sort_by(|a, b| (&a.service, &a.node).cmp(&(&b.service, &b.node)));
        v
    }

    /// Runs every check against an empty store.
    pub async fn run(store: &dyn PushStore) {
        let a = Jid::parse("a@example.org").unwrap();
        let b = Jid::parse("b@example.org").unwrap();
        assert!(store.push_registrations(&a).await.unwrap().is_empty());
        let form = "<x xmlns='jabber:x:data' type='submit'><field var='secret'><value>s &amp; ü</value></field></x>";
        let r1 = reg("push.example.net", "n1", "a@example.org/phone", Some(form));
        let r2 = reg("push.example.net", "n2", "a@example.org/tablet", None);
        let r3 = reg("p2.example.com", "n1", "a@example.org/phone", None);
        assert!(store.put_push(&a, &r1, 3).await.unwrap());
        assert!(store.put_push(&a, &r2, 3).await.unwrap());
        assert!(store.put_push(&a, &r3, 3).await.unwrap());
        assert_eq!(
            sorted(store, &a).await,
            vec![r3.clone(), r1.clone(), r2.clone()]
        );
        // The limit counts registrations of the account, not of others.
        let r4 = reg("push.example.net", "n4", "a@example.org/x", None);
        assert!(!store.put_push(&a, &r4, 3).await.unwrap(), "limit");
        assert_eq!(store.push_registrations(&a).await.unwrap().len(), 3);
        assert!(store.put_push(&b, &r4, 3).await.unwrap());
        // The same service and node again replaces it, also at the limit.
        let r1b = reg("push.example.net", "n1", "a@example.org/other", None);
        assert!(store.put_push(&a, &r1b, 3).await.unwrap());
        assert_eq!(sorted(store, &a).await, vec![r3.clone(), r1b, r2.clone()]);
        // Removing one node, then every node of a service.
        assert_eq!(
            store
                .remove_push(&a, "push.example.net", Some("nope"))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .remove_push(&a, "push.example.net", Some("n1"))
                .await
                .unwrap(),
            1
        );
        assert_eq!(sorted(store, &a).await, vec![r3.clone(), r2]);
        assert!(store.put_push(&a, &r1, 3).await.unwrap());
        assert_eq!(
            store
                .remove_push(&a, "push.example.net", None)
                .await
                .unwrap(),
            2
        );
        assert_eq!(sorted(store, &a).await, vec![r3]);
        // Other accounts are untouched by removals.
        assert_eq!(store.push_registrations(&b).await.unwrap(), vec![r4]);
        store.delete_user(&a).await.unwrap();
        assert!(store.push_registrations(&a).await.unwrap().is_empty());
        assert_eq!(store.push_registrations(&b).await.unwrap().len(), 1);
    }
}

/// §7 / Prosody's and Conversations' notion of a message worth waking a
/// device for: a message with a non-empty body (a groupchat subject change
/// is not one), an end-to-end encrypted message (OMEMO, legacy OpenPGP,
/// OpenPGP for XMPP: no readable body), a XEP-0353 call proposal, a
/// XEP-0249 invitation; never a headline, an error, or what carries only
/// chat states, receipts or markers.
pub fn worthy(el: &Element) -> bool {
    if el.name() != "message" {
        return false;
    }
    let kind = el.attr("type").unwrap_or("normal");
    if matches!(kind, "headline" | "error") {
        return false;
    }
    let mut body = false;
    for c in el.children() {
        match (c.ns(), c.name()) {
            (ns::CLIENT, "body") => body |= !c.text().is_empty(),
            (ns::CLIENT, "subject") if kind == "groupchat" => return false,
            (
                "eu.siacs.conversations.axolotl" | "urn:xmpp:omemo:1" | "urn:xmpp:omemo:2",
                "encrypted",
            )
            | ("jabber:x:encrypted", "x")
            | ("urn:xmpp:openpgp:0", "openpgp")
            | ("urn:xmpp:jingle-message:0", "propose")
            | ("jabber:x:conference", "x") => return true,
            _ => {}
        }
    }
    body
}

/// The notification request of §7 (Example 12/13).
pub fn notification(
    domain: &str,
    id: &str,
    reg: &PushRegistration,
    count: u32,
    sender: Option<&str>,
    body: Option<&str>,
    options: Option<Element>,
) -> Element {
    let field = |var: &str, value: &str| {
        Element::new_static("field", ns::DATA_FORMS)
            .with_attr("var", var)
            .with_child(Element::new_static("value", ns::DATA_FORMS).with_text(value))
    };
    let mut form = Element::new_static("x", ns::DATA_FORMS)
        .with_attr("type", "submit")
        .with_child(field("FORM_TYPE", SUMMARY))
        .with_child(field("message-count", &count.to_string()));
    if let Some(s) = sender {
        form.push_child(field("last-message-sender", s));
    }
    if let Some(b) = body {
        form.push_child(field("last-message-body", b));
    }
    let mut pubsub = Element::new_static("pubsub", PUBSUB).with_child(
        Element::new_static("publish", PUBSUB)
            .with_attr("node", reg.node.as_str())
            .with_child(
                Element::new_static("item", PUBSUB)
                    .with_child(Element::new_static("notification", NS).with_child(form)),
            ),
    );
    if let Some(o) = options {
        pubsub.push_child(Element::new_static("publish-options", PUBSUB).with_child(o));
    }
    Element::new_static("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("from", domain)
        .with_attr("to", reg.service.as_str())
        .with_attr("id", id)
        .with_child(pubsub)
}

/// A notification sent and not yet answered.
#[derive(Debug)]
struct Pending {
    account: Jid,
    service: Jid,
    node: String,
    sent: Instant,
}

/// The throttle of one registration.
#[derive(Debug)]
struct Throttle {
    service: String,
    node: String,
    client: String,
    /// When the last notification went out.
    last: Instant,
    /// Messages since that were not notified.
    held: u32,
}

/// The notification side: configuration, throttle and pending answers.
#[derive(Debug)]
pub struct Pusher {
    config: PushConfig,
    /// Per account.
    throttles: Mutex<HashMap<Jid, Vec<Throttle>>>,
    /// By iq id.
    pending: Mutex<HashMap<String, Pending>>,
}

impl Pusher {
    /// A notifier for `config`.
    pub fn new(config: PushConfig) -> Pusher {
        Pusher {
            config,
            throttles: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a notification for `reg` goes out now, and with which
    /// message count; counts the message either way.
    fn admit(&self, account: &Jid, reg: &PushRegistration) -> Option<u32> {
        let window = Duration::from_secs(self.config.throttle_secs);
        let now = Instant::now();
        let Ok(mut map) = self.throttles.lock() else {
            return Some(1);
        };
        if map.len() > 4096 {
            // Forget accounts whose windows all closed.
            map.retain(|_, ts| ts.iter().any(|t| now.duration_since(t.last) < window));
        }
        let ts = map.entry(account.clone()).or_default();
        match ts
            .iter_mut()
            .find(|t| t.service == reg.service && t.node == reg.node)
        {
            Some(t) if now.duration_since(t.last) < window => {
                t.held = t.held.saturating_add(1);
                None
            }
            Some(t) => {
                let count = t.held.saturating_add(1);
                t.last = now;
                t.held = 0;
                t.client.clone_from(&reg.client);
                Some(count)
            }
            None => {
                ts.push(Throttle {
                    service: reg.service.clone(),
                    node: reg.node.clone(),
                    client: reg.client.clone(),
                    last: now,
                    held: 0,
                });
                Some(1)
            }
        }
    }

    /// The client `jid` is connected again: its registrations notify at
    /// the next message.
    fn client_back(&self, jid: &Jid) {
        if let Ok(mut map) = self.throttles.lock()
            && let Some(ts) = map.get_mut(&jid.to_bare())
        {
            ts.retain(|t| t.client != jid.as_str());
        }
    }

    fn forget(&self, account: &Jid, service: &str, node: Option<&str>) {
        if let Ok(mut map) = self.throttles.lock()
            && let Some(ts) = map.get_mut(account)
        {
            ts.retain(|t| t.service != service || node.is_some_and(|n| n != t.node));
        }
    }

    fn expect_answer(&self, id: String, p: Pending) {
        if let Ok(mut map) = self.pending.lock() {
            if map.len() > 4096 {
                map.retain(|_, p| p.sent.elapsed() < ANSWER_WAIT);
            }
            map.insert(id, p);
        }
    }

    fn answered(&self, id: &str, from: &Jid) -> Option<Pending> {
        let mut map = self.pending.lock().ok()?;
        if map.is_empty() {
            return None;
        }
        // Only the app server itself (or its domain answering for it)
        // settles a notification.
        let p = map.get(id)?;
        if p.service.to_bare() != from.to_bare() && p.service.domain() != from.as_str() {
            return None;
        }
        map.remove(id)
    }
}

/// The `<enable/>`/`<disable/>` handler.
#[derive(Debug)]
pub(crate) struct PushModule {
    pub(crate) config: PushConfig,
}

#[async_trait]
impl Module for PushModule {
    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            id: "XEP-0357",
            version: "0.4.1",
            name: "Push Notifications",
        }]
    }
    fn features(&self) -> &'static [&'static str] {
        // §4.1: advertised on the account's bare JID (modules/disco.rs),
        // not by the server.
        &[]
    }
    async fn handle_iq(
        &self,
        ctx: &IqContext<'_>,
        stanza: &Stanza,
        p: &Element,
    ) -> Option<IqResult> {
        let enable = p.is("enable", NS);
        if !enable && !p.is("disable", NS) {
            return None;
        }
        if stanza.stanza_type() != Some("set") {
            return Some(Err(StanzaError::bad_request("enable and disable are sets")));
        }
        let user = match ctx.target(stanza) {
            Target::Own(u) => u,
            // §5: a client registers for its own account only.
            Target::Other(_) => {
                return Some(Err(StanzaError::forbidden()
                    .with_text("push notifications are enabled on one's own account")));
            }
            Target::Server => return Some(Err(StanzaError::service_unavailable())),
        };
        Some(if enable {
            self.enable(ctx, &user, p).await
        } else {
            disable(ctx, &user, p).await
        })
    }
}

/// The `jid` attribute of an `<enable/>` or `<disable/>`.
fn service_of(p: &Element) -> Result<Jid, StanzaError> {
    let Some(s) = p.attr("jid").filter(|s| !s.is_empty()) else {
        return Err(StanzaError::bad_request("missing jid"));
    };
    Jid::parse(s).map_err(|_| StanzaError::jid_malformed("jid is not a JID"))
}

fn store_error(e: StoreError) -> StanzaError {
    warn!(error = %e, "push registration store unavailable");
    StanzaError::internal_server_error()
}

impl PushModule {
    /// §5.
    async fn enable(&self, ctx: &IqContext<'_>, user: &Jid, p: &Element) -> IqResult {
        let service = service_of(p)?;
        let node = match p.attr("node") {
            Some(n) if !n.is_empty() && n.len() <= MAX_NODE_BYTES => n,
            Some(n) if !n.is_empty() => return Err(StanzaError::policy_violation()),
            _ => return Err(StanzaError::bad_request("missing node")),
        };
        let mut forms = p.children().filter(|c| c.is("x", ns::DATA_FORMS));
        let form = forms.next();
        // Other children (extensions of some clients) are ignored.
        if forms.next().is_some() {
            return Err(StanzaError::bad_request(
                "enable carries at most one publish-options form",
            ));
        }
        let options = match form {
            None => None,
            Some(x) => {
                let form_type = x
                    .children()
                    .find(|f| f.is("field", ns::DATA_FORMS) && f.attr("var") == Some("FORM_TYPE"))
                    .and_then(|f| f.child("value", ns::DATA_FORMS))
                    .map(|v| v.text());
                if form_type.as_deref() != Some(PUBLISH_OPTIONS)
                    || !matches!(x.attr("type"), Some("submit") | None)
                {
                    return Err(StanzaError::bad_request(
                        "the form must be a pubsub#publish-options submission",
                    ));
                }
                let xml = x.to_xml_string();
                if xml.len() > MAX_OPTIONS_BYTES {
                    return Err(
                        StanzaError::policy_violation().with_text("publish options too large")
                    );
                }
                Some(xml)
            }
        };
        let reg = PushRegistration {
            service: service.as_str().to_owned(),
            node: node.to_owned(),
            client: ctx.from.as_str().to_owned(),
            options,
        };
        let stored = ctx
            .sessions
            .stores()
            .push
            .put_push(user, &reg, self.config.max_registrations)
            .await
            .map_err(store_error)?;
        if !stored {
            return Err(StanzaError::policy_violation().with_text("too many push registrations"));
        }
        if let Some(pusher) = ctx.sessions.modules().pusher() {
            pusher.forget(user, &reg.service, Some(&reg.node));
        }
        debug!(user = %user, service = %service, "push enabled");
        Ok(None)
    }
}

/// §6.
async fn disable(ctx: &IqContext<'_>, user: &Jid, p: &Element) -> IqResult {
    let service = service_of(p)?;
    let node = p.attr("node").filter(|n| !n.is_empty());
    ctx.sessions
        .stores()
        .push
        .remove_push(user, service.as_str(), node)
        .await
        .map_err(store_error)?;
    if let Some(pusher) = ctx.sessions.modules().pusher() {
        pusher.forget(user, service.as_str(), node);
    }
    debug!(user = %user, service = %service, "push disabled");
    Ok(None)
}

/// The hooks of the session service: where a message goes offline or to a
/// hibernated session, answers to notifications, clients coming back.
impl LocalSessions {
    /// §8: a push service announces, with a message to the account's bare
    /// JID, that the account may no longer publish to one of its nodes
    /// (`<pubsub node><affiliation jid affiliation='none'/></pubsub>`, or
    /// any affiliation that cannot publish). The registration of that
    /// service and node is removed and the notice is not delivered; `false`
    /// when the message is not such a notice for a registration of the
    /// account (it is then delivered as any message).
    pub(crate) async fn push_affiliation_notice(
        &self,
        bare: &Jid,
        from: &Jid,
        el: &Element,
    ) -> bool {
        let Some(ps) = el.child("pubsub", NS_PUBSUB) else {
            return false;
        };
        let Some(node) = ps.attr("node").filter(|n| !n.is_empty()) else {
            return false;
        };
        let revoked = ps.children().any(|a| {
            a.is("affiliation", NS_PUBSUB)
                && a.attr("jid")
                    .and_then(|j| Jid::parse(j).ok())
                    .is_some_and(|j| j.to_bare() == *bare)
                && !matches!(
                    a.attr("affiliation"),
                    Some("publish-only" | "publisher" | "owner")
                )
        });
        if !revoked {
            return false;
        }
        let store = &self.stores().push;
        let regs = match store.push_registrations(bare).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "push store unavailable: affiliation notice delivered as is");
                return false;
            }
        };
        let Some(reg) = regs.iter().find(|r| {
            r.node == node && (r.service == from.as_str() || r.service == from.to_bare().as_str())
        }) else {
            return false;
        };
        if let Err(e) = store.remove_push(bare, &reg.service, Some(node)).await {
            warn!(error = %e, "push registration not removed");
            return false;
        }
        if let Some(pusher) = self.modules().pusher() {
            pusher.forget(bare, &reg.service, Some(node));
        }
        info!(user = %bare, service = %reg.service, "push disabled by the push service (XEP-0357 §8)");
        true
    }

    /// A message was stored offline for `bare` (no available resource):
    /// every registration of the account is notified.
    pub(crate) async fn push_offline(&self, bare: &Jid, from: &Jid, el: &Element) {
        let Some(pusher) = self.modules().pusher() else {
            return;
        };
        if !worthy(el) {
            return;
        }
        self.notify_push(pusher, bare, from, el, |_| true).await;
    }

    /// A message was delivered (or copied as a carbon) to the resources
    /// `to` of `bare`: those whose XEP-0198 session is detached cannot read
    /// it, so the registrations they enabled are notified.
    pub(crate) async fn push_delivered(&self, bare: &Jid, to: &[&[Jid]], from: &Jid, el: &Element) {
        let Some(pusher) = self.modules().pusher() else {
            return;
        };
        if !worthy(el) {
            return;
        }
        let detached: Vec<Jid> = match self.shard(bare).read() {
            Ok(m) => m
                .get(bare)
                .into_iter()
                .flatten()
                .filter(|r| {
                    r.sm.as_ref().is_some_and(|s| s.is_detached())
                        && to.iter().any(|t| t.contains(&r.jid))
                })
                .map(|r| r.jid.clone())
                .collect(),
            Err(_) => return,
        };
        if detached.is_empty() {
            return;
        }
        self.notify_push(pusher, bare, from, el, |r| {
            detached.iter().any(|j| j.as_str() == r.client)
        })
        .await;
    }

    /// Whether the session of the full JID `jid` is detached by XEP-0198
    /// (waiting for resumption): what decides a notification.
    pub fn is_hibernated(&self, jid: &Jid) -> bool {
        let bare = jid.to_bare();
        self.shard(&bare).read().is_ok_and(|m| {
            m.get(&bare).is_some_and(|rs| {
                rs.iter()
                    .any(|r| r.jid == *jid && r.sm.as_ref().is_some_and(|s| s.is_detached()))
            })
        })
    }

    /// The client `jid` bound or resumed: its registrations notify again
    /// at once.
    pub(crate) fn push_client_back(&self, jid: &Jid) {
        if let Some(pusher) = self.modules().pusher() {
            pusher.client_back(jid);
        }
    }

    /// An iq result or error addressed to the server: the answer to a
    /// notification? §7.1: an error other than a temporary one disables
    /// the registration.
    pub(crate) async fn push_answer(&self, from: &Jid, stanza: &Stanza) {
        let Some(pusher) = self.modules().pusher() else {
            return;
        };
        let Some(id) = stanza.id() else {
            return;
        };
        let Some(p) = pusher.answered(id, from) else {
            return;
        };
        if !stanza.is_error() {
            return;
        }
        let err = StanzaError::from_stanza(stanza.element());
        let temporary = err.as_ref().is_some_and(|e| {
            e.error_type == ErrorType::Wait
                // Raised on the way by a server, not by the app server.
                || matches!(e.condition, "remote-server-not-found" | "remote-server-timeout")
        });
        if temporary {
            debug!(account = %p.account, service = %p.service, "push notification failed for now");
            return;
        }
        info!(account = %p.account, service = %p.service, node = %p.node,
            condition = err.as_ref().map_or("unknown", |e| e.condition),
            "push registration disabled after an error answer");
        match self
            .stores
            .push
            .remove_push(&p.account, p.service.as_str(), Some(&p.node))
            .await
        {
            Ok(_) => pusher.forget(&p.account, p.service.as_str(), Some(&p.node)),
            Err(e) => warn!(error = %e, "push registration could not be removed"),
        }
    }

    /// An error the server made for one of its own requests (e.g. a
    /// notification to an account that does not exist) comes back to it.
    pub(crate) fn answer_to_server(&self, el: Element) {
        if self.modules().pusher().is_none() {
            return;
        }
        let Ok(stanza) = Stanza::parse(el) else {
            return;
        };
        let (Some(from), Some(me)) = (stanza.from().cloned(), self.me.upgrade()) else {
            return;
        };
        tokio::spawn(async move { me.push_answer(&from, &stanza).await });
    }

    /// Publishes to the registrations of `bare` that `which` selects.
    async fn notify_push(
        &self,
        pusher: &Pusher,
        bare: &Jid,
        from: &Jid,
        el: &Element,
        which: impl Fn(&PushRegistration) -> bool,
    ) {
        let regs = match self.stores.push.push_registrations(bare).await {
            Ok(r) => r,
            Err(e) => return warn!(error = %e, "push registrations unavailable"),
        };
        for reg in regs.iter().filter(|r| which(r)) {
            let Some(count) = pusher.admit(bare, reg) else {
                continue;
            };
            let Ok(service) = Jid::parse(&reg.service) else {
                continue;
            };
            let options = reg.options.as_deref().and_then(|x| parse_stored(x).ok());
            let body = pusher
                .config
                .include_body
                .then(|| el.child("body", ns::CLIENT).map(|b| b.text()))
                .flatten()
                .filter(|b| !b.is_empty());
            let sender = pusher.config.include_sender.then(|| from.as_str());
            let id = new_id();
            let iq = notification(
                &self.domain,
                &id,
                reg,
                count,
                sender,
                body.as_deref(),
                options,
            );
            let stanza = match Stanza::parse(iq) {
                Ok(s) => s,
                Err((_, e)) => {
                    warn!(error = ?e, "push notification is not a stanza");
                    continue;
                }
            };
            pusher.expect_answer(
                id,
                Pending {
                    account: bare.clone(),
                    service,
                    node: reg.node.clone(),
                    sent: Instant::now(),
                },
            );
            debug!(account = %bare, service = %reg.service, "push notification");
            // Like any stanza from the server: to a local account, a
            // component, or over federation.
            rookery_core::ComponentRouter::route_from_component(self, stanza).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn m(x: &str) -> Element {
        Element::parse(x).unwrap()
    }

    #[test]
    fn which_messages_wake_a_device() {
        assert!(worthy(&m(
            "<message xmlns='jabber:client' type='chat'><body>hi</body></message>"
        )));
        assert!(worthy(&m(
            "<message xmlns='jabber:client'><body>hi</body></message>"
        )));
        assert!(worthy(&m(
            "<message xmlns='jabber:client' type='groupchat'><body>hi</body></message>"
        )));
        assert!(worthy(&m(
            "<message xmlns='jabber:client' type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/></encrypted></message>"
        )));
        assert!(worthy(&m(
            "<message xmlns='jabber:client'><propose xmlns='urn:xmpp:jingle-message:0' id='c'/></message>"
        )));
        assert!(!worthy(&m(
            "<message xmlns='jabber:client' type='chat'><body/></message>"
        )));
        assert!(!worthy(&m(
            "<message xmlns='jabber:client' type='headline'><body>news</body></message>"
        )));
        assert!(!worthy(&m(
            "<message xmlns='jabber:client' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )));
        assert!(!worthy(&m(
            "<message xmlns='jabber:client'><received xmlns='urn:xmpp:receipts' id='x'/></message>"
        )));
        assert!(!worthy(&m(
            "<message xmlns='jabber:client' type='groupchat'><subject>topic</subject><body>x</body></message>"
        )));
        assert!(!worthy(&m("<presence xmlns='jabber:client'/>")));
    }

    /// §7 Example 13, with every summary field.
    #[test]
    fn the_notification_of_the_spec() {
        let reg = PushRegistration {
            service: "push-5.client.example".into(),
            node: "yxs32uqsflafdk3iuqo".into(),
            client: "user@example.com/mobile".into(),
            options: None,
        };
        let options = m(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>eruio234vzxc2kla-91</value></field></x>",
        );
        let iq = notification(
            "example.com",
            "n12",
            &reg,
            1,
            Some("juliet@capulet.example/balcony"),
            Some("Wherefore art thou, Romeo?"),
            Some(options),
        );
        assert_eq!(
            iq.to_xml_string(),
            "<iq xmlns='jabber:client' type='set' from='example.com' to='push-5.client.example' id='n12'>\
             <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='yxs32uqsflafdk3iuqo'><item>\
             <notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field>\
             <field var='message-count'><value>1</value></field>\
             <field var='last-message-sender'><value>juliet@capulet.example/balcony</value></field>\
             <field var='last-message-body'><value>Wherefore art thou, Romeo?</value></field>\
             </x></notification></item></publish>\
             <publish-options><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
             <field var='secret'><value>eruio234vzxc2kla-91</value></field></x></publish-options>\
             </pubsub></iq>"
        );
    }

    #[test]
    fn throttle_counts_held_messages_and_resets_when_the_client_returns() {
        let p = Pusher::new(PushConfig {
            throttle_secs: 3600,
            ..PushConfig::default()
        });
        let a = Jid::parse("a@example.org").unwrap();
        let reg = PushRegistration {
            service: "push.example.net".into(),
            node: "n".into(),
            client: "a@example.org/phone".into(),
            options: None,
        };
        assert_eq!(p.admit(&a, &reg), Some(1));
        assert_eq!(p.admit(&a, &reg), None);
        assert_eq!(p.admit(&a, &reg), None);
        p.client_back(&Jid::parse("a@example.org/desk").unwrap());
        assert_eq!(p.admit(&a, &reg), None);
        p.client_back(&Jid::parse("a@example.org/phone").unwrap());
        assert_eq!(p.admit(&a, &reg), Some(1));
        let none = Pusher::new(PushConfig {
            throttle_secs: 0,
            ..PushConfig::default()
        });
        assert_eq!(none.admit(&a, &reg), Some(1));
        assert_eq!(none.admit(&a, &reg), Some(1));
    }
}
