//! RFC 6121 §2: Managing the Roster — roster get, set, remove, pushes to
//! interested resources, and versioning (§2.6, XEP-0237 semantics).
//!
//! The storage trait [`RosterStore`] lives here with the feature; the
//! embedded implementation is in `rookery-store`, and [`conformance`] is the
//! one suite every backend runs.

use async_trait::async_trait;
use rookery_core::users::StoreError;
use rookery_core::{Jid, Stanza, StanzaError};
use rookery_xml::{Element, ns};
use serde::{Deserialize, Serialize};

/// RFC 6121 §2.1.2.5: the subscription state of a roster item.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Subscription {
    /// Neither side is subscribed.
    #[default]
    None,
    /// The user is subscribed to the contact's presence.
    To,
    /// The contact is subscribed to the user's presence.
    From,
    /// Both.
    Both,
}

impl Subscription {
    /// Attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    /// Parses an attribute value.
    pub fn parse(s: &str) -> Option<Subscription> {
        Some(match s {
            "none" => Subscription::None,
            "to" => Subscription::To,
            "from" => Subscription::From,
            "both" => Subscription::Both,
            _ => return None,
        })
    }
}

/// One roster item (RFC 6121 §2.1.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterItem {
    /// The contact's bare JID.
    pub jid: Jid,
    /// The user's handle for the contact.
    pub name: Option<String>,
    /// §2.1.2.5
    pub subscription: Subscription,
    /// §2.1.2.2: an outbound subscription request is pending.
    pub ask: bool,
    /// §2.1.2.1 / §3.4: a subscription from the contact is pre-approved.
    pub approved: bool,
    /// §2.1.2.6, in the order the user gave them.
    pub groups: Vec<String>,
}

impl RosterItem {
    /// A new item with no subscription.
    pub fn new(jid: Jid) -> RosterItem {
        RosterItem {
            jid,
            name: None,
            subscription: Subscription::None,
            ask: false,
            approved: false,
            groups: Vec::new(),
        }
    }

    /// The `<item/>` element of results and pushes.
    pub fn to_element(&self) -> Element {
        let mut e = Element::new_static("item", ns::ROSTER)
            .with_attr("jid", self.jid.as_str())
            .with_attr("subscription", self.subscription.as_str());
        if let Some(n) = &self.name {
            e.set_attr("name", n.clone());
        }
        if self.ask {
            e.set_attr("ask", "subscribe");
        }
        if self.approved {
            e.set_attr("approved", "true");
        }
        for g in &self.groups {
            e.push_child(Element::new_static("group", ns::ROSTER).with_text(g.clone()));
        }
        e
    }
}

/// A whole roster with its version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roster {
    /// Version of the latest modification (0 for a roster never modified).
    pub version: u64,
    /// Items, sorted by JID.
    pub items: Vec<RosterItem>,
}

/// One modification, for interim roster pushes (§2.6.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RosterChange {
    /// The item as it is now.
    Updated(RosterItem),
    /// The item was removed.
    Removed(Jid),
}

/// Storage of rosters. Users and contacts are bare JIDs.
#[async_trait]
pub trait RosterStore: Send + Sync + std::fmt::Debug {
    /// The roster of `user`.
    async fn roster(&self, user: &Jid) -> Result<Roster, StoreError>;
    /// One item.
    async fn item(&self, user: &Jid, contact: &Jid) -> Result<Option<RosterItem>, StoreError>;
    /// Number of items.
    async fn count(&self, user: &Jid) -> Result<usize, StoreError>;
    /// Creates or replaces an item; returns the new roster version.
    async fn put(&self, user: &Jid, item: &RosterItem) -> Result<u64, StoreError>;
    /// Removes an item; returns the new version, `None` if there was none.
    async fn remove(&self, user: &Jid, contact: &Jid) -> Result<Option<u64>, StoreError>;
    /// The modifications after `version`, oldest first, or `None` if the
    /// store cannot tell (an unknown or future version).
    async fn changes_since(
        &self,
        user: &Jid,
        version: u64,
    ) -> Result<Option<(u64, Vec<RosterChange>)>, StoreError>;
    /// Forgets everything of `user` (account deletion).
    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError>;
    /// Stores an inbound subscription request from `contact` (RFC 6121
    /// §3.1.3), replacing an earlier one, until the user answers it.
    async fn add_pending_in(
        &self,
        user: &Jid,
        contact: &Jid,
        stanza: &str,
    ) -> Result<(), StoreError>;
    /// Drops a stored request; returns whether there was one.
    async fn remove_pending_in(&self, user: &Jid, contact: &Jid) -> Result<bool, StoreError>;
    /// Every stored request of `user`, as (contact, serialized stanza), oldest first.
    async fn pending_in(&self, user: &Jid) -> Result<Vec<(Jid, String)>, StoreError>;
}

