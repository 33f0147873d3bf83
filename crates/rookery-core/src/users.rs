//! Accounts and their SCRAM credentials: the storage trait of the
//! authentication feature, and its conformance suite.
//!
//! Accounts are keyed by bare JID (`user@domain`) so that one store can serve
//! several hosted domains. Passwords are never stored: only
//! [`StoredCredentials`] (salted SCRAM keys per hash).

use async_trait::async_trait;
pub use rookery_sasl::StoredCredentials;

/// Storage failures, as every store trait reports them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The record exists already.
    #[error("already exists")]
    AlreadyExists,
    /// No such record.
    #[error("not found")]
    NotFound,
    /// The backend failed or is unreachable; the request may be retried.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// The account store.
#[async_trait]
pub trait UserStore: Send + Sync + std::fmt::Debug {
    /// Creates an account; `AlreadyExists` if it exists.
    async fn create(&self, bare_jid: &str, creds: &StoredCredentials) -> Result<(), StoreError>;
    /// Replaces the credentials of an account; `NotFound` if absent.
    async fn set_credentials(
        &self,
        bare_jid: &str,
        creds: &StoredCredentials,
    ) -> Result<(), StoreError>;
    /// The credentials of an account, if it exists.
    async fn credentials(&self, bare_jid: &str) -> Result<Option<StoredCredentials>, StoreError>;
    /// True if the account exists.
    async fn exists(&self, bare_jid: &str) -> Result<bool, StoreError>;
    /// Deletes an account; returns whether it existed.
    async fn delete(&self, bare_jid: &str) -> Result<bool, StoreError>;
    /// All accounts, sorted.
    async fn list(&self) -> Result<Vec<String>, StoreError>;
    /// Creates or replaces many accounts in one batch; returns how many.
    async fn import(&self, accounts: Vec<(String, StoredCredentials)>)
    -> Result<usize, StoreError>;
}

/// The conformance suite every [`UserStore`] backend runs: invoke it once per
/// backend with an expression that builds a fresh, empty store.
#[cfg(feature = "test-util")]
#[macro_export]
macro_rules! user_store_conformance {
    ($make:expr) => {
        #[tokio::test]
        async fn user_store_conformance() {
            let store = $make;
            $crate::users::conformance::run(&store).await;
        }
    };
}

/// The body of [`user_store_conformance!`].
#[cfg(feature = "test-util")]
#[allow(clippy::unwrap_used)]
pub mod conformance {
    use super::*;

    /// Runs every check against an empty store.
    pub async fn run(store: &dyn UserStore) {
        let a = StoredCredentials::derive("secret", 4096);
        let b = StoredCredentials::derive("other", 4096);
        assert_eq!(store.list().await.unwrap(), Vec::<String>::new());
        assert_eq!(store.credentials("a@example.org").await.unwrap(), None);
        assert!(!store.exists("a@example.org").await.unwrap());
        store.create("a@example.org", &a).await.unwrap();
        assert_eq!(
            store.create("a@example.org", &b).await,
            Err(StoreError::AlreadyExists)
        );
        assert!(store.exists("a@example.org").await.unwrap());
        let got = store.credentials("a@example.org").await.unwrap().unwrap();
        assert_eq!(got, a);
        assert!(got.verify_plain("secret"));
        assert_eq!(
            store.set_credentials("nobody@example.org", &b).await,
            Err(StoreError::NotFound)
        );
        store.set_credentials("a@example.org", &b).await.unwrap();
        assert!(
            store
                .credentials("a@example.org")
                .await
                .unwrap()
                .unwrap()
                .verify_plain("other")
        );
        // Domains are separate namespaces.
        assert_eq!(store.credentials("a@example.com").await.unwrap(), None);
        let n = store
            .import(vec![
                ("c@example.org".into(), a.clone()),
                ("b@example.org".into(), a.clone()),
                ("a@example.org".into(), a.clone()),
            ])
            .await
            .unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            store.list().await.unwrap(),
            vec!["a@example.org", "b@example.org", "c@example.org"]
        );
        assert!(
            store
                .credentials("a@example.org")
                .await
                .unwrap()
                .unwrap()
                .verify_plain("secret")
        );
        assert!(store.delete("b@example.org").await.unwrap());
        assert!(!store.delete("b@example.org").await.unwrap());
        assert_eq!(
            store.list().await.unwrap(),
            vec!["a@example.org", "c@example.org"]
        );
    }
}
