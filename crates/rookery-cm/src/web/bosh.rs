//! BOSH (XEP-0124 1.11) carrying XMPP (XEP-0206 1.4).
//!
//! A BOSH session is a c2s stream over a framed transport: the payloads of
//! each request go to the stream in `rid` order, and what the stream writes
//! collects until a held request takes it. One session holds at most one
//! request (`hold='1'`, `requests='2'`), answers a repeated `rid` from the
//! last responses (§14.3), and ends after `inactivity` seconds without a
//! pending request (§10): the stream then ends as a broken TCP connection
//! does (XEP-0198 resumable sessions stay detached, others are unbound).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rookery_core::metrics::Metrics;
use rookery_xml::{Element, Parser, escape_attr, ns};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::debug;

use super::{Listener, Peer, WebConfig};
use crate::framed::{FrameIn, FrameOut, Framed, Kind};

/// XEP-0124 §5: the namespace of `<body/>`.
const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
/// XEP-0206 §3: the namespace of `xmpp:version` and `xmpp:restart`.
const NS_XBOSH: &str = "urn:xmpp:xbosh";
/// XEP-0124 §7.2 `ver`: the version implemented.
const VERSION: &str = "1.11";
/// Simultaneous requests (`requests`, XEP-0124 §7.2: hold + 1).
const REQUESTS: u64 = 2;

/// The BOSH sessions of a listener set.
pub(super) struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    max: usize,
    max_wait: u64,
    inactivity: Duration,
    polling: u64,
    /// `rookery_bosh_requests_held`: requests of every session received
    /// and not answered yet.
    metrics: Arc<Metrics>,
}

impl Sessions {
    pub(super) fn new(config: &WebConfig, metrics: Arc<Metrics>) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            metrics,
            max: config.bosh_max_sessions,
            max_wait: config.bosh_max_wait_secs.max(1),
            inactivity: Duration::from_secs(config.bosh_inactivity_secs.max(1)),
            polling: config.bosh_polling_secs,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    fn get(&self, sid: &str) -> Option<Arc<Session>> {
        self.map.lock().ok()?.get(sid).cloned()
    }

    fn remove(&self, sid: &str) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(sid);
        }
    }
}

/// One BOSH session.
struct Session {
    sid: String,
    /// The stream's input; `None` once the session ended.
    input: tokio::sync::Mutex<Option<mpsc::Sender<FrameIn>>>,
    state: Mutex<SessionState>,
    /// Bumped on every change of `state` that a waiting request may care
    /// about (output, the next rid, a newer request, the end).
    changed: watch::Sender<u64>,
    wait: Duration,
    hold: u64,
}

#[derive(Default)]
struct SessionState {
    /// The rid whose payloads go to the stream next.
    next_rid: u64,
    /// Messages from the stream not yet in a response.
    pending: Vec<String>,
    /// The last responses, by rid (XEP-0124 §14.3).
    responses: VecDeque<(u64, String)>,
    /// Requests received and not answered yet.
    in_flight: u64,
    /// The newest request: an older held one is answered when it changes.
    newest: u64,
    /// When the last request was answered (for `inactivity`).
    idle_since: Option<Instant>,
    /// The stream ended; with the error condition of a stream error.
    ended: Option<Option<&'static str>>,
}

impl Session {
    fn state(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    async fn send(&self, m: FrameIn) -> bool {
        match self.input.lock().await.as_ref() {
            Some(tx) => tx.send(m).await.is_ok(),
            None => false,
        }
    }
}

/// A `<body/>` answer.
fn body_response(text: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        text,
    )
        .into_response()
}

/// XEP-0124 §17.2: a terminal binding condition, with HTTP 200.
fn terminate(condition: &str) -> String {
    format!("<body xmlns='{NS_HTTPBIND}' type='terminate' condition='{condition}'/>")
}

fn wrap(attrs: &str, payloads: &[String]) -> String {
    let mut s = format!(
        "<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' xmlns:stream='{}'{attrs}",
        ns::STREAMS
    );
    if payloads.is_empty() {
        s.push_str("/>");
        return s;
    }
    s.push('>');
    for p in payloads {
        s.push_str(p);
    }
    s.push_str("</body>");
    s
}