/// `[session]` options of the roster.
#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
pub struct RosterLimits {
    /// Items per roster.
    pub max_items: usize,
    /// Bytes of an item's name (§2.3.3 "server-configured limit").
    pub max_name_bytes: usize,
    /// Bytes of a group name (§2.3.3).
    pub max_group_bytes: usize,
}

impl Default for RosterLimits {
    fn default() -> Self {
        RosterLimits {
            max_items: 1000,
            max_name_bytes: 1023,
            max_group_bytes: 1023,
        }
    }
}

/// The version string of a roster (`ver` attribute).
pub fn version_string(v: u64) -> String {
    v.to_string()
}

/// A validated roster set (§2.1.5, §2.3.3).
#[derive(Debug)]
pub enum RosterSet {
    /// Create or update.
    Update(RosterItem),
    /// §2.5: remove.
    Remove(Jid),
}

/// Parses and checks the `<query/>` of a roster set; `user` is the roster owner.
pub fn parse_set(query: &Element, limits: &RosterLimits) -> Result<RosterSet, StanzaError> {
    let mut items = query.children().filter(|c| c.is("item", ns::ROSTER));
    let (Some(item), None) = (items.next(), items.next()) else {
        return Err(StanzaError::bad_request(
            "a roster set has exactly one item",
        ));
    };
    let jid = item
        .attr("jid")
        .ok_or_else(|| StanzaError::bad_request("item without jid"))
        .and_then(|j| Jid::parse(j).map_err(|e| StanzaError::jid_malformed(&e.to_string())))?;
    // §2.1.2.3: roster items are bare JIDs (a full JID is accepted by some
    // servers; RFC 6121 allows only the bare form in practice).
    if jid.resource().is_some() {
        return Err(StanzaError::jid_malformed("roster items are bare JIDs"));
    }
    if item.attr("subscription") == Some("remove") {
        return Ok(RosterSet::Remove(jid));
    }
    let name = item
        .attr("name")
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    if name
        .as_ref()
        .is_some_and(|n| n.len() > limits.max_name_bytes)
    {
        return Err(StanzaError::not_acceptable().with_text("name too long"));
    }
    let mut groups: Vec<String> = Vec::new();
    for g in item.children().filter(|c| c.is("group", ns::ROSTER)) {
        let text = g.text();
        if text.is_empty() {
            return Err(StanzaError::not_acceptable().with_text("empty group"));
        }
        if text.len() > limits.max_group_bytes {
            return Err(StanzaError::not_acceptable().with_text("group name too long"));
        }
        // Duplicates compared like resourceparts (§2.3.3, RFC 7622 OpaqueString).
        let prepared = rookery_jid::prep_resourcepart(&text)
            .map(|c| c.into_owned())
            .unwrap_or(text.clone());
        if groups.iter().any(|o| {
            rookery_jid::prep_resourcepart(o)
                .map(|c| c.into_owned())
                .unwrap_or(o.clone())
                == prepared
        }) {
            return Err(StanzaError::bad_request("duplicate group"));
        }
        groups.push(text);
    }
    let mut it = RosterItem::new(jid);
    it.name = name;
    it.groups = groups;
    Ok(RosterSet::Update(it))
}

