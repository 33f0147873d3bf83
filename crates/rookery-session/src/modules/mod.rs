//! Server modules: one module per XEP, each declaring what it implements so
//! that disco#info features and `docs/xeps.md` come from the code.

mod blocking;
mod carbons;
mod disco;
pub mod extdisco;
pub mod last;
mod mam;
pub(crate) mod pep;
mod ping;
pub mod private;
pub mod push;
mod register;
mod roster;
mod time;
pub mod vcard;
pub(crate) use time::xep0082_now;
mod version;

use rookery_core::{Jid, Stanza, StanzaError};

use crate::LocalSessions;
use rookery_xml::Element;
use serde::{Deserialize, Serialize};

/// A specification a module implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// E.g. `XEP-0199` or `RFC 6120`.
    pub id: &'static str,
    /// The version implemented.
    pub version: &'static str,
    /// Title.
    pub name: &'static str,
}

/// What an iq handler answers: a result payload (or an empty result), or a
/// stanza error.
pub type IqResult = Result<Option<Element>, StanzaError>;

/// A server module.
#[async_trait::async_trait]
pub trait Module: Send + Sync + std::fmt::Debug {
    /// The specifications implemented.
    fn specs(&self) -> &'static [Spec];
    /// disco#info features advertised (XEP-0030 §3.1).
    fn features(&self) -> &'static [&'static str];
    /// Handles an iq get/set addressed to the server (`to` is `None`, the
    /// domain) or to an account (`to` is its bare JID, answered on its
    /// behalf). `None` if this module does not handle the payload.
    async fn handle_iq(
        &self,
        ctx: &IqContext<'_>,
        stanza: &Stanza,
        payload: &Element,
    ) -> Option<IqResult>;
    /// True if senders on other servers may use this module (RFC 6120 §10.4:
    /// stanzas that arrived over federation). Modules that act on the
    /// sender's own account (roster, blocking, private storage, archives,
    /// carbons, registration) are for local accounts only.
    fn serves_remote(&self) -> bool {
        false
    }
}

/// Context of an iq handled by the server.
#[derive(Debug)]
pub struct IqContext<'a> {
    /// The server domain.
    pub domain: &'a str,
    /// The account the iq was addressed to, or `None` for the server itself.
    pub account: Option<&'a Jid>,
    /// Every feature of every module (for disco#info).
    pub features: &'a [&'static str],
    /// The session that sent the iq.
    pub from: &'a Jid,
    /// The session service (accounts, other sessions).
    pub sessions: &'a LocalSessions,
    after: std::sync::Mutex<Vec<After>>,
}

/// Something to do once the iq's answer has been queued.
#[derive(Debug)]
pub enum After {
    /// Close every session of an account with this stream error.
    CloseAccount(Jid, rookery_core::StreamError),
    /// Deliver an element to one full JID (e.g. interim roster pushes).
    Deliver(Jid, Element),
    /// Push a roster change to every interested resource of the user (bare JID).
    PushRoster(Jid, crate::roster::RosterChange, u64),
    /// Route a stanza as if sent by this session.
    Route(Jid, Stanza),
    /// Push a block list change (XEP-0191) to the interested resources.
    PushBlocklist(Jid, &'static str, Vec<Jid>),
    /// Deliver the notifications of an account's PEP nodes (XEP-0163).
    Pep(Jid, Vec<rookery_pubsub::Notice>),
}

impl IqContext<'_> {
    /// Runs `action` after the answer to this iq is queued for the sender.
    pub fn after_reply(&self, action: After) {
        if let Ok(mut v) = self.after.lock() {
            v.push(action);
        }
    }

    /// Whose data an iq is about: the sender's own account when it has no
    /// 'to' (RFC 6120 §10.3.3) or is sent to the sender's bare JID, another
    /// account when sent to its bare JID, else the server itself.
    pub(crate) fn target(&self, stanza: &Stanza) -> Target {
        let me = self.from.to_bare();
        match (stanza.to(), self.account) {
            (None, _) => Target::Own(me),
            (Some(_), Some(a)) if *a == me => Target::Own(me),
            (Some(_), Some(a)) => Target::Other(a.clone()),
            (Some(_), None) => Target::Server,
        }
    }
}

