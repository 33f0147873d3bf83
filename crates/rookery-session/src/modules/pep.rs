//! XEP-0163: Personal Eventing Protocol. Every account's bare JID is a
//! pubsub service (XEP-0060 with XEP-0223 publish-options) whose nodes
//! the `rookery-pubsub` engine keeps; this module answers the pubsub iqs,
//! the account's disco nodes and items, and the conversions the server
//! owes: XEP-0398 (the XEP-0084 avatar into the vCard) and XEP-0402 §5.3
//! (XEP-0049 `storage:bookmarks` read and written as `urn:xmpp:bookmarks:1`).
//! Who gets notifications is `crate::pep`'s business.

use base64::Engine as _;
use rookery_core::{Jid, Stanza, StanzaError};
use rookery_pubsub::{NS_OWNER, NS_PUBLISH_OPTIONS, NS_PUBSUB, Notice, Service};
use rookery_xml::{Element, ns};
use sha1::Digest as _;
use tracing::{debug, warn};

use super::{After, IqContext, IqResult, Module, Spec, Target, parse_stored};
use crate::LocalSessions;

/// XEP-0402 native bookmarks node.
pub(crate) const NS_BOOKMARKS2: &str = "urn:xmpp:bookmarks:1";
/// XEP-0402 §5.3: private XML bookmarks unified with native ones.
pub(crate) const FEATURE_BOOKMARKS_COMPAT: &str = "urn:xmpp:bookmarks:1#compat";
/// XEP-0048 bookmarks in XEP-0049 private XML storage.
pub(crate) const NS_BOOKMARKS: &str = "storage:bookmarks";
/// XEP-0398 §2.
pub(crate) const FEATURE_VCARD_CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";
/// XEP-0084 nodes.
const NS_AVATAR_DATA: &str = "urn:xmpp:avatar:data";
const NS_AVATAR_METADATA: &str = "urn:xmpp:avatar:metadata";

/// What the account's disco#info lists (XEP-0163 §6.1): the pubsub
/// features and the conversions.
pub(crate) fn account_features() -> impl Iterator<Item = &'static str> {
    rookery_pubsub::FEATURES
        .iter()
        .copied()
        .chain([FEATURE_BOOKMARKS_COMPAT, FEATURE_VCARD_CONVERSION])
}

#[derive(Debug)]
pub(crate) struct Pep;

static FEATURES: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| account_features().collect());

#[async_trait::async_trait]
impl Module for Pep {
    fn serves_remote(&self) -> bool {
        // Contacts on other servers read items and get notifications.
        true
    }
    fn specs(&self) -> &'static [Spec] {
        &[
            Spec {
                id: "XEP-0163",
                version: "1.2.2",
                name: "Personal Eventing Protocol",
            },
            Spec {
                id: "XEP-0060",
                version: "1.30.0",
                name: "Publish-Subscribe",
            },
            Spec {
                id: "XEP-0223",
                version: "1.1.1",
                name: "Persistent Storage of Private Data via PubSub",
            },
            Spec {
                id: "XEP-0115",
                version: "1.6.0",
                name: "Entity Capabilities",
            },
            Spec {
                id: "XEP-0084",
                version: "1.1.4",
                name: "User Avatar",
            },
            Spec {
                id: "XEP-0398",
                version: "1.0.0",
                name: "User Avatar to vCard-Based Avatars Conversion",
            },
            Spec {
                id: "XEP-0402",
                version: "1.2.0",
                name: "PEP Native Bookmarks",
            },
            Spec {
                id: "XEP-0048",
                version: "1.2",
                name: "Bookmarks",
            },
            Spec {
                id: "XEP-0384",
                version: "0.9.1",
                name: "OMEMO Encryption",
            },
        ]
    }
    fn features(&self) -> &'static [&'static str] {
        &FEATURES
    }
    async fn handle_iq(
        &self,
        ctx: &IqContext<'_>,
        stanza: &Stanza,
        p: &Element,
    ) -> Option<IqResult> {
        if !(p.is("pubsub", NS_PUBSUB) || p.is("pubsub", NS_OWNER)) {
            return None;
        }
        let owner = match ctx.target(stanza) {
            Target::Own(me) => me,
            Target::Other(a) => a,
            // The server itself is no pubsub service (`pubsub.<domain>` is).
            Target::Server => return None,
        };
        let set = stanza.stanza_type() == Some("set");
        let sessions = ctx.sessions;
        let rel = sessions.pep_relation(&owner, ctx.from).await;
        let out = match sessions
            .pep_engine()
            .handle(Service::Pep(&owner), ctx.from, set, p, &rel)
            .await
        {
            Ok(o) => o,
            Err(e) => return Some(Err(e)),
        };
        if set
            && let Some(publish) = p.child("publish", NS_PUBSUB)
            && publish.attr("node") == Some(NS_AVATAR_METADATA)
        {
            avatar_to_vcard(sessions, &owner, publish).await;
        }
        if !out.notices.is_empty() {
            ctx.after_reply(After::Pep(owner, out.notices));
        }
        Some(Ok(out.reply))
    }
}

