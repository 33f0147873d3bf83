//! XEP-0313: Message Archive Management, the parts every archive shares: the
//! storage trait with its conformance suite, the XEP-0359 `<stanza-id/>`
//! helpers (§3.5), XEP-0441 preferences, XEP-0082 times, and in [`query`]
//! the §4 query protocol (form, XEP-0059 paging, `<result/>` and `<fin/>`)
//! and §5 metadata. User archives (rookery-session) and room archives
//! (rookery-muc, §6.1.2) both use them (docs/decisions/0022-muc-archives.md).

pub mod query;

use async_trait::async_trait;
use rookery_core::Jid;
use rookery_core::users::StoreError;
use rookery_xml::Element;
use time::OffsetDateTime;
use time::macros::format_description;

/// XEP-0313 namespace (also XEP-0441 preferences).
pub const NS: &str = "urn:xmpp:mam:2";
/// XEP-0313 §7: before-id, after-id, ids, flipped pages, metadata.
pub const NS_EXTENDED: &str = "urn:xmpp:mam:2#extended";
/// XEP-0359 namespace.
pub const SID: &str = "urn:xmpp:sid:0";
/// XEP-0059 namespace.
pub const RSM: &str = "http://jabber.org/protocol/rsm";
/// XEP-0004 namespace.
pub const DATA: &str = "jabber:x:data";
/// XEP-0297 namespace (the `<forwarded/>` of a result).
pub const FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0203 namespace (the `<delay/>` of a result).
pub const DELAY: &str = "urn:xmpp:delay";

/// One archived message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedMessage {
    /// The archive id (XEP-0359 stanza-id), unique within the archive.
    pub id: String,
    /// When the server archived it, microseconds since the Unix epoch (UTC).
    pub ts: i64,
    /// What the `with` filter matches: in a user archive the bare JID of
    /// the other party (the sender of an incoming message, the recipient
    /// of an outgoing one); in a room archive the occupant JID of the
    /// sender (`room@service/nick`, §4.1.1 "the publisher of the item").
    pub with: Jid,
    /// The stanza as serialized XML.
    pub stanza: String,
}

/// What a query selects (XEP-0313 §4.1); every field narrows the result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveFilter {
    /// Only messages whose `with` is this JID, compared as given: a user
    /// archive asks with a bare JID, a room archive with an occupant JID.
    pub with: Option<Jid>,
    /// Only messages archived at or after this time (micros).
    pub start: Option<i64>,
    /// Only messages archived at or before this time (micros).
    pub end: Option<i64>,
    /// Only messages after the one with this id (§4.1.3 `after-id`).
    pub after_id: Option<String>,
    /// Only messages before the one with this id (§4.1.3 `before-id`).
    pub before_id: Option<String>,
    /// Only these messages (§4.1.3 `ids`); empty means no restriction.
    pub ids: Vec<String>,
}

/// Which page of the filtered result set (XEP-0059 §2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Page {
    /// The first page, or the page after this id (`<after/>`).
    Forward(Option<String>),
    /// The last page (`<before/>` empty), or the page before this id.
    Backward(Option<String>),
}

/// One page of results, in chronological order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchivePage {
    /// The messages.
    pub items: Vec<ArchivedMessage>,
    /// No further page in the paging direction (§4.3.2 `complete`).
    pub complete: bool,
    /// Size of the filtered set, ignoring the page (XEP-0059 `<count/>`).
    pub count: usize,
    /// Position of the first item in the filtered set (`<first index/>`).
    pub first_index: Option<usize>,
}

/// Why a query failed.
#[derive(Debug)]
pub enum QueryError {
    /// An id given by the client is not in the archive (§4.3.2, §4.1.3).
    ItemNotFound,
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for QueryError {
    fn from(e: StoreError) -> Self {
        QueryError::Store(e)
    }
}

/// XEP-0441 §2.1.1 default archiving behaviour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DefaultMode {
    /// Archive everything.
    #[default]
    Always,
    /// Archive messages with contacts in the roster only.
    Roster,
    /// Archive nothing by default.
    Never,
}