/// `GET /http-bind`: a hint for humans.
pub(super) async fn info(State(l): State<Listener>) -> Response {
    l.web
        .cors("XEP-0124 BOSH endpoint: POST a <body/> here.\n".into_response())
}

/// `POST /http-bind`: one BOSH request.
pub(super) async fn request(
    State(l): State<Listener>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    body: axum::body::Bytes,
) -> Response {
    let r = match handle(&l, peer, &body).await {
        Ok(text) => body_response(text),
        Err(condition) => {
            debug!(%peer, condition, "BOSH request refused");
            let status = if condition == "bad-request" {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            let mut r = body_response(terminate(condition));
            *r.status_mut() = status;
            r
        }
    };
    l.web.cors(r)
}

/// The stream header attributes of a session creation or restart
/// (XEP-0206 §3, §5): `to`, `xml:lang`, always version 1.0.
fn open_element(body: &Element) -> Element {
    let mut open = Element::new_static("open", ns::FRAMING).with_attr("version", "1.0");
    if let Some(to) = body.attr("to") {
        open.set_attr("to", to);
    }
    if let Some(lang) = body.attr_ns("lang", ns::XML) {
        open.set_attr_ns("lang", ns::XML, lang);
    }
    open
}

/// A payload as the stream reads it: XEP-0206 §5 shows stanzas qualified
/// by `jabber:client`; one that inherited the `<body/>`
/// namespace is read as `jabber:client` too.
fn payload(mut el: Element) -> Element {
    fn fix(el: &mut Element) {
        if el.ns() == NS_HTTPBIND {
            el.set_ns(ns::CLIENT);
        }
        for n in el.nodes_mut() {
            if let rookery_xml::Node::Element(c) = n {
                fix(c);
            }
        }
    }
    fix(&mut el);
    el
}

async fn handle(l: &Listener, peer: SocketAddr, bytes: &[u8]) -> Result<String, &'static str> {
    let limits = l.web.c2s.config.limits();
    let body = Parser::parse_fragment(bytes, limits).map_err(|_| "bad-request")?;
    if !body.is("body", NS_HTTPBIND) {
        return Err("bad-request");
    }
    let rid: u64 = body
        .attr("rid")
        .and_then(|r| r.parse().ok())
        .ok_or("bad-request")?;
    let sessions = &l.web.bosh;
    let Some(sid) = body.attr("sid") else {
        return create(l, peer, &body, rid).await;
    };
    // XEP-0124 §17.2: an unknown sid.
    let session = sessions.get(sid).ok_or("item-not-found")?;
    let r = exchange(&session, &body, rid, sessions).await;
    if let Err(c) = r
        && c != "bad-request"
    {
        end(&session, sessions).await;
    }
    r
}

/// Ends a session: its stream sees the transport go.
async fn end(session: &Session, sessions: &Sessions) {
    session.input.lock().await.take();
    sessions.remove(&session.sid);
}