/// XEP-0030 on an account's bare JID with a node (XEP-0060 §5.3), or the
/// account's items (§5.2: its nodes the requester may see; §5.5: a node's
/// item ids). `None` for the account's own disco#info without a node.
pub(crate) async fn disco(
    sessions: &LocalSessions,
    account: &Jid,
    from: &Jid,
    info: bool,
    node: Option<&str>,
) -> Option<Result<Element, StanzaError>> {
    if info && node.is_none() {
        // The account's own disco#info is the disco module's.
        return None;
    }
    let engine = sessions.pep_engine();
    let svc = Service::Pep(account);
    let rel = sessions.pep_relation(account, from).await;
    let (ns_q, name) = match (info, node) {
        (true, None) => return None,
        (true, Some(n)) => (ns::DISCO_INFO, n),
        (false, None) => {
            let nodes = match engine.nodes(svc).await {
                Ok(n) => n,
                Err(e) => return Some(Err(e)),
            };
            let mut q = Element::new_static("query", ns::DISCO_ITEMS);
            for n in nodes.iter().filter(|n| n.may_access(from, &rel).is_ok()) {
                q.push_child(
                    Element::new_static("item", ns::DISCO_ITEMS)
                        .with_attr("jid", account.as_str())
                        .with_attr("node", n.name.as_str()),
                );
            }
            return Some(Ok(q));
        }
        (false, Some(n)) => (ns::DISCO_ITEMS, n),
    };
    let node = match engine.node(svc, name).await {
        Ok(Some(n)) if n.may_access(from, &rel).is_ok() => n,
        Ok(_) => return Some(Err(StanzaError::item_not_found())),
        Err(e) => return Some(Err(e)),
    };
    let mut q = Element::new_static("query", ns_q).with_attr("node", name);
    if info {
        q.push_child(
            Element::new_static("identity", ns::DISCO_INFO)
                .with_attr("category", "pubsub")
                .with_attr("type", "leaf"),
        );
        for f in [ns::DISCO_INFO, NS_PUBSUB] {
            q.push_child(Element::new_static("feature", ns::DISCO_INFO).with_attr("var", f));
        }
    } else {
        let items = match engine.store().items(svc.key(), &node.name, None).await {
            Ok(i) => i,
            Err(e) => {
                warn!(error = %e, "pubsub store unavailable");
                return Some(Err(StanzaError::internal_server_error()));
            }
        };
        for i in items {
            q.push_child(
                Element::new_static("item", ns::DISCO_ITEMS)
                    .with_attr("jid", account.as_str())
                    .with_attr("name", i.id),
            );
        }
    }
    Some(Ok(q))
}