impl DefaultMode {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultMode::Always => "always",
            DefaultMode::Roster => "roster",
            DefaultMode::Never => "never",
        }
    }
    /// Parses the attribute value.
    pub fn parse(s: &str) -> Option<DefaultMode> {
        match s {
            "always" => Some(DefaultMode::Always),
            "roster" => Some(DefaultMode::Roster),
            "never" => Some(DefaultMode::Never),
            _ => None,
        }
    }
}

/// XEP-0441 archiving preferences of an account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchivePrefs {
    /// For JIDs in neither list.
    pub default: DefaultMode,
    /// Always archived.
    pub always: Vec<Jid>,
    /// Never archived.
    pub never: Vec<Jid>,
}

/// XEP-0441 §2.3: does a listed JID match the other party?
fn listed(list: &[Jid], target: &Jid) -> bool {
    list.iter().any(|j| {
        if j.resource().is_some() {
            j == target
        } else {
            *j == target.to_bare()
        }
    })
}

impl ArchivePrefs {
    /// `Some(decision)` when the lists or the default decide; `None` when the
    /// roster has to be consulted (`default='roster'`, JID in no list).
    pub fn decide(&self, with: &Jid) -> Option<bool> {
        if listed(&self.never, with) {
            return Some(false);
        }
        if listed(&self.always, with) {
            return Some(true);
        }
        match self.default {
            DefaultMode::Always => Some(true),
            DefaultMode::Never => Some(false),
            DefaultMode::Roster => None,
        }
    }
}

/// Storage of message archives. The owner of an archive is an account's
/// bare JID (user archives) or a room's bare JID (room archives, §3.3.2);
/// the two live side by side in the same tables.
#[async_trait]
pub trait ArchiveStore: Send + Sync + std::fmt::Debug {
    /// Appends a message to `user`'s archive (ids are unique per archive;
    /// items are ordered by append order).
    async fn append(&self, user: &Jid, item: &ArchivedMessage) -> Result<(), StoreError>;
    /// One page of the messages of `user` matching `filter`, at most
    /// `limit` of them, always in chronological order.
    async fn query(
        &self,
        user: &Jid,
        filter: &ArchiveFilter,
        page: &Page,
        limit: usize,
    ) -> Result<ArchivePage, QueryError>;
    /// Forgets the archive and preferences of `user` (account deletion,
    /// room destruction).
    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError>;
    /// The preferences (defaults when never set).
    async fn prefs(&self, user: &Jid) -> Result<ArchivePrefs, StoreError>;
    /// Replaces the preferences.
    async fn set_prefs(&self, user: &Jid, prefs: &ArchivePrefs) -> Result<(), StoreError>;
}

/// An archive store that keeps nothing: benchmarks and tests of what is
/// archived, without a backend.
#[derive(Debug, Default)]
pub struct NoArchiveStore;

#[async_trait]
impl ArchiveStore for NoArchiveStore {
    async fn append(&self, _: &Jid, _: &ArchivedMessage) -> Result<(), StoreError> {
        Ok(())
    }
    async fn query(
        &self,
        _: &Jid,
        _: &ArchiveFilter,
        _: &Page,
        _: usize,
    ) -> Result<ArchivePage, QueryError> {
        Ok(ArchivePage::default())
    }
    async fn delete_user(&self, _: &Jid) -> Result<(), StoreError> {
        Ok(())
    }
    async fn prefs(&self, _: &Jid) -> Result<ArchivePrefs, StoreError> {
        Ok(ArchivePrefs::default())
    }
    async fn set_prefs(&self, _: &Jid, _: &ArchivePrefs) -> Result<(), StoreError> {
        Ok(())
    }
}

