//! Inbound server-to-server streams (RFC 6120 §9.1 as the receiving
//! entity): STARTTLS, SASL EXTERNAL for a peer whose certificate is valid
//! for its domain, Server Dialback (XEP-0220 §2.2), then the peer's stanzas.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rookery_core::metrics::DirectionLabel;
use rookery_core::{Jid, Stanza, new_id};
use rookery_xml::{Element, StreamEvent, ns};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{debug, info};

use crate::stream::{Fail, Socket, XmlStream, stream_err};
use crate::{S2s, dialback, outbound};

struct Inbound {
    s2s: Arc<S2s>,
    peer: SocketAddr,
    st: XmlStream,
    /// Our domain the stream is for (the header's `to`).
    local: String,
    /// The header's `from`, if sent.
    from: Option<String>,
    /// The id of the current stream (keys are bound to it).
    stream_id: String,
    /// Remote domains authenticated on this stream (SASL or dialback).
    authenticated: HashSet<String>,
    sasl_done: bool,
    /// The domain whose per-domain stream count this stream holds.
    counted: Option<String>,
    /// Counted in the open-streams gauge.
    gauged: bool,
}

/// Serves one accepted connection to its end.
pub(crate) async fn run(s2s: Arc<S2s>, tcp: TcpStream, peer: SocketAddr, direct_tls: bool) {
    let neg = Duration::from_secs(s2s.config.negotiation_timeout_secs);
    let socket = if direct_tls {
        match timeout(neg, s2s.tls.acceptor.accept(tcp)).await {
            Ok(Ok(t)) => Socket::Tls(Box::new(tokio_rustls::TlsStream::Server(t))),
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "s2s TLS handshake failed");
                return;
            }
            Err(_) => return,
        }
    } else {
        Socket::Plain(tcp)
    };
    let st = XmlStream::new(
        socket,
        s2s.config.limits(),
        Duration::from_secs(s2s.config.write_timeout_secs),
    );
    let mut conn = Inbound {
        s2s,
        peer,
        st,
        local: String::new(),
        from: None,
        stream_id: String::new(),
        authenticated: HashSet::new(),
        sasl_done: false,
        counted: None,
        gauged: false,
    };
    let end = conn.drive(Instant::now() + neg).await;
    let error = match end {
        Fail::Stream(e) => {
            debug!(peer = %conn.peer, condition = e.condition, text = ?e.text, "s2s stream error");
            conn.s2s.metrics.stream_error(e.condition);
            Some(e)
        }
        other => {
            debug!(peer = %conn.peer, end = %other, "inbound s2s stream ended");
            None
        }
    };
    let local = if conn.local.is_empty() {
        conn.s2s.domains.first().cloned().unwrap_or_default()
    } else {
        conn.local.clone()
    };
    conn.st.close(error.as_ref(), &local).await;
    if conn.gauged {
        conn.s2s
            .metrics
            .s2s_streams
            .get_or_create(&DirectionLabel { direction: "in" })
            .dec();
    }
    if let Some(d) = conn.counted.take()
        && let Ok(mut m) = conn.s2s.inbound_per_domain.lock()
        && let Some(n) = m.get_mut(&d)
    {
        *n -= 1;
        if *n == 0 {
            m.remove(&d);
        }
    }
}

impl Inbound {
    fn cert_valid_for(&self, domain: &str) -> bool {
        let certs = self
            .st
            .socket
            .as_ref()
            .map(Socket::peer_certificates)
            .unwrap_or_default();
        if certs.is_empty() {
            return false;
        }
        match self.s2s.trust.verify(&certs, domain) {
            Ok(()) => true,
            Err(e) => {
                debug!(peer = %self.peer, %domain, error = %e, "peer certificate not valid");
                false
            }
        }
    }

