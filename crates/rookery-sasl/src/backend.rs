//! The rsasl side: one rsasl server session per authentication exchange.
//!
//! rsasl's callbacks are synchronous, so the credentials are fetched before a
//! session is started and moved into that session's callback
//! ([`ExchangeCallback`]). A fresh `SASLConfig` per exchange is cheap (one
//! `Arc` and a small struct) and keeps the fetched keys private to it.

use rsasl::callback::{Context, Request, SessionCallback, SessionData};
use rsasl::mechanisms::scram::properties::ScramStoredPassword;
use rsasl::mechanisms::{plain, scram};
use rsasl::prelude::{
    ChannelBindingCallback, Mechname, Registry, SASLConfig, SASLServer, Session, SessionError,
    State, Validation,
};
use rsasl::property::{AuthId, Password};
use rsasl::validate::{Validate, ValidationError};

use crate::credentials::{HashAlg, ScramKeys};
use crate::{Failure, Mechanism};

/// Channel-binding type of RFC 9266 (the only one this server supports).
pub(crate) const TLS_EXPORTER: &str = "tls-exporter";

/// Mechanisms rsasl may run when the connection offers channel binding. The
/// -PLUS names must be listed explicitly: rsasl's non-PLUS SCRAM servers look
/// for them to decide whether a client's `y` flag is a downgrade (RFC 5802 §6).
static WITH_PLUS: &[rsasl::prelude::Mechanism] = &[
    scram::SCRAM_SHA512_PLUS,
    scram::SCRAM_SHA256_PLUS,
    scram::SCRAM_SHA1_PLUS,
    scram::SCRAM_SHA512,
    scram::SCRAM_SHA256,
    scram::SCRAM_SHA1,
    plain::PLAIN,
];

/// Mechanisms rsasl may run on a connection without channel binding.
static WITHOUT_PLUS: &[rsasl::prelude::Mechanism] = &[
    scram::SCRAM_SHA512,
    scram::SCRAM_SHA256,
    scram::SCRAM_SHA1,
    plain::PLAIN,
];

/// The authentication identity rsasl's validation callback saw for a
/// successful exchange. (The authorization identity is taken from this crate's
/// own parse of the client message.)
#[derive(Debug)]
pub(crate) struct Authenticated {
    pub(crate) authid: String,
}

/// rsasl `Validation` marker: the exchange succeeded iff a value was set.
pub(crate) struct Outcome;
impl Validation for Outcome {
    type Value = Authenticated;
}

/// Hands rsasl the RFC 9266 `tls-exporter` data of this connection.
pub(crate) struct ExporterBinding(Option<Vec<u8>>);
impl ChannelBindingCallback for ExporterBinding {
    fn get_cb_data(&self, cbname: &str) -> Option<&[u8]> {
        if cbname == TLS_EXPORTER {
            self.0.as_deref()
        } else {
            None
        }
    }
}

/// What the callback checks the client against.
pub(crate) enum Check {
    /// SCRAM: supply these keys (rsasl verifies the proof itself and only
    /// calls `validate` when the proof is right).
    Scram(ScramKeys),
    /// PLAIN: verify the presented password against the SHA-256 keys.
    Plain(ScramKeys),
}

/// The per-exchange rsasl callback, holding the credentials fetched before
/// the session started.
pub(crate) struct ExchangeCallback {
    /// The authentication identity the credentials belong to, in the form
    /// rsasl reports it (the raw `n=` value for SCRAM, the SASLprep'd authcid
    /// for PLAIN). Any other identity gets no keys and never validates.
    pub(crate) authid: String,
    pub(crate) check: Check,
}

impl SessionCallback for ExchangeCallback {
    fn callback(
        &self,
        _session_data: &SessionData,
        context: &Context<'_>,
        request: &mut Request<'_>,
    ) -> Result<(), SessionError> {
        if let Check::Scram(keys) = &self.check
            && context.get_ref::<AuthId>() == Some(self.authid.as_str())
        {
            request.satisfy::<ScramStoredPassword<'static>>(&ScramStoredPassword::new(
                keys.iterations,
                &keys.salt,
                &keys.stored_key,
                &keys.server_key,
            ))?;
        }
        Ok(())
    }

    fn validate(
        &self,
        _session_data: &SessionData,
        context: &Context<'_>,
        validate: &mut Validate<'_>,
    ) -> Result<(), ValidationError> {
        let Some(authid) = context.get_ref::<AuthId>() else {
            return Ok(());
        };
        if authid != self.authid {
            return Ok(());
        }
        if let Check::Plain(keys) = &self.check {
            // RFC 4616 §2: rsasl has applied SASLprep to the password.
            let presented = context.get_ref::<Password>().unwrap_or_default();
            if !keys.verify_prepared(HashAlg::Sha256, presented) {
                return Ok(());
            }
        }
        validate.finalize::<Outcome>(Authenticated {
            authid: authid.to_owned(),
        });
        Ok(())
    }
}

/// A running rsasl server session.
pub(crate) struct RsaslExchange {
    session: Session<Outcome, ExporterBinding>,
}

impl RsaslExchange {
    /// Start a server session for `mechanism`. `tls_exporter` is the channel
    /// binding data; when present the -PLUS mechanisms are registered, which
    /// also arms rsasl's downgrade check for the non-PLUS SCRAM variants.
    pub(crate) fn start(
        mechanism: Mechanism,
        tls_exporter: Option<Vec<u8>>,
        callback: ExchangeCallback,
    ) -> Result<RsaslExchange, Failure> {
        let mechanisms = if tls_exporter.is_some() {
            WITH_PLUS
        } else {
            WITHOUT_PLUS
        };
        let config = SASLConfig::builder()
            .with_registry(Registry::with_mechanisms(mechanisms))
            .with_callback(callback)
            .map_err(|_| Failure::TemporaryAuthFailure)?;
        let server = SASLServer::<Outcome, _>::with_cb(config, ExporterBinding(tls_exporter));
        let name =
            Mechname::parse(mechanism.name().as_bytes()).map_err(|_| Failure::InvalidMechanism)?;
        let session = server
            .start_suggested(name)
            .map_err(|_| Failure::InvalidMechanism)?;
        Ok(RsaslExchange { session })
    }

    /// Run one step; returns rsasl's output and whether it has finished.
    pub(crate) fn step(&mut self, input: &[u8]) -> Result<(Vec<u8>, bool), Failure> {
        let mut out = Vec::new();
        match self.session.step(Some(input), &mut out) {
            Ok(State::Running) => Ok((out, false)),
            Ok(State::Finished(_)) => Ok((out, true)),
            Err(e) => Err(map_error(&e)),
        }
    }

    /// The validated identities, if the exchange succeeded.
    pub(crate) fn outcome(&mut self) -> Option<Authenticated> {
        self.session.validation()
    }
}

/// Map an rsasl error to an RFC 6120 §6.5 condition. Parse errors cannot
/// normally happen (messages are checked before rsasl sees them).
fn map_error(e: &SessionError) -> Failure {
    match e {
        SessionError::MissingChannelBindingData(_) => Failure::NotAuthorized,
        SessionError::MechanismError(_)
        | SessionError::InputDataRequired
        | SessionError::MechanismDone => Failure::MalformedRequest,
        _ => Failure::TemporaryAuthFailure,
    }
}
