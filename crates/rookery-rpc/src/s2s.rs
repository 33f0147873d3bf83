//! Federation in a cluster (docs/decisions/0017-federation.md): session
//! nodes hand stanzas for other domains to the s2s node of that domain
//! ([`S2sClient`], served by [`FederationService`]), and s2s nodes hand what
//! remote servers send to the owner of the recipient ([`RemoteInbound`],
//! `Session.Forward` with `FORWARD_KIND_FROM_REMOTE`).
//!
//! Each remote domain maps to one s2s node by rendezvous hashing
//! ([`rookery_cluster::View::s2s_node_for`]), so the cluster keeps one
//! stream pair per remote domain and stanzas to a domain keep their order:
//! a session node sends them one at a time per lane, and the lanes are
//! chosen by domain.

use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use rookery_cluster::Membership;
use rookery_core::metrics::Metrics;
use rookery_core::telemetry::names;
use rookery_core::{InboundRouter, RemoteRouter, Stanza, StanzaError};
use rookery_proto::s2s::v1 as s2spb;
use rookery_proto::s2s::v1::federation_client::FederationClient;
use rookery_proto::s2s::v1::federation_server::{Federation, FederationServer};
use rookery_proto::session::v1 as pb;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use tracing::warn;

use crate::{Channels, RpcConfig, call_member, conv, trace};

/// Lanes of a session node's [`S2sClient`]: stanzas to one remote domain
/// always take the same lane, in order.
const LANES: usize = 16;
/// Stanzas waiting in one lane before new ones are refused
/// (`resource-constraint` to the sender).
const LANE_DEPTH: usize = 4096;

fn caller(membership: &Membership) -> pb::Caller {
    let me = membership.me();
    pb::Caller {
        node: me.node.clone(),
        epoch: me.epoch,
    }
}

/// The error reply to `stanza` from its remote recipient, handed to the
/// local sender's owner (errors are never answered).
async fn bounce(local: &dyn InboundRouter, stanza: &Stanza, err: StanzaError) {
    if let Some(reply) = stanza.error_reply(&err)
        && let Ok(reply) = Stanza::parse(reply)
    {
        local.route_inbound(reply).await;
    }
}

/// On a session node: [`RemoteRouter`] over gRPC to the s2s nodes.
#[derive(Debug)]
pub struct S2sClient {
    lanes: Vec<mpsc::Sender<Stanza>>,
    /// Where bounces go: this node's session service.
    local: Arc<dyn InboundRouter>,
    hasher: BuildHasherDefault<std::collections::hash_map::DefaultHasher>,
}

impl S2sClient {
    /// Starts the lanes; `local` receives the bounces of stanzas no s2s
    /// node took.
    pub fn new(
        membership: Arc<Membership>,
        config: RpcConfig,
        metrics: Arc<Metrics>,
        local: Arc<dyn InboundRouter>,
    ) -> Arc<S2sClient> {
        let channels = Arc::new(Channels::new(config.timeout));
        let mut lanes = Vec::with_capacity(LANES);
        for _ in 0..LANES {
            let (tx, mut rx) = mpsc::channel::<Stanza>(LANE_DEPTH);
            let (membership, channels, metrics, local) = (
                membership.clone(),
                channels.clone(),
                metrics.clone(),
                local.clone(),
            );
            tokio::spawn(async move {
                while let Some(stanza) = rx.recv().await {
                    if let Err(e) = send(&membership, &channels, &config, &metrics, &stanza).await {
                        warn!(to = ?stanza.to(), error = %e, "no s2s node took a stanza");
                        bounce(
                            local.as_ref(),
                            &stanza,
                            StanzaError::remote_server_not_found(),
                        )
                        .await;
                    }
                }
            });
            lanes.push(tx);
        }
        Arc::new(S2sClient {
            lanes,
            local,
            hasher: Default::default(),
        })
    }
}

/// Hands one stanza to the s2s node of its domain, retrying while no s2s
/// node is up or the chosen one is unreachable.
async fn send(
    membership: &Membership,
    channels: &Channels,
    config: &RpcConfig,
    metrics: &Metrics,
    stanza: &Stanza,
) -> Result<(), Status> {
    let to = stanza
        .to()
        .ok_or_else(|| Status::invalid_argument("no to"))?
        .clone();
    let domain = to.domain().to_owned();
    if membership.view().s2s_node_for(&domain).is_none() {
        // No federation in this cluster (or none of it up): bounced at once.
        return Err(Status::unavailable("no s2s node is up"));
    }
    let msg = s2spb::SendRequest {
        caller: Some(caller(membership)),
        stanza: Some(conv::envelope(
            stanza.element(),
            &to,
            membership.view().shards,
        )),
    };
    let hop = trace::client(names::RPC_FORWARD);
    let r = call_member(
        membership,
        channels,
        config,
        metrics,
        ("session", "Send"),
        |view| view.s2s_node_for(&domain).cloned(),
        |ch| {
            let mut r = Request::new(msg.clone());
            r.set_timeout(config.timeout);
            trace::inject(&mut r, hop.as_ref());
            async move { FederationClient::new(ch).send(r).await }
        },
    )
    .await;
    trace::outcome(hop.as_ref(), &r);
    r.map(|_| ())
}

