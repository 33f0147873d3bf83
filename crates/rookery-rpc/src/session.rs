//! The session node's side: the session service over a [`LocalSessions`],
//! links to the clients held by cms, and forwarding to other owners.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rookery_cluster::{Member, Membership};
use rookery_core::metrics::Metrics;
use rookery_core::roles::SmParams;
use rookery_core::{
    BindRequest, ClientLink, DeliverError, Jid, SessionService, StanzaError, StreamError,
};
use rookery_proto::cm::v1 as cmpb;
use rookery_proto::cm::v1::connection_manager_client::ConnectionManagerClient;
use rookery_proto::session::v1 as pb;
use rookery_proto::session::v1::session_client::SessionClient;
use rookery_proto::session::v1::session_server::{Session, SessionServer};
use rookery_session::LocalSessions;
use rookery_session::peers::{Forward, ForwardKind, Peers};
use rookery_xml::Element;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use crate::{Channels, RpcConfig, call_owner, conv};

/// Deliveries queued for one cm before its clients are told it is full.
const CM_QUEUE: usize = 100_000;
/// Deliveries sent in one call.
const CM_BATCH: usize = 512;

/// A session node: serves the session service for the shards it owns.
#[derive(Debug)]
pub struct SessionNode {
    sessions: Arc<LocalSessions>,
    membership: Arc<Membership>,
    channels: Channels,
    config: RpcConfig,
    metrics: Arc<Metrics>,
    /// Senders to the cms holding our clients, one per cm incarnation.
    senders: Mutex<HashMap<(String, u64), Arc<CmSender>>>,
    me: Weak<SessionNode>,
}

impl SessionNode {
    /// A session node over `sessions`; also makes it the sessions' peers.
    pub fn new(
        sessions: Arc<LocalSessions>,
        membership: Arc<Membership>,
        config: RpcConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<SessionNode> {
        let node = Arc::new_cyclic(|me| SessionNode {
            sessions: sessions.clone(),
            membership,
            channels: Channels::new(config.timeout),
            config,
            metrics,
            senders: Mutex::new(HashMap::new()),
            me: me.clone(),
        });
        sessions.set_peers(node.clone());
        node
    }

    /// The gRPC service.
    pub fn service(self: &Arc<Self>) -> SessionServer<SessionGrpc> {
        SessionServer::new(SessionGrpc(self.clone())).max_decoding_message_size(16 << 20)
    }

    /// The session-side id of a cm connection: unique across cms, as
    /// epochs are (the low 40 bits are the cm's own id).
    fn conn_key(cm: &pb::Caller, conn_id: u64) -> u64 {
        (cm.epoch << 40) | (conn_id & ((1 << 40) - 1))
    }

    /// Checks the caller is a live member (its epoch is current).
    fn check_caller(&self, c: Option<&pb::Caller>) -> Result<pb::Caller, Status> {
        let c = c.ok_or_else(|| Status::invalid_argument("no caller"))?;
        if !self.membership.view().is_live(&c.node, c.epoch) {
            return Err(Status::failed_precondition(format!(
                "{} (epoch {}) is not a live member",
                c.node, c.epoch
            )));
        }
        Ok(c.clone())
    }

    /// Refuses requests for accounts whose shard is not ours (the caller
    /// has a stale view; it retries with a fresh one).
    fn check_owner(&self, user: &Jid) -> Result<(), Status> {
        if self.membership.fenced() {
            return Err(Status::unavailable("this session node is fenced"));
        }
        if self.owns(&user.to_bare()) {
            Ok(())
        } else {
            Err(Status::failed_precondition(format!(
                "not the owner of {}",
                user.to_bare()
            )))
        }
    }

    fn sender(&self, cm: &pb::Caller) -> Result<Arc<CmSender>, Status> {
        let view = self.membership.view();
        let member = view
            .member(&cm.node)
            .filter(|m| m.epoch == cm.epoch)
            .ok_or_else(|| Status::failed_precondition("unknown cm"))?
            .clone();
        let mut senders = self
            .senders
            .lock()
            .map_err(|_| Status::internal("senders poisoned"))?;
        senders.retain(|_, s| !s.is_dead());
        let key = (member.node.clone(), member.epoch);
        if let Some(s) = senders.get(&key) {
            return Ok(s.clone());
        }
        let s = CmSender::start(
            member,
            self.channels.get_for(&cm.node, cm.epoch, &view)?,
            self.me.clone(),
        );
        senders.insert(key, s.clone());
        Ok(s)
    }

    fn link(&self, cm: &pb::Caller, conn_id: u64) -> Result<Arc<dyn ClientLink>, Status> {
        Ok(Arc::new(RemoteLink {
            sender: self.sender(cm)?,
            conn_id,
        }))
    }
}

impl Channels {
    fn get_for(
        &self,
        node: &str,
        epoch: u64,
        view: &rookery_cluster::View,
    ) -> Result<tonic::transport::Channel, Status> {
        let m = view
            .member(node)
            .filter(|m| m.epoch == epoch)
            .ok_or_else(|| Status::failed_precondition("unknown member"))?;
        self.get(m)
    }
}

#[async_trait]
impl Peers for SessionNode {
    fn owns(&self, bare: &Jid) -> bool {
        let me = self.membership.me();
        self.membership
            .view()
            .owner_of(bare.as_str())
            .is_some_and(|m| m.node == me.node && m.epoch == me.epoch)
    }

