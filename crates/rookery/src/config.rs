//! The configuration file: one TOML document, every section optional.
//!
//! Each section's type lives with the feature that owns it (`[c2s]` in
//! rookery-cm, `[session]` and `[modules]` in rookery-session); this module
//! only assembles them. `docs/configuration.md` documents every option with
//! its default, and a test checks that it names every key of the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rookery_cm::{C2sConfig, RegistrationConfig, WebConfig};
use rookery_s2s::S2sConfig;
use rookery_session::SessionConfig;
use rookery_session::modules::ModulesConfig;
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[tls]`
    pub tls: TlsConfig,
    /// `[c2s]`
    pub c2s: C2sConfig,
    /// `[registration]`
    pub registration: RegistrationConfig,
    /// `[web]`: WebSocket, BOSH and host-meta (docs/decisions/0016-web-transports.md).
    pub web: WebConfig,
    /// `[s2s]`: federation (docs/decisions/0017-federation.md).
    pub s2s: S2sConfig,
    /// `[session]`
    pub session: SessionConfig,
    /// `[modules]`
    pub modules: ModulesConfig,
    /// `[http]`
    pub http: HttpConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[cluster]`
    pub cluster: ClusterConfig,
    /// `[store]`
    pub store: StoreConfig,
    /// `[drain]`
    pub drain: DrainConfig,
    /// `[telemetry]`
    pub telemetry: TelemetryConfig,
    /// `[muc]`: XEP-0045 Multi-User Chat.
    pub muc: rookery_muc::MucConfig,
    /// `[pubsub]`: XEP-0060 service and the limits of PEP nodes.
    pub pubsub: rookery_pubsub::PubsubConfig,
    /// `[upload]`: XEP-0363 HTTP File Upload (docs/decisions/0020-http-upload.md).
    pub upload: rookery_upload::UploadConfig,
}

/// `[drain]`: what a cluster member does on SIGTERM
/// (docs/decisions/0015-draining.md).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrainConfig {
    /// Seconds over which a connection manager moves its clients away, and
    /// the longest a session node waits for its shards to be taken over.
    pub grace_secs: u64,
    /// `host[:port]` sent in `<see-other-host/>` to clients that cannot
    /// resume elsewhere (empty: `<system-shutdown/>`).
    pub see_other_host: String,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig {
            grace_secs: 25,
            see_other_host: String::new(),
        }
    }
}

/// `[telemetry]`: traces of stanzas over OTLP/gRPC
/// (docs/decisions/0013-telemetry.md). Metrics stay on `/metrics`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/gRPC endpoint of an OpenTelemetry collector, e.g.
    /// `http://otel-collector:4317`; empty: no traces.
    pub otlp_endpoint: String,
    /// `service.name` of the spans.
    pub service_name: String,
    /// Fraction of stanzas traced, 0 to 1 (parent-based: a hop follows its
    /// caller's decision).
    pub sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: String::new(),
            service_name: "rookery".into(),
            sample_ratio: 1.0,
        }
    }
}

/// `[store]`: where accounts and per-user data live
/// (docs/decisions/0012-scylladb-backend.md).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Which store serves every feature.
    pub backend: StoreBackend,
    /// `[store.scylla]`: read when `backend = "scylla"`.
    pub scylla: rookery_scylla::ScyllaConfig,
}

/// The store backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// The embedded SQLite store, `<server.data_dir>/rookery.db`.
    #[default]
    Sqlite,
    /// A ScyllaDB (or Apache Cassandra) cluster, `[store.scylla]`.
    Scylla,
}

