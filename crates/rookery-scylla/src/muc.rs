//! [`RoomStore`] on ScyllaDB (XEP-0045), table `muc_rooms`
//! (`schema/009_muc_rooms.cql`): one row per room, affiliations in a map,
//! replaced whole.

use std::collections::BTreeMap;

use async_trait::async_trait;
use rookery_core::users::StoreError;
use rookery_muc::{RoomStore, StoredRoom};
use scylla::statement::prepared::PreparedStatement;

use crate::{Preparer, ScyllaStore, now_secs};

#[derive(Debug)]
pub(crate) struct Statements {
    list: PreparedStatement,
    one: PreparedStatement,
    set: PreparedStatement,
    delete: PreparedStatement,
}

impl Statements {
    pub(crate) async fn prepare(p: &Preparer<'_>) -> Result<Statements, StoreError> {
        Ok(Statements {
            list: p
                .prepare(
                    "SELECT jid, config, affiliations, subject, subject_by FROM {ks}.muc_rooms WHERE service = ?",
                    true,
                )
                .await?,
            one: p
                .prepare(
                    "SELECT jid, config, affiliations, subject, subject_by FROM {ks}.muc_rooms WHERE service = ? AND jid = ?",
                    true,
                )
                .await?,
            set: p
                .prepare(
                    "INSERT INTO {ks}.muc_rooms (service, jid, config, affiliations, subject, subject_by, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    true,
                )
                .await?,
            delete: p
                .prepare(
                    "DELETE FROM {ks}.muc_rooms WHERE service = ? AND jid = ?",
                    true,
                )
                .await?,
        })
    }
}

type Row = (
    String,
    Option<String>,
    Option<BTreeMap<String, String>>,
    Option<String>,
    Option<String>,
);

fn stored((jid, config, affiliations, subject, subject_by): Row) -> StoredRoom {
    StoredRoom {
        jid,
        config: config.unwrap_or_default(),
        affiliations: affiliations.unwrap_or_default(),
        subject: subject.unwrap_or_default(),
        subject_by: subject_by.unwrap_or_default(),
    }
}

#[async_trait]
impl RoomStore for ScyllaStore {
    async fn rooms(&self, domain: &str) -> Result<Vec<StoredRoom>, StoreError> {
        let rows: Vec<Row> = self.all(&self.muc.list, (domain,)).await?;
        Ok(rows.into_iter().map(stored).collect())
    }

    async fn room(&self, domain: &str, jid: &str) -> Result<Option<StoredRoom>, StoreError> {
        let rows: Vec<Row> = self.all(&self.muc.one, (domain, jid)).await?;
        Ok(rows.into_iter().next().map(stored))
    }

    async fn save_room(&self, domain: &str, room: &StoredRoom) -> Result<(), StoreError> {
        self.exec(
            &self.muc.set,
            (
                domain,
                room.jid.as_str(),
                room.config.as_str(),
                &room.affiliations,
                room.subject.as_str(),
                room.subject_by.as_str(),
                now_secs(),
            ),
        )
        .await
        .map(|_| ())
    }

    async fn delete_room(&self, domain: &str, jid: &str) -> Result<(), StoreError> {
        self.exec(&self.muc.delete, (domain, jid)).await.map(|_| ())
    }
}