    async fn forward(&self, job: Forward) -> Result<(), StanzaError> {
        let me = self.membership.me();
        let kind = match job.kind {
            ForwardKind::Route { archived: false } => pb::ForwardKind::Route,
            ForwardKind::Route { archived: true } => pb::ForwardKind::RouteArchived,
            ForwardKind::Presence => pb::ForwardKind::Presence,
            ForwardKind::Deliver => pb::ForwardKind::Deliver,
        };
        let mut env = conv::envelope(&job.stanza, &job.to, self.membership.view().shards);
        // The envelope names the recipient and sender of the job, which
        // may differ from the stanza's addresses (a bare JID's presence).
        env.from = job.from.as_str().to_owned();
        env.to = job.to.as_str().to_owned();
        let msg = pb::ForwardRequest {
            caller: Some(pb::Caller {
                node: me.node.clone(),
                epoch: me.epoch,
            }),
            kind: kind as i32,
            stanza: Some(env),
        };
        let config = self.config;
        call_owner(
            &self.membership,
            &self.channels,
            &self.config,
            &self.metrics,
            ("session", "Forward"),
            job.to.to_bare().as_str(),
            |ch| {
                let mut r = Request::new(msg.clone());
                r.set_timeout(config.timeout);
                async move { SessionClient::new(ch).forward(r).await }
            },
        )
        .await
        .map(|_| ())
        .map_err(|s| {
            warn!(to = %job.to, error = %s, "no owner took a stanza");
            StanzaError::resource_constraint()
                .with_text("the recipient's session service is unavailable")
        })
    }
}

/// The gRPC face of a [`SessionNode`].
#[derive(Debug)]
pub struct SessionGrpc(Arc<SessionNode>);

#[async_trait]
impl Session for SessionGrpc {
    async fn bind(
        &self,
        request: Request<pb::BindRequest>,
    ) -> Result<Response<pb::BindResponse>, Status> {
        let n = &self.0;
        let r = request.into_inner();
        let cm = n.check_caller(r.cm.as_ref())?;
        let user = conv::jid(&r.user, "user")?.to_bare();
        n.check_owner(&user)?;
        let link = n.link(&cm, r.conn_id)?;
        let result = n
            .sessions
            .bind(BindRequest {
                user,
                resource: (!r.resource.is_empty()).then_some(r.resource),
                link,
                conn_id: SessionNode::conn_key(&cm, r.conn_id),
            })
            .await;
        Ok(Response::new(pb::BindResponse {
            result: Some(match result {
                Ok(jid) => pb::bind_response::Result::Jid(jid.as_str().to_owned()),
                Err(e) => pb::bind_response::Result::Error(conv::bind_error_name(&e)),
            }),
        }))
    }

    async fn unbind(
        &self,
        request: Request<pb::UnbindRequest>,
    ) -> Result<Response<pb::UnbindResponse>, Status> {
        let n = &self.0;
        let r = request.into_inner();
        let cm =
            r.cm.clone()
                .ok_or_else(|| Status::invalid_argument("no caller"))?;
        let jid = conv::jid(&r.jid, "jid")?;
        n.check_owner(&jid)?;
        n.sessions
            .unbind(&jid, SessionNode::conn_key(&cm, r.conn_id))
            .await;
        Ok(Response::new(pb::UnbindResponse {}))
    }

    async fn route(
        &self,
        request: Request<pb::RouteRequest>,
    ) -> Result<Response<pb::RouteResponse>, Status> {
        let n = &self.0;
        let r = request.into_inner();
        n.check_caller(r.cm.as_ref())?;
        let stanza = conv::open(r.stanza)?;
        let from = stanza
            .from()
            .cloned()
            .ok_or_else(|| Status::invalid_argument("a routed stanza needs a from"))?;
        n.check_owner(&from)?;
        n.sessions.route(&from, stanza).await;
        Ok(Response::new(pb::RouteResponse {}))
    }