    /// RFC 6120 §4.3.2: the features for the current state.
    fn features(&self) -> Element {
        let mut f = Element::new_static("features", ns::STREAMS);
        if self.sasl_done {
            return f;
        }
        if !self.st.is_tls() {
            let mut tls = Element::new_static("starttls", ns::TLS);
            if self.s2s.config.require_tls {
                tls.push_child(Element::new_static("required", ns::TLS));
                f.push_child(tls);
                return f;
            }
            f.push_child(tls);
        }
        if self.st.is_tls()
            && let Some(from) = &self.from
            && self.cert_valid_for(from)
        {
            // RFC 6120 §6.4 with XEP-0178: the certificate names the peer.
            f.push_child(
                Element::new_static("mechanisms", ns::SASL)
                    .with_child(Element::new_static("mechanism", ns::SASL).with_text("EXTERNAL")),
            );
        }
        if !self.s2s.config.require_valid_certificates {
            // XEP-0220 §2.4.2.
            f.push_child(
                Element::new_static("dialback", ns::DIALBACK_FEATURE)
                    .with_child(Element::new_static("errors", ns::DIALBACK_FEATURE)),
            );
        }
        f
    }

    async fn drive(&mut self, negotiation_deadline: Instant) -> Fail {
        match self.streams(negotiation_deadline).await {
            Ok(()) => Fail::Closed,
            Err(f) => f,
        }
    }

