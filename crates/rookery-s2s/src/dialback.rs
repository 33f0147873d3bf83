//! XEP-0220: Server Dialback, version 1.1.1.
//!
//! Keys follow XEP-0185 (as XEP-0220 §2.1.1 shows):
//! `HMAC-SHA256(SHA256(secret), receiving + ' ' + originating + ' ' + stream id)`,
//! in lower-case hex. The secret is derived from the per-installation secret,
//! so a key can be checked again by any process of the installation and no
//! key is ever stored.

use hmac::{Hmac, Mac};
use rookery_xml::{escape_attr, escape_text};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The dialback secret of an installation: derived from its secret file, so
/// that it survives restarts and is the same on every node sharing the file,
/// without being the file's bytes themselves.
pub fn derive_secret(installation_secret: &[u8]) -> String {
    // Any key length is accepted by HMAC.
    let mut mac = HmacSha256::new_from_slice(installation_secret).unwrap_or_else(|_| {
        HmacSha256::new_from_slice(b"rookery").unwrap_or_else(|_| unreachable!())
    });
    mac.update(b"rookery xep-0220 dialback secret v1");
    to_hex(&mac.finalize().into_bytes())
}

/// XEP-0185 §3 / XEP-0220 §2.1.1: the dialback key for the stream `stream_id`
/// from `originating` (our domain) to `receiving` (the peer's).
pub fn key(secret: &str, receiving: &str, originating: &str, stream_id: &str) -> String {
    // XEP-0185 §3: the HMAC key is the hex SHA-256 of the secret.
    let hashed = to_hex(&Sha256::digest(secret.as_bytes()));
    let mut mac = HmacSha256::new_from_slice(hashed.as_bytes()).unwrap_or_else(|_| {
        HmacSha256::new_from_slice(b"rookery").unwrap_or_else(|_| unreachable!())
    });
    mac.update(receiving.as_bytes());
    mac.update(b" ");
    mac.update(originating.as_bytes());
    mac.update(b" ");
    mac.update(stream_id.as_bytes());
    to_hex(&mac.finalize().into_bytes())
}

/// Compares a received key with the expected one in constant time.
pub fn key_matches(expected: &str, received: &str) -> bool {
    let (a, b) = (expected.as_bytes(), received.trim().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Writes a dialback element with the conventional `db:` prefix (XEP-0220
/// §2.4.1: some deployments accept only that prefix; every stream header we
/// write declares it). `kind` is `result` or `verify`.
pub(crate) fn write(
    out: &mut Vec<u8>,
    kind: &str,
    from: &str,
    to: &str,
    id: Option<&str>,
    typ: Option<&str>,
    key: Option<&str>,
) {
    out.extend_from_slice(b"<db:");
    out.extend_from_slice(kind.as_bytes());
    for (name, value) in [
        ("from", Some(from)),
        ("to", Some(to)),
        ("id", id),
        ("type", typ),
    ] {
        if let Some(v) = value {
            out.push(b' ');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"='");
            escape_attr(out, v);
            out.push(b'\'');
        }
    }
    match (key, typ) {
        (Some(k), _) => {
            out.push(b'>');
            escape_text(out, k);
            out.extend_from_slice(b"</db:");
            out.extend_from_slice(kind.as_bytes());
            out.push(b'>');
        }
        // XEP-0220 §2.2.1 Example 10: the error of a dialback request.
        (None, Some("error")) => {
            out.extend_from_slice(
                b"><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:",
            );
            out.extend_from_slice(kind.as_bytes());
            out.push(b'>');
        }
        _ => out.extend_from_slice(b"/>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XEP-0220 §2.1.1, Example 1: the key and its inputs, verbatim.
    #[test]
    fn key_matches_the_xep_0220_example() {
        assert_eq!(
            key(
                "s3cr3tf0rd14lb4ck",
                "montague.example",
                "capulet.example",
                "D60000229F"
            ),
            "b4835385f37fe2895af6c196b59097b16862406db80559900d96bf6fa7d23df3"
        );
    }

    /// The same computation done independently with the hmac/sha2 crates.
    #[test]
    fn key_is_hmac_of_the_hashed_secret() {
        let hashed: String = Sha256::digest(b"another secret")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut mac = HmacSha256::new_from_slice(hashed.as_bytes()).unwrap();
        mac.update(b"b.example a.example abc");
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(key("another secret", "b.example", "a.example", "abc"), want);
        assert!(key_matches(&want, &format!("\n  {want}\n")));
        assert!(!key_matches(&want, &want[1..]));
    }

    #[test]
    fn derived_secret_is_stable_and_keyed() {
        assert_eq!(derive_secret(&[1; 32]), derive_secret(&[1; 32]));
        assert_ne!(derive_secret(&[1; 32]), derive_secret(&[2; 32]));
        assert_eq!(derive_secret(&[1; 32]).len(), 64);
    }

    #[test]
    fn writes_prefixed_elements() {
        let mut out = Vec::new();
        write(
            &mut out,
            "result",
            "a.example",
            "b.example",
            None,
            None,
            Some("k"),
        );
        write(
            &mut out,
            "verify",
            "b.example",
            "a.example",
            Some("i"),
            Some("valid"),
            None,
        );
        write(
            &mut out,
            "result",
            "b.example",
            "a.example",
            None,
            Some("error"),
            None,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<db:result from='a.example' to='b.example'>k</db:result>\
             <db:verify from='b.example' to='a.example' id='i' type='valid'/>\
             <db:result from='b.example' to='a.example' type='error'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:result>"
        );
    }
}
