//! Every XML namespace Rookery knows by name, in one place.
//!
//! Known namespaces are interned as `&'static str` so that the parsed tree of a
//! typical stanza allocates nothing for its namespaces.

use std::borrow::Cow;

/// RFC 6120 §4.8.1: the stream namespace (`stream:` prefix).
pub const STREAMS: &str = "http://etherx.jabber.org/streams";
/// RFC 6120 §4.8.2: content namespace of client-to-server streams.
pub const CLIENT: &str = "jabber:client";
/// RFC 6120 §4.8.2: content namespace of server-to-server streams.
pub const SERVER: &str = "jabber:server";
/// XEP-0220 §2.4.1: Server Dialback elements (`db:` prefix).
pub const DIALBACK: &str = "jabber:server:dialback";
/// XEP-0220 §2.4.2: the dialback stream feature.
pub const DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";
/// RFC 6120 §4.9.3: stream error conditions.
pub const STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// RFC 6120 §8.3: stanza error conditions.
pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// RFC 6120 §5.4: STARTTLS.
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// RFC 6120 §6.4: SASL.
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// RFC 6120 §7: resource binding.
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// RFC 3921 §3 (kept by RFC 6121 as optional): the legacy session element.
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// XML 1.0 namespace bound to the `xml:` prefix.
pub const XML: &str = "http://www.w3.org/XML/1998/namespace";
/// XEP-0030: service discovery (info).
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// XEP-0030: service discovery (items).
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// XEP-0199: XMPP ping.
pub const PING: &str = "urn:xmpp:ping";
/// XEP-0092: software version.
pub const VERSION: &str = "jabber:iq:version";
/// XEP-0202: entity time.
pub const TIME: &str = "urn:xmpp:time";
/// XEP-0077: in-band registration (iq payload).
pub const REGISTER: &str = "jabber:iq:register";
/// XEP-0077: in-band registration stream feature.
pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
/// XEP-0440: SASL channel-binding type capability.
pub const SASL_CB: &str = "urn:xmpp:sasl-cb:0";
/// XEP-0004: data forms.
pub const DATA_FORMS: &str = "jabber:x:data";
/// XEP-0054: vcard-temp.
pub const VCARD: &str = "vcard-temp";
/// XEP-0049: private XML storage.
pub const PRIVATE: &str = "jabber:iq:private";
/// XEP-0012: last activity.
pub const LAST: &str = "jabber:iq:last";
/// RFC 6121 §2: roster.
pub const ROSTER: &str = "jabber:iq:roster";
/// RFC 7395 §3.3: WebSocket framing.
pub const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

const KNOWN: &[&str] = &[
    CLIENT,
    STREAMS,
    SERVER,
    DIALBACK,
    DIALBACK_FEATURE,
    STREAM_ERRORS,
    STANZAS,
    TLS,
    SASL,
    BIND,
    SESSION,
    XML,
    DISCO_INFO,
    DISCO_ITEMS,
    PING,
    VERSION,
    TIME,
    REGISTER,
    REGISTER_FEATURE,
    SASL_CB,
    DATA_FORMS,
    VCARD,
    PRIVATE,
    LAST,
    ROSTER,
    FRAMING,
    "http://jabber.org/protocol/chatstates",
    "urn:xmpp:receipts",
    "urn:xmpp:chat-markers:0",
    "urn:xmpp:sid:0",
    "urn:xmpp:delay",
    "urn:xmpp:hints",
    "urn:xmpp:carbons:2",
    "urn:xmpp:mam:2",
    "urn:xmpp:sm:3",
    "http://jabber.org/protocol/caps",
    "vcard-temp:x:update",
    "jabber:x:oob",
    "eu.siacs.conversations.axolotl",
    "urn:xmpp:omemo:2",
];

/// Returns a `'static` copy of a known namespace, or an owned one.
pub fn intern(ns: &str) -> Cow<'static, str> {
    match KNOWN.iter().find(|k| **k == ns) {
        Some(k) => Cow::Borrowed(*k),
        None => Cow::Owned(ns.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_namespaces_are_borrowed() {
        assert!(matches!(intern(CLIENT), Cow::Borrowed(_)));
        assert!(matches!(intern("urn:example:other"), Cow::Owned(_)));
    }
}
