//! Self-authenticating slot URLs (docs/decisions/0020-http-upload.md).
//!
//! The PUT URL carries everything the HTTP side must check — the slot id,
//! the file name, size and content type, and the expiry — with an
//! HMAC-SHA256 over them under a key only the installation knows. So any
//! process that serves the `[web]` listener (a cm in a cluster) checks a
//! PUT on its own, without asking the service that granted the slot and
//! without a slot table to share.
//!
//! ```text
//! PUT {base}/upload/{id}/{name}?expires={unix}&size={bytes}&type={type}&sig={mac}
//! GET {base}/upload/{id}/{name}
//! ```
//!
//! `id` is 128 random bits in lowercase hex (XEP-0363 §9.3: "long randomized
//! parts"); it is also the only name a file has on disk.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The path prefix of slot URLs on the web listener.
pub const PATH_PREFIX: &str = "/upload";

/// RFC 3986 `unreserved` stays as it is; everything else (including `/`,
/// `?`, `#`, `%`, spaces and non-ASCII bytes) is percent-encoded.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A slot id: 32 lowercase hex digits. Anything else is refused before a
/// file is looked at, so no request path ever reaches the file system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileId(String);

impl FileId {
    /// A new random id.
    pub fn random() -> FileId {
        FileId(format!("{:032x}", rand::random::<u128>()))
    }

    /// Parses an id; `None` unless it is exactly 32 lowercase hex digits.
    pub fn parse(s: &str) -> Option<FileId> {
        (s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| FileId(s.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for FileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a slot allows: one PUT of exactly this file before `expires`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The id of the file.
    pub id: FileId,
    /// The file name the client asked for (kept in the URL, XEP-0363 §4).
    pub filename: String,
    /// Bytes the PUT must carry (`Content-Length`).
    pub size: u64,
    /// The `Content-Type` the PUT must carry; empty when the request named
    /// none (then any allowed type is taken, XEP-0363 §7).
    pub content_type: String,
    /// Unix time after which the PUT URL is refused.
    pub expires: u64,
}

/// Signs and checks slots with the installation's key.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

/// Why a PUT URL was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// A parameter is missing or malformed.
    #[error("malformed slot URL")]
    Malformed,
    /// The MAC does not match (forged or altered URL).
    #[error("bad slot signature")]
    BadSignature,
    /// The slot's time is over.
    #[error("slot expired")]
    Expired,
}

impl Signer {
    /// A signer with `key` (at least 16 bytes; the caller derives it).
    pub fn new(key: &[u8]) -> Signer {
        Signer { key: key.to_vec() }
    }

    /// A key derived from the installation secret, so that the raw secret
    /// (also used for SASL) never signs anything else.
    pub fn from_installation_secret(secret: &[u8]) -> Signer {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"rookery XEP-0363 slot key v1");
        Signer::new(&mac.finalize().into_bytes())
    }

    fn mac(&self, slot: &Slot) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        // Length-prefixed fields: no two different slots sign the same bytes.
        for field in [
            b"v1".as_slice(),
            slot.id.as_str().as_bytes(),
            slot.filename.as_bytes(),
            slot.size.to_string().as_bytes(),
            slot.content_type.as_bytes(),
            slot.expires.to_string().as_bytes(),
        ] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        mac
    }

    /// The path of the GET URL (also the path of the PUT URL).
    pub fn get_path(slot: &Slot) -> String {
        format!(
            "{PATH_PREFIX}/{}/{}",
            slot.id,
            utf8_percent_encode(&slot.filename, ENCODE)
        )
    }

    /// The path and query of the PUT URL.
    pub fn put_path(&self, slot: &Slot) -> String {
        let sig = B64.encode(self.mac(slot).finalize().into_bytes());
        format!(
            "{}?expires={}&size={}&type={}&sig={sig}",
            Signer::get_path(slot),
            slot.expires,
            slot.size,
            utf8_percent_encode(&slot.content_type, ENCODE),
        )
    }