/// `[cluster]`: cluster mode, used when `rookery serve --role …` is given
/// (docs/decisions/0010-cluster.md).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster (empty: the host name).
    pub node: String,
    /// Address of the gRPC listener that other nodes call.
    pub grpc_listen: SocketAddr,
    /// `host:port` other nodes use to reach the gRPC listener (empty: the
    /// bound listen address).
    pub grpc_advertise: String,
    /// Virtual shards of the user space; the same on every node, fixed for
    /// the life of the cluster.
    pub shards: u16,
    /// Deadline of one gRPC call between nodes, milliseconds.
    pub rpc_timeout_ms: u64,
    /// How long a node retries handing a stanza to an owner before the
    /// sender gets an error, milliseconds.
    pub retry_for_ms: u64,
    /// `[cluster.redis]`: membership, shard map and routes.
    pub redis: rookery_cluster::RedisConfig,
    /// `[cluster.kubernetes]`: membership filtered by Kubernetes readiness
    /// (docs/decisions/0014-kubernetes-discovery.md).
    pub kubernetes: rookery_cluster::KubernetesConfig,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node: String::new(),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            grpc_advertise: String::new(),
            shards: rookery_cluster::DEFAULT_SHARDS,
            rpc_timeout_ms: 2000,
            retry_for_ms: 10_000,
            redis: rookery_cluster::RedisConfig::default(),
            kubernetes: rookery_cluster::KubernetesConfig::default(),
        }
    }
}

/// `[server]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The XMPP domain served (RFC 7622 domainpart).
    pub domain: String,
    /// Directory of the embedded store, the generated certificate and the
    /// server secret.
    pub data_dir: PathBuf,
    /// PBKDF2 iterations for new SCRAM credentials (RFC 7677 §4: at least 4096).
    pub scram_iterations: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            domain: "localhost".into(),
            data_dir: PathBuf::from("./data"),
            scram_iterations: 4096,
        }
    }
}

/// `[tls]`: with neither set, a self-signed certificate for the domain is
/// generated on first start and kept in `<data_dir>/tls/`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Seconds between checks of the two files for a renewed certificate
    /// (0: never).
    pub reload_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            reload_secs: 60,
        }
    }
}

/// `[http]`: metrics and health endpoints.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of `/metrics`, `/health` and `/ready`; empty to disable.
    pub listen: Vec<SocketAddr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5280))],
        }
    }
}

/// `[log]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `info,rookery_cm=debug`
    /// (`RUST_LOG` overrides it).
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// The prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "ROOKERY__";

impl Config {
    /// The server's domain, then the domains of the enabled services that
    /// have their own (MUC, pubsub, upload): what federation accepts.
    pub fn served_domains(&self) -> Vec<String> {
        let mut v = vec![self.server.domain.clone()];
        for (on, d) in [
            (self.muc.enabled, &self.muc.domain),
            (self.pubsub.enabled, &self.pubsub.domain),
            (self.upload.enabled, &self.upload.domain),
        ] {
            if on && !d.is_empty() {
                v.push(d.clone());
            }
        }
        v
    }

