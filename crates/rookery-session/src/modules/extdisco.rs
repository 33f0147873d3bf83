//! XEP-0215: External Service Discovery (1.0.0): the STUN/TURN (or other)
//! services of `[[modules.external_services]]`, with short-term TURN
//! credentials made from a shared secret.
//!
//! Credentials follow "A REST API for Access to TURN Services"
//! (draft-uberti-behave-turn-rest §2.2), which coturn implements with
//! `use-auth-secret` / `static-auth-secret`: the username is
//! `<expiry unix time>:<user's bare JID>`, the password
//! `base64(HMAC-SHA1(secret, username))`. XEP-0215 §3.3 refers to it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use rookery_core::{Jid, Stanza, StanzaError};
use rookery_xml::Element;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{IqContext, IqResult, Module, Spec, Target};

/// XEP-0215 §9 namespace.
pub const NS: &str = "urn:xmpp:extdisco:2";

/// One `[[modules.external_services]]` entry (XEP-0215 §3.1 attributes).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExternalService {
    /// `type`: `stun`, `turn`, `turns`, `ftp`, … (XEP-0215 §7 registry).
    #[serde(rename = "type")]
    pub kind: String,
    /// `host`: a domain name or IP address.
    pub host: String,
    /// `port` (0: not given).
    pub port: u16,
    /// `transport`: `udp` or `tcp` (empty: not given).
    pub transport: String,
    /// `name`: a friendly name (empty: not given).
    pub name: String,
    /// The TURN REST shared secret (coturn's `static-auth-secret`): each
    /// request gets fresh credentials valid for `credentials_ttl_secs`.
    pub secret: String,
    /// Static credentials, when there is no secret.
    pub username: String,
    /// See `username`.
    pub password: String,
    /// Lifetime of credentials made from `secret`, in seconds.
    pub credentials_ttl_secs: u64,
}

impl Default for ExternalService {
    fn default() -> Self {
        ExternalService {
            kind: String::new(),
            host: String::new(),
            port: 0,
            transport: String::new(),
            name: String::new(),
            secret: String::new(),
            username: String::new(),
            password: String::new(),
            credentials_ttl_secs: 86_400,
        }
    }
}

impl ExternalService {
    /// The `<service/>` element; `user` gets credentials if the service has any.
    fn element(&self, user: &Jid, now: SystemTime, with_credentials: bool) -> Element {
        let mut e = Element::new_static("service", NS)
            .with_attr("type", self.kind.as_str())
            .with_attr("host", self.host.as_str());
        if self.port != 0 {
            e.set_attr("port", self.port.to_string());
        }
        if !self.transport.is_empty() {
            e.set_attr("transport", self.transport.as_str());
        }
        if !self.name.is_empty() {
            e.set_attr("name", self.name.as_str());
        }
        if with_credentials && let Some((u, p, expires)) = self.credentials(user, now) {
            e.set_attr("username", u);
            e.set_attr("password", p);
            if let Some(expires) = expires {
                e.set_attr("expires", expires);
            }
        }
        e
    }

    /// Username, password and expiry (XEP-0082 date-time) for `user`.
    fn credentials(&self, user: &Jid, now: SystemTime) -> Option<(String, String, Option<String>)> {
        if !self.secret.is_empty() {
            let ttl = Duration::from_secs(self.credentials_ttl_secs.max(1));
            let expiry = now.checked_add(ttl)?.duration_since(UNIX_EPOCH).ok()?;
            let username = format!("{}:{}", expiry.as_secs(), user.to_bare());
            let password = turn_rest_password(&self.secret, &username);
            let expires = i64::try_from(expiry.as_secs())
                .ok()
                .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
                .and_then(|t| t.format(&Rfc3339).ok());
            return Some((username, password, expires));
        }
        if !self.username.is_empty() || !self.password.is_empty() {
            return Some((self.username.clone(), self.password.clone(), None));
        }
        None
    }
}

/// draft-uberti-behave-turn-rest §2.2: `base64(HMAC-SHA1(secret, username))`.
pub fn turn_rest_password(secret: &str, username: &str) -> String {
    // HMAC takes a key of any length.
    #[allow(clippy::expect_used)]
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[derive(Debug)]
pub(crate) struct ExtDisco {
    pub(crate) services: Vec<ExternalService>,
}

#[async_trait::async_trait]
impl Module for ExtDisco {
    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            id: "XEP-0215",
            version: "1.0.0",
            name: "External Service Discovery",
        }]
    }
    fn features(&self) -> &'static [&'static str] {
        &[NS]
    }
    async fn handle_iq(
        &self,
        ctx: &IqContext<'_>,
        stanza: &Stanza,
        p: &Element,
    ) -> Option<IqResult> {
        let services = p.is("services", NS);
        if !services && !p.is("credentials", NS) {
            return None;
        }
        if stanza.stanza_type() != Some("get") {
            return Some(Err(StanzaError::bad_request("external services are a get")));
        }
        // §3: asked of the user's server, by its own users only (§6:
        // credentials are not handed to anyone else).
        if matches!(ctx.target(stanza), Target::Other(_)) {
            return Some(Err(StanzaError::service_unavailable()));
        }
        let now = SystemTime::now();
        let user = ctx.from;
        if services {
            // §3.1 all services, §3.2 those of one type.
            let kind = p.attr("type");
            let mut out = Element::new_static("services", NS);
            if let Some(k) = kind {
                out.set_attr("type", k);
            }
            for s in self
                .services
                .iter()
                .filter(|s| kind.is_none_or(|k| k == s.kind))
            {
                out.push_child(s.element(user, now, true));
            }
            return Some(Ok(Some(out)));
        }
        // §3.3: credentials for one service, named by host and type (and port).
        let Some(want) = p.child("service", NS) else {
            return Some(Err(StanzaError::bad_request("no service named")));
        };
        let (Some(host), Some(kind)) = (want.attr("host"), want.attr("type")) else {
            return Some(Err(StanzaError::bad_request(
                "a service needs host and type",
            )));
        };
        let port = want.attr("port").and_then(|p| p.parse::<u16>().ok());
        let mut out = Element::new_static("credentials", NS);
        for s in self
            .services
            .iter()
            .filter(|s| s.host == host && s.kind == kind && port.is_none_or(|p| p == s.port))
        {
            if s.credentials(user, now).is_some() {
                out.push_child(s.element(user, now, true));
            }
        }
        if out.children().next().is_none() {
            return Some(Err(StanzaError::item_not_found()));
        }
        Some(Ok(Some(out)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The TURN REST password against an independent computation:
    /// `base64.b64encode(hmac.new(b'logen', b'1433895918506:my_username',
    /// hashlib.sha1).digest())` in Python.
    #[test]
    fn turn_rest_password_matches_an_independent_hmac() {
        assert_eq!(
            turn_rest_password("logen", "1433895918506:my_username"),
            "gxZk9RlbbbDLn7TIwayIqmzYgW8="
        );
    }

    #[test]
    fn credentials_expire_after_the_ttl() {
        let s = ExternalService {
            kind: "turn".into(),
            host: "turn.example.org".into(),
            secret: "s3cret".into(),
            credentials_ttl_secs: 3600,
            ..Default::default()
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let user = Jid::parse("alice@example.org/phone").unwrap();
        let (u, p, expires) = s.credentials(&user, now).unwrap();
        assert_eq!(u, "1700003600:alice@example.org");
        assert_eq!(p, turn_rest_password("s3cret", &u));
        assert_eq!(expires.as_deref(), Some("2023-11-14T23:13:20Z"));
    }
}