/// True if the element carries a `<stanza-id/>` claiming to be by `by`.
pub fn has_stanza_id_by(el: &Element, by: &Jid) -> bool {
    el.children()
        .any(|c| c.is("stanza-id", SID) && c.attr("by") == Some(by.as_str()))
}

/// XEP-0359 §3: removes `<stanza-id/>` elements claiming to be by `by`
/// (only the server may add those).
pub fn strip_stanza_ids(el: &mut Element, by: &Jid) {
    el.retain_children(|c| !(c.is("stanza-id", SID) && c.attr("by") == Some(by.as_str())));
}

/// Adds `<stanza-id by id/>`.
pub fn add_stanza_id(el: &mut Element, by: &Jid, id: &str) {
    el.push_child(
        Element::new_static("stanza-id", SID)
            .with_attr("by", by.as_str())
            .with_attr("id", id),
    );
}

/// Now, in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// XEP-0082 DateTime (UTC, microseconds) of a timestamp.
pub fn format_micros(micros: i64) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| t.format(fmt).ok())
        .unwrap_or_default()
}

/// Parses a XEP-0082 DateTime (`CCYY-MM-DDThh:mm:ss[.sss]TZD`) to
/// microseconds since the Unix epoch.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut micros = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = s.get(start..i.min(start + 6))?;
        micros = frac.parse::<i64>().ok()? * 10i64.pow(6 - frac.len() as u32);
    }
    let offset_secs = match s.get(i..)? {
        "Z" => 0,
        tz if tz.len() == 6
            && (tz.starts_with('+') || tz.starts_with('-'))
            && tz.as_bytes()[3] == b':' =>
        {
            let h = num(i + 1..i + 3)?;
            let m = num(i + 4..i + 6)?;
            if h > 23 || m > 59 {
                return None;
            }
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?)
            .ok()?;
    let tod = time::Time::from_hms(
        u8::try_from(hour).ok()?,
        u8::try_from(minute).ok()?,
        u8::try_from(second).ok()?,
    )
    .ok()?;
    let t = time::PrimitiveDateTime::new(date, tod).assume_utc();
    Some((t.unix_timestamp() - offset_secs) * 1_000_000 + micros)
}

/// The conformance suite every [`ArchiveStore`] backend runs.
#[cfg(feature = "test-util")]
#[allow(clippy::unwrap_used)]
pub mod conformance {
    use super::*;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    fn ids(p: &ArchivePage) -> Vec<&str> {
        p.items.iter().map(|i| i.id.as_str()).collect()
    }

    async fn q(
        store: &dyn ArchiveStore,
        user: &Jid,
        f: &ArchiveFilter,
        page: Page,
        limit: usize,
    ) -> ArchivePage {
        store.query(user, f, &page, limit).await.unwrap()
    }

