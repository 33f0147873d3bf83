//! The shared Redis connection: one server or a Redis Cluster, every command with a deadline.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisResult, ScriptInvocation, Value};

use crate::{ClusterError, RedisConfig};

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> BoxFuture<'a, RedisResult<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> BoxFuture<'a, RedisResult<Vec<Value>>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A cloneable async Redis handle: a single server through
/// `redis::aio::ConnectionManager` (which reconnects by itself) or a Redis Cluster
/// through `redis::cluster_async::ClusterConnection`. Clones share the connection.
///
/// Every command is bounded by the configured deadline (`timeout_ms`); failures and
/// timeouts are [`ClusterError::Redis`].
#[derive(Clone)]
pub struct Redis {
    conn: Conn,
    timeout: Duration,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field(
                "mode",
                &match self.conn {
                    Conn::Single(_) => "single",
                    Conn::Cluster(_) => "cluster",
                },
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Redis {
    /// Connects as configured (`cfg.cluster` chooses single server or Redis Cluster).
    /// Fails with [`ClusterError::Redis`] if no connection is made within `timeout_ms`.
    pub async fn connect(cfg: &RedisConfig) -> Result<Redis, ClusterError> {
        cfg.validate()?;
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let connect = async {
            if cfg.cluster {
                let client = ClusterClientBuilder::new(cfg.urls.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(cfg.heartbeat_ms.min(500))
                    .build()?;
                Ok::<_, redis::RedisError>(Conn::Cluster(client.get_async_connection().await?))
            } else {
                if cfg.urls.len() > 1 {
                    tracing::warn!(
                        urls = ?cfg.urls,
                        "cluster.redis.cluster is false: only the first URL is used"
                    );
                }
                let url = cfg.urls.first().map(String::as_str).unwrap_or_default();
                let client = redis::Client::open(url)?;
                let mcfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(10))
                    .set_max_delay(Duration::from_millis(cfg.heartbeat_ms.min(500)));
                Ok(Conn::Single(
                    ConnectionManager::new_with_config(client, mcfg).await?,
                ))
            }
        };
        let conn = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                return Err(ClusterError::Redis(format!(
                    "could not connect within {} ms",
                    cfg.timeout_ms
                )));
            }
        };
        Ok(Redis { conn, timeout })
    }

    /// The deadline of each command.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether this handle talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    async fn deadline<T>(
        &self,
        fut: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, ClusterError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(ClusterError::from),
            Err(_) => Err(ClusterError::Redis(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    /// Runs one command.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, ClusterError> {
        let mut c = self.conn.clone();
        self.deadline(async move { cmd.query_async(&mut c).await })
            .await
    }

    /// Runs a pipeline (in a Redis Cluster, all its keys must be in one slot).
    pub async fn query_pipeline<T: FromRedisValue>(
        &self,
        pipe: &Pipeline,
    ) -> Result<T, ClusterError> {
        let mut c = self.conn.clone();
        self.deadline(async move { pipe.query_async(&mut c).await })
            .await
    }

    /// Runs a Lua script (EVALSHA, loading it first if the server does not know it, e.g.
    /// after a restart). In a Redis Cluster, its keys must share a slot.
    pub async fn invoke<T: FromRedisValue>(
        &self,
        script: &ScriptInvocation<'_>,
    ) -> Result<T, ClusterError> {
        let mut c = self.conn.clone();
        self.deadline(async move { script.invoke_async(&mut c).await })
            .await
    }
}
