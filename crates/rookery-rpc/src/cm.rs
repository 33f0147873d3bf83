//! The connection manager's side: the session service over gRPC, and the
//! delivery service the session nodes push to.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use rookery_cluster::Membership;
use rookery_core::metrics::Metrics;
use rookery_core::roles::{Resumed, SmError, SmParams};
use rookery_core::{
    BindError, BindRequest, ClientLink, DeliverError, Jid, SessionService, Stanza, StreamError,
};
use rookery_proto::cm::v1 as cmpb;
use rookery_proto::session::v1 as pb;
use rookery_proto::session::v1::session_client::SessionClient;
use rookery_xml::Element;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use crate::{Channels, RpcConfig, call_owner};
use crate::{conv, trace};
use rookery_core::telemetry::{self, KeyValue, names};

/// The links of the clients this cm holds, by connection id, with the full
/// JID once bound.
type Links = RwLock<HashMap<u64, (Option<Jid>, Arc<dyn ClientLink>)>>;

/// [`SessionService`] over gRPC: every call goes to the session node that
/// owns the user's shard (cm → owner of sender).
#[derive(Debug)]
pub struct RemoteSessions {
    membership: Arc<Membership>,
    channels: Arc<Channels>,
    config: RpcConfig,
    metrics: Arc<Metrics>,
    links: Arc<Links>,
}

