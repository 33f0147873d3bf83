//! RFC 6120 errors as values: stanza errors (§8.3) become error replies, stream
//! errors (§4.9) close the stream.

use rookery_xml::{Element, ns};

/// RFC 6120 §8.3.2: the error type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    /// Retry after providing credentials.
    Auth,
    /// Do not retry.
    Cancel,
    /// Proceed (the condition was only a warning).
    Continue,
    /// Retry after changing the data sent.
    Modify,
    /// Retry after waiting.
    Wait,
}

impl ErrorType {
    /// Attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// A stanza error (RFC 6120 §8.3): what a handler returns instead of a result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{condition} ({})", error_type.as_str())]
pub struct StanzaError {
    /// §8.3.2
    pub error_type: ErrorType,
    /// §8.3.3 defined condition, e.g. `service-unavailable`.
    pub condition: &'static str,
    /// Optional human-readable text (§8.3.2).
    pub text: Option<String>,
    /// Optional application-specific condition (§8.3.2), as (name, namespace).
    pub app: Option<(&'static str, &'static str)>,
}

macro_rules! conditions {
    ($( $(#[$m:meta])* $fn:ident => $cond:literal, $ty:ident; )*) => {
        impl StanzaError {
            $(
                $(#[$m])*
                pub fn $fn() -> StanzaError {
                    StanzaError { error_type: ErrorType::$ty, condition: $cond, text: None, app: None }
                }
            )*
        }
    };
}

conditions! {
    /// §8.3.3.2
    conflict => "conflict", Cancel;
    /// §8.3.3.3
    feature_not_implemented => "feature-not-implemented", Cancel;
    /// §8.3.3.4
    forbidden => "forbidden", Auth;
    /// §8.3.3.6
    internal_server_error => "internal-server-error", Cancel;
    /// §8.3.3.7
    item_not_found => "item-not-found", Cancel;
    /// §8.3.3.9
    not_acceptable => "not-acceptable", Modify;
    /// §8.3.3.10
    not_allowed => "not-allowed", Cancel;
    /// §8.3.3.11
    not_authorized => "not-authorized", Auth;
    /// §8.3.3.12
    policy_violation => "policy-violation", Modify;
    /// §8.3.3.13
    recipient_unavailable => "recipient-unavailable", Wait;
    /// §8.3.3.16
    remote_server_not_found => "remote-server-not-found", Cancel;
    /// §8.3.3.17
    remote_server_timeout => "remote-server-timeout", Wait;
    /// §8.3.3.18
    resource_constraint => "resource-constraint", Wait;
    /// §8.3.3.19
    service_unavailable => "service-unavailable", Cancel;
    /// §8.3.3.21
    undefined_condition => "undefined-condition", Cancel;
    /// §8.3.3.22
    unexpected_request => "unexpected-request", Wait;
}

impl StanzaError {
    /// §8.3.3.1, with a text.
    pub fn bad_request(text: &str) -> StanzaError {
        StanzaError {
            error_type: ErrorType::Modify,
            condition: "bad-request",
            text: Some(text.to_owned()),
            app: None,
        }
    }

    /// §8.3.3.8, with a text.
    pub fn jid_malformed(text: &str) -> StanzaError {
        StanzaError {
            error_type: ErrorType::Modify,
            condition: "jid-malformed",
            text: Some(text.to_owned()),
            app: None,
        }
    }

    /// Adds a text.
    #[must_use]
    pub fn with_text(mut self, text: impl Into<String>) -> StanzaError {
        self.text = Some(text.into());
        self
    }

    /// Adds an application-specific condition element (RFC 6120 §8.3.2).
    #[must_use]
    pub fn with_app(mut self, name: &'static str, ns: &'static str) -> StanzaError {
        self.app = Some((name, ns));
        self
    }

    /// The `<error/>` element (RFC 6120 §8.3.2).
    pub fn to_element(&self) -> Element {
        let mut e =
            Element::new_static("error", ns::CLIENT).with_attr("type", self.error_type.as_str());
        e.push_child(Element::new_static(self.condition, ns::STANZAS));
        if let Some(t) = &self.text {
            let mut text = Element::new_static("text", ns::STANZAS);
            text.set_attr_ns("lang", ns::XML, "en");
            text.push_text(t.clone());
            e.push_child(text);
        }
        if let Some((name, ns)) = self.app {
            e.push_child(Element::new_static(name, ns));
        }
        e
    }

    /// Reads the error child of an error stanza.
    pub fn from_stanza(el: &Element) -> Option<StanzaError> {
        let e = el.child("error", el.ns())?;
        let error_type = match e.attr("type")? {
            "auth" => ErrorType::Auth,
            "cancel" => ErrorType::Cancel,
            "continue" => ErrorType::Continue,
            "modify" => ErrorType::Modify,
            "wait" => ErrorType::Wait,
            _ => return None,
        };
        let cond = e
            .children()
            .find(|c| c.ns() == ns::STANZAS && c.name() != "text")?;
        let condition = STANZA_CONDITIONS.iter().find(|c| **c == cond.name())?;
        Some(StanzaError {
            error_type,
            condition,
            text: e.child("text", ns::STANZAS).map(|t| t.text()),
            app: None,
        })
    }
}

const STANZA_CONDITIONS: &[&str] = &[
    "bad-request",
    "conflict",
    "feature-not-implemented",
    "forbidden",
    "gone",
    "internal-server-error",
    "item-not-found",
    "jid-malformed",
    "not-acceptable",
    "not-allowed",
    "not-authorized",
    "policy-violation",
    "recipient-unavailable",
    "redirect",
    "registration-required",
    "remote-server-not-found",
    "remote-server-timeout",
    "resource-constraint",
    "service-unavailable",
    "subscription-required",
    "undefined-condition",
    "unexpected-request",
];

/// A stream error (RFC 6120 §4.9): sent, then the stream is closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stream error {condition}")]
pub struct StreamError {
    /// §4.9.3 condition, e.g. `not-well-formed`.
    pub condition: &'static str,
    /// Optional text.
    pub text: Option<String>,
    /// Character data of the condition element itself: the host of
    /// `<see-other-host/>` (§4.9.3.19).
    pub content: Option<String>,
}

impl StreamError {
    /// A stream error with no text.
    pub fn new(condition: &'static str) -> StreamError {
        StreamError {
            condition,
            text: None,
            content: None,
        }
    }

    /// `<see-other-host/>` naming `host` (`host`, `host:port`, or
    /// `[v6]:port`): the client should reconnect there (§4.9.3.19).
    pub fn see_other_host(host: impl Into<String>) -> StreamError {
        StreamError {
            content: Some(host.into()),
            ..StreamError::new("see-other-host")
        }
    }

    /// Adds a text.
    #[must_use]
    pub fn with_text(mut self, text: impl Into<String>) -> StreamError {
        self.text = Some(text.into());
        self
    }

    /// The `<stream:error/>` element (RFC 6120 §4.9.2).
    pub fn to_element(&self) -> Element {
        let mut e = Element::new_static("error", ns::STREAMS);
        let mut condition = Element::new_static(self.condition, ns::STREAM_ERRORS);
        if let Some(c) = &self.content {
            condition.push_text(c.clone());
        }
        e.push_child(condition);
        if let Some(t) = &self.text {
            let mut text = Element::new_static("text", ns::STREAM_ERRORS);
            text.set_attr_ns("lang", ns::XML, "en");
            text.push_text(t.clone());
            e.push_child(text);
        }
        e
    }
}

impl From<rookery_xml::XmlError> for StreamError {
    fn from(e: rookery_xml::XmlError) -> StreamError {
        StreamError::new(e.condition()).with_text(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanza_error_round_trip() {
        let e = StanzaError::service_unavailable().with_text("nobody home");
        let mut m = Element::new_static("message", ns::CLIENT).with_attr("type", "error");
        m.push_child(e.to_element());
        assert_eq!(StanzaError::from_stanza(&m), Some(e));
    }

    #[test]
    fn stream_error_element() {
        let e = StreamError::new("not-well-formed");
        assert_eq!(
            String::from_utf8(e.to_element().to_bytes(ns::CLIENT)).unwrap(),
            "<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
        );
    }

    /// RFC 6120 §4.9.3.19, Example 4.9.3.19-1 (the host as character data).
    #[test]
    fn see_other_host_element() {
        let e = StreamError::see_other_host("[2001:41D0:1:A49b::1]:9222");
        assert_eq!(
            String::from_utf8(e.to_element().to_bytes(ns::CLIENT)).unwrap(),
            "<stream:error><see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>[2001:41D0:1:A49b::1]:9222</see-other-host></stream:error>"
        );
    }
}
