//! XEP-0077: In-Band Registration, for authenticated users: password change
//! (§3.3) and account removal (§3.2). Registering new accounts before
//! authentication is done by the connection manager (`[registration]`).

use rookery_core::users::StoreError;
use rookery_core::{Stanza, StanzaError, StreamError};
use rookery_sasl::StoredCredentials;
use rookery_xml::{Element, ns};
use tracing::info;

use super::{After, IqContext, IqResult, Module, Spec};

#[derive(Debug)]
pub(crate) struct Register {
    pub(crate) password_change: bool,
    pub(crate) removal: bool,
    pub(crate) iterations: u32,
}

fn store_error(e: StoreError) -> StanzaError {
    match e {
        StoreError::NotFound => StanzaError::item_not_found(),
        _ => StanzaError::internal_server_error(),
    }
}

#[async_trait::async_trait]
impl Module for Register {
    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            id: "XEP-0077",
            version: "2.4",
            name: "In-Band Registration",
        }]
    }
    fn features(&self) -> &'static [&'static str] {
        &[ns::REGISTER]
    }
    async fn handle_iq(
        &self,
        ctx: &IqContext<'_>,
        stanza: &Stanza,
        p: &Element,
    ) -> Option<IqResult> {
        if !p.is("query", ns::REGISTER) {
            return None;
        }
        let me = ctx.from.to_bare();
        // Only the account itself, addressed as the server or its own bare JID.
        if ctx.account.is_some_and(|a| *a != me) {
            return Some(Err(StanzaError::forbidden()));
        }
        let local = me.node().unwrap_or_default().to_owned();
        if stanza.stanza_type() == Some("get") {
            // §3.1: an authenticated entity is registered.
            return Some(Ok(Some(
                Element::new_static("query", ns::REGISTER)
                    .with_child(Element::new_static("registered", ns::REGISTER))
                    .with_child(Element::new_static("username", ns::REGISTER).with_text(local))
                    .with_child(Element::new_static("password", ns::REGISTER)),
            )));
        }
        if p.child("remove", ns::REGISTER).is_some() {
            if !self.removal {
                return Some(Err(StanzaError::not_allowed()));
            }
            // The account's roster, offline messages, block list, vCard,
            // private XML and last activity go with it.
            return Some(match ctx.sessions.stores().delete_account(&me).await {
                Ok(_) => {
                    info!(account = %me, "account removed in-band");
                    // §3.2: every session of the account ends with <not-authorized/>,
                    // once this result has been queued.
                    ctx.after_reply(After::CloseAccount(
                        me.clone(),
                        StreamError::new("not-authorized").with_text("account removed"),
                    ));
                    Ok(None)
                }
                Err(e) => Err(store_error(e)),
            });
        }
        // §3.3: password change.
        if !self.password_change {
            return Some(Err(StanzaError::not_allowed()));
        }
        let username = p.child("username", ns::REGISTER).map(|u| u.text());
        let password = p
            .child("password", ns::REGISTER)
            .map(|u| u.text())
            .unwrap_or_default();
        let Some(username) = username else {
            return Some(Err(StanzaError::bad_request("username is required")));
        };
        if rookery_jid::prep_localpart(&username).ok().as_deref() != Some(local.as_str()) {
            return Some(Err(
                StanzaError::not_allowed().with_text("that is not your account")
            ));
        }
        if password.is_empty() {
            // The existing password is kept (§3.3).
            return Some(Err(
                StanzaError::not_acceptable().with_text("empty password")
            ));
        }
        if rookery_sasl::prepare_password(&password).is_err() {
            return Some(Err(
                StanzaError::not_acceptable().with_text("password not allowed")
            ));
        }
        let iterations = self.iterations;
        let creds = StoredCredentials::derive(&password, iterations);
        Some(
            match ctx
                .sessions
                .users()
                .set_credentials(me.as_str(), &creds)
                .await
            {
                Ok(()) => {
                    info!(account = %me, "password changed in-band");
                    Ok(None)
                }
                Err(e) => Err(store_error(e)),
            },
        )
    }
}
