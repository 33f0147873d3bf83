//! Membership discovery through the Kubernetes API (feature `kubernetes`, decision 0014).
//!
//! Epochs, leases and shard claims stay in Redis. What Kubernetes adds is readiness: one
//! watch (list, then watch, relisting when the resourceVersion expires) on the
//! `discovery.k8s.io/v1` EndpointSlices of the headless Services of the session nodes and
//! the cms, selected by the label `kubernetes.io/service-name`, is reduced to the names
//! of the pods that are ready endpoints of each Service and published as a
//! [`ReadyFilter`] on a watch channel, which
//! [`Membership::join_with_readiness`](crate::Membership::join_with_readiness) applies to
//! its views.
//!
//! - An endpoint counts when `conditions.ready` is not false (the API says to read a
//!   missing `ready` as true), or when `conditions.terminating` is true: a terminating
//!   pod drains (decision 0015) — a cm still holds its clients while it moves them, a
//!   session node hands its shards over — and leaves the membership through Redis when
//!   it is done, its readiness probe failing meanwhile by design. Its `targetRef` must
//!   name a Pod; the pod name is the node name. Endpoints without a `targetRef` are
//!   ignored.
//! - Slices of one Service are merged; a deleted slice takes its pods with it.
//! - Until the first complete list, the filtered roles admit nobody.
//! - A relist replaces the state only once it is complete; while the API is unreachable
//!   or answers errors, the last known sets stay in force (the Redis leases still remove
//!   dead members).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{ClusterError, KubernetesConfig, ReadyFilter};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A running watch of the EndpointSlices of the configured Services. Dropping it stops
/// the watch (the last [`ReadyFilter`] it published stays with the receivers).
pub struct KubernetesDiscovery {
    ready: watch::Receiver<ReadyFilter>,
    synced: watch::Receiver<bool>,
    namespace: String,
    task: JoinHandle<()>,
}

impl fmt::Debug for KubernetesDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubernetesDiscovery")
            .field("namespace", &self.namespace)
            .field("synced", &*self.synced.borrow())
            .field("ready", &*self.ready.borrow())
            .finish_non_exhaustive()
    }
}

impl KubernetesDiscovery {
    /// Builds a client from the environment (in a pod: its service account; elsewhere:
    /// the kubeconfig) and starts watching. Returns at once; see
    /// [`KubernetesDiscovery::wait_synced`].
    pub async fn start(cfg: &KubernetesConfig) -> Result<KubernetesDiscovery, ClusterError> {
        cfg.validate()?;
        let client = Client::try_default().await.map_err(|e| {
            ClusterError::Kubernetes(format!(
                "no Kubernetes client configuration (in-cluster service account or kubeconfig): {e}"
            ))
        })?;
        Ok(Self::with_client(client, cfg))
    }

    /// Starts watching through `client` (tests pass a mock). An empty
    /// `cfg.namespace` means the client's default namespace (in a pod, its own).
    pub fn with_client(client: Client, cfg: &KubernetesConfig) -> KubernetesDiscovery {
        let namespace = if cfg.namespace.is_empty() {
            client.default_namespace().to_owned()
        } else {
            cfg.namespace.clone()
        };
        let services = Services {
            session: Some(cfg.session_service.clone()).filter(|s| !s.is_empty()),
            cm: Some(cfg.cm_service.clone()).filter(|s| !s.is_empty()),
        };
        let (ready_tx, ready) = watch::channel(services.filter(&BTreeMap::new()));
        let (synced_tx, synced) = watch::channel(false);
        let api: Api<EndpointSlice> = Api::namespaced(client, &namespace);
        let config = watcher::Config::default().labels(&services.selector());
        tracing::info!(%namespace, selector = %services.selector(), "watching EndpointSlices");
        let task = tokio::spawn(follow(api, config, services, ready_tx, synced_tx));
        KubernetesDiscovery {
            ready,
            synced,
            namespace,
            task,
        }
    }

    /// The ready members, updated at every change (the channel for
    /// [`Membership::join_with_readiness`](crate::Membership::join_with_readiness)).
    pub fn ready(&self) -> watch::Receiver<ReadyFilter> {
        self.ready.clone()
    }

    /// The namespace watched.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Waits (at most `within`) for the first complete list; true when it arrived.
    pub async fn wait_synced(&self, within: Duration) -> bool {
        let mut synced = self.synced.clone();
        matches!(
            tokio::time::timeout(within, synced.wait_for(|s| *s)).await,
            Ok(Ok(_))
        )
    }
}

impl Drop for KubernetesDiscovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The Services watched, by role (`None`: that role is not filtered).
#[derive(Clone, Debug)]
struct Services {
    session: Option<String>,
    cm: Option<String>,
}

impl Services {
    /// `kubernetes.io/service-name=a` or `kubernetes.io/service-name in (a,b)`.
    fn selector(&self) -> String {
        let names: BTreeSet<&str> = [&self.session, &self.cm]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        let names: Vec<&str> = names.into_iter().collect();
        match names.as_slice() {
            [one] => format!("{SERVICE_NAME_LABEL}={one}"),
            many => format!("{SERVICE_NAME_LABEL} in ({})", many.join(",")),
        }
    }

    /// The filter the slices imply: per role, the ready pods of all the slices of its
    /// Service.
    fn filter(&self, slices: &BTreeMap<String, Slice>) -> ReadyFilter {
        let ready_of = |service: &Option<String>| {
            service.as_ref().map(|name| {
                slices
                    .values()
                    .filter(|s| &s.service == name)
                    .flat_map(|s| s.ready.iter().cloned())
                    .collect::<BTreeSet<String>>()
            })
        };
        ReadyFilter {
            session: ready_of(&self.session),
            cm: ready_of(&self.cm),
        }
    }
}