    async fn sm_enable(
        &self,
        request: Request<pb::SmEnableRequest>,
    ) -> Result<Response<pb::SmEnableResponse>, Status> {
        let n = &self.0;
        let r = request.into_inner();
        let cm = n.check_caller(r.cm.as_ref())?;
        let jid = conv::jid(&r.jid, "jid")?;
        n.check_owner(&jid)?;
        let params = SmParams {
            resume: r.resume,
            timeout: Duration::from_secs(u64::from(r.timeout_secs)),
            max_queue: r.max_queue as usize,
        };
        let result = match n
            .sessions
            .sm_enable(&jid, SessionNode::conn_key(&cm, r.conn_id), params)
            .await
        {
            Ok(id) => pb::sm_enable_response::Result::Id(id.unwrap_or_default()),
            Err(e) => pb::sm_enable_response::Result::Failure(conv::sm_failure(&e)),
        };
        Ok(Response::new(pb::SmEnableResponse {
            result: Some(result),
        }))
    }

    async fn sm_ack(
        &self,
        request: Request<pb::SmAckRequest>,
    ) -> Result<Response<pb::SmAckResponse>, Status> {
        let n = &self.0;
        let r = request.into_inner();
        let cm = n.check_caller(r.cm.as_ref())?;
        let jid = conv::jid(&r.jid, "jid")?;
        n.check_owner(&jid)?;
        let failure = n
            .sessions
            .sm_ack(&jid, SessionNode::conn_key(&cm, r.conn_id), r.h, r.inbound)
            .await
            .err()
            .map(|e| conv::sm_failure(&e));
        Ok(Response::new(pb::SmAckResponse { failure }))
    }

    async fn sm_send(
        &self,
        request: Request<pb::SmSendRequest>,
    ) -> Result<Response<pb::SmSendResponse>, Status> {
        let n = &self.0;
        let r = request.into_inner();
        let cm = n.check_caller(r.cm.as_ref())?;
        let jid = conv::jid(&r.jid, "jid")?;
        n.check_owner(&jid)?;
        let el = std::str::from_utf8(&r.xml)
            .ok()
            .and_then(|s| Element::parse(s).ok())
            .ok_or_else(|| Status::invalid_argument("stanza is not well-formed"))?;
        n.sessions
            .sm_send(&jid, SessionNode::conn_key(&cm, r.conn_id), el);
        Ok(Response::new(pb::SmSendResponse {}))
    }

    async fn detach(
        &self,
        request: Request<pb::DetachRequest>,
    ) -> Result<Response<pb::DetachResponse>, Status> {
        let n = &self.0;
        let r = request.into_inner();
        let cm =
            r.cm.clone()
                .ok_or_else(|| Status::invalid_argument("no caller"))?;
        let jid = conv::jid(&r.jid, "jid")?;
        n.check_owner(&jid)?;
        n.sessions
            .detach(&jid, SessionNode::conn_key(&cm, r.conn_id), r.inbound)
            .await;
        Ok(Response::new(pb::DetachResponse {}))
    }

    async fn resume(
        &self,
        request: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        let n = &self.0;
        let r = request.into_inner();
        let cm = n.check_caller(r.cm.as_ref())?;
        let user = conv::jid(&r.user, "user")?.to_bare();
        n.check_owner(&user)?;
        let link = n.link(&cm, r.conn_id)?;
        let result = match n
            .sessions
            .resume(
                &user,
                &r.previd,
                r.h,
                link,
                SessionNode::conn_key(&cm, r.conn_id),
            )
            .await
        {
            Ok(res) => pb::resume_response::Result::Resumed(pb::Resumed {
                jid: res.jid.as_str().to_owned(),
                h: res.h,
            }),
            Err(e) => pb::resume_response::Result::Failure(conv::sm_failure(&e)),
        };
        Ok(Response::new(pb::ResumeResponse {
            result: Some(result),
        }))
    }

