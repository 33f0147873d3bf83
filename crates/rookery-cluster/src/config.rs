//! The `[cluster.redis]` and `[cluster.kubernetes]` configuration sections.

use serde::{Deserialize, Serialize};

use crate::ClusterError;

/// `[cluster.redis]`: where the cluster state lives and how leases are timed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Redis URLs. A single server uses the first one; with `cluster = true` they are the
    /// seed nodes of a Redis Cluster. Default `["redis://127.0.0.1:6379"]`.
    pub urls: Vec<String>,
    /// `true` talks to a Redis Cluster (via `redis::cluster_async`). Default `false`.
    pub cluster: bool,
    /// Prefix of every key (inside the hash tags), so several Rookery clusters can share
    /// one Redis. Must not contain `{` or `}`. Default `"rookery"`.
    pub prefix: String,
    /// Interval between heartbeats (lease renewals and view reloads), in ms. Default 1000.
    pub heartbeat_ms: u64,
    /// Lease length in ms: a member whose lease was not renewed for this long is dead.
    /// Must be greater than `heartbeat_ms`. Default 5000.
    pub ttl_ms: u64,
    /// Deadline of each Redis command, in ms. Default 2000.
    pub timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            urls: vec!["redis://127.0.0.1:6379".to_owned()],
            cluster: false,
            prefix: "rookery".to_owned(),
            heartbeat_ms: 1000,
            ttl_ms: 5000,
            timeout_ms: 2000,
        }
    }
}

impl RedisConfig {
    /// Checks the values that would make the cluster state unsafe or unusable.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let bad = |m: &str| Err(ClusterError::Config(m.to_owned()));
        if self.urls.is_empty() {
            return bad("cluster.redis.urls is empty");
        }
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return bad("cluster.redis.prefix must be non-empty and contain no '{' or '}'");
        }
        if self.heartbeat_ms == 0 || self.timeout_ms == 0 {
            return bad("cluster.redis.heartbeat_ms and timeout_ms must be positive");
        }
        if self.ttl_ms <= self.heartbeat_ms {
            return bad("cluster.redis.ttl_ms must be greater than heartbeat_ms");
        }
        Ok(())
    }

    /// How long after the start of its last successful heartbeat a node still trusts its
    /// own lease: `ttl_ms - heartbeat_ms`, so that it gives up ownership before the others
    /// can see its lease lapse.
    pub fn self_lease_ms(&self) -> u64 {
        self.ttl_ms.saturating_sub(self.heartbeat_ms)
    }
}

/// `[cluster.kubernetes]`: keep in the view only the members that Kubernetes reports as
/// ready endpoints of their headless Service (decision 0014). Epochs, leases and shard
/// claims stay in Redis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Filter the membership by the ready endpoints of the Services below (Kubernetes API
    /// through the pod's service account). Default `false`: Redis alone decides.
    pub enabled: bool,
    /// Namespace of the Services; empty: the pod's own (from the service account).
    pub namespace: String,
    /// Headless Service of the session nodes; empty: session nodes are not filtered.
    /// Default `"rookery-session"`.
    pub session_service: String,
    /// Headless Service of the connection managers; empty: cms are not filtered.
    /// Default `"rookery-cm"`.
    pub cm_service: String,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            enabled: false,
            namespace: String::new(),
            session_service: "rookery-session".to_owned(),
            cm_service: "rookery-cm".to_owned(),
        }
    }
}

impl KubernetesConfig {
    /// Checks the names (only meaningful when `enabled`).
    pub fn validate(&self) -> Result<(), ClusterError> {
        if !self.enabled {
            return Ok(());
        }
        if self.session_service.is_empty() && self.cm_service.is_empty() {
            return Err(ClusterError::Config(
                "cluster.kubernetes is enabled but names neither session_service nor cm_service"
                    .into(),
            ));
        }
        // Label values and namespaces: DNS labels (RFC 1123), at most 63 characters.
        let dns_label = |s: &str| {
            s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        for (key, value) in [
            ("namespace", &self.namespace),
            ("session_service", &self.session_service),
            ("cm_service", &self.cm_service),
        ] {
            if !dns_label(value) {
                return Err(ClusterError::Config(format!(
                    "cluster.kubernetes.{key} {value:?} is not a DNS label (lower-case letters, digits, '-')"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn defaults_and_unknown_fields() {
        let c: RedisConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, RedisConfig::default());
        assert_eq!(c.urls, vec!["redis://127.0.0.1:6379".to_owned()]);
        assert!(c.validate().is_ok());
        let c: RedisConfig = serde_json::from_str(r#"{"ttl_ms": 900, "cluster": true}"#).unwrap();
        assert_eq!(c.ttl_ms, 900);
        assert!(c.cluster);
        assert_eq!(c.heartbeat_ms, 1000);
        assert!(matches!(c.validate(), Err(ClusterError::Config(_))));
        assert!(serde_json::from_str::<RedisConfig>(r#"{"ttl": 1}"#).is_err());
        let c = RedisConfig {
            prefix: "a{b".into(),
            ..RedisConfig::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn kubernetes_section() {
        let c: KubernetesConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, KubernetesConfig::default());
        assert!(!c.enabled);
        assert_eq!(c.session_service, "rookery-session");
        assert_eq!(c.cm_service, "rookery-cm");
        assert!(serde_json::from_str::<KubernetesConfig>(r#"{"service": "x"}"#).is_err());
        let on = KubernetesConfig {
            enabled: true,
            ..KubernetesConfig::default()
        };
        assert!(on.validate().is_ok());
        for bad in [
            r#"{"enabled": true, "session_service": "", "cm_service": ""}"#,
            r#"{"enabled": true, "namespace": "Prod"}"#,
            r#"{"enabled": true, "cm_service": "a,b"}"#,
            r#"{"enabled": true, "session_service": "-x"}"#,
        ] {
            let c: KubernetesConfig = serde_json::from_str(bad).unwrap();
            assert!(c.validate().is_err(), "{bad} accepted");
        }
        // Disabled: not checked.
        let c: KubernetesConfig = serde_json::from_str(r#"{"cm_service": "a,b"}"#).unwrap();
        assert!(c.validate().is_ok());
        // One role unfiltered is fine.
        let c: KubernetesConfig =
            serde_json::from_str(r#"{"enabled": true, "cm_service": ""}"#).unwrap();
        assert!(c.validate().is_ok());
    }
}
