//! Prometheus metrics shared by all roles (text format on `/metrics`).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label: stanza kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `message`, `presence` or `iq`.
    pub kind: &'static str,
}

/// Label: SASL mechanism and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabel {
    /// Mechanism name.
    pub mechanism: &'static str,
    /// `success` or `failure`.
    pub outcome: &'static str,
}

/// Label: stream error condition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabel {
    /// RFC 6120 §4.9.3 condition.
    pub condition: &'static str,
}

/// Label: transport of a connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    /// `starttls`, `directtls`, `websocket` (RFC 7395) or `bosh` (XEP-0206).
    pub transport: &'static str,
}

/// Label: direction of a server-to-server stream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `in` or `out`.
    pub direction: &'static str,
}

/// Label: a role of a cluster member.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabel {
    /// `cm`, `session` or `s2s`.
    pub role: &'static str,
}

/// Label: a gRPC call between roles.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabel {
    /// The calling role: `cm` or `session`.
    pub role: &'static str,
    /// The method, e.g. `Route`.
    pub method: &'static str,
    /// `ok` or the gRPC status code name.
    pub outcome: &'static str,
}

fn rpc_histogram() -> Histogram {
    // 50 µs to ~1.6 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_05, 2.0, 16,
    ))
}

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open client connections.
    pub connections: Family<TransportLabel, Gauge>,
    /// Accepted client connections.
    pub connections_total: Counter,
    /// Bound sessions.
    pub sessions: Gauge,
    /// Stanzas received from clients.
    pub stanzas_in: Family<KindLabel, Counter>,
    /// Stanzas written to clients.
    pub stanzas_out: Family<KindLabel, Counter>,
    /// SASL attempts by mechanism and outcome.
    pub auth: Family<AuthLabel, Counter>,
    /// Stream errors sent, by condition.
    pub stream_errors: Family<ConditionLabel, Counter>,
    /// Stanzas that could not be queued because the client stopped reading.
    pub slow_consumers: Counter,
    /// Latency of gRPC calls between roles, seconds (cluster mode).
    pub rpc_latency: Family<RpcLabel, Histogram, fn() -> Histogram>,
    /// Virtual shards this node owns (cluster mode, session role).
    pub shards_owned: Gauge,
    /// Shards this node took over or gave up (cluster mode).
    pub shard_handovers: Counter,
    /// Failed Redis commands (cluster mode).
    pub redis_errors: Counter,
    /// Stanzas handed to another node again after a failed attempt.
    pub rpc_retries: Counter,
    /// Authenticated server-to-server streams open now.
    pub s2s_streams: Family<DirectionLabel, Gauge>,
    /// Stanzas sent to and received from remote servers.
    pub s2s_stanzas: Family<DirectionLabel, Counter>,
    /// Stanzas to remote servers bounced, by the error condition.
    pub s2s_bounced: Family<ConditionLabel, Counter>,
    /// Outbound streams that could not be established.
    pub s2s_failures: Counter,
    /// Live cluster members in this node's view, by role (cluster mode).
    pub cluster_members: Family<RoleLabel, Gauge>,
    /// BOSH requests received and not answered yet (held for `wait`, or
    /// waiting for the requests before them).
    pub bosh_requests_held: Gauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("rookery");
        let m = Metrics {
            connections: Family::default(),
            connections_total: Counter::default(),
            sessions: Gauge::default(),
            stanzas_in: Family::default(),
            stanzas_out: Family::default(),
            auth: Family::default(),
            stream_errors: Family::default(),
            slow_consumers: Counter::default(),
            rpc_latency: Family::new_with_constructor(rpc_histogram),
            shards_owned: Gauge::default(),
            shard_handovers: Counter::default(),
            redis_errors: Counter::default(),
            rpc_retries: Counter::default(),
            s2s_streams: Family::default(),
            s2s_stanzas: Family::default(),
            s2s_bounced: Family::default(),
            s2s_failures: Counter::default(),
            cluster_members: Family::default(),
            bosh_requests_held: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "c2s_connections",
            "Open client connections",
            m.connections.clone(),
        );
        registry.register(
            "c2s_connections_accepted",
            "Accepted client connections",
            m.connections_total.clone(),
        );
        registry.register("sessions", "Bound client sessions", m.sessions.clone());
        registry.register(
            "stanzas_in",
            "Stanzas received from clients",
            m.stanzas_in.clone(),
        );
        registry.register(
            "stanzas_out",
            "Stanzas sent to clients",
            m.stanzas_out.clone(),
        );
        registry.register(
            "auth_attempts",
            "SASL authentication attempts",
            m.auth.clone(),
        );
        registry.register(
            "stream_errors",
            "Stream errors sent",
            m.stream_errors.clone(),
        );
        registry.register(
            "slow_consumer_drops",
            "Stanzas refused because the client's queue was full",
            m.slow_consumers.clone(),
        );
        registry.register(
            "rpc_latency_seconds",
            "Latency of gRPC calls between roles",
            m.rpc_latency.clone(),
        );
        registry.register(
            "shards_owned",
            "Virtual shards owned by this session node",
            m.shards_owned.clone(),
        );
        registry.register(
            "shard_handovers",
            "Shards taken over or given up",
            m.shard_handovers.clone(),
        );
        registry.register(
            "redis_errors",
            "Failed Redis commands",
            m.redis_errors.clone(),
        );
        registry.register(
            "rpc_retries",
            "gRPC calls retried after a failure",
            m.rpc_retries.clone(),
        );
        registry.register(
            "s2s_streams",
            "Authenticated server-to-server streams",
            m.s2s_streams.clone(),
        );
        registry.register(
            "s2s_stanzas",
            "Stanzas exchanged with remote servers",
            m.s2s_stanzas.clone(),
        );
        registry.register(
            "s2s_bounced",
            "Stanzas to remote servers bounced with an error",
            m.s2s_bounced.clone(),
        );
        registry.register(
            "s2s_failures",
            "Outbound server-to-server streams that failed to establish",
            m.s2s_failures.clone(),
        );
        registry.register(
            "cluster_members",
            "Live cluster members this node sees, by role",
            m.cluster_members.clone(),
        );
        registry.register(
            "bosh_requests_held",
            "BOSH requests received and not answered yet",
            m.bosh_requests_held.clone(),
        );
        Arc::new(Metrics { registry, ..m })
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }

    /// Counts a stream error.
    pub fn stream_error(&self, condition: &'static str) {
        self.stream_errors
            .get_or_create(&ConditionLabel { condition })
            .inc();
    }
}