    async fn forward(
        &self,
        request: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardResponse>, Status> {
        let n = &self.0;
        let r = request.into_inner();
        n.check_caller(r.caller.as_ref())?;
        let env = r
            .stanza
            .ok_or_else(|| Status::invalid_argument("no stanza"))?;
        let from = conv::jid(&env.from, "from")?;
        let to = conv::jid(&env.to, "to")?;
        n.check_owner(&to)?;
        let kind = match pb::ForwardKind::try_from(r.kind) {
            Ok(pb::ForwardKind::Route) => ForwardKind::Route { archived: false },
            Ok(pb::ForwardKind::RouteArchived) => ForwardKind::Route { archived: true },
            Ok(pb::ForwardKind::Presence) => ForwardKind::Presence,
            Ok(pb::ForwardKind::Deliver) => ForwardKind::Deliver,
            _ => return Err(Status::invalid_argument("unknown forward kind")),
        };
        let stanza = conv::open(Some(env))?.element().clone();
        n.sessions
            .inbound(Forward {
                kind,
                from,
                to,
                stanza,
            })
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(pb::ForwardResponse {}))
    }
}

/// One queued thing for a cm.
type Delivery = cmpb::Delivery;

/// Sends what the session node has for the clients of one cm, in order,
/// in batches.
#[derive(Debug)]
struct CmSender {
    tx: mpsc::Sender<Delivery>,
    dead: std::sync::atomic::AtomicBool,
}

impl CmSender {
    fn start(
        cm: Member,
        channel: tonic::transport::Channel,
        node: Weak<SessionNode>,
    ) -> Arc<CmSender> {
        let (tx, rx) = mpsc::channel(CM_QUEUE);
        let s = Arc::new(CmSender {
            tx,
            dead: Default::default(),
        });
        tokio::spawn(run_sender(cm, channel, node, rx, Arc::downgrade(&s)));
        s
    }

    fn is_dead(&self) -> bool {
        self.dead.load(std::sync::atomic::Ordering::Relaxed) || self.tx.is_closed()
    }

    fn push(&self, d: Delivery) -> Result<(), DeliverError> {
        if self.is_dead() {
            return Err(DeliverError::Closed);
        }
        self.tx.try_send(d).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => DeliverError::Full,
            mpsc::error::TrySendError::Closed(_) => DeliverError::Closed,
        })
    }
}

async fn run_sender(
    cm: Member,
    channel: tonic::transport::Channel,
    node: Weak<SessionNode>,
    mut rx: mpsc::Receiver<Delivery>,
    me: Weak<CmSender>,
) {
    let mut client = ConnectionManagerClient::new(channel).max_decoding_message_size(16 << 20);
    let mut batch = Vec::with_capacity(CM_BATCH);
    while rx.recv_many(&mut batch, CM_BATCH).await > 0 {
        let Some(n) = node.upgrade() else { return };
        let me_member = n.membership.me().clone();
        let mut backoff = Duration::from_millis(10);
        loop {
            let mut r = Request::new(cmpb::DeliverRequest {
                node: me_member.node.clone(),
                epoch: me_member.epoch,
                deliveries: batch.clone(),
            });
            r.set_timeout(n.config.timeout);
            let started = std::time::Instant::now();
            let res = client.deliver(r).await;
            n.metrics
                .rpc_latency
                .get_or_create(&rookery_core::metrics::RpcLabel {
                    role: "session",
                    method: "Deliver",
                    outcome: if res.is_ok() { "ok" } else { "error" },
                })
                .observe(started.elapsed().as_secs_f64());
            match res {
                Ok(_) => break,
                Err(s) => {
                    // Retried while the cm is alive; once it is gone, so are
                    // its clients (they resume elsewhere, and the session
                    // side keeps what stream management has not seen acked).
                    if !n.membership.view().is_live(&cm.node, cm.epoch) {
                        debug!(cm = %cm.node, "cm gone, its deliveries dropped");
                        if let Some(me) = me.upgrade() {
                            me.dead.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        return;
                    }
                    warn!(cm = %cm.node, error = %s, "delivery to cm failed, retrying");
                    n.metrics.rpc_retries.inc();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        }
        batch.clear();
    }
}

/// A client held by a cm, as the session logic sees it.
#[derive(Debug)]
struct RemoteLink {
    sender: Arc<CmSender>,
    conn_id: u64,
}

impl ClientLink for RemoteLink {
    fn deliver(&self, stanza: Arc<Element>) -> Result<(), DeliverError> {
        self.sender.push(Delivery {
            conn_id: self.conn_id,
            what: Some(cmpb::delivery::What::Xml(
                stanza.to_xml_string().into_bytes(),
            )),
        })
    }

    fn close(&self, error: StreamError) {
        let _ = self.sender.push(Delivery {
            conn_id: self.conn_id,
            what: Some(cmpb::delivery::What::Close(cmpb::StreamClose {
                condition: error.condition.to_owned(),
                text: error.text.unwrap_or_default(),
            })),
        });
    }
}
