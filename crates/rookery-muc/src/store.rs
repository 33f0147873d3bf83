//! The storage of persistent rooms (XEP-0045 §10.2 `muc#roomconfig_persistentroom`):
//! configuration, affiliations and subject. Occupants and history live in
//! memory only (docs/decisions/0018-muc.md).

use std::collections::BTreeMap;

use async_trait::async_trait;
use rookery_core::users::StoreError;

/// One persistent room as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredRoom {
    /// The room's bare JID (`room@conference.example.org`).
    pub jid: String,
    /// The room configuration, as JSON ([`crate::RoomConfig`]); opaque to
    /// the store.
    pub config: String,
    /// Affiliations other than `none`: bare JID → `owner`, `admin`,
    /// `member` or `outcast`.
    pub affiliations: BTreeMap<String, String>,
    /// The current subject (XEP-0045 §8.1), empty if none.
    pub subject: String,
    /// The room nick that set the subject, empty if none.
    pub subject_by: String,
}

/// Persistent rooms of one MUC service, keyed by the service domain and
/// the room's bare JID.
#[async_trait]
pub trait RoomStore: Send + Sync + std::fmt::Debug {
    /// Every stored room of the service `domain` (loaded at start).
    async fn rooms(&self, domain: &str) -> Result<Vec<StoredRoom>, StoreError>;
    /// One stored room of the service `domain`, by its bare JID.
    async fn room(&self, domain: &str, jid: &str) -> Result<Option<StoredRoom>, StoreError>;
    /// Creates or replaces a room (whole).
    async fn save_room(&self, domain: &str, room: &StoredRoom) -> Result<(), StoreError>;
    /// Deletes a room; no error if there is none.
    async fn delete_room(&self, domain: &str, jid: &str) -> Result<(), StoreError>;
}

/// A store that keeps nothing: a server whose backend has no room table
/// yet, or tests.
#[derive(Debug, Default)]
pub struct NoRoomStore;

#[async_trait]
impl RoomStore for NoRoomStore {
    async fn rooms(&self, _domain: &str) -> Result<Vec<StoredRoom>, StoreError> {
        Ok(Vec::new())
    }
    async fn room(&self, _domain: &str, _jid: &str) -> Result<Option<StoredRoom>, StoreError> {
        Ok(None)
    }
    async fn save_room(&self, _domain: &str, _room: &StoredRoom) -> Result<(), StoreError> {
        Ok(())
    }
    async fn delete_room(&self, _domain: &str, _jid: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The conformance suite every [`RoomStore`] backend runs: invoke it once per
/// backend with an expression that builds a fresh, empty store.
#[cfg(feature = "test-util")]
#[macro_export]
macro_rules! room_store_conformance {
    ($make:expr) => {
        #[tokio::test]
        async fn room_store_conformance() {
            let store = $make;
            $crate::store::conformance::run(&store).await;
        }
    };
}

/// The body of [`room_store_conformance!`].
#[cfg(feature = "test-util")]
#[allow(clippy::unwrap_used)]
pub mod conformance {
    use super::*;

    /// Runs every check against an empty store.
    pub async fn run(store: &dyn RoomStore) {
        let d = "conference.example.org";
        assert!(store.rooms(d).await.unwrap().is_empty());
        let mut a = StoredRoom {
            jid: "a@conference.example.org".into(),
            config: "{\"name\":\"Änne & <Bob>\"}".into(),
            affiliations: BTreeMap::from([
                ("owner@example.org".to_owned(), "owner".to_owned()),
                ("troll@example.net".to_owned(), "outcast".to_owned()),
            ]),
            subject: "Hello 'world'".into(),
            subject_by: "owner".into(),
        };
        store.save_room(d, &a).await.unwrap();
        let b = StoredRoom {
            jid: "b@conference.example.org".into(),
            config: "{}".into(),
            ..Default::default()
        };
        store.save_room(d, &b).await.unwrap();
        // Another service's rooms are apart.
        store
            .save_room(
                "muc.example.com",
                &StoredRoom {
                    jid: "c@muc.example.com".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let mut got = store.rooms(d).await.unwrap();
        got.sort_by(|x, y| x.jid.cmp(&y.jid));
        assert_eq!(got, vec![a.clone(), b.clone()]);
        // Replaced whole: an affiliation removed is gone.
        a.affiliations.remove("troll@example.net");
        a.affiliations
            .insert("m@example.org".to_owned(), "member".to_owned());
        a.subject = String::new();
        a.subject_by = String::new();
        store.save_room(d, &a).await.unwrap();
        let got = store.rooms(d).await.unwrap();
        assert_eq!(got.iter().find(|r| r.jid == a.jid), Some(&a));
        // One room by its JID, with its affiliations; only in its service.
        assert_eq!(store.room(d, &a.jid).await.unwrap(), Some(a.clone()));
        assert_eq!(store.room(d, &b.jid).await.unwrap(), Some(b.clone()));
        assert_eq!(store.room("muc.example.com", &a.jid).await.unwrap(), None);
        assert_eq!(
            store.room(d, "nope@conference.example.org").await.unwrap(),
            None
        );
        store.delete_room(d, &b.jid).await.unwrap();
        assert_eq!(store.rooms(d).await.unwrap(), vec![a.clone()]);
        // Deleting what is not there is not an error.
        store.delete_room(d, &b.jid).await.unwrap();
        assert_eq!(store.rooms("muc.example.com").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_empty_store_keeps_nothing() {
        let s = NoRoomStore;
        s.save_room("d", &StoredRoom::default()).await.unwrap();
        assert!(s.rooms("d").await.unwrap().is_empty());
    }
}