/// XEP-0398 §3.1: the avatar published to the metadata node becomes the
/// vCard's PHOTO (the `<info/>` without a URL, its data from the data
/// node, checked against its SHA-1 id); empty metadata removes the photo.
async fn avatar_to_vcard(sessions: &LocalSessions, owner: &Jid, publish: &Element) {
    let Some(meta) = publish
        .child("item", NS_PUBSUB)
        .and_then(|i| i.child("metadata", NS_AVATAR_METADATA))
    else {
        return;
    };
    let photo = match meta
        .children()
        .find(|i| i.name() == "info" && i.attr("url").is_none())
    {
        None => None,
        Some(info) => {
            let (Some(id), ty) = (info.attr("id"), info.attr("type").unwrap_or("image/png")) else {
                return;
            };
            let item = sessions
                .pep_engine()
                .store()
                .item(owner.as_str(), NS_AVATAR_DATA, id)
                .await;
            let Ok(Some(item)) = item else {
                debug!(user = %owner, "avatar metadata without its data item");
                return;
            };
            let Ok(data) = Element::parse(&item.payload) else {
                return;
            };
            let b64: String = data.text().split_whitespace().collect();
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&b64) else {
                return;
            };
            let hash: String = sha1::Sha1::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if !hash.eq_ignore_ascii_case(id) {
                debug!(user = %owner, "avatar data does not match its SHA-1 id");
                return;
            }
            Some(
                Element::new_static("PHOTO", ns::VCARD)
                    .with_child(Element::new_static("TYPE", ns::VCARD).with_text(ty))
                    .with_child(Element::new_static("BINVAL", ns::VCARD).with_text(b64)),
            )
        }
    };
    let store = &sessions.stores().vcards;
    let mut vcard = match store.vcard(owner).await {
        Ok(Some(xml)) => match parse_stored(&xml) {
            Ok(v) => v,
            Err(_) => return,
        },
        Ok(None) if photo.is_none() => return,
        Ok(None) => Element::new_static("vCard", ns::VCARD),
        Err(e) => return warn!(error = %e, "vCard store unavailable"),
    };
    vcard.retain_children(|c| !c.is("PHOTO", ns::VCARD));
    if let Some(p) = photo {
        vcard.push_child(p);
    }
    if let Err(e) = store.set_vcard(owner, &vcard.to_xml_string()).await {
        warn!(error = %e, "vCard store unavailable");
    }
    sessions.vcard_changed(owner);
}

/// XEP-0402 §5.3.1: the native bookmarks as XEP-0048 `<storage/>`, or
/// `None` if the account has no native bookmarks node.
pub(crate) async fn bookmarks_as_storage(
    sessions: &LocalSessions,
    me: &Jid,
) -> Result<Option<Element>, StanzaError> {
    let engine = sessions.pep_engine();
    let svc = Service::Pep(me);
    if engine.node(svc, NS_BOOKMARKS2).await?.is_none() {
        return Ok(None);
    }
    let items = engine
        .store()
        .items(me.as_str(), NS_BOOKMARKS2, None)
        .await
        .map_err(|e| {
            warn!(error = %e, "pubsub store unavailable");
            StanzaError::internal_server_error()
        })?;
    let mut storage = Element::new_static("storage", NS_BOOKMARKS);
    for i in items {
        let Ok(c) = Element::parse(&i.payload) else {
            continue;
        };
        if !c.is("conference", NS_BOOKMARKS2) {
            continue;
        }
        let mut conf = Element::new_static("conference", NS_BOOKMARKS).with_attr("jid", i.id);
        if let Some(n) = c.attr("name") {
            conf.set_attr("name", n);
        }
        if let Some(a) = c.attr("autojoin") {
            conf.set_attr("autojoin", a);
        }
        for (child, name) in [("nick", "nick"), ("password", "password")] {
            if let Some(v) = c.child(child, NS_BOOKMARKS2) {
                conf.push_child(Element::new_static(name, NS_BOOKMARKS).with_text(v.text()));
            }
        }
        storage.push_child(conf);
    }
    Ok(Some(storage))
}

