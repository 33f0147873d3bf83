//! XEP-0077 §3.1.1: registering a new account with the server before
//! authenticating, when `[registration] enabled = true`. Rate-limited per
//! source address; one account per stream.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use rookery_core::users::StoreError;
use rookery_core::{Jid, StanzaError};
use rookery_sasl::StoredCredentials;
use rookery_xml::{Element, ns};
use tracing::info;

use crate::C2s;

fn reply(iq: &Element, r: Result<Option<Element>, StanzaError>) -> Element {
    let id = iq.attr("id").unwrap_or_default();
    match r {
        Ok(payload) => {
            let mut e = Element::new_static("iq", ns::CLIENT)
                .with_attr("type", "result")
                .with_attr("id", id);
            if let Some(p) = payload {
                e.push_child(p);
            }
            e
        }
        Err(err) => {
            let mut e = Element::new_static("iq", ns::CLIENT)
                .with_attr("type", "error")
                .with_attr("id", id);
            if let Some(q) = iq.child("query", ns::REGISTER) {
                e.push_child(q.clone());
            }
            e.push_child(err.to_element());
            e
        }
    }
}

/// Answers one registration iq.
pub(crate) async fn handle(c2s: &C2s, ip: IpAddr, iq: &Element, registered: &mut bool) -> Element {
    reply(iq, answer(c2s, ip, iq, registered).await)
}

async fn answer(
    c2s: &C2s,
    ip: IpAddr,
    iq: &Element,
    registered: &mut bool,
) -> Result<Option<Element>, StanzaError> {
    if !c2s.registration.enabled {
        // §3.1: a host without in-band registration.
        return Err(StanzaError::service_unavailable());
    }
    let Some(q) = iq.child("query", ns::REGISTER) else {
        return Err(StanzaError::bad_request("no query"));
    };
    match iq.attr("type") {
        Some("get") => {
            return Ok(Some(
                Element::new_static("query", ns::REGISTER)
                    .with_child(
                        Element::new_static("instructions", ns::REGISTER)
                            .with_text("Choose a username and password for use with this service."),
                    )
                    .with_child(Element::new_static("username", ns::REGISTER))
                    .with_child(Element::new_static("password", ns::REGISTER)),
            ));
        }
        Some("set") => {}
        _ => return Err(StanzaError::bad_request("registration is a get or a set")),
    }
    if q.child("remove", ns::REGISTER).is_some() {
        // §3.2 needs an authenticated account.
        return Err(StanzaError::not_authorized());
    }
    if *registered {
        // §3.1.1: one identity per stream before authenticating.
        return Err(
            StanzaError::not_acceptable().with_text("authenticate with the new account first")
        );
    }
    let username = q
        .child("username", ns::REGISTER)
        .map(|e| e.text())
        .unwrap_or_default();
    let password = q
        .child("password", ns::REGISTER)
        .map(|e| e.text())
        .unwrap_or_default();
    if username.is_empty() || password.is_empty() {
        // §3.1: every requested field is required.
        return Err(StanzaError::not_acceptable().with_text("username and password are required"));
    }
    let Ok(jid) = Jid::new(Some(&username), &c2s.domain, None) else {
        return Err(StanzaError::jid_malformed("invalid username"));
    };
    if rookery_sasl::prepare_password(&password).is_err() {
        return Err(StanzaError::not_acceptable().with_text("password not allowed"));
    }
    let interval = Duration::from_secs(c2s.registration.min_interval_secs);
    {
        let Ok(map) = c2s.registrations.lock() else {
            return Err(StanzaError::internal_server_error());
        };
        if let Some(last) = map.get(&ip)
            && last.elapsed() < interval
        {
            return Err(StanzaError::resource_constraint()
                .with_text("too many registrations from your address; try later"));
        }
    }
    let iterations = c2s.scram_iterations;
    let creds =
        tokio::task::spawn_blocking(move || StoredCredentials::derive(&password, iterations))
            .await
            .map_err(|_| StanzaError::internal_server_error())?;
    match c2s.users.create(jid.as_str(), &creds).await {
        Ok(()) => {
            if let Ok(mut map) = c2s.registrations.lock() {
                if map.len() > 100_000 {
                    map.retain(|_, t| t.elapsed() < interval);
                }
                map.insert(ip, Instant::now());
            }
            *registered = true;
            info!(account = %jid, %ip, "account registered in-band");
            Ok(None)
        }
        Err(StoreError::AlreadyExists) => Err(StanzaError::conflict()),
        Err(_) => Err(StanzaError::internal_server_error()),
    }
}
