//! XEP-0398 §4 (and the XEP-0153 business rules it stands in for): the
//! server puts the SHA-1 of the account's vCard photo into every available
//! presence its user sends, broadcast or directed (MUC joins included), so
//! that contacts and rooms see the avatar without the client fetching its
//! own vCard first.

use std::sync::Arc;

use base64::Engine as _;
use rookery_core::{Jid, Stanza};
use rookery_xml::{Element, ns};
use sha1::Digest as _;
use tracing::warn;

use crate::LocalSessions;

/// `vcard-temp:x:update` (XEP-0153 §2).
pub(crate) const NS_VCARD_UPDATE: &str = "vcard-temp:x:update";

/// The hex SHA-1 of the image in a stored vCard's `<PHOTO><BINVAL/>`, if
/// it has one that decodes (XEP-0153 §2: the hash of the image data).
pub(crate) fn photo_hash(vcard: &Element) -> Option<String> {
    let b64: String = vcard
        .child("PHOTO", ns::VCARD)?
        .child("BINVAL", ns::VCARD)?
        .text()
        .split_whitespace()
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .filter(|b| !b.is_empty())?;
    Some(
        sha1::Sha1::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// What §4 asks of one available presence: `None` when it stays as it is
/// (the client put its own `<photo/>`, empty or not, which the server
/// does not touch), else the presence with `<x><photo>hash</photo></x>`,
/// replacing an `<x/>` without a photo.
pub(crate) fn inject(el: &Element, hash: &str) -> Option<Element> {
    let x = el.child("x", NS_VCARD_UPDATE);
    if x.is_some_and(|x| x.child("photo", NS_VCARD_UPDATE).is_some()) {
        return None;
    }
    let mut out = el.clone();
    out.retain_children(|c| !c.is("x", NS_VCARD_UPDATE));
    out.push_child(
        Element::new_static("x", NS_VCARD_UPDATE)
            .with_child(Element::new_static("photo", NS_VCARD_UPDATE).with_text(hash)),
    );
    Some(out)
}

impl LocalSessions {
    /// The hash of `user`'s vCard photo, kept while the account is online.
    async fn avatar_hash(&self, user: &Jid) -> Option<Arc<str>> {
        if let Ok(cache) = self.avatar_hashes.lock()
            && let Some(h) = cache.get(user)
        {
            return h.clone();
        }
        let hash: Option<Arc<str>> = match self.stores().vcards.vcard(user).await {
            Ok(Some(xml)) => crate::modules::parse_stored(&xml)
                .ok()
                .and_then(|v| photo_hash(&v))
                .map(Arc::from),
            Ok(None) => None,
            Err(e) => {
                // Not cached: the next presence tries again.
                warn!(error = %e, user = %user, "vCard store unavailable: no avatar hash in presence");
                return None;
            }
        };
        if let Ok(mut cache) = self.avatar_hashes.lock() {
            cache.insert(user.clone(), hash.clone());
        }
        hash
    }

    /// The account's vCard changed: its next presence reads the hash again.
    pub(crate) fn vcard_changed(&self, user: &Jid) {
        if let Ok(mut cache) = self.avatar_hashes.lock() {
            cache.remove(user);
        }
    }

    /// An available presence of `from`'s, with its avatar hash (§4).
    pub(crate) async fn with_avatar_hash(&self, from: &Jid, stanza: Stanza) -> Stanza {
        let Some(hash) = self.avatar_hash(&from.to_bare()).await else {
            return stanza;
        };
        match inject(stanza.element(), &hash) {
            Some(el) => Stanza::new(
                stanza.kind(),
                stanza.from().cloned(),
                stanza.to().cloned(),
                el,
            ),
            None => stanza,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        Element::parse(xml).unwrap()
    }

    /// The SHA-1 of the bytes "avatar" (`printf avatar | sha1sum`).
    const HASH: &str = "9c3bb49ffea1144231cbe02d904b8d9018744e9d";

    #[test]
    fn photo_hash_is_the_sha1_of_the_image() {
        let v = el(
            "<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL>YXZh\n dGFy</BINVAL></PHOTO></vCard>",
        );
        assert_eq!(photo_hash(&v).as_deref(), Some(HASH));
        assert_eq!(photo_hash(&el("<vCard xmlns='vcard-temp'/>")), None);
        assert_eq!(
            photo_hash(&el(
                "<vCard xmlns='vcard-temp'><PHOTO><BINVAL>!!</BINVAL></PHOTO></vCard>"
            )),
            None
        );
    }

    /// §4 Examples 3–6.
    #[test]
    fn injection_follows_section_4() {
        // Example 3 → 4: added.
        let got = inject(&el("<presence xmlns='jabber:client'/>"), HASH).unwrap();
        assert_eq!(
            got.to_xml_string(),
            format!(
                "<presence xmlns='jabber:client'><x xmlns='vcard-temp:x:update'><photo>{HASH}</photo></x></presence>"
            )
        );
        // Example 5 → 6: an empty photo is left alone.
        let empty = el(
            "<presence xmlns='jabber:client'><x xmlns='vcard-temp:x:update'><photo/></x></presence>",
        );
        assert!(inject(&empty, HASH).is_none());
        // A photo the client set itself stays (MAY overwrite; we do not).
        let own = el(
            "<presence xmlns='jabber:client'><x xmlns='vcard-temp:x:update'><photo>abc</photo></x></presence>",
        );
        assert!(inject(&own, HASH).is_none());
        // An <x/> without a photo MUST be overwritten; other children stay.
        let bare_x = el(
            "<presence xmlns='jabber:client'><show>away</show><x xmlns='vcard-temp:x:update'/></presence>",
        );
        assert_eq!(
            inject(&bare_x, HASH).unwrap().to_xml_string(),
            format!(
                "<presence xmlns='jabber:client'><show>away</show><x xmlns='vcard-temp:x:update'><photo>{HASH}</photo></x></presence>"
            )
        );
    }
}