    /// Reads and checks a file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        Config::from_sources(Some(path), std::iter::empty())
    }

    /// The configuration from an optional file plus environment overrides:
    /// `ROOKERY__<SECTION>__<KEY>=value` (sections nest with more `__`,
    /// names are case-insensitive) sets that key, the value read as a TOML
    /// value and, when it is not one, as a string. Other variables are
    /// ignored. This is how a Kubernetes pod sets its own node name and
    /// gRPC address on a shared ConfigMap.
    pub fn from_sources(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut table: toml::Table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("in {}", path.display()))?
            }
            None => toml::Table::new(),
        };
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| {
                k.len() > ENV_PREFIX.len() && k[..ENV_PREFIX.len()].eq_ignore_ascii_case(ENV_PREFIX)
            })
            .collect();
        overrides.sort();
        for (name, value) in &overrides {
            apply_override(&mut table, &name[ENV_PREFIX.len()..], value)
                .with_context(|| format!("environment variable {name}"))?;
        }
        let mut c: Config = toml::Value::Table(table).try_into().with_context(|| {
            let from = match path {
                Some(p) => format!("in {}", p.display()),
                None => "in the defaults".to_owned(),
            };
            if overrides.is_empty() {
                from
            } else {
                let names: Vec<&str> = overrides.iter().map(|(k, _)| k.as_str()).collect();
                format!("{from} with {}", names.join(", "))
            }
        })?;
        c.check()?;
        Ok(c)
    }

    /// Parses and checks TOML text.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let mut c: Config = toml::from_str(text)?;
        c.check()?;
        Ok(c)
    }

    /// Start-up checks beyond the types; normalizes the domain.
    pub fn check(&mut self) -> anyhow::Result<()> {
        self.server.domain = rookery_jid::prep_domainpart(&self.server.domain)
            .map_err(|e| anyhow::anyhow!("server.domain {:?}: {e}", self.server.domain))?
            .into_owned();
        anyhow::ensure!(
            self.server.scram_iterations >= 4096,
            "server.scram_iterations must be at least 4096 (RFC 7677 §4)"
        );
        anyhow::ensure!(
            self.c2s.max_stanza_bytes >= 10_000,
            "c2s.max_stanza_bytes must be at least 10000 (RFC 6120 §13.12)"
        );
        anyhow::ensure!(
            (5..=10).contains(&self.c2s.max_auth_failures),
            "c2s.max_auth_failures must be between 5 and 10 (RFC 6120 §6.4.5)"
        );
        anyhow::ensure!(
            self.session.max_resources >= 1,
            "session.max_resources must be at least 1"
        );
        anyhow::ensure!(
            self.tls.cert.is_some() == self.tls.key.is_some(),
            "tls.cert and tls.key must be set together"
        );
        anyhow::ensure!(self.c2s.max_depth >= 4, "c2s.max_depth must be at least 4");
        let web = &self.web;
        anyhow::ensure!(
            web.public_url.is_empty()
                || web.public_url.starts_with("https://")
                || web.public_url.starts_with("http://"),
            "web.public_url must be an http:// or https:// URL, not {:?}",
            web.public_url
        );
        anyhow::ensure!(
            web.bosh_max_wait_secs >= 1 && web.bosh_inactivity_secs >= 1,
            "web.bosh_max_wait_secs and web.bosh_inactivity_secs must be at least 1"
        );
        anyhow::ensure!(
            self.s2s.max_stanza_bytes >= 10_000,
            "s2s.max_stanza_bytes must be at least 10000 (RFC 6120 §13.12)"
        );
        anyhow::ensure!(self.s2s.max_depth >= 4, "s2s.max_depth must be at least 4");
        for (domain, peer) in &self.s2s.peers {
            anyhow::ensure!(
                !(peer.ca.is_some() && peer.cert.is_some()),
                "s2s.peers.{domain:?}: set ca or cert, not both"
            );
        }
        anyhow::ensure!(
            self.cluster.shards >= 1,
            "cluster.shards must be at least 1"
        );
        anyhow::ensure!(
            self.cluster.rpc_timeout_ms >= 10
                && self.cluster.retry_for_ms >= self.cluster.rpc_timeout_ms,
            "cluster.rpc_timeout_ms must be at least 10 and cluster.retry_for_ms at least as long"
        );
        self.cluster
            .redis
            .validate()
            .map_err(|e| anyhow::anyhow!("cluster.redis: {e}"))?;
        self.cluster
            .kubernetes
            .validate()
            .map_err(|e| anyhow::anyhow!("cluster.kubernetes: {e}"))?;
        let t = &self.telemetry;
        if !t.otlp_endpoint.is_empty() {
            anyhow::ensure!(
                t.otlp_endpoint.starts_with("http://"),
                "telemetry.otlp_endpoint must be an http:// URL of an OTLP/gRPC collector \
                 (TLS to the collector is not supported), not {:?}",
                t.otlp_endpoint
            );
            tonic::transport::Endpoint::from_shared(t.otlp_endpoint.clone()).map_err(|e| {
                anyhow::anyhow!("telemetry.otlp_endpoint {:?}: {e}", t.otlp_endpoint)
            })?;
        }
        anyhow::ensure!(
            !t.service_name.is_empty(),
            "telemetry.service_name must not be empty"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&t.sample_ratio),
            "telemetry.sample_ratio must be between 0 and 1"
        );
        if self.muc.enabled {
            let d = if self.muc.domain.is_empty() {
                format!("conference.{}", self.server.domain)
            } else {
                self.muc.domain.clone()
            };
            self.muc.domain = rookery_jid::prep_domainpart(&d)
                .map_err(|e| anyhow::anyhow!("muc.domain {d:?}: {e}"))?
                .into_owned();
            anyhow::ensure!(
                self.muc.domain != self.server.domain,
                "muc.domain must differ from server.domain"
            );
            anyhow::ensure!(
                self.muc.max_occupants_per_room >= 1,
                "muc.max_occupants_per_room must be at least 1"
            );
        }
        if self.pubsub.enabled {
            let d = if self.pubsub.domain.is_empty() {
                format!("pubsub.{}", self.server.domain)
            } else {
                self.pubsub.domain.clone()
            };
            self.pubsub.domain = rookery_jid::prep_domainpart(&d)
                .map_err(|e| anyhow::anyhow!("pubsub.domain {d:?}: {e}"))?
                .into_owned();
            anyhow::ensure!(
                self.pubsub.domain != self.server.domain
                    && (!self.muc.enabled || self.pubsub.domain != self.muc.domain),
                "pubsub.domain must differ from server.domain and muc.domain"
            );
        }
        anyhow::ensure!(
            self.pubsub.max_items_per_node >= 1
                && self.pubsub.max_nodes_per_user >= 1
                && self.pubsub.max_item_bytes >= 1,
            "pubsub.max_items_per_node, max_nodes_per_user and max_item_bytes must be at least 1"
        );
        self.upload
            .check(&self.server.domain)
            .map_err(|e| anyhow::anyhow!(e))?;
        anyhow::ensure!(
            !(self.upload.enabled
                && ((self.muc.enabled && self.upload.domain == self.muc.domain)
                    || (self.pubsub.enabled && self.upload.domain == self.pubsub.domain))),
            "upload.domain must differ from muc.domain and pubsub.domain"
        );
        if self.store.backend == StoreBackend::Scylla {
            let s = &self.store.scylla;
            s.check()
                .map_err(|e| anyhow::anyhow!("store.scylla: {e}"))?;
            for node in &s.nodes {
                anyhow::ensure!(
                    node.rsplit_once(':')
                        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()),
                    "store.scylla.nodes: {node:?} is not host:port"
                );
            }
            anyhow::ensure!(
                s.username.is_some() == s.password.is_some(),
                "store.scylla.username and store.scylla.password must be set together"
            );
            anyhow::ensure!(
                s.request_timeout_ms >= 10,
                "store.scylla.request_timeout_ms must be at least 10"
            );
        }
        Ok(())
    }
}

