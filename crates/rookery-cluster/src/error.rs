//! The error type of the crate.

/// What can go wrong talking to the cluster state.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ClusterError {
    /// Redis was unreachable, answered with an error, or did not answer within the
    /// configured deadline. Retrying later may succeed.
    #[error("redis: {0}")]
    Redis(String),
    /// This node's epoch or shard claim is no longer current: a newer incarnation of the
    /// node exists, its lease lapsed, or another node has claimed the shard. The caller
    /// must stop acting as an owner.
    #[error("fenced: this node's epoch or shard claim is no longer current")]
    Fenced,
    /// The configuration is invalid or disagrees with the cluster (e.g. shard count).
    #[error("cluster configuration: {0}")]
    Config(String),
    /// The Kubernetes API could not be reached or configured (discovery, decision 0014).
    #[error("kubernetes: {0}")]
    Kubernetes(String),
}

impl From<redis::RedisError> for ClusterError {
    fn from(e: redis::RedisError) -> Self {
        ClusterError::Redis(e.to_string())
    }
}
