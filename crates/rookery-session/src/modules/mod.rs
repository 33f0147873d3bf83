//! Server modules: one module per XEP, each declaring what it implements so
//! that disco#info features and `docs/xeps.md` come from the code.

mod disco;
mod ping;
mod time;
mod version;

use rookery_core::{Jid, Stanza, StanzaError};
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
pub trait Module: Send + Sync + std::fmt::Debug {
    /// The specifications implemented.
    fn specs(&self) -> &'static [Spec];
    /// disco#info features advertised (XEP-0030 §3.1).
    fn features(&self) -> &'static [&'static str];
    /// Handles an iq get/set addressed to the server (`to` is `None`, the
    /// domain) or to an account (`to` is its bare JID, answered on its
    /// behalf). `None` if this module does not handle the payload.
    fn handle_iq(
        &self,
        ctx: &IqContext<'_>,
        stanza: &Stanza,
        payload: &Element,
    ) -> Option<IqResult>;
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
}

/// `[modules]` section of the configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModulesConfig {
    /// XEP-0092 software version: answer `jabber:iq:version` queries.
    pub version: bool,
    /// XEP-0092: include the operating system in the answer (off by default,
    /// as XEP-0092 §6 advises for privacy).
    pub version_os: bool,
}

impl Default for ModulesConfig {
    fn default() -> Self {
        ModulesConfig {
            version: true,
            version_os: false,
        }
    }
}

/// The enabled modules.
#[derive(Debug)]
pub struct Modules {
    modules: Vec<Box<dyn Module>>,
    features: Vec<&'static str>,
}

impl Modules {
    /// Builds the module list from config.
    pub fn new(config: ModulesConfig) -> Modules {
        let mut modules: Vec<Box<dyn Module>> = vec![
            Box::new(disco::Disco),
            Box::new(ping::Ping),
            Box::new(time::EntityTime),
        ];
        if config.version {
            modules.push(Box::new(version::Version {
                os: config.version_os,
            }));
        }
        let mut features: Vec<&'static str> = modules
            .iter()
            .flat_map(|m| m.features().iter().copied())
            .collect();
        features.sort_unstable();
        features.dedup();
        Modules { modules, features }
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
    pub fn handle_iq(&self, domain: &str, to: Option<&Jid>, stanza: &Stanza) -> IqResult {
        let Some(payload) = stanza.element().first_child() else {
            return Err(StanzaError::bad_request("iq without payload"));
        };
        let account = to.filter(|j| j.node().is_some());
        let ctx = IqContext {
            domain,
            account: account.map(|j| j as &Jid),
            features: &self.features,
        };
        for m in &self.modules {
            if let Some(r) = m.handle_iq(&ctx, stanza, payload) {
                return r;
            }
        }
        Err(StanzaError::service_unavailable())
    }
}

/// Every module that exists, enabled or not (for docs/xeps.md).
pub fn all_specs() -> Vec<Spec> {
    Modules::new(ModulesConfig {
        version: true,
        version_os: true,
    })
    .specs()
}