/// Sets `path` (`SECTION__KEY`, any depth) in `table` to `value`.
fn apply_override(table: &mut toml::Table, path: &str, value: &str) -> anyhow::Result<()> {
    let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
    anyhow::ensure!(
        parts.len() >= 2 && parts.iter().all(|p| !p.is_empty()),
        "names no key: use ROOKERY__<SECTION>__<KEY>"
    );
    let (key, sections) = parts.split_last().expect("two parts at least");
    let mut at = table;
    for s in sections {
        at = at
            .entry(s.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| anyhow::anyhow!("{s} is not a section"))?;
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    at.insert(key.clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.server.domain, "localhost");
        assert!(c.c2s.require_tls);
        assert_eq!(c.c2s.max_stanza_bytes, 262_144);
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        assert!(Config::parse("[c2s]\nno_such_option = 1").is_err());
        assert!(Config::parse("[server]\ndomain = 'a b'").is_err());
        assert!(Config::parse("[c2s]\nmax_stanza_bytes = 100").is_err());
        assert!(Config::parse("[tls]\ncert = 'x.pem'").is_err());
        let c = Config::parse("[server]\ndomain = 'Example.ORG'").unwrap();
        assert_eq!(c.server.domain, "example.org");
    }

    #[test]
    fn store_section() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.store.backend, StoreBackend::Sqlite);
        let c = Config::parse(
            "[store]\nbackend = 'scylla'\n[store.scylla]\nnodes = ['10.0.0.1:9042', 'db.example:9042']\nkeyspace = 'xmpp'\nconsistency = 'QUORUM'\n",
        )
        .unwrap();
        assert_eq!(c.store.backend, StoreBackend::Scylla);
        assert_eq!(c.store.scylla.keyspace, "xmpp");
        assert!(Config::parse("[store]\nbackend = 'postgres'").is_err());
        assert!(Config::parse("[store.scylla]\nno_such_option = 1").is_err());
        for bad in [
            "nodes = []",
            "nodes = ['10.0.0.1']",
            "keyspace = 'Bad-Name'",
            "consistency = 'two'",
            "replication = 'SimpleStrategy'",
            "request_timeout_ms = 0",
            "username = 'rookery'",
        ] {
            let text = format!("[store]\nbackend = 'scylla'\n[store.scylla]\n{bad}\n");
            assert!(Config::parse(&text).is_err(), "{bad} accepted");
        }
        // The section is only checked when it is used.
        Config::parse("[store.scylla]\nnodes = []").unwrap();
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides_keys() {
        let c = Config::from_sources(
            None,
            env(&[
                ("ROOKERY__CLUSTER__NODE", "cm-7f9c"),
                ("ROOKERY__CLUSTER__GRPC_ADVERTISE", "10.1.2.3:7400"),
                ("rookery__cluster__redis__urls", "[\"redis://redis:6379\"]"),
                ("ROOKERY__C2S__MAX_CONNECTIONS", "20000"),
                ("ROOKERY__C2S__REQUIRE_TLS", "false"),
                ("ROOKERY__DRAIN__GRACE_SECS", "40"),
                ("PATH", "/usr/bin"),
                ("ROOKERYX", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.cluster.node, "cm-7f9c");
        assert_eq!(c.cluster.grpc_advertise, "10.1.2.3:7400");
        assert_eq!(c.cluster.redis.urls, vec!["redis://redis:6379".to_owned()]);
        assert_eq!(c.c2s.max_connections, 20000);
        assert!(!c.c2s.require_tls);
        assert_eq!(c.drain.grace_secs, 40);

        // Over a file: the environment wins, the file's other keys stay.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rookery.toml");
        std::fs::write(
            &file,
            "[server]\ndomain = 'example.org'\n[cluster]\nnode = 'file'\n",
        )
        .unwrap();
        let c =
            Config::from_sources(Some(&file), env(&[("ROOKERY__CLUSTER__NODE", "env")])).unwrap();
        assert_eq!(c.server.domain, "example.org");
        assert_eq!(c.cluster.node, "env");

        // Mistakes name the variable.
        for bad in [
            ("ROOKERY__C2S__NO_SUCH_KEY", "1"),
            ("ROOKERY__C2S__MAX_CONNECTIONS", "many"),
            ("ROOKERY__C2S", "1"),
            ("ROOKERY__SERVER__DOMAIN__X", "1"),
            ("ROOKERY__C2S__MAX_STANZA_BYTES", "10"),
        ] {
            let e = Config::from_sources(None, env(&[bad])).unwrap_err();
            let text = format!("{e:#}");
            assert!(
                text.contains(bad.0) || bad.0 == "ROOKERY__C2S__MAX_STANZA_BYTES",
                "{bad:?}: {text}"
            );
        }
    }

    #[test]
    fn cluster_kubernetes_section() {
        let c = Config::parse("").unwrap();
        assert!(!c.cluster.kubernetes.enabled);
        assert_eq!(c.cluster.kubernetes.session_service, "rookery-session");
        assert_eq!(c.cluster.kubernetes.cm_service, "rookery-cm");
        let c = Config::parse(
            "[cluster.kubernetes]\nenabled = true\nnamespace = 'chat'\ncm_service = ''\n",
        )
        .unwrap();
        assert!(c.cluster.kubernetes.enabled);
        assert_eq!(c.cluster.kubernetes.namespace, "chat");
        assert!(c.cluster.kubernetes.cm_service.is_empty());
        assert!(Config::parse("[cluster.kubernetes]\nservice = 'x'").is_err());
        assert!(Config::parse("[cluster.kubernetes]\nenabled = true\nnamespace = 'Chat'").is_err());
        assert!(
            Config::parse(
                "[cluster.kubernetes]\nenabled = true\nsession_service = ''\ncm_service = ''"
            )
            .is_err()
        );
    }

    #[test]
    fn telemetry_section() {
        let c = Config::parse("").unwrap();
        assert!(c.telemetry.otlp_endpoint.is_empty());
        assert_eq!(c.telemetry.service_name, "rookery");
        assert_eq!(c.telemetry.sample_ratio, 1.0);
        let c = Config::parse(
            "[telemetry]\notlp_endpoint = 'http://otel-collector:4317'\nservice_name = 'xmpp'\nsample_ratio = 0.25\n",
        )
        .unwrap();
        assert_eq!(c.telemetry.otlp_endpoint, "http://otel-collector:4317");
        assert_eq!(c.telemetry.sample_ratio, 0.25);
        for bad in [
            "otlp_endpoint = 'otel-collector:4317'",
            "otlp_endpoint = 'https://otel-collector:4317'",
            "otlp_endpoint = 'http://'",
            "service_name = ''",
            "sample_ratio = 1.5",
            "sample_ratio = -0.1",
            "sample_ratio = nan",
            "no_such_option = 1",
        ] {
            let text = format!("[telemetry]\n{bad}\n");
            assert!(Config::parse(&text).is_err(), "{bad} accepted");
        }
    }

    /// Every option of every section, as the code defines it, is documented
    /// in docs/configuration.md and present in deploy/rookery.example.toml.
    #[test]
    fn configuration_reference_names_every_key() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/configuration.md"
        ))
        .expect("docs/configuration.md");
        let example = include_str!("../../../deploy/rookery.example.toml");
        let example_table: toml::Table = toml::from_str(example).unwrap();
        Config::parse(example).expect("the example config is valid");
        let defaults: toml::Table =
            toml::from_str(&toml::to_string(&Config::default()).unwrap()).unwrap();
        let mut missing = Vec::new();
        // Sections and their sub-sections (`[cluster.redis]`, …), depth first.
        let mut sections: Vec<(String, &toml::Table, Option<&toml::Table>)> = defaults
            .iter()
            .filter_map(|(name, t)| {
                let t = t.as_table()?;
                let ex = example_table.get(name).and_then(|e| e.as_table());
                Some((name.clone(), t, ex))
            })
            .collect();
        while let Some((section, table, example)) = sections.pop() {
            if !doc.contains(&format!("[{section}]")) {
                missing.push(format!("[{section}] in docs"));
            }
            for (key, value) in table {
                if !doc.contains(&format!("`{key}`")) {
                    missing.push(format!("{section}.{key} in docs"));
                }
                let in_example = example.and_then(|t| t.get(key));
                if in_example.is_none() {
                    missing.push(format!("{section}.{key} in the example"));
                }
                if let Some(sub) = value.as_table() {
                    sections.push((
                        format!("{section}.{key}"),
                        sub,
                        in_example.and_then(|e| e.as_table()),
                    ));
                }
            }
        }
        for key in ["cert", "key"] {
            assert!(doc.contains(&format!("`{key}`")));
        }
        assert!(missing.is_empty(), "undocumented options: {missing:?}");
    }
}