/// See [`IqContext::target`].
#[derive(Debug)]
pub(crate) enum Target {
    /// The sender's own account (bare JID).
    Own(Jid),
    /// Another local account (bare JID), answered on its behalf.
    Other(Jid),
    /// The server domain.
    Server,
}

pub(crate) use rookery_mam::query::parse_stored;

/// `[modules]` section of the configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModulesConfig {
    /// XEP-0092 software version: answer `jabber:iq:version` queries.
    pub version: bool,
    /// XEP-0092: include the operating system in the answer (off by default,
    /// as XEP-0092 §6 advises for privacy).
    pub version_os: bool,
    /// XEP-0077 §3.3: let users change their password in-band.
    pub password_change: bool,
    /// XEP-0077 §3.2: let users delete their account in-band.
    pub account_removal: bool,
    /// XEP-0054: largest vCard accepted, in bytes of its XML.
    pub vcard_max_bytes: usize,
    /// XEP-0049: bytes of private XML one account may store in all.
    pub private_max_bytes: usize,
    /// `[modules.contact]`: XEP-0157 contact addresses in the server's
    /// disco#info.
    pub contact: ContactAddresses,
    /// `[[modules.external_services]]`: XEP-0215 external services (STUN,
    /// TURN) offered to the server's users.
    pub external_services: Vec<extdisco::ExternalService>,
    /// `[modules.push]`: XEP-0357 push notifications.
    pub push: push::PushConfig,
}

/// XEP-0157 §7.1: the contact addresses of the service, as URIs
/// (`mailto:`, `xmpp:`, `https:`). Empty lists are left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContactAddresses {
    /// `abuse-addresses`
    pub abuse: Vec<String>,
    /// `admin-addresses`
    pub admin: Vec<String>,
    /// `feedback-addresses`
    pub feedback: Vec<String>,
    /// `sales-addresses`
    pub sales: Vec<String>,
    /// `security-addresses`
    pub security: Vec<String>,
    /// `status-addresses`
    pub status: Vec<String>,
    /// `support-addresses`
    pub support: Vec<String>,
}

impl ContactAddresses {
    /// The XEP-0157 form fields (var, values) that have values.
    pub(crate) fn fields(&self) -> Vec<(&'static str, &[String])> {
        [
            ("abuse-addresses", &self.abuse),
            ("admin-addresses", &self.admin),
            ("feedback-addresses", &self.feedback),
            ("sales-addresses", &self.sales),
            ("security-addresses", &self.security),
            ("status-addresses", &self.status),
            ("support-addresses", &self.support),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, v.as_slice()))
        .collect()
    }
}

impl Default for ModulesConfig {
    fn default() -> Self {
        ModulesConfig {
            version: true,
            version_os: false,
            password_change: true,
            account_removal: true,
            vcard_max_bytes: 64 * 1024,
            private_max_bytes: 1024 * 1024,
            contact: ContactAddresses::default(),
            external_services: Vec::new(),
            push: push::PushConfig::default(),
        }
    }
}

/// The enabled modules.
#[derive(Debug)]
pub struct Modules {
    modules: Vec<Box<dyn Module>>,
    features: Vec<&'static str>,
    /// XEP-0357 notifications, when enabled.
    pusher: Option<push::Pusher>,
}

