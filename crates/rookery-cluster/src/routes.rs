//! The routes registry: full JID → connection manager and session owner, fenced by the
//! claim of the JID's virtual shard.

use serde::{Deserialize, Serialize};

use crate::keys::{self, Keys};
use crate::membership::FenceSource;
use crate::{ClusterError, Membership, Redis, scripts, shard_of};

/// Where one online resource is connected, and who owns its session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// Node name of the connection manager holding the socket.
    pub cm: String,
    /// Epoch of that connection manager's incarnation.
    pub cm_epoch: u64,
    /// Connection id, unique within the connection manager's incarnation.
    pub conn_id: u64,
    /// Node name of the session owner that wrote the route.
    pub session: String,
    /// Epoch of that session owner's incarnation (must hold the shard's claim).
    pub session_epoch: u64,
    /// Presence priority; `None` = not available (no initial presence yet, or
    /// unavailable).
    pub priority: Option<i8>,
    /// Opaque JSON owned by the session code.
    pub state: String,
}

/// The routes registry in Redis. Cheap to clone; shares the [`Membership`]'s connection.
///
/// Writes ([`Routes::put`], [`Routes::remove`]) succeed only for the current claimant of
/// the user's shard (see [`Routes::claim_shard`]), checked atomically with the write.
/// Writes in the name of the local node also fail with [`ClusterError::Fenced`] while
/// [`Membership::fenced`] is true.
#[derive(Clone, Debug)]
pub struct Routes {
    redis: Redis,
    keys: Keys,
    shards: u16,
    fence: FenceSource,
}

/// Splits a full JID at its first `/` into (bare, resource).
fn split_full(full: &str) -> Result<(&str, &str), ClusterError> {
    match full.split_once('/') {
        Some((bare, res)) if !bare.is_empty() && !res.is_empty() => Ok((bare, res)),
        _ => Err(ClusterError::Config(format!("not a full JID: {full:?}"))),
    }
}

impl Routes {
    /// The registry of the cluster `membership` belongs to.
    pub fn new(membership: &Membership) -> Routes {
        Routes {
            redis: membership.redis().clone(),
            keys: Keys::new(&membership.config().prefix),
            shards: membership.shards(),
            fence: membership.fence_source(),
        }
    }

    /// The virtual shard of a bare JID in this cluster.
    pub fn shard_of(&self, bare: &str) -> u16 {
        shard_of(bare, self.shards)
    }

    fn check_local_fence(&self, node: &str, epoch: u64) -> Result<(), ClusterError> {
        if self.fence.fenced_as(node, epoch) {
            Err(ClusterError::Fenced)
        } else {
            Ok(())
        }
    }

    /// Makes `(node, epoch)` the claimant of `shard`: later writes for users of that
    /// shard by anyone else fail with [`ClusterError::Fenced`]. Refused with `Fenced` when
    /// the shard is claimed by a newer incarnation of the same node name, or when
    /// `(node, epoch)` is this process and it is fenced.
    pub async fn claim_shard(
        &self,
        shard: u16,
        node: &str,
        epoch: u64,
    ) -> Result<(), ClusterError> {
        self.check_local_fence(node, epoch)?;
        let ok: i64 = self
            .redis
            .invoke(
                scripts::CLAIM
                    .key(self.keys.claim(shard))
                    .arg(node)
                    .arg(epoch),
            )
            .await?;
        if ok == 1 {
            Ok(())
        } else {
            Err(ClusterError::Fenced)
        }
    }

    /// Gives up `shard` after a graceful handover: deletes its claim if it is still
    /// `(node, epoch)`'s, so that the next owner claims it without waiting. Later route
    /// writes by `(node, epoch)` for that shard fail with [`ClusterError::Fenced`].
    /// Returns whether the claim was released (`false`: someone else holds it).
    pub async fn release_shard(
        &self,
        shard: u16,
        node: &str,
        epoch: u64,
    ) -> Result<bool, ClusterError> {
        let ok: i64 = self
            .redis
            .invoke(
                scripts::RELEASE
                    .key(self.keys.claim(shard))
                    .arg(keys::claim_value(node, epoch)),
            )
            .await?;
        Ok(ok == 1)
    }

    /// The current claimant `(node, epoch)` of `shard`, if any.
    pub async fn claimant(&self, shard: u16) -> Result<Option<(String, u64)>, ClusterError> {
        let v: Option<String> = self
            .redis
            .query(redis::cmd("GET").arg(self.keys.claim(shard)))
            .await?;
        Ok(v.and_then(|v| {
            let (e, n) = v.split_once(' ')?;
            Some((n.to_owned(), e.parse().ok()?))
        }))
    }