    /// Checks a PUT: `id` and `filename` from the (decoded) path, `query`
    /// as received. `now`: unix time.
    pub fn verify(
        &self,
        id: FileId,
        filename: &str,
        query: &str,
        now: u64,
    ) -> Result<Slot, SlotError> {
        let (mut expires, mut size, mut content_type, mut sig) = (None, None, None, None);
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').ok_or(SlotError::Malformed)?;
            let v = percent_decode_str(v)
                .decode_utf8()
                .map_err(|_| SlotError::Malformed)?
                .into_owned();
            let slot = match k {
                "expires" => &mut expires,
                "size" => &mut size,
                "type" => &mut content_type,
                "sig" => &mut sig,
                _ => return Err(SlotError::Malformed),
            };
            if slot.replace(v).is_some() {
                return Err(SlotError::Malformed);
            }
        }
        let (Some(expires), Some(size), Some(content_type), Some(sig)) =
            (expires, size, content_type, sig)
        else {
            return Err(SlotError::Malformed);
        };
        let number = |s: &str| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten()
                .ok_or(SlotError::Malformed)
        };
        let slot = Slot {
            id,
            filename: filename.to_owned(),
            size: number(&size)?,
            content_type,
            expires: number(&expires)?,
        };
        let sig = B64.decode(sig).map_err(|_| SlotError::BadSignature)?;
        self.mac(&slot)
            .verify_slice(&sig)
            .map_err(|_| SlotError::BadSignature)?;
        if now >= slot.expires {
            return Err(SlotError::Expired);
        }
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn slot() -> Slot {
        Slot {
            id: FileId::parse("4a771ac1f0b24a4a9700f2a26fa2bb67").unwrap(),
            filename: "très cool.jpg".into(),
            size: 23456,
            content_type: "image/jpeg".into(),
            expires: 1000,
        }
    }

    fn split(path: &str) -> (&str, &str) {
        path.split_once('?').unwrap()
    }

    #[test]
    fn urls_are_percent_encoded() {
        let s = Signer::new(b"0123456789abcdef");
        assert_eq!(
            Signer::get_path(&slot()),
            "/upload/4a771ac1f0b24a4a9700f2a26fa2bb67/tr%C3%A8s%20cool.jpg"
        );
        let put = s.put_path(&slot());
        assert!(put.starts_with(
            "/upload/4a771ac1f0b24a4a9700f2a26fa2bb67/tr%C3%A8s%20cool.jpg?expires=1000&size=23456&type=image%2Fjpeg&sig="
        ));
        let odd = Slot {
            filename: "../a/b\\c?d#e%f".into(),
            ..slot()
        };
        assert_eq!(
            Signer::get_path(&odd),
            "/upload/4a771ac1f0b24a4a9700f2a26fa2bb67/..%2Fa%2Fb%5Cc%3Fd%23e%25f"
        );
    }

    #[test]
    fn verifies_its_own_slots_only() {
        let s = Signer::new(b"0123456789abcdef");
        let put = s.put_path(&slot());
        let (_, q) = split(&put);
        let id = slot().id;
        assert_eq!(s.verify(id.clone(), "très cool.jpg", q, 999), Ok(slot()));
        assert_eq!(
            s.verify(id.clone(), "très cool.jpg", q, 1000),
            Err(SlotError::Expired)
        );
        // Another key, another name, another id, an altered field.
        let other = Signer::new(b"fedcba9876543210");
        assert_eq!(
            other.verify(id.clone(), "très cool.jpg", q, 999),
            Err(SlotError::BadSignature)
        );
        assert_eq!(
            s.verify(id.clone(), "tres cool.jpg", q, 999),
            Err(SlotError::BadSignature)
        );
        assert_eq!(
            s.verify(FileId::random(), "très cool.jpg", q, 999),
            Err(SlotError::BadSignature)
        );
        for (from, to) in [
            ("size=23456", "size=23457"),
            ("expires=1000", "expires=2000"),
            ("type=image%2Fjpeg", "type=text%2Fhtml"),
        ] {
            let q2 = q.replace(from, to);
            assert_eq!(
                s.verify(id.clone(), "très cool.jpg", &q2, 999),
                Err(SlotError::BadSignature),
                "{q2}"
            );
        }
        for bad in [
            "",
            "expires=1000",
            &format!("{q}&size=1"),
            &format!("{q}&x=1"),
            &q.replace("size=23456", "size=-1"),
            &q.replace("size=23456", "size="),
        ] {
            assert_eq!(
                s.verify(id.clone(), "très cool.jpg", bad, 999),
                Err(SlotError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn ids() {
        assert!(FileId::parse(FileId::random().as_str()).is_some());
        for bad in [
            "",
            "..",
            "%2e%2e",
            "4A771AC1F0B24A4A9700F2A26FA2BB67",
            "4a771ac1f0b24a4a9700f2a26fa2bb6",
            "4a771ac1f0b24a4a9700f2a26fa2bb67/",
            "..\\4a771ac1f0b24a4a9700f2a26fa2bb",
            "/etc/passwd",
        ] {
            assert!(FileId::parse(bad).is_none(), "{bad}");
        }
    }
}