/// XEP-0124 §7.1–§7.2, XEP-0206 §3–§4: a new session.
async fn create(
    l: &Listener,
    peer: SocketAddr,
    body: &Element,
    rid: u64,
) -> Result<String, &'static str> {
    let web = &l.web;
    let sessions = &web.bosh;
    let c2s = &web.c2s;
    if let Some(to) = body.attr("to")
        && !rookery_jid::prep_domainpart(to).is_ok_and(|d| d == c2s.domain)
    {
        return Err("host-unknown");
    }
    if sessions.len() >= sessions.max {
        return Err("remote-connection-failed");
    }
    let Some(permit) = web.admit() else {
        return Err("remote-connection-failed");
    };
    // wait: at most ours (§7.2); hold: at most one (0 asks for polling).
    let wait = body
        .attr("wait")
        .and_then(|w| w.parse::<u64>().ok())
        .unwrap_or(sessions.max_wait)
        .min(sessions.max_wait);
    let hold = body
        .attr("hold")
        .and_then(|h| h.parse::<u64>().ok())
        .unwrap_or(1)
        .min(1);
    let sid = format!("{}{}", rookery_core::new_id(), rookery_core::new_id());
    let (in_tx, in_rx) = mpsc::channel(64);
    let (out_tx, out_rx) = mpsc::channel(256);
    let framed = Framed::new(in_rx, out_tx, l.secure, Kind::Bosh, c2s.config.limits());
    let session = Arc::new(Session {
        sid: sid.clone(),
        input: tokio::sync::Mutex::new(Some(in_tx)),
        // The creation request opens the stream right below.
        state: Mutex::new(SessionState {
            next_rid: rid + 1,
            newest: rid,
            idle_since: Some(Instant::now()),
            ..Default::default()
        }),
        changed: watch::Sender::new(0),
        wait: Duration::from_secs(wait),
        hold,
    });
    if let Ok(mut m) = sessions.map.lock() {
        m.insert(sid.clone(), session.clone());
    }
    debug!(%peer, sid = %sid, "BOSH session created");
    let conn = crate::conn::run_framed(c2s.clone(), framed, peer);
    tokio::spawn(async move {
        conn.await;
        drop(permit);
    });
    tokio::spawn(collect(
        session.clone(),
        out_rx,
        web.clone(),
        sessions.inactivity,
    ));
    // The stream starts with the creation request's attributes.
    session.send(FrameIn::Open(open_element(body))).await;
    let mut attrs = String::new();
    let mut esc = Vec::new();
    escape_attr(&mut esc, &c2s.domain);
    attrs.push_str(&format!(
        " sid='{sid}' wait='{wait}' hold='{hold}' requests='{REQUESTS}' inactivity='{}' polling='{}' ver='{VERSION}' from='{}' xmpp:version='1.0' xmpp:restartlogic='true'",
        sessions.inactivity.as_secs(),
        sessions.polling,
        String::from_utf8_lossy(&esc),
    ));
    // The creation request is the first of the session: its response
    // carries the stream features (XEP-0206 §4).
    respond(&session, rid, attrs, Instant::now() + session.wait).await
}

/// XEP-0124 §8, §11, §13, §14: a request of an existing session.
async fn exchange(
    session: &Arc<Session>,
    body: &Element,
    rid: u64,
    sessions: &Sessions,
) -> Result<String, &'static str> {
    let terminating = body.attr("type") == Some("terminate");
    let mut changed = session.changed.subscribe();
    let deadline = Instant::now() + session.wait;
    {
        let mut st = session.state();
        if rid < st.next_rid {
            // §14.3: a repeated request gets the same response again.
            return st
                .responses
                .iter()
                .find(|(r, _)| *r == rid)
                .map(|(_, text)| text.clone())
                .ok_or("item-not-found");
        }
        // §14.2: beyond the window.
        if rid >= st.next_rid + REQUESTS {
            return Err("item-not-found");
        }
        // §11: more simultaneous requests than allowed (one more is
        // allowed to terminate).
        st.in_flight += 1;
        if st.in_flight > REQUESTS + u64::from(terminating) {
            st.in_flight -= 1;
            return Err("policy-violation");
        }
        st.idle_since = None;
    }
    let _in_flight = InFlight::new(session, &sessions.metrics);
    async {
        // §14.2: payloads go in rid order.
        loop {
            changed.borrow_and_update();
            let (next, ended) = {
                let st = session.state();
                (st.next_rid, st.ended.is_some())
            };
            if ended {
                return Ok(wrap(" type='terminate'", &[]));
            }
            if next == rid {
                break;
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return Err("item-not-found") },
                _ = tokio::time::sleep_until(deadline) => return Err("item-not-found"),
            }
        }
        session.send(FrameIn::Alive).await;
        let restart = body.attr_ns("restart", NS_XBOSH) == Some("true");
        if restart {
            // XEP-0206 §5: a new stream; payloads are ignored.
            session.send(FrameIn::Open(open_element(body))).await;
        } else {
            for child in body.children() {
                session.send(FrameIn::Element(payload(child.clone()))).await;
            }
        }
        if terminating {
            // §13: the client ends the session (its payloads went first).
            session.send(FrameIn::Close).await;
        }
        {
            let mut st = session.state();
            st.next_rid = rid + 1;
            st.newest = rid;
        }
        session.bump();
        if terminating {
            let pending = std::mem::take(&mut session.state().pending);
            end(session, sessions).await;
            return Ok(wrap(" type='terminate'", &pending));
        }
        respond(session, rid, String::new(), deadline).await
    }
    .await
}