    /// Stores or replaces the route of full JID `full` (shard = `shard_of(bare)`).
    /// [`ClusterError::Fenced`] unless the shard's claim is
    /// `(entry.session, entry.session_epoch)`. The claim check and the write are one
    /// atomic script; the connection-manager index used by [`Routes::purge_cm`] is
    /// updated by separate commands (before, and for a replaced route after).
    pub async fn put(&self, full: &str, entry: &RouteEntry) -> Result<(), ClusterError> {
        self.check_local_fence(&entry.session, entry.session_epoch)?;
        let (bare, resource) = split_full(full)?;
        let shard = self.shard_of(bare);
        let json = serde_json::to_string(entry)
            .map_err(|e| ClusterError::Config(format!("route entry: {e}")))?;
        let tag = keys::conn_tag(&entry.cm, entry.cm_epoch, entry.conn_id);
        // Index first: a stale index entry is harmless (purge checks), a route missing
        // from the index would escape purge_cm.
        self.redis
            .query::<()>(
                redis::cmd("SADD")
                    .arg(self.keys.cm_index(&entry.cm, entry.cm_epoch))
                    .arg(keys::cm_index_member(entry.conn_id, full)),
            )
            .await?;
        let (ok, old): (i64, String) = self
            .redis
            .invoke(
                scripts::PUT
                    .key(self.keys.claim(shard))
                    .key(self.keys.users(shard))
                    .key(self.keys.routes(shard, bare))
                    .key(self.keys.conns(shard, bare))
                    .arg(keys::claim_value(&entry.session, entry.session_epoch))
                    .arg(bare)
                    .arg(resource)
                    .arg(json)
                    .arg(&tag),
            )
            .await?;
        if ok != 1 {
            return Err(ClusterError::Fenced);
        }
        if !old.is_empty() && old != tag {
            self.unindex(&old, full).await;
        }
        Ok(())
    }

    /// Best-effort removal of a replaced or removed route from its cm index.
    async fn unindex(&self, tag: &str, full: &str) {
        let Some((cm, cm_epoch, conn_id)) = keys::parse_conn_tag(tag) else {
            return;
        };
        let res = self
            .redis
            .query::<()>(
                redis::cmd("SREM")
                    .arg(self.keys.cm_index(cm, cm_epoch))
                    .arg(keys::cm_index_member(conn_id, full)),
            )
            .await;
        if let Err(e) = res {
            tracing::debug!(error = %e, full, "could not update the cm index (harmless)");
        }
    }

    /// Removes the route of `full` if its `conn_id` matches; fenced like
    /// [`Routes::put`], with the caller's `(node, epoch)` as the expected claimant.
    /// Returns whether a route was removed.
    pub async fn remove(
        &self,
        full: &str,
        conn_id: u64,
        node: &str,
        epoch: u64,
    ) -> Result<bool, ClusterError> {
        self.check_local_fence(node, epoch)?;
        let (bare, resource) = split_full(full)?;
        let shard = self.shard_of(bare);
        let (status, tag): (i64, String) = self
            .redis
            .invoke(
                scripts::REMOVE
                    .key(self.keys.claim(shard))
                    .key(self.keys.users(shard))
                    .key(self.keys.routes(shard, bare))
                    .key(self.keys.conns(shard, bare))
                    .arg(keys::claim_value(node, epoch))
                    .arg(bare)
                    .arg(resource)
                    .arg(conn_id.to_string()),
            )
            .await?;
        match status {
            1 => {
                self.unindex(&tag, full).await;
                Ok(true)
            }
            0 => Ok(false),
            _ => Err(ClusterError::Fenced),
        }
    }

    /// All routes of a bare JID: `(resource, entry)`, sorted by resource.
    pub async fn resources(&self, bare: &str) -> Result<Vec<(String, RouteEntry)>, ClusterError> {
        let shard = self.shard_of(bare);
        let raw: Vec<(String, String)> = self
            .redis
            .query(redis::cmd("HGETALL").arg(self.keys.routes(shard, bare)))
            .await?;
        let mut out: Vec<(String, RouteEntry)> = raw
            .into_iter()
            .filter_map(|(res, json)| match serde_json::from_str(&json) {
                Ok(e) => Some((res, e)),
                Err(e) => {
                    tracing::warn!(bare, resource = %res, error = %e, "ignoring an unreadable route");
                    None
                }
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Bare JIDs that have at least one route in `shard` (for a new owner rebuilding a
    /// shard), sorted.
    pub async fn shard_users(&self, shard: u16) -> Result<Vec<String>, ClusterError> {
        let mut users: Vec<String> = self
            .redis
            .query(redis::cmd("SMEMBERS").arg(self.keys.users(shard)))
            .await?;
        users.sort();
        Ok(users)
    }

    /// Deletes every route whose cm is `(cm_node, cm_epoch)` — cleanup of a dead
    /// connection manager's entries — and returns how many were deleted. Walks that
    /// incarnation's index; each route is deleted only if it still belongs to that cm
    /// connection (one atomic script per route). Idempotent: after an error, run it again.
    pub async fn purge_cm(&self, cm_node: &str, cm_epoch: u64) -> Result<usize, ClusterError> {
        let index = self.keys.cm_index(cm_node, cm_epoch);
        let mut cursor: u64 = 0;
        let mut removed = 0usize;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .redis
                .query(
                    redis::cmd("SSCAN")
                        .arg(&index)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(256),
                )
                .await?;
            for member in &batch {
                let Some((conn_id, full)) = keys::parse_cm_index_member(member) else {
                    continue;
                };
                let Ok((bare, resource)) = split_full(full) else {
                    continue;
                };
                let shard = self.shard_of(bare);
                let n: i64 = self
                    .redis
                    .invoke(
                        scripts::PURGE_ONE
                            .key(self.keys.users(shard))
                            .key(self.keys.routes(shard, bare))
                            .key(self.keys.conns(shard, bare))
                            .arg(bare)
                            .arg(resource)
                            .arg(keys::conn_tag(cm_node, cm_epoch, conn_id)),
                    )
                    .await?;
                if n == 1 {
                    removed += 1;
                }
            }
            if !batch.is_empty() {
                self.redis
                    .query::<()>(redis::cmd("SREM").arg(&index).arg(&batch))
                    .await?;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(removed)
    }
}