/// What one EndpointSlice contributes: its Service and its ready pods.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Slice {
    service: String,
    ready: BTreeSet<String>,
}

/// Whether an endpoint's pod is a live member: ready (a missing condition reads as
/// ready, as the API documents), or terminating, which is draining: it leaves through
/// Redis once its clients and shards are handed over (decision 0015).
fn endpoint_ready(e: &Endpoint) -> bool {
    let c = e.conditions.as_ref();
    c.and_then(|c| c.ready).unwrap_or(true) || c.and_then(|c| c.terminating).unwrap_or(false)
}

/// The slice's name and what it contributes, or `None` for a slice without a name or
/// without the service label.
fn reduce(slice: &EndpointSlice) -> Option<(String, Slice)> {
    let name = slice.metadata.name.clone()?;
    let service = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)?
        .clone();
    let ready = slice
        .endpoints
        .iter()
        .filter(|e| endpoint_ready(e))
        .filter_map(|e| e.target_ref.as_ref())
        .filter(|r| r.kind.as_deref().is_none_or(|k| k == "Pod"))
        .filter_map(|r| r.name.clone())
        .collect();
    Some((name, Slice { service, ready }))
}

fn slice_name(slice: &EndpointSlice) -> Option<&str> {
    slice.metadata.name.as_deref()
}

/// Follows the watch until it ends (it does not, short of the task being aborted).
async fn follow(
    api: Api<EndpointSlice>,
    config: watcher::Config,
    services: Services,
    ready_tx: watch::Sender<ReadyFilter>,
    synced_tx: watch::Sender<bool>,
) {
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    // The slices in force, and those of a relist in progress (replacing them once done).
    let mut slices: BTreeMap<String, Slice> = BTreeMap::new();
    let mut relist: Option<BTreeMap<String, Slice>> = None;
    let mut failing = false;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => {
                if failing {
                    tracing::info!("Kubernetes API answering again");
                    failing = false;
                }
                event
            }
            Err(e) => {
                if failing {
                    tracing::debug!(error = %e, "watching EndpointSlices failed again");
                } else {
                    tracing::warn!(error = %e, "watching EndpointSlices failed; the last known ready endpoints stay in force while it retries");
                    failing = true;
                }
                continue;
            }
        };
        match event {
            Event::Init => {
                relist = Some(BTreeMap::new());
                continue;
            }
            Event::InitApply(slice) => {
                if let (Some(pending), Some((name, s))) = (relist.as_mut(), reduce(&slice)) {
                    pending.insert(name, s);
                }
                continue;
            }
            Event::InitDone => {
                slices = relist.take().unwrap_or_default();
                synced_tx.send_replace(true);
            }
            Event::Apply(slice) => match reduce(&slice) {
                Some((name, s)) => {
                    slices.insert(name, s);
                }
                None => {
                    if let Some(name) = slice_name(&slice) {
                        slices.remove(name);
                    }
                }
            },
            Event::Delete(slice) => {
                if let Some(name) = slice_name(&slice) {
                    slices.remove(name);
                }
            }
        }
        let filter = services.filter(&slices);
        ready_tx.send_if_modified(|current| {
            if *current == filter {
                return false;
            }
            tracing::info!(session = ?filter.session, cm = ?filter.cm, "ready endpoints changed");
            *current = filter;
            true
        });
    }
    tracing::warn!("the EndpointSlice watch ended: the last known ready endpoints stay in force");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn selector_names_the_services() {
        let both = Services {
            session: Some("rookery-session".into()),
            cm: Some("rookery-cm".into()),
        };
        assert_eq!(
            both.selector(),
            "kubernetes.io/service-name in (rookery-cm,rookery-session)"
        );
        let one = Services {
            session: Some("s".into()),
            cm: None,
        };
        assert_eq!(one.selector(), "kubernetes.io/service-name=s");
        let f = one.filter(&BTreeMap::new());
        assert_eq!(f, ReadyFilter::nobody(true, false));
    }

    #[test]
    fn which_endpoints_count() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s-1", "labels": {SERVICE_NAME_LABEL: "svc"}},
            "addressType": "IPv4",
            "endpoints": [
                // Conditions missing: ready, not terminating (as the API documents).
                {"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "name": "a"}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": null},
                 "targetRef": {"kind": "Pod", "name": "b"}},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false},
                 "targetRef": {"kind": "Pod", "name": "c"}},
                {"addresses": ["10.0.0.4"], "conditions": {"ready": true, "terminating": true},
                 "targetRef": {"kind": "Pod", "name": "d"}},
                // Draining: its readiness probe says 503, it is terminating: still a member.
                {"addresses": ["10.0.0.7"],
                 "conditions": {"ready": false, "serving": false, "terminating": true},
                 "targetRef": {"kind": "Pod", "name": "g"}},
                // Not a pod; no targetRef at all (the hostname is not a node name).
                {"addresses": ["10.0.0.5"], "targetRef": {"kind": "Node", "name": "e"}},
                {"addresses": ["10.0.0.6"], "hostname": "f"},
            ],
        }))
        .unwrap();
        let (name, s) = reduce(&slice).unwrap();
        assert_eq!(name, "s-1");
        assert_eq!(s.service, "svc");
        assert_eq!(s.ready, ["a", "b", "d", "g"].map(str::to_owned).into());
        // Without the service label (or a name) a slice contributes nothing.
        let unlabelled: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s-2"}, "addressType": "IPv4", "endpoints": []
        }))
        .unwrap();
        assert!(reduce(&unlabelled).is_none());
    }
}