/// XEP-0402 §5.3.2: a `<storage xmlns='storage:bookmarks'/>` written
/// through private XML becomes the native bookmarks: new and changed
/// conferences are published, missing ones retracted, unchanged ones left
/// alone (no notification). The notices are returned for delivery.
pub(crate) async fn storage_to_bookmarks(
    sessions: &LocalSessions,
    me: &Jid,
    storage: &Element,
) -> Result<Vec<Notice>, StanzaError> {
    let engine = sessions.pep_engine();
    let svc = Service::Pep(me);
    let rel = rookery_pubsub::Relation {
        owner: true,
        ..Default::default()
    };
    let exists = engine.node(svc, NS_BOOKMARKS2).await?.is_some();
    let current = if exists {
        engine
            .store()
            .items(me.as_str(), NS_BOOKMARKS2, None)
            .await
            .map_err(|_| StanzaError::internal_server_error())?
    } else {
        Vec::new()
    };
    let mut notices = Vec::new();
    let mut kept: Vec<String> = Vec::new();
    for c in storage
        .children()
        .filter(|c| c.is("conference", NS_BOOKMARKS))
    {
        let Some(jid) = c.attr("jid").and_then(|j| Jid::parse(j).ok()) else {
            continue;
        };
        let id = jid.as_str().to_owned();
        let old = current.iter().find(|i| i.id == id);
        let mut conf = Element::new_static("conference", NS_BOOKMARKS2);
        if let Some(n) = c.attr("name") {
            conf.set_attr("name", n);
        }
        if matches!(c.attr("autojoin"), Some("true" | "1")) {
            conf.set_attr("autojoin", "true");
        }
        for name in ["nick", "password"] {
            if let Some(v) = c.child(name, NS_BOOKMARKS) {
                conf.push_child(Element::new_static(name, NS_BOOKMARKS2).with_text(v.text()));
            }
        }
        // Extensions only native clients know are kept.
        if let Some(ext) = old
            .and_then(|o| Element::parse(&o.payload).ok())
            .and_then(|o| o.child("extensions", NS_BOOKMARKS2).cloned())
        {
            conf.push_child(ext);
        }
        kept.push(id.clone());
        if old.is_some_and(|o| o.payload == conf.to_xml_string()) {
            continue;
        }
        let mut pubsub = Element::new_static("pubsub", NS_PUBSUB).with_child(
            Element::new_static("publish", NS_PUBSUB)
                .with_attr("node", NS_BOOKMARKS2)
                .with_child(
                    Element::new_static("item", NS_PUBSUB)
                        .with_attr("id", id)
                        .with_child(conf),
                ),
        );
        if !exists && notices.is_empty() {
            pubsub.push_child(bookmarks_options());
        }
        let out = engine.handle(svc, me, true, &pubsub, &rel).await?;
        notices.extend(out.notices);
    }
    for old in current.iter().filter(|i| !kept.contains(&i.id)) {
        let pubsub = Element::new_static("pubsub", NS_PUBSUB).with_child(
            Element::new_static("retract", NS_PUBSUB)
                .with_attr("node", NS_BOOKMARKS2)
                .with_attr("notify", "true")
                .with_child(
                    Element::new_static("item", NS_PUBSUB).with_attr("id", old.id.as_str()),
                ),
        );
        let out = engine.handle(svc, me, true, &pubsub, &rel).await?;
        notices.extend(out.notices);
    }
    Ok(notices)
}

/// XEP-0402 §3's publish-options for the bookmarks node.
fn bookmarks_options() -> Element {
    let field = |var: &str, v: &str| {
        Element::new_static("field", ns::DATA_FORMS)
            .with_attr("var", var)
            .with_child(Element::new_static("value", ns::DATA_FORMS).with_text(v))
    };
    let mut x = Element::new_static("x", ns::DATA_FORMS).with_attr("type", "submit");
    let form_type = field("FORM_TYPE", NS_PUBLISH_OPTIONS).with_attr("type", "hidden");
    x.push_child(form_type);
    x.push_child(field("pubsub#persist_items", "true"));
    x.push_child(field("pubsub#max_items", "max"));
    x.push_child(field("pubsub#send_last_published_item", "never"));
    x.push_child(field("pubsub#access_model", "whitelist"));
    Element::new_static("publish-options", NS_PUBSUB).with_child(x)
}