impl RemoteRouter for S2sClient {
    fn send_remote(&self, stanza: Stanza) {
        let Some(domain) = stanza.to().map(|t| t.domain().to_owned()) else {
            return;
        };
        let lane = (self.hasher.hash_one(&domain) as usize) % self.lanes.len().max(1);
        let Some(tx) = self.lanes.get(lane) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(stanza)) = tx.try_send(stanza) {
            warn!(%domain, "federation lane full: stanza refused");
            let local = self.local.clone();
            tokio::spawn(async move {
                bounce(local.as_ref(), &stanza, StanzaError::resource_constraint()).await;
            });
        }
    }
}

/// On an s2s node: the `Federation` service, which queues stanzas from the
/// session nodes on this node's server-to-server streams.
#[derive(Debug)]
pub struct FederationService {
    membership: Arc<Membership>,
    remote: Arc<dyn RemoteRouter>,
}

impl FederationService {
    /// The service over `remote` (the s2s role of this process).
    pub fn server(
        membership: Arc<Membership>,
        remote: Arc<dyn RemoteRouter>,
    ) -> FederationServer<FederationService> {
        FederationServer::new(FederationService { membership, remote })
            .max_decoding_message_size(16 << 20)
    }
}

#[async_trait]
impl Federation for FederationService {
    async fn send(
        &self,
        request: Request<s2spb::SendRequest>,
    ) -> Result<Response<s2spb::SendResponse>, Status> {
        let r = request.into_inner();
        let c = r
            .caller
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("no caller"))?;
        if !self.membership.view().is_live(&c.node, c.epoch) {
            return Err(Status::failed_precondition(format!(
                "{} (epoch {}) is not a live member",
                c.node, c.epoch
            )));
        }
        let stanza = conv::open(r.stanza)?;
        self.remote.send_remote(stanza);
        Ok(Response::new(s2spb::SendResponse {}))
    }
}

/// On an s2s node: [`InboundRouter`] over gRPC, to the owner of each
/// stanza's recipient.
#[derive(Debug)]
pub struct RemoteInbound {
    membership: Arc<Membership>,
    channels: Channels,
    config: RpcConfig,
    metrics: Arc<Metrics>,
    /// The server's domain, then those of its components (MUC, pubsub,
    /// upload), which the session nodes serve.
    domains: Vec<String>,
    /// Where the error for a stanza no owner took goes: back over federation.
    answer: OnceLock<Arc<dyn RemoteRouter>>,
}

impl RemoteInbound {
    /// The session service, as the s2s role of this node sees it:
    /// `domains` are the server's and its components'.
    pub fn new(
        membership: Arc<Membership>,
        config: RpcConfig,
        metrics: Arc<Metrics>,
        domains: Vec<String>,
    ) -> Arc<RemoteInbound> {
        Arc::new(RemoteInbound {
            membership,
            channels: Channels::new(config.timeout),
            config,
            metrics,
            domains,
            answer: OnceLock::new(),
        })
    }

    /// Errors for stanzas that no session node took go back to their
    /// remote senders through `remote`. Set once.
    pub fn set_answer(&self, remote: Arc<dyn RemoteRouter>) {
        let _ = self.answer.set(remote);
    }
}

#[async_trait]
impl InboundRouter for RemoteInbound {
    fn serves(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| d == domain)
    }

    async fn route_inbound(&self, stanza: Stanza) {
        let (Some(from), Some(to)) = (stanza.from().cloned(), stanza.to().cloned()) else {
            return;
        };
        let r = crate::forward_to_owner(
            &self.membership,
            &self.channels,
            &self.config,
            &self.metrics,
            "s2s",
            pb::ForwardKind::FromRemote,
            &from,
            &to,
            stanza.element(),
        )
        .await;
        if let Err(e) = r {
            warn!(to = %to, error = %e, "no session node took a stanza from a remote server");
            if let Some(remote) = self.answer.get()
                && let Some(reply) = stanza.error_reply(&StanzaError::internal_server_error())
                && let Ok(reply) = Stanza::parse(reply)
            {
                remote.send_remote(reply);
            }
        }
    }
}