/// A roster push (§2.1.6) for one item or a removal.
pub fn push(to: &Jid, change: &RosterChange, version: u64) -> Element {
    let item = match change {
        RosterChange::Updated(i) => i.to_element(),
        RosterChange::Removed(j) => Element::new_static("item", ns::ROSTER)
            .with_attr("jid", j.as_str())
            .with_attr("subscription", "remove"),
    };
    Element::new_static("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("id", rookery_core::new_id())
        .with_attr("to", to.as_str())
        .with_child(
            Element::new_static("query", ns::ROSTER)
                .with_attr("ver", version_string(version))
                .with_child(item),
        )
}

/// The roster result (§2.1.4).
pub fn result_query(roster: &Roster) -> Element {
    let mut q =
        Element::new_static("query", ns::ROSTER).with_attr("ver", version_string(roster.version));
    for i in &roster.items {
        q.push_child(i.to_element());
    }
    q
}

/// True if a stanza is a roster query.
pub fn is_roster_iq(stanza: &Stanza) -> bool {
    stanza.element().child("query", ns::ROSTER).is_some()
}

/// The conformance suite every [`RosterStore`] backend runs.
#[cfg(feature = "test-util")]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub mod conformance {
    use super::*;

    fn j(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    /// Runs every check against an empty store.
    pub async fn run(store: &dyn RosterStore) {
        let juliet = j("juliet@example.com");
        let romeo = j("romeo@example.net");
        let nurse = j("nurse@example.com");
        assert_eq!(store.roster(&juliet).await.unwrap(), Roster::default());
        assert_eq!(store.count(&juliet).await.unwrap(), 0);
        assert_eq!(store.item(&juliet, &romeo).await.unwrap(), None);
        assert_eq!(store.remove(&juliet, &romeo).await.unwrap(), None);

        let mut r = RosterItem::new(romeo.clone());
        r.name = Some("Romeo".into());
        r.groups = vec!["Friends".into(), "Lovers".into()];
        r.subscription = Subscription::Both;
        let v1 = store.put(&juliet, &r).await.unwrap();
        assert!(v1 > 0);
        let mut n = RosterItem::new(nurse.clone());
        n.ask = true;
        n.approved = true;
        let v2 = store.put(&juliet, &n).await.unwrap();
        assert!(v2 > v1);
        assert_eq!(store.item(&juliet, &romeo).await.unwrap(), Some(r.clone()));
        let roster = store.roster(&juliet).await.unwrap();
        assert_eq!(roster.version, v2);
        assert_eq!(roster.items, vec![n.clone(), r.clone()]);
        assert_eq!(store.count(&juliet).await.unwrap(), 2);
        // Rosters are per user.
        assert_eq!(store.roster(&romeo).await.unwrap().items, vec![]);

        // Changes since v1: the nurse item.
        let (v, changes) = store.changes_since(&juliet, v1).await.unwrap().unwrap();
        assert_eq!(v, v2);
        assert_eq!(changes, vec![RosterChange::Updated(n.clone())]);
        let (_, none) = store.changes_since(&juliet, v2).await.unwrap().unwrap();
        assert!(none.is_empty());
        assert_eq!(store.changes_since(&juliet, v2 + 100).await.unwrap(), None);

        // Update keeps one item; groups can be emptied.
        r.groups.clear();
        r.name = None;
        let v3 = store.put(&juliet, &r).await.unwrap();
        assert_eq!(store.item(&juliet, &romeo).await.unwrap(), Some(r.clone()));
        let v4 = store.remove(&juliet, &nurse).await.unwrap().unwrap();
        assert!(v4 > v3);
        let (_, changes) = store.changes_since(&juliet, v2).await.unwrap().unwrap();
        assert_eq!(
            changes,
            vec![
                RosterChange::Updated(r.clone()),
                RosterChange::Removed(nurse.clone())
            ]
        );
        // Re-adding a removed contact is an update again.
        let v5 = store.put(&juliet, &n).await.unwrap();
        let (_, changes) = store.changes_since(&juliet, v4).await.unwrap().unwrap();
        assert_eq!(changes, vec![RosterChange::Updated(n.clone())]);
        assert!(v5 > v4);

        // Pending inbound subscription requests.
        assert!(store.pending_in(&juliet).await.unwrap().is_empty());
        assert!(!store.remove_pending_in(&juliet, &romeo).await.unwrap());
        store
            .add_pending_in(&juliet, &romeo, "<presence type='subscribe'/>")
            .await
            .unwrap();
        store
            .add_pending_in(&juliet, &nurse, "<presence type='subscribe'>x</presence>")
            .await
            .unwrap();
        store
            .add_pending_in(
                &juliet,
                &romeo,
                "<presence type='subscribe'>again</presence>",
            )
            .await
            .unwrap();
        let pending = store.pending_in(&juliet).await.unwrap();
        assert_eq!(pending.len(), 2);
        assert!(pending.contains(&(
            romeo.clone(),
            "<presence type='subscribe'>again</presence>".to_owned()
        )));
        assert!(store.pending_in(&romeo).await.unwrap().is_empty());
        assert!(store.remove_pending_in(&juliet, &romeo).await.unwrap());
        assert_eq!(store.pending_in(&juliet).await.unwrap().len(), 1);

        store.delete_user(&juliet).await.unwrap();
        assert_eq!(store.roster(&juliet).await.unwrap().items, vec![]);
        assert_eq!(store.count(&juliet).await.unwrap(), 0);
        assert!(store.pending_in(&juliet).await.unwrap().is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(xml: &str) -> Element {
        Element::parse(xml).unwrap()
    }

    #[test]
    fn roster_set_validation_rfc6121_2_3_3() {
        let l = RosterLimits {
            max_items: 10,
            max_name_bytes: 8,
            max_group_bytes: 8,
        };
        let cond = |xml: &str| parse_set(&q(xml), &l).unwrap_err().condition;
        assert_eq!(
            cond("<query xmlns='jabber:iq:roster'><item jid='a@b'/><item jid='c@d'/></query>"),
            "bad-request"
        );
        assert_eq!(
            cond(
                "<query xmlns='jabber:iq:roster'><item jid='a@b'><group>G</group><group>G</group></item></query>"
            ),
            "bad-request"
        );
        assert_eq!(
            cond("<query xmlns='jabber:iq:roster'><item jid='a@b'><group></group></item></query>"),
            "not-acceptable"
        );
        assert_eq!(
            cond("<query xmlns='jabber:iq:roster'><item jid='a@b' name='123456789'/></query>"),
            "not-acceptable"
        );
        assert_eq!(
            cond(
                "<query xmlns='jabber:iq:roster'><item jid='a@b'><group>123456789</group></item></query>"
            ),
            "not-acceptable"
        );
        assert_eq!(
            cond("<query xmlns='jabber:iq:roster'><item jid='@b'/></query>"),
            "jid-malformed"
        );
        assert_eq!(cond("<query xmlns='jabber:iq:roster'/>"), "bad-request");
        // §2.1.5 rule 2: other subscription values are ignored.
        match parse_set(
            &q("<query xmlns='jabber:iq:roster'><item jid='A@B' subscription='both' ask='subscribe' name='N'><group>x</group></item></query>"),
            &l,
        )
        .unwrap()
        {
            RosterSet::Update(i) => {
                assert_eq!(i.jid.as_str(), "a@b");
                assert_eq!(i.subscription, Subscription::None);
                assert!(!i.ask);
                assert_eq!(i.groups, vec!["x"]);
            }
            RosterSet::Remove(_) => panic!(),
        }
        assert!(matches!(
            parse_set(&q("<query xmlns='jabber:iq:roster'><item jid='a@b' subscription='remove'/></query>"), &l).unwrap(),
            RosterSet::Remove(_)
        ));
    }

    #[test]
    fn item_element() {
        let mut i = RosterItem::new(Jid::parse("romeo@example.net").unwrap());
        i.name = Some("Romeo".into());
        i.subscription = Subscription::To;
        i.ask = true;
        i.groups = vec!["Friends".into()];
        assert_eq!(
            i.to_element().to_xml_string(),
            "<item xmlns='jabber:iq:roster' jid='romeo@example.net' subscription='to' name='Romeo' ask='subscribe'><group>Friends</group></item>"
        );
    }
}