    /// Runs every check against an empty store.
    pub async fn run(store: &dyn ArchiveStore) {
        let a = jid("a@example.com");
        let b = jid("b@example.com");
        let c = jid("c@example.com");
        let all = ArchiveFilter::default();

        // Empty archive: an empty, complete page.
        let p = q(store, &a, &all, Page::Forward(None), 10).await;
        assert!(p.items.is_empty() && p.complete && p.count == 0);
        let p = q(store, &a, &all, Page::Backward(None), 10).await;
        assert!(p.items.is_empty() && p.complete);

        // m0..m9: even with b, odd with c; timestamps 1000, 2000, ... but
        // m4 and m5 share one (order is append order, not the timestamp's).
        for i in 0..10i64 {
            let ts = if i == 5 { 5000 } else { (i + 1) * 1000 };
            let item = ArchivedMessage {
                id: format!("m{i}"),
                ts,
                with: if i % 2 == 0 { b.clone() } else { c.clone() },
                stanza: format!("<message><body>{i}</body></message>"),
            };
            store.append(&a, &item).await.unwrap();
        }
        // Another archive with a colliding id is separate.
        store
            .append(
                &b,
                &ArchivedMessage {
                    id: "m0".into(),
                    ts: 1,
                    with: a.clone(),
                    stanza: "<message/>".into(),
                },
            )
            .await
            .unwrap();

        // Forward paging.
        let p = q(store, &a, &all, Page::Forward(None), 4).await;
        assert_eq!(ids(&p), ["m0", "m1", "m2", "m3"]);
        assert!(!p.complete);
        assert_eq!((p.count, p.first_index), (10, Some(0)));
        assert_eq!(p.items[0].ts, 1000);
        assert_eq!(p.items[0].with, b);
        assert_eq!(p.items[0].stanza, "<message><body>0</body></message>");
        let p = q(store, &a, &all, Page::Forward(Some("m3".into())), 4).await;
        assert_eq!(ids(&p), ["m4", "m5", "m6", "m7"]);
        assert!(!p.complete);
        assert_eq!(p.first_index, Some(4));
        let p = q(store, &a, &all, Page::Forward(Some("m7".into())), 4).await;
        assert_eq!(ids(&p), ["m8", "m9"]);
        assert!(p.complete);
        // Exactly the last items: complete as well.
        let p = q(store, &a, &all, Page::Forward(Some("m5".into())), 4).await;
        assert_eq!(ids(&p), ["m6", "m7", "m8", "m9"]);
        assert!(p.complete);
        let p = q(store, &a, &all, Page::Forward(Some("m9".into())), 4).await;
        assert!(p.items.is_empty() && p.complete);

        // Backward paging: the last page, then the ones before, chronological.
        let p = q(store, &a, &all, Page::Backward(None), 4).await;
        assert_eq!(ids(&p), ["m6", "m7", "m8", "m9"]);
        assert!(!p.complete);
        assert_eq!(p.first_index, Some(6));
        let p = q(store, &a, &all, Page::Backward(Some("m6".into())), 4).await;
        assert_eq!(ids(&p), ["m2", "m3", "m4", "m5"]);
        assert!(!p.complete);
        let p = q(store, &a, &all, Page::Backward(Some("m2".into())), 4).await;
        assert_eq!(ids(&p), ["m0", "m1"]);
        assert!(p.complete);

        // A limit of 0 only counts.
        let p = q(store, &a, &all, Page::Forward(None), 0).await;
        assert!(p.items.is_empty() && !p.complete);
        assert_eq!(p.count, 10);

        // Filters: with, start/end (inclusive), after-id/before-id, ids.
        let with_c = ArchiveFilter {
            with: Some(c.clone()),
            ..Default::default()
        };
        let p = q(store, &a, &with_c, Page::Forward(None), 3).await;
        assert_eq!(ids(&p), ["m1", "m3", "m5"]);
        assert_eq!(p.count, 5);
        let p = q(store, &a, &with_c, Page::Forward(Some("m5".into())), 3).await;
        assert_eq!(ids(&p), ["m7", "m9"]);
        assert!(p.complete);
        // `with` is compared as given: a full JID does not match the bare
        // JIDs of a user archive (the session asks with the bare JID).
        let full = ArchiveFilter {
            with: Some(jid("c@example.com/res")),
            ..Default::default()
        };
        assert_eq!(q(store, &a, &full, Page::Forward(None), 10).await.count, 0);
        let time = ArchiveFilter {
            start: Some(3000),
            end: Some(5000),
            ..Default::default()
        };
        let p = q(store, &a, &time, Page::Forward(None), 10).await;
        assert_eq!(ids(&p), ["m2", "m3", "m4", "m5"]);
        assert!(p.complete);
        let p = q(store, &a, &time, Page::Backward(None), 3).await;
        assert_eq!(ids(&p), ["m3", "m4", "m5"]);
        assert_eq!((p.count, p.first_index), (4, Some(1)));
        let between = ArchiveFilter {
            after_id: Some("m1".into()),
            before_id: Some("m6".into()),
            ..Default::default()
        };
        let p = q(store, &a, &between, Page::Forward(None), 10).await;
        assert_eq!(ids(&p), ["m2", "m3", "m4", "m5"]);
        let some = ArchiveFilter {
            ids: vec!["m8".into(), "m1".into()],
            ..Default::default()
        };
        let p = q(store, &a, &some, Page::Forward(None), 10).await;
        assert_eq!(ids(&p), ["m1", "m8"]);
        let nothing = ArchiveFilter {
            with: Some(jid("nobody@example.com")),
            ..Default::default()
        };
        let p = q(store, &a, &nothing, Page::Forward(None), 10).await;
        assert!(p.items.is_empty() && p.complete && p.count == 0);

        // Unknown ids, including ids of another archive: item-not-found.
        for page in [
            Page::Forward(Some("nope".into())),
            Page::Backward(Some("nope".into())),
        ] {
            assert!(matches!(
                store.query(&a, &all, &page, 10).await,
                Err(QueryError::ItemNotFound)
            ));
        }
        for f in [
            ArchiveFilter {
                after_id: Some("nope".into()),
                ..Default::default()
            },
            ArchiveFilter {
                before_id: Some("nope".into()),
                ..Default::default()
            },
            ArchiveFilter {
                ids: vec!["m1".into(), "nope".into()],
                ..Default::default()
            },
        ] {
            assert!(matches!(
                store.query(&a, &f, &Page::Forward(None), 10).await,
                Err(QueryError::ItemNotFound)
            ));
        }
        assert!(matches!(
            store
                .query(&c, &all, &Page::Forward(Some("m1".into())), 10)
                .await,
            Err(QueryError::ItemNotFound)
        ));
        let p = q(store, &b, &all, Page::Forward(None), 10).await;
        assert_eq!(ids(&p), ["m0"]);

        // A room archive: `with` is the occupant JID, matched exactly; the
        // room's bare JID matches none of its messages.
        let room = jid("room@muc.example.com");
        for (i, nick) in ["alice", "bob", "alice", "alice2"].iter().enumerate() {
            let item = ArchivedMessage {
                id: format!("r{i}"),
                ts: 100 + i as i64,
                with: jid(&format!("room@muc.example.com/{nick}")),
                stanza: format!("<message type='groupchat'><body>{i}</body></message>"),
            };
            store.append(&room, &item).await.unwrap();
        }
        let alice = ArchiveFilter {
            with: Some(jid("room@muc.example.com/alice")),
            ..Default::default()
        };
        let p = q(store, &room, &alice, Page::Forward(None), 10).await;
        assert_eq!(ids(&p), ["r0", "r2"]);
        assert_eq!(p.items[1].with, jid("room@muc.example.com/alice"));
        let alice_ids = ArchiveFilter {
            ids: vec!["r0".into(), "r1".into(), "r3".into()],
            ..alice.clone()
        };
        let p = q(store, &room, &alice_ids, Page::Forward(None), 10).await;
        assert_eq!(ids(&p), ["r0"]);
        let bare = ArchiveFilter {
            with: Some(room.clone()),
            ..Default::default()
        };
        assert_eq!(
            q(store, &room, &bare, Page::Forward(None), 10).await.count,
            0
        );
        store.delete_user(&room).await.unwrap();
        assert_eq!(
            q(store, &room, &all, Page::Forward(None), 10).await.count,
            0
        );
        assert_eq!(
            q(store, &room, &alice, Page::Forward(None), 10).await.count,
            0
        );

        // Preferences.
        assert_eq!(store.prefs(&a).await.unwrap(), ArchivePrefs::default());
        let prefs = ArchivePrefs {
            default: DefaultMode::Roster,
            always: vec![b.clone()],
            never: vec![c.clone(), jid("d@example.com/r")],
        };
        store.set_prefs(&a, &prefs).await.unwrap();
        assert_eq!(store.prefs(&a).await.unwrap(), prefs);
        let never = ArchivePrefs {
            default: DefaultMode::Never,
            ..Default::default()
        };
        store.set_prefs(&a, &never).await.unwrap();
        assert_eq!(store.prefs(&a).await.unwrap(), never);
        assert_eq!(store.prefs(&b).await.unwrap(), ArchivePrefs::default());

        // Deletion forgets archive and preferences of that user only.
        store.delete_user(&a).await.unwrap();
        let p = q(store, &a, &all, Page::Forward(None), 10).await;
        assert!(p.items.is_empty() && p.count == 0);
        assert_eq!(store.prefs(&a).await.unwrap(), ArchivePrefs::default());
        assert_eq!(q(store, &b, &all, Page::Forward(None), 10).await.count, 1);
        // Ids are not reused after deletion; appending again works.
        store
            .append(
                &a,
                &ArchivedMessage {
                    id: "n0".into(),
                    ts: 1,
                    with: b.clone(),
                    stanza: "<message/>".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(q(store, &a, &all, Page::Forward(None), 10).await.count, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanza_ids_of_the_archive_are_replaced() {
        let me = Jid::parse("a@example.com").unwrap();
        let mut el = Element::parse(
            "<message xmlns='jabber:client'><body>x</body><stanza-id xmlns='urn:xmpp:sid:0' by='a@example.com' id='fake'/><stanza-id xmlns='urn:xmpp:sid:0' by='room@muc' id='keep'/></message>",
        )
        .unwrap();
        assert!(has_stanza_id_by(&el, &me));
        strip_stanza_ids(&mut el, &me);
        assert!(!has_stanza_id_by(&el, &me));
        add_stanza_id(&mut el, &me, "real");
        let ids: Vec<_> = el
            .children()
            .filter(|c| c.is("stanza-id", SID))
            .map(|c| c.attr("id").unwrap())
            .collect();
        assert_eq!(ids, ["keep", "real"]);
    }

    #[test]
    fn xep0082_datetimes() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_datetime("2010-06-07T00:00:00Z"),
            Some(1_275_868_800_000_000)
        );
        assert_eq!(
            parse_datetime("2010-06-07T00:00:00.5Z"),
            Some(1_275_868_800_500_000)
        );
        assert_eq!(
            parse_datetime("2010-06-07T02:00:00+02:00"),
            Some(1_275_868_800_000_000)
        );
        assert_eq!(
            parse_datetime("2010-06-06T22:00:00.123456-02:00"),
            Some(1_275_868_800_123_456)
        );
        for bad in [
            "",
            "yesterday",
            "2010-06-07",
            "2010-06-07T00:00:00",
            "2010-13-07T00:00:00Z",
            "2010-06-07T25:00:00Z",
            "2010-06-07T00:00:00.Z",
            "2010-06-07T00:00:00+2:00",
            "2010-06-07T00:00:00+0\u{e9}00",
            "2010-06-07T00:00:0\u{e9}Z",
            "2010-06-07 00:00:00Z",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
        let now = now_micros();
        let s = format_micros(now);
        assert_eq!(parse_datetime(&s), Some(now), "{s}");
    }

    #[test]
    fn prefs_decide_xep0441() {
        let j = |s: &str| Jid::parse(s).unwrap();
        let p = ArchivePrefs {
            default: DefaultMode::Roster,
            always: vec![j("b@x")],
            never: vec![j("c@x"), j("d@x/r")],
        };
        assert_eq!(p.decide(&j("b@x/any")), Some(true));
        assert_eq!(p.decide(&j("c@x/any")), Some(false));
        assert_eq!(p.decide(&j("d@x/r")), Some(false));
        assert_eq!(p.decide(&j("d@x/other")), None);
        assert_eq!(ArchivePrefs::default().decide(&j("e@x")), Some(true));
    }
}
