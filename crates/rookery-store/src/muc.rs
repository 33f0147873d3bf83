//! [`RoomStore`] on SQLite: persistent XEP-0045 rooms, one row per room and
//! one per affiliation, replaced whole in one transaction.

use async_trait::async_trait;
use rookery_core::users::StoreError;
use rookery_muc::{RoomStore, StoredRoom};
use rusqlite::{OptionalExtension, params};

use crate::{SqliteStore, now, unavailable};

pub(crate) const SCHEMA_1: &str = "
CREATE TABLE muc_rooms (
    service    TEXT NOT NULL,
    jid        TEXT NOT NULL,
    config     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    subject_by TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (service, jid)
) WITHOUT ROWID;
CREATE TABLE muc_affiliations (
    service     TEXT NOT NULL,
    room        TEXT NOT NULL,
    jid         TEXT NOT NULL,
    affiliation TEXT NOT NULL,
    PRIMARY KEY (service, room, jid)
) WITHOUT ROWID;
";

#[async_trait]
impl RoomStore for SqliteStore {
    async fn rooms(&self, domain: &str) -> Result<Vec<StoredRoom>, StoreError> {
        let service = domain.to_owned();
        self.with(move |c| {
            let mut rooms: Vec<StoredRoom> = c
                .prepare_cached(
                    "SELECT jid, config, subject, subject_by FROM muc_rooms WHERE service = ?1 ORDER BY jid",
                )
                .and_then(|mut st| {
                    st.query_map([&service], |r| {
                        Ok(StoredRoom {
                            jid: r.get(0)?,
                            config: r.get(1)?,
                            subject: r.get(2)?,
                            subject_by: r.get(3)?,
                            affiliations: Default::default(),
                        })
                    })?
                    .collect()
                })
                .map_err(unavailable)?;
            let affs: Vec<(String, String, String)> = c
                .prepare_cached(
                    "SELECT room, jid, affiliation FROM muc_affiliations WHERE service = ?1",
                )
                .and_then(|mut st| {
                    st.query_map([&service], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect()
                })
                .map_err(unavailable)?;
            for (room, jid, a) in affs {
                if let Some(r) = rooms.iter_mut().find(|r| r.jid == room) {
                    r.affiliations.insert(jid, a);
                }
            }
            Ok(rooms)
        })
        .await
    }

    async fn room(&self, domain: &str, jid: &str) -> Result<Option<StoredRoom>, StoreError> {
        let (service, jid) = (domain.to_owned(), jid.to_owned());
        self.with(move |c| {
            let room = c
                .prepare_cached(
                    "SELECT config, subject, subject_by FROM muc_rooms WHERE service = ?1 AND jid = ?2",
                )
                .and_then(|mut st| {
                    st.query_row(params![service, jid], |r| {
                        Ok(StoredRoom {
                            jid: jid.clone(),
                            config: r.get(0)?,
                            subject: r.get(1)?,
                            subject_by: r.get(2)?,
                            affiliations: Default::default(),
                        })
                    })
                    .optional()
                })
                .map_err(unavailable)?;
            let Some(mut room) = room else {
                return Ok(None);
            };
            room.affiliations = c
                .prepare_cached(
                    "SELECT jid, affiliation FROM muc_affiliations WHERE service = ?1 AND room = ?2",
                )
                .and_then(|mut st| {
                    st.query_map(params![service, jid], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect()
                })
                .map_err(unavailable)?;
            Ok(Some(room))
        })
        .await
    }

    async fn save_room(&self, domain: &str, room: &StoredRoom) -> Result<(), StoreError> {
        let (service, room) = (domain.to_owned(), room.clone());
        self.with(move |c| {
            let tx = crate::write_tx(c)?;
            tx.execute(
                "INSERT OR REPLACE INTO muc_rooms (service, jid, config, subject, subject_by, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![service, room.jid, room.config, room.subject, room.subject_by, now()],
            )
            .map_err(unavailable)?;
            tx.execute(
                "DELETE FROM muc_affiliations WHERE service = ?1 AND room = ?2",
                params![service, room.jid],
            )
            .map_err(unavailable)?;
            for (jid, a) in &room.affiliations {
                tx.execute(
                    "INSERT INTO muc_affiliations (service, room, jid, affiliation) VALUES (?1, ?2, ?3, ?4)",
                    params![service, room.jid, jid, a],
                )
                .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn delete_room(&self, domain: &str, jid: &str) -> Result<(), StoreError> {
        let (service, jid) = (domain.to_owned(), jid.to_owned());
        self.with(move |c| {
            let tx = crate::write_tx(c)?;
            tx.execute(
                "DELETE FROM muc_rooms WHERE service = ?1 AND jid = ?2",
                params![service, jid],
            )
            .map_err(unavailable)?;
            tx.execute(
                "DELETE FROM muc_affiliations WHERE service = ?1 AND room = ?2",
                params![service, jid],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use crate::SqliteStore;

    rookery_muc::room_store_conformance!(SqliteStore::in_memory().unwrap());
}