    async fn streams(&mut self, negotiation_deadline: Instant) -> Result<(), Fail> {
        'restart: loop {
            let header = timeout_at(negotiation_deadline, self.st.read_header())
                .await
                .map_err(|_| stream_err("connection-timeout", "negotiation took too long"))??;
            let to = header
                .attr("to")
                .and_then(|t| rookery_jid::prep_domainpart(t).ok())
                .map(|t| t.into_owned());
            let from = header
                .attr("from")
                .and_then(|f| rookery_jid::prep_domainpart(f).ok())
                .map(|f| f.into_owned());
            match &to {
                Some(t) if self.s2s.is_local(t) => self.local = t.clone(),
                _ => {
                    // §4.9.3.6.
                    return Err(stream_err(
                        "host-unknown",
                        "this server does not serve that domain",
                    ));
                }
            }
            self.stream_id = new_id();
            let id = self.stream_id.clone();
            self.st
                .write_header(&self.local.clone(), from.as_deref(), Some(&id));
            if self.counted.is_none()
                && let Some(f) = &from
            {
                let max = self.s2s.config.max_inbound_per_domain;
                let over = match self.s2s.inbound_per_domain.lock() {
                    Ok(mut m) => {
                        let n = m.entry(f.clone()).or_insert(0);
                        if *n >= max {
                            true
                        } else {
                            *n += 1;
                            false
                        }
                    }
                    Err(_) => true,
                };
                if over {
                    return Err(stream_err(
                        "policy-violation",
                        "too many streams from your domain",
                    ));
                }
                self.counted = Some(f.clone());
            }
            self.from = from;
            let features = self.features();
            self.st.send(&features).await?;
            loop {
                let el = if self.authenticated.is_empty() {
                    timeout_at(negotiation_deadline, self.st.next_event())
                        .await
                        .map_err(|_| {
                            stream_err("connection-timeout", "negotiation took too long")
                        })??
                } else {
                    let idle = Duration::from_secs(self.s2s.config.idle_timeout_secs);
                    match timeout(idle, self.st.next_event()).await {
                        Ok(r) => r?,
                        // Idle: close quietly (RFC 6120 §4.4).
                        Err(_) => return Ok(()),
                    }
                };
                let el = match el {
                    StreamEvent::Stanza(el) => el,
                    StreamEvent::Close => return Ok(()),
                    StreamEvent::Open(_) => {
                        return Err(stream_err("not-well-formed", "unexpected stream header"));
                    }
                };
                if el.is("starttls", ns::TLS) {
                    self.starttls().await?;
                    continue 'restart;
                }
                if !self.st.is_tls() && self.s2s.config.require_tls {
                    return Err(stream_err("policy-violation", "STARTTLS is required"));
                }
                if el.is("auth", ns::SASL) {
                    if self.sasl_external(&el).await? {
                        self.st.parser.reset(true);
                        self.st.header_sent = false;
                        continue 'restart;
                    }
                    continue;
                }
                if el.is("result", ns::DIALBACK) {
                    self.db_result(&el).await?;
                    continue;
                }
                if el.is("verify", ns::DIALBACK) {
                    self.db_verify(&el).await?;
                    continue;
                }
                self.stanza(el).await?;
            }
        }
    }

    /// RFC 6120 §5.4.2–§5.4.3.
    async fn starttls(&mut self) -> Result<(), Fail> {
        if self.st.is_tls() {
            return Err(stream_err("policy-violation", "TLS is already established"));
        }
        self.st
            .send(&Element::new_static("proceed", ns::TLS))
            .await?;
        let Some(Socket::Plain(tcp)) = self.st.socket.take() else {
            return Err(Fail::Gone);
        };
        match self.s2s.tls.acceptor.accept(tcp).await {
            Ok(tls) => {
                self.st.socket = Some(Socket::Tls(Box::new(tokio_rustls::TlsStream::Server(tls))));
                self.st.parser.reset(false);
                self.st.header_sent = false;
                Ok(())
            }
            Err(e) => Err(Fail::Other(format!("STARTTLS handshake failed: {e}"))),
        }
    }

    /// RFC 6120 §6.4 with SASL EXTERNAL (XEP-0178 §4): the peer's
    /// certificate must be valid for the stream's `from`; an authzid, if
    /// given, must be that domain.
    async fn sasl_external(&mut self, auth: &Element) -> Result<bool, Fail> {
        let failure = |cond: &'static str| {
            Element::new_static("failure", ns::SASL).with_child(Element::new_static(cond, ns::SASL))
        };
        if self.sasl_done {
            return Err(stream_err("policy-violation", "already authenticated"));
        }
        if auth.attr("mechanism") != Some("EXTERNAL") {
            self.st.send(&failure("invalid-mechanism")).await?;
            return Ok(false);
        }
        let Some(from) = self.from.clone() else {
            self.st.send(&failure("not-authorized")).await?;
            return Ok(false);
        };
        let text = auth.text();
        let text = text.trim();
        let authzid = if text.is_empty() || text == "=" {
            None
        } else {
            match B64
                .decode(text)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
            {
                Some(a) => Some(a),
                None => {
                    self.st.send(&failure("incorrect-encoding")).await?;
                    return Ok(false);
                }
            }
        };
        if authzid.as_deref().is_some_and(|a| a != from) {
            self.st.send(&failure("invalid-authzid")).await?;
            return Ok(false);
        }
        if !self.cert_valid_for(&from) {
            self.st.send(&failure("not-authorized")).await?;
            return Ok(false);
        }
        self.st
            .send(&Element::new_static("success", ns::SASL))
            .await?;
        info!(peer = %self.peer, domain = %from, "inbound s2s stream authenticated (SASL EXTERNAL)");
        self.sasl_done = true;
        self.authenticate(from);
        Ok(true)
    }

    fn authenticate(&mut self, domain: String) {
        self.authenticated.insert(domain);
        if !self.gauged {
            self.gauged = true;
            self.s2s
                .metrics
                .s2s_streams
                .get_or_create(&DirectionLabel { direction: "in" })
                .inc();
        }
    }

    /// XEP-0220 §2.2.1: a dialback key from the initiating server, checked
    /// with the authoritative server of the sender domain.
    async fn db_result(&mut self, el: &Element) -> Result<(), Fail> {
        if self.s2s.config.require_valid_certificates {
            return Err(stream_err(
                "not-authorized",
                "dialback is not accepted here",
            ));
        }
        if el.attr("type").is_some() {
            // A result for a stream of ours goes on that stream, not here.
            return Ok(());
        }
        let (Some(from), Some(to)) = (el.attr("from"), el.attr("to")) else {
            return Err(stream_err(
                "improper-addressing",
                "db:result needs from and to",
            ));
        };
        let (Ok(from), Ok(to)) = (
            rookery_jid::prep_domainpart(from),
            rookery_jid::prep_domainpart(to),
        ) else {
            return Err(stream_err("improper-addressing", "db:result addresses"));
        };
        if !self.s2s.is_local(&to) {
            // XEP-0220 §2.2.1, Example 10: not a stream error.
            dialback::write(
                &mut self.st.out,
                "result",
                &to,
                &from,
                None,
                Some("error"),
                None,
            );
            return self.st.flush().await;
        }
        let key = el.text();
        let valid =
            match outbound::verify_key(&self.s2s, &to, &from, &self.stream_id, key.trim()).await {
                Ok(v) => v,
                Err(e) => {
                    info!(%from, failure = ?e, "dialback verification failed");
                    false
                }
            };
        let typ = if valid { "valid" } else { "invalid" };
        dialback::write(
            &mut self.st.out,
            "result",
            &to,
            &from,
            None,
            Some(typ),
            None,
        );
        self.st.flush().await?;
        if valid {
            info!(peer = %self.peer, domain = %from, "inbound s2s stream authenticated (dialback)");
            self.authenticate(from.into_owned());
            Ok(())
        } else if self.authenticated.is_empty() {
            // XEP-0220 §2.2.1: invalid on a first attempt closes the stream.
            Err(stream_err("not-authorized", "dialback key not valid"))
        } else {
            Ok(())
        }
    }

    /// XEP-0220 §2.2.2: is this the key we sent on the stream `id`?
    async fn db_verify(&mut self, el: &Element) -> Result<(), Fail> {
        let (Some(from), Some(to), Some(id)) = (el.attr("from"), el.attr("to"), el.attr("id"))
        else {
            return Err(stream_err(
                "improper-addressing",
                "db:verify needs from, to and id",
            ));
        };
        let (from, to, id) = (from.to_owned(), to.to_owned(), id.to_owned());
        if !self.s2s.is_local(&to) {
            dialback::write(
                &mut self.st.out,
                "verify",
                &to,
                &from,
                Some(&id),
                Some("error"),
                None,
            );
            return self.st.flush().await;
        }
        let expected = dialback::key(&self.s2s.secret, &from, &to, &id);
        let typ = if dialback::key_matches(&expected, &el.text()) {
            "valid"
        } else {
            "invalid"
        };
        dialback::write(
            &mut self.st.out,
            "verify",
            &to,
            &from,
            Some(&id),
            Some(typ),
            None,
        );
        self.st.flush().await
    }

    /// A stanza from the peer: its `from` must be an authenticated domain
    /// (RFC 6120 §4.9.3.9 `invalid-from`), its `to` one we serve
    /// (§4.9.3.6 `host-unknown`).
    async fn stanza(&mut self, mut el: Element) -> Result<(), Fail> {
        if rookery_core::StanzaKind::of(&el).is_none() || el.ns() != ns::SERVER {
            return Err(stream_err("unsupported-stanza-type", "not a stanza"));
        }
        if self.authenticated.is_empty() {
            return Err(stream_err("not-authorized", "authenticate first"));
        }
        let from = el.attr("from").and_then(|f| Jid::parse(f).ok());
        let to = el.attr("to").and_then(|t| Jid::parse(t).ok());
        let (Some(from), Some(to)) = (from, to) else {
            return Err(stream_err(
                "improper-addressing",
                "stanzas need valid from and to",
            ));
        };
        if !self.authenticated.contains(from.domain()) {
            return Err(stream_err(
                "invalid-from",
                "that domain is not authenticated here",
            ));
        }
        if !self.s2s.router.serves(to.domain()) {
            return Err(stream_err(
                "host-unknown",
                "this server does not serve that domain",
            ));
        }
        el.map_ns(ns::SERVER, ns::CLIENT);
        match Stanza::parse(el) {
            Ok(st) => {
                self.s2s
                    .metrics
                    .s2s_stanzas
                    .get_or_create(&DirectionLabel { direction: "in" })
                    .inc();
                self.s2s.router.route_inbound(st).await;
            }
            Err((_, e)) => debug!(peer = %self.peer, error = %e, "malformed stanza dropped"),
        }
        Ok(())
    }
}
