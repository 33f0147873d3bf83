//! XEP-0012: Last Activity (`jabber:iq:last`), version 2.0 (the spec text is
//! not in `shared/specs`; sections as in 2.0).
//!
//! - §3 offline user query, to an account's bare JID: the server answers with
//!   the seconds since the account's last resource became unavailable (or its
//!   session ended) and the status text of that unavailable presence; `0` while
//!   the account has an available resource. Only the account itself and
//!   contacts subscribed to its presence may ask.
//! - §4 online user query, to a full JID: the client's business (routed to it).
//! - §5 query to the server: its uptime in seconds.
//!
//! The time and status are recorded by [`crate::LocalSessions`] when an
//! account's last available resource sends unavailable presence and when its
//! last session ends.

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rookery_core::users::StoreError;
use rookery_core::{Jid, Stanza, StanzaError};
use rookery_xml::{Element, ns};
use tracing::warn;

use super::{IqContext, IqResult, Module, Spec, Target};
use crate::roster::Subscription;
use crate::{LocalSessions, Stores};

/// When an account was last seen and what it said then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastActivity {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The status text of the last unavailable presence (empty if none).
    pub status: String,
}

/// The last-activity storage of XEP-0012, keyed by bare JID.
#[async_trait]
pub trait LastActivityStore: Send + Sync + std::fmt::Debug {
    /// The account's recorded last activity, if any.
    async fn last_activity(&self, user: &Jid) -> Result<Option<LastActivity>, StoreError>;
    /// Records the account's last activity, replacing the previous record.
    async fn set_last_activity(
        &self,
        user: &Jid,
        activity: &LastActivity,
    ) -> Result<(), StoreError>;
    /// Deletes the account's record (account removal); no error if none.
    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError>;
}

/// The conformance suite every [`LastActivityStore`] backend runs: invoke it
/// once per backend with an expression that builds a fresh, empty store.
#[cfg(feature = "test-util")]
#[macro_export]
macro_rules! last_activity_store_conformance {
    ($make:expr) => {
        #[tokio::test]
        async fn last_activity_store_conformance() {
            let store = $make;
            $crate::modules::last::conformance::run(&store).await;
        }
    };
}

/// The body of [`last_activity_store_conformance!`].
#[cfg(feature = "test-util")]
#[allow(clippy::unwrap_used)]
pub mod conformance {
    use super::*;

    fn j(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    /// Runs every check against an empty store.
    pub async fn run(store: &dyn LastActivityStore) {
        let (a, b) = (&j("a@example.org"), &j("b@example.org"));
        assert_eq!(store.last_activity(a).await.unwrap(), None);
        let one = LastActivity {
            at_ms: 1_700_000_000_123,
            status: "Gone <fishing> & ☀".into(),
        };
        store.set_last_activity(a, &one).await.unwrap();
        assert_eq!(store.last_activity(a).await.unwrap(), Some(one));
        let two = LastActivity {
            at_ms: 1_700_000_060_999,
            status: String::new(),
        };
        store.set_last_activity(a, &two).await.unwrap();
        assert_eq!(store.last_activity(a).await.unwrap(), Some(two.clone()));
        assert_eq!(
            store.last_activity(&j("a@example.com")).await.unwrap(),
            None
        );
        store.set_last_activity(b, &two).await.unwrap();
        store.delete_user(a).await.unwrap();
        assert_eq!(store.last_activity(a).await.unwrap(), None);
        assert_eq!(store.last_activity(b).await.unwrap(), Some(two));
        store.delete_user(a).await.unwrap();
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Records that `bare` just became unavailable with `status`.
pub(crate) async fn record(stores: &Stores, bare: &Jid, status: String) {
    // The sessions of a removed account end after its data is deleted
    // (XEP-0077 §3.2): they must not leave a record behind.
    match stores.users.exists(bare.as_str()).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            warn!(account = %bare, error = %e, "could not record last activity");
            return;
        }
    }
    let activity = LastActivity {
        at_ms: now_ms(),
        status,
    };
    if let Err(e) = stores
        .last_activity
        .set_last_activity(bare, &activity)
        .await
    {
        warn!(account = %bare, error = %e, "could not record last activity");
    }
}

impl LocalSessions {
    /// Called with each broadcast presence of a resource (RFC 6121 §4.2,
    /// §4.5): keeps the status text of an unavailable one for when the session
    /// ends, and records the account's last activity when its last available
    /// resource leaves (§3).
    pub(crate) async fn last_activity_presence(
        &self,
        from: &Jid,
        presence: &Element,
        available: bool,
        was_available: bool,
    ) {
        let status = (!available).then(|| {
            presence
                .child("status", ns::CLIENT)
                .map(|s| s.text())
                .unwrap_or_default()
        });
        self.with_resource(from, |r| r.last_status = status.clone());
        let user = from.to_bare();
        if let Some(status) = status
            && was_available
            && !self.has_available_resource(&user)
        {
            record(&self.stores, &user, status).await;
        }
    }
}

fn answer(seconds: u64, status: &str) -> Element {
    let mut q = Element::new_static("query", ns::LAST).with_attr("seconds", seconds.to_string());
    if !status.is_empty() {
        q.push_text(status);
    }
    q
}

#[derive(Debug)]
pub(crate) struct Last;

#[async_trait]
impl Module for Last {
    fn serves_remote(&self) -> bool {
        true
    }
    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            id: "XEP-0012",
            version: "2.0",
            name: "Last Activity",
        }]
    }
    fn features(&self) -> &'static [&'static str] {
        // §6: determining support.
        &[ns::LAST]
    }
    async fn handle_iq(
        &self,
        ctx: &IqContext<'_>,
        stanza: &Stanza,
        p: &Element,
    ) -> Option<IqResult> {
        if !p.is("query", ns::LAST) {
            return None;
        }
        if stanza.stanza_type() != Some("get") {
            return Some(Err(StanzaError::bad_request("last activity is a get")));
        }
        let account = match ctx.target(stanza) {
            // §5: the server's uptime.
            Target::Server => {
                return Some(Ok(Some(answer(ctx.sessions.uptime().as_secs(), ""))));
            }
            Target::Own(j) => j,
            // §3: only an entity authorized to see the account's presence (a
            // 'from' or 'both' subscription, RFC 6121 §2.1.2.5) may ask;
            // anyone else MUST get <forbidden/>.
            Target::Other(j) => {
                let roster = &ctx.sessions.stores().roster;
                match roster.item(&j, &ctx.from.to_bare()).await {
                    Ok(Some(i))
                        if matches!(i.subscription, Subscription::From | Subscription::Both) =>
                    {
                        j
                    }
                    Ok(_) => return Some(Err(StanzaError::forbidden())),
                    Err(e) => {
                        warn!(error = %e, "roster unavailable");
                        return Some(Err(StanzaError::internal_server_error()));
                    }
                }
            }
        };
        // §3: an account with an available resource is online now.
        if ctx.sessions.has_available_resource(&account) {
            return Some(Ok(Some(answer(0, ""))));
        }
        Some(
            match ctx
                .sessions
                .stores()
                .last_activity
                .last_activity(&account)
                .await
            {
                Ok(Some(a)) => {
                    let ms = now_ms().saturating_sub(a.at_ms).max(0);
                    Ok(Some(answer((ms / 1000) as u64, &a.status)))
                }
                // Nothing recorded (never logged out since records began):
                // the answer the router gives for an unknown account.
                Ok(None) => Err(StanzaError::service_unavailable()),
                Err(e) => {
                    warn!(error = %e, "last activity store unavailable");
                    Err(StanzaError::internal_server_error())
                }
            },
        )
    }
}
