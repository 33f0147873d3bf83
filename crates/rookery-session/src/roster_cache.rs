//! A read-through cache in front of any [`RosterStore`], so that presence
//! broadcasts and probes (which read the roster of the sender for every
//! presence change) do not go to the store each time.
//!
//! All roster writes of a node go through the session service that owns the
//! user (DESIGN.md: one owner per shard), so invalidating on write here keeps
//! the cache exact. The cache is bounded: when full, half of it is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rookery_core::Jid;
use rookery_core::users::StoreError;

use crate::roster::{Roster, RosterChange, RosterItem, RosterStore};

/// The cache.
#[derive(Debug)]
pub struct CachedRosterStore {
    inner: Arc<dyn RosterStore>,
    cache: Mutex<HashMap<Jid, Arc<Roster>>>,
    capacity: usize,
}

impl CachedRosterStore {
    /// Wraps `inner`, keeping at most `capacity` rosters.
    pub fn new(inner: Arc<dyn RosterStore>, capacity: usize) -> CachedRosterStore {
        CachedRosterStore {
            inner,
            cache: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    async fn cached(&self, user: &Jid) -> Result<Arc<Roster>, StoreError> {
        if let Ok(c) = self.cache.lock()
            && let Some(r) = c.get(user)
        {
            return Ok(r.clone());
        }
        let r = Arc::new(self.inner.roster(user).await?);
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= self.capacity {
                let drop: Vec<Jid> = c.keys().take(c.len() / 2 + 1).cloned().collect();
                for k in drop {
                    c.remove(&k);
                }
            }
            c.insert(user.clone(), r.clone());
        }
        Ok(r)
    }

    fn forget(&self, user: &Jid) {
        if let Ok(mut c) = self.cache.lock() {
            c.remove(user);
        }
    }
}

#[async_trait]
impl RosterStore for CachedRosterStore {
    async fn roster(&self, user: &Jid) -> Result<Roster, StoreError> {
        Ok((*self.cached(user).await?).clone())
    }
    async fn item(&self, user: &Jid, contact: &Jid) -> Result<Option<RosterItem>, StoreError> {
        Ok(self
            .cached(user)
            .await?
            .items
            .iter()
            .find(|i| i.jid == *contact)
            .cloned())
    }
    async fn count(&self, user: &Jid) -> Result<usize, StoreError> {
        Ok(self.cached(user).await?.items.len())
    }
    async fn put(&self, user: &Jid, item: &RosterItem) -> Result<u64, StoreError> {
        self.forget(user);
        let r = self.inner.put(user, item).await;
        self.forget(user);
        r
    }
    async fn remove(&self, user: &Jid, contact: &Jid) -> Result<Option<u64>, StoreError> {
        self.forget(user);
        let r = self.inner.remove(user, contact).await;
        self.forget(user);
        r
    }
    async fn changes_since(
        &self,
        user: &Jid,
        version: u64,
    ) -> Result<Option<(u64, Vec<RosterChange>)>, StoreError> {
        self.inner.changes_since(user, version).await
    }
    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError> {
        self.forget(user);
        let r = self.inner.delete_user(user).await;
        self.forget(user);
        r
    }
    async fn add_pending_in(
        &self,
        user: &Jid,
        contact: &Jid,
        stanza: &str,
    ) -> Result<(), StoreError> {
        self.inner.add_pending_in(user, contact, stanza).await
    }
    async fn remove_pending_in(&self, user: &Jid, contact: &Jid) -> Result<bool, StoreError> {
        self.inner.remove_pending_in(user, contact).await
    }
    async fn pending_in(&self, user: &Jid) -> Result<Vec<(Jid, String)>, StoreError> {
        self.inner.pending_in(user).await
    }
}