impl Modules {
    /// Builds the module list from config.
    pub fn new(
        config: ModulesConfig,
        iterations: u32,
        roster: crate::roster::RosterLimits,
    ) -> Modules {
        let mut modules: Vec<Box<dyn Module>> = vec![
            Box::new(disco::Disco {
                contact: config.contact.clone(),
                push: config.push.enabled,
            }),
            Box::new(ping::Ping),
            Box::new(time::EntityTime),
            Box::new(last::Last),
            Box::new(vcard::VCard {
                max_bytes: config.vcard_max_bytes,
            }),
            Box::new(private::Private {
                max_bytes: config.private_max_bytes,
            }),
        ];
        if config.version {
            modules.push(Box::new(version::Version {
                os: config.version_os,
            }));
        }
        modules.push(Box::new(roster::RosterModule { limits: roster }));
        modules.push(Box::new(blocking::Blocking));
        modules.push(Box::new(carbons::Carbons));
        modules.push(Box::new(mam::Mam));
        modules.push(Box::new(pep::Pep));
        if !config.external_services.is_empty() {
            modules.push(Box::new(extdisco::ExtDisco {
                services: config.external_services.clone(),
            }));
        }
        if config.push.enabled {
            modules.push(Box::new(push::PushModule {
                config: config.push.clone(),
            }));
        }
        if config.password_change || config.account_removal {
            modules.push(Box::new(register::Register {
                password_change: config.password_change,
                removal: config.account_removal,
                iterations,
            }));
        }
        let mut features: Vec<&'static str> = modules
            .iter()
            .flat_map(|m| m.features().iter().copied())
            .collect();
        features.sort_unstable();
        features.dedup();
        let pusher = config
            .push
            .enabled
            .then(|| push::Pusher::new(config.push.clone()));
        Modules {
            modules,
            features,
            pusher,
        }
    }

    /// XEP-0357 notifications, when the module is enabled.
    pub fn pusher(&self) -> Option<&push::Pusher> {
        self.pusher.as_ref()
    }

    /// Every feature advertised.
    pub fn features(&self) -> &[&'static str] {
        &self.features
    }

    /// Every specification implemented by the enabled modules.
    pub fn specs(&self) -> Vec<Spec> {
        self.modules
            .iter()
            .flat_map(|m| m.specs().iter().copied())
            .collect()
    }

    /// Dispatches an iq request to the module that handles its payload;
    /// `service-unavailable` if none does (RFC 6120 §8.4).
    pub async fn handle_iq(
        &self,
        sessions: &LocalSessions,
        from: &Jid,
        to: Option<&Jid>,
        stanza: &Stanza,
    ) -> (IqResult, Vec<After>) {
        let Some(payload) = stanza.element().first_child() else {
            return (
                Err(StanzaError::bad_request("iq without payload")),
                Vec::new(),
            );
        };
        let account = to.filter(|j| j.node().is_some());
        let ctx = IqContext {
            domain: sessions.domain(),
            account: account.map(|j| j as &Jid),
            features: &self.features,
            from,
            sessions,
            after: std::sync::Mutex::new(Vec::new()),
        };
        let remote = from.domain() != sessions.domain();
        for m in self.modules.iter().filter(|m| !remote || m.serves_remote()) {
            if let Some(r) = m.handle_iq(&ctx, stanza, payload).await {
                let after = ctx.after.into_inner().unwrap_or_default();
                return (r, after);
            }
        }
        (Err(StanzaError::service_unavailable()), Vec::new())
    }
}

/// Every module that exists, enabled or not (for docs/xeps.md).
pub fn all_specs() -> Vec<Spec> {
    Modules::new(
        ModulesConfig {
            version: true,
            version_os: true,
            password_change: true,
            account_removal: true,
            external_services: vec![extdisco::ExternalService::default()],
            ..ModulesConfig::default()
        },
        4096,
        Default::default(),
    )
    .specs()
}

#[cfg(test)]
mod tests {
    /// docs/xeps.md lists every specification a module declares, with its version.
    #[test]
    fn xeps_doc_lists_every_module_spec() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/xeps.md"))
                .expect("docs/xeps.md");
        for spec in super::all_specs() {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| {} ", spec.id)))
                .unwrap_or_else(|| panic!("{} missing from docs/xeps.md", spec.id));
            assert!(
                row.contains(&format!("| {} |", spec.version)),
                "{}: version {} not in {row}",
                spec.id,
                spec.version
            );
        }
    }
}