/// A request counted in `in_flight` (and `rookery_bosh_requests_held`)
/// until it is answered, or dropped: axum drops the handler when the client
/// goes away, and the session must not go on counting that request.
struct InFlight<'a> {
    session: &'a Session,
    metrics: &'a Metrics,
}

impl<'a> InFlight<'a> {
    /// The caller has already counted it in `in_flight`.
    fn new(session: &'a Session, metrics: &'a Metrics) -> InFlight<'a> {
        metrics.bosh_requests_held.inc();
        InFlight { session, metrics }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.metrics.bosh_requests_held.dec();
        let mut st = self.session.state();
        st.in_flight = st.in_flight.saturating_sub(1);
        if st.in_flight == 0 {
            st.idle_since = Some(Instant::now());
        }
    }
}

/// Holds request `rid` until the stream wrote something, a newer request
/// came (hold is 1), the stream ended, or `deadline`; answers it and keeps
/// the answer for a repeated request.
async fn respond(
    session: &Arc<Session>,
    rid: u64,
    attrs: String,
    deadline: Instant,
) -> Result<String, &'static str> {
    let mut changed = session.changed.subscribe();
    let text = loop {
        changed.borrow_and_update();
        {
            let mut st = session.state();
            let superseded = st.newest > rid;
            if let Some(error) = st.ended {
                let pending = std::mem::take(&mut st.pending);
                let attrs = match error {
                    // XEP-0124 §17.2 `remote-stream-error`: the stream
                    // error is in the payload.
                    Some(_) => format!("{attrs} type='terminate' condition='remote-stream-error'"),
                    None => format!("{attrs} type='terminate'"),
                };
                break wrap(&attrs, &pending);
            }
            if !st.pending.is_empty() || superseded || session.hold == 0 {
                let pending = std::mem::take(&mut st.pending);
                break wrap(&attrs, &pending);
            }
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { break wrap(&attrs, &[]) },
            _ = tokio::time::sleep_until(deadline) => break wrap(&attrs, &[]),
        }
    };
    let mut st = session.state();
    st.responses.push_back((rid, text.clone()));
    while st.responses.len() as u64 > REQUESTS {
        st.responses.pop_front();
    }
    Ok(text)
}

/// Collects what the stream writes, and ends the session once the client
/// stayed away for `inactivity` (XEP-0124 §10).
async fn collect(
    session: Arc<Session>,
    mut out: mpsc::Receiver<FrameOut>,
    web: Arc<super::Web>,
    inactivity: Duration,
) {
    let mut gone = false;
    loop {
        let idle_since = session.state().idle_since;
        let timeout = async {
            match (gone, idle_since) {
                // Only the end of the stream is left to wait for.
                (true, _) => std::future::pending().await,
                (false, Some(t)) => tokio::time::sleep_until(t + inactivity).await,
                // Re-checked once requests are done.
                (false, None) => tokio::time::sleep(inactivity).await,
            }
        };
        let m = tokio::select! {
            m = out.recv() => m,
            _ = timeout => {
                let idle = session.state().idle_since;
                if idle.is_some_and(|t| t.elapsed() >= inactivity) {
                    debug!(sid = %session.sid, "BOSH session inactive; ending it");
                    // The stream sees its transport go (as a broken TCP
                    // connection): unbound, or detached if resumable.
                    session.input.lock().await.take();
                    gone = true;
                }
                continue;
            }
        };
        let Some(FrameOut::Text(text)) = m else {
            if m.is_none() {
                break;
            }
            continue;
        };
        // The stream's own framing has no place in BOSH: the session
        // creation response and restarts stand for <open/>; <close/> is the
        // end, which follows.
        if text.starts_with("<open ") || text.starts_with("<close ") {
            continue;
        }
        {
            let mut st = session.state();
            // The stream is over: the response carrying the error ends
            // the session too (XEP-0124 §17.2 `remote-stream-error`).
            if text.starts_with("<stream:error") {
                st.ended = Some(Some("remote-stream-error"));
            }
            st.pending.push(text);
        }
        session.bump();
    }
    {
        let mut st = session.state();
        if st.ended.is_none() {
            st.ended = Some(None);
        }
    }
    session.bump();
    web.bosh.remove(&session.sid);
    session.input.lock().await.take();
}
