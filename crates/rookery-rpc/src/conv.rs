//! Conversions between the role traits' types and the protobuf messages.

use rookery_cluster::shard_of;
use rookery_core::roles::SmError;
use rookery_core::{BindError, Jid, Stanza, StanzaKind, StreamError};
use rookery_proto::session::v1 as pb;
use rookery_xml::Element;
use tonic::Status;

/// The envelope of a stanza for the owner of `owner_of`'s shard.
pub(crate) fn envelope(el: &Element, owner_of: &Jid, shards: u16) -> pb::Envelope {
    let kind = match StanzaKind::of(el) {
        Some(StanzaKind::Message) => pb::StanzaKind::Message,
        Some(StanzaKind::Presence) => pb::StanzaKind::Presence,
        Some(StanzaKind::Iq) => pb::StanzaKind::Iq,
        None => pb::StanzaKind::Unspecified,
    };
    pb::Envelope {
        from: el.attr("from").unwrap_or_default().to_owned(),
        to: el.attr("to").unwrap_or_default().to_owned(),
        kind: kind as i32,
        id: el.attr("id").unwrap_or_default().to_owned(),
        shard: u32::from(shard_of(owner_of.to_bare().as_str(), shards)),
        xml: el.to_xml_string().into_bytes(),
    }
}

/// The stanza of an envelope, checked: well-formed XML, one of the three
/// stanza kinds, the kind the envelope names, and valid addresses.
pub(crate) fn open(env: Option<pb::Envelope>) -> Result<Stanza, Status> {
    let env = env.ok_or_else(|| Status::invalid_argument("no stanza"))?;
    let xml = std::str::from_utf8(&env.xml)
        .map_err(|_| Status::invalid_argument("stanza is not UTF-8"))?;
    let el = Element::parse(xml)
        .map_err(|e| Status::invalid_argument(format!("stanza is not well-formed: {e}")))?;
    let named = match pb::StanzaKind::try_from(env.kind) {
        Ok(pb::StanzaKind::Message) => Some(StanzaKind::Message),
        Ok(pb::StanzaKind::Presence) => Some(StanzaKind::Presence),
        Ok(pb::StanzaKind::Iq) => Some(StanzaKind::Iq),
        _ => None,
    };
    if StanzaKind::of(&el).is_none() || StanzaKind::of(&el) != named {
        return Err(Status::invalid_argument(
            "the envelope's kind does not match the stanza",
        ));
    }
    Stanza::parse(el).map_err(|(_, e)| Status::invalid_argument(format!("bad stanza: {e}")))
}

/// A JID field of a request.
pub(crate) fn jid(s: &str, what: &str) -> Result<Jid, Status> {
    Jid::parse(s).map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
}

/// The RFC 6120 §4.9.3 stream error conditions (a condition from the wire
/// becomes one of these static names; anything else is
/// `undefined-condition`).
const STREAM_CONDITIONS: &[&str] = &[
    "bad-format",
    "bad-namespace-prefix",
    "conflict",
    "connection-timeout",
    "host-gone",
    "host-unknown",
    "improper-addressing",
    "internal-server-error",
    "invalid-from",
    "invalid-namespace",
    "invalid-xml",
    "not-authorized",
    "not-well-formed",
    "policy-violation",
    "remote-connection-failed",
    "reset",
    "resource-constraint",
    "restricted-xml",
    "see-other-host",
    "system-shutdown",
    "undefined-condition",
    "unsupported-encoding",
    "unsupported-feature",
    "unsupported-stanza-type",
    "unsupported-version",
];

pub(crate) fn stream_error(condition: &str, text: &str) -> StreamError {
    let c = STREAM_CONDITIONS
        .iter()
        .find(|c| **c == condition)
        .copied()
        .unwrap_or("undefined-condition");
    let e = StreamError::new(c);
    if text.is_empty() {
        e
    } else {
        e.with_text(text)
    }
}

pub(crate) fn bind_error_name(e: &BindError) -> String {
    match e {
        BindError::Conflict => "conflict",
        BindError::ResourceConstraint => "resource-constraint",
        BindError::NotAllowed => "not-allowed",
        _ => "internal-server-error",
    }
    .to_owned()
}

pub(crate) fn bind_error(name: &str) -> BindError {
    match name {
        "conflict" => BindError::Conflict,
        "resource-constraint" => BindError::ResourceConstraint,
        "not-allowed" => BindError::NotAllowed,
        other => BindError::Internal(other.to_owned()),
    }
}

pub(crate) fn sm_failure(e: &SmError) -> pb::SmFailure {
    match e {
        SmError::NotFound => pb::SmFailure {
            condition: "item-not-found".into(),
            ..Default::default()
        },
        SmError::Unexpected => pb::SmFailure {
            condition: "unexpected-request".into(),
            ..Default::default()
        },
        SmError::TooHigh { h, sent } => pb::SmFailure {
            condition: "handled-count-too-high".into(),
            h: *h,
            sent: *sent,
        },
    }
}

pub(crate) fn sm_error(f: &pb::SmFailure) -> SmError {
    match f.condition.as_str() {
        "unexpected-request" => SmError::Unexpected,
        "handled-count-too-high" => SmError::TooHigh {
            h: f.h,
            sent: f.sent,
        },
        _ => SmError::NotFound,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn envelopes_round_trip_and_are_checked() {
        let el = Element::parse(
            "<message xmlns='jabber:client' from='a@x/r' to='b@x' id='1'><body>hi</body></message>",
        )
        .unwrap();
        let to = Jid::parse("b@x").unwrap();
        let env = envelope(&el, &to, 1024);
        assert_eq!(env.kind, pb::StanzaKind::Message as i32);
        assert_eq!(
            (env.from.as_str(), env.to.as_str(), env.id.as_str()),
            ("a@x/r", "b@x", "1")
        );
        assert_eq!(env.shard, u32::from(shard_of("b@x", 1024)));
        let st = open(Some(env.clone())).unwrap();
        assert_eq!(st.element(), &el);

        let bad = |f: &dyn Fn(&mut pb::Envelope)| {
            let mut e = env.clone();
            f(&mut e);
            open(Some(e)).unwrap_err().code()
        };
        assert_eq!(
            bad(&|e| e.xml = b"<message".to_vec()),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            bad(&|e| e.xml = vec![0xff, 0xfe]),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            bad(&|e| e.kind = pb::StanzaKind::Iq as i32),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            bad(&|e| e.xml = b"<foo xmlns='jabber:client'/>".to_vec()),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            bad(&|e| e.xml = b"<message xmlns='jabber:client' to='@@'/>".to_vec()),
            tonic::Code::InvalidArgument
        );
        assert_eq!(open(None).unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn errors_cross_unchanged() {
        for e in [
            BindError::Conflict,
            BindError::ResourceConstraint,
            BindError::NotAllowed,
        ] {
            assert_eq!(bind_error(&bind_error_name(&e)), e);
        }
        for e in [
            SmError::NotFound,
            SmError::Unexpected,
            SmError::TooHigh { h: 5, sent: 3 },
        ] {
            assert_eq!(sm_error(&sm_failure(&e)), e);
        }
        assert_eq!(stream_error("conflict", "x").condition, "conflict");
        assert_eq!(stream_error("made-up", "").condition, "undefined-condition");
    }
}