impl RemoteSessions {
    /// The session service as seen from this cm.
    pub fn new(
        membership: Arc<Membership>,
        config: RpcConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<RemoteSessions> {
        Arc::new(RemoteSessions {
            membership,
            channels: Arc::new(Channels::new(config.timeout)),
            config,
            metrics,
            links: Arc::new(RwLock::new(HashMap::new())),
        })
    }

    /// The delivery service for the session nodes to push to.
    pub fn cm_service(
        &self,
    ) -> cmpb::connection_manager_server::ConnectionManagerServer<CmService> {
        cmpb::connection_manager_server::ConnectionManagerServer::new(CmService {
            membership: self.membership.clone(),
            links: self.links.clone(),
        })
        .max_decoding_message_size(16 << 20)
    }

    /// Clients currently held.
    pub fn connections(&self) -> usize {
        self.links.read().map(|l| l.len()).unwrap_or(0)
    }

    fn caller(&self) -> pb::Caller {
        let me = self.membership.me();
        pb::Caller {
            node: me.node.clone(),
            epoch: me.epoch,
        }
    }

    fn add_link(&self, conn_id: u64, link: Arc<dyn ClientLink>) {
        if let Ok(mut l) = self.links.write() {
            l.insert(conn_id, (None, link));
        }
    }

    fn set_jid(&self, conn_id: u64, jid: &Jid) {
        if let Ok(mut l) = self.links.write()
            && let Some(h) = l.get_mut(&conn_id)
        {
            h.0 = Some(jid.clone());
        }
    }

    fn remove_link(&self, conn_id: u64) {
        if let Ok(mut l) = self.links.write() {
            l.remove(&conn_id);
        }
    }

    async fn call<T, F, Fut>(&self, method: &'static str, user: &Jid, mut f: F) -> Result<T, Status>
    where
        F: FnMut(SessionClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        let bare = user.to_bare();
        call_owner(
            &self.membership,
            &self.channels,
            &self.config,
            &self.metrics,
            ("cm", method),
            bare.as_str(),
            |ch| {
                let fut = f(SessionClient::new(ch).max_decoding_message_size(16 << 20));
                async move { fut.await.map(Response::into_inner) }
            },
        )
        .await
    }
}

/// A request with the configured deadline (sent as `grpc-timeout`).
fn req<T>(msg: T, config: &RpcConfig) -> Request<T> {
    let mut r = Request::new(msg);
    r.set_timeout(config.call_deadline());
    r
}

#[async_trait]
impl SessionService for RemoteSessions {
    async fn bind(&self, r: BindRequest) -> Result<Jid, BindError> {
        self.add_link(r.conn_id, r.link.clone());
        let msg = pb::BindRequest {
            cm: Some(self.caller()),
            user: r.user.to_bare().as_str().to_owned(),
            resource: r.resource.clone().unwrap_or_default(),
            conn_id: r.conn_id,
        };
        let res = self
            .call("Bind", &r.user, |mut c| {
                let m = req(msg.clone(), &self.config);
                async move { c.bind(m).await }
            })
            .await;
        let out = match res {
            Ok(pb::BindResponse {
                result: Some(pb::bind_response::Result::Jid(j)),
            }) => Jid::parse(&j).map_err(|e| BindError::Internal(e.to_string())),
            Ok(pb::BindResponse {
                result: Some(pb::bind_response::Result::Error(e)),
            }) => Err(conv::bind_error(&e)),
            Ok(_) => Err(BindError::Internal("empty bind answer".into())),
            Err(s) => Err(BindError::Internal(s.message().to_owned())),
        };
        match &out {
            Ok(jid) => self.set_jid(r.conn_id, jid),
            Err(_) => self.remove_link(r.conn_id),
        }
        out
    }

    async fn unbind(&self, jid: &Jid, conn_id: u64) {
        self.remove_link(conn_id);
        let msg = pb::UnbindRequest {
            cm: Some(self.caller()),
            jid: jid.as_str().to_owned(),
            conn_id,
        };
        if let Err(s) = self
            .call("Unbind", jid, |mut c| {
                let m = req(msg.clone(), &self.config);
                async move { c.unbind(m).await }
            })
            .await
        {
            warn!(%jid, error = %s, "unbind not acknowledged");
        }
    }

    async fn route(&self, from: &Jid, stanza: Stanza) {
        let msg = pb::RouteRequest {
            cm: Some(self.caller()),
            conn_id: 0,
            stanza: Some(conv::envelope(
                stanza.element(),
                from,
                self.membership.view().shards,
            )),
        };
        let hop = trace::client(names::RPC_ROUTE);
        let r = self
            .call("Route", from, |mut c| {
                let mut m = req(msg.clone(), &self.config);
                trace::inject(&mut m, hop.as_ref());
                async move { c.route(m).await }
            })
            .await;
        trace::outcome(hop.as_ref(), &r);
        drop(hop);
        if let Err(s) = r {
            warn!(%from, error = %s, "stanza not routed");
            // The sender learns it (RFC 6120 §8.3: a wait-type error it
            // may retry), on the connection that sent it.
            let err = rookery_core::StanzaError::resource_constraint()
                .with_text("the session service is unavailable");
            let link = self.links.read().ok().and_then(|l| {
                l.values()
                    .find(|(j, _)| j.as_ref() == Some(from))
                    .map(|(_, link)| link.clone())
            });
            if let (Some(reply), Some(link)) = (stanza.error_reply(&err), link) {
                let _ = link.deliver(Arc::new(reply));
            }
        }
    }

    async fn sm_enable(
        &self,
        jid: &Jid,
        conn_id: u64,
        params: SmParams,
    ) -> Result<Option<String>, SmError> {
        let msg = pb::SmEnableRequest {
            cm: Some(self.caller()),
            jid: jid.as_str().to_owned(),
            conn_id,
            resume: params.resume,
            timeout_secs: u32::try_from(params.timeout.as_secs()).unwrap_or(u32::MAX),
            max_queue: u32::try_from(params.max_queue).unwrap_or(u32::MAX),
        };
        match self
            .call("SmEnable", jid, |mut c| {
                let m = req(msg.clone(), &self.config);
                async move { c.sm_enable(m).await }
            })
            .await
        {
            Ok(pb::SmEnableResponse {
                result: Some(pb::sm_enable_response::Result::Id(id)),
            }) => Ok((!id.is_empty()).then_some(id)),
            Ok(pb::SmEnableResponse {
                result: Some(pb::sm_enable_response::Result::Failure(f)),
            }) => Err(conv::sm_error(&f)),
            _ => Err(SmError::NotFound),
        }
    }

    async fn sm_ack(&self, jid: &Jid, conn_id: u64, h: u32, inbound: u32) -> Result<(), SmError> {
        let msg = pb::SmAckRequest {
            cm: Some(self.caller()),
            jid: jid.as_str().to_owned(),
            conn_id,
            h,
            inbound,
        };
        match self
            .call("SmAck", jid, |mut c| {
                let m = req(msg.clone(), &self.config);
                async move { c.sm_ack(m).await }
            })
            .await
        {
            Ok(pb::SmAckResponse { failure: None }) => Ok(()),
            Ok(pb::SmAckResponse { failure: Some(f) }) => Err(conv::sm_error(&f)),
            Err(_) => Err(SmError::NotFound),
        }
    }

    fn sm_send(&self, jid: &Jid, conn_id: u64, stanza: Element) {
        let msg = pb::SmSendRequest {
            cm: Some(self.caller()),
            jid: jid.as_str().to_owned(),
            conn_id,
            xml: stanza.to_xml_string().into_bytes(),
        };
        let (membership, channels, config, metrics) = (
            self.membership.clone(),
            self.channels.clone(),
            self.config,
            self.metrics.clone(),
        );
        let bare = jid.to_bare();
        tokio::spawn(async move {
            let r = call_owner(
                &membership,
                &channels,
                &config,
                &metrics,
                ("cm", "SmSend"),
                bare.as_str(),
                |ch| {
                    let m = req(msg.clone(), &config);
                    async move { SessionClient::new(ch).sm_send(m).await }
                },
            )
            .await;
            if let Err(s) = r {
                debug!(error = %s, "SM stanza not sent");
            }
        });
    }

    async fn detach(&self, jid: &Jid, conn_id: u64, inbound: u32) {
        self.remove_link(conn_id);
        let msg = pb::DetachRequest {
            cm: Some(self.caller()),
            jid: jid.as_str().to_owned(),
            conn_id,
            inbound,
        };
        if let Err(s) = self
            .call("Detach", jid, |mut c| {
                let m = req(msg.clone(), &self.config);
                async move { c.detach(m).await }
            })
            .await
        {
            warn!(%jid, error = %s, "detach not acknowledged");
        }
    }

    async fn resume(
        &self,
        user: &Jid,
        previd: &str,
        h: u32,
        link: Arc<dyn ClientLink>,
        conn_id: u64,
    ) -> Result<Resumed, SmError> {
        self.add_link(conn_id, link);
        let msg = pb::ResumeRequest {
            cm: Some(self.caller()),
            user: user.to_bare().as_str().to_owned(),
            previd: previd.to_owned(),
            h,
            conn_id,
        };
        let r = match self
            .call("Resume", user, |mut c| {
                let m = req(msg.clone(), &self.config);
                async move { c.resume(m).await }
            })
            .await
        {
            Ok(pb::ResumeResponse {
                result: Some(pb::resume_response::Result::Resumed(r)),
            }) => Jid::parse(&r.jid)
                .map(|jid| Resumed { jid, h: r.h })
                .map_err(|_| SmError::NotFound),
            Ok(pb::ResumeResponse {
                result: Some(pb::resume_response::Result::Failure(f)),
            }) => Err(conv::sm_error(&f)),
            _ => Err(SmError::NotFound),
        };
        match &r {
            Ok(res) => self.set_jid(conn_id, &res.jid),
            Err(_) => self.remove_link(conn_id),
        }
        r
    }
}

/// The cm's delivery service: writes what session nodes push to the
/// clients it holds, in the order each node sent it.
#[derive(Debug)]
pub struct CmService {
    membership: Arc<Membership>,
    links: Arc<Links>,
}

#[async_trait]
impl cmpb::connection_manager_server::ConnectionManager for CmService {
    async fn deliver(
        &self,
        request: Request<cmpb::DeliverRequest>,
    ) -> Result<Response<cmpb::DeliverResponse>, Status> {
        let hop = trace::server(names::RPC_DELIVER, &request);
        let r = request.into_inner();
        if let Some(h) = &hop {
            h.set(KeyValue::new(
                "rookery.deliveries",
                r.deliveries.len() as i64,
            ));
        }
        // A node acting on a stale epoch (restarted or cut off) is refused.
        if !self.membership.view().is_live(&r.node, r.epoch) {
            return Err(Status::failed_precondition(format!(
                "{} (epoch {}) is not a live member",
                r.node, r.epoch
            )));
        }
        let mut gone = Vec::new();
        for d in r.deliveries {
            let link = self
                .links
                .read()
                .map_err(|_| Status::internal("links poisoned"))?
                .get(&d.conn_id)
                .map(|(_, l)| l.clone());
            let Some(link) = link else {
                gone.push(d.conn_id);
                continue;
            };
            match d.what {
                Some(cmpb::delivery::What::Xml(xml)) => {
                    let el = std::str::from_utf8(&xml)
                        .ok()
                        .and_then(|s| Element::parse(s).ok());
                    let Some(el) = el else {
                        warn!(node = %r.node, "malformed stanza from a session node dropped");
                        continue;
                    };
                    // A traced stanza is queued under its own trace: this
                    // call's span if it is of the same trace, else the
                    // span that queued it on the session node.
                    let delivered = {
                        let parent = d.trace.as_ref().map(|t| {
                            let cx = trace::carried(t);
                            match &hop {
                                Some(h)
                                    if telemetry::span_context(&cx).trace_id()
                                        == h.span_context().trace_id() =>
                                {
                                    h.context().clone()
                                }
                                _ => cx,
                            }
                        });
                        let _current = parent.map(telemetry::Context::attach);
                        link.deliver(Arc::new(el))
                    };
                    match delivered {
                        Ok(()) => {}
                        Err(DeliverError::Full) => {
                            link.close(
                                StreamError::new("policy-violation")
                                    .with_text("client is not reading"),
                            );
                            gone.push(d.conn_id);
                        }
                        Err(DeliverError::Closed) => gone.push(d.conn_id),
                    }
                }
                Some(cmpb::delivery::What::Close(c)) => {
                    link.close(conv::stream_error(&c.condition, &c.text));
                }
                None => {}
            }
        }
        Ok(Response::new(cmpb::DeliverResponse { gone }))
    }
}
