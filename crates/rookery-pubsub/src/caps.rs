//! XEP-0115: Entity Capabilities, the server's side: the `<c/>` of a
//! presence, and the check of a disco#info answer against its `ver`
//! (§5.1 generation, §5.4 processing) before it is cached by `ver`.

use base64::Engine as _;
use rookery_xml::{Element, ns};
use sha1::Digest as _;

/// `http://jabber.org/protocol/caps`
pub const NS_CAPS: &str = "http://jabber.org/protocol/caps";

/// The `<c/>` of a presence: (hash, node, ver).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Caps {
    /// The hash function's name (`sha-1`, …).
    pub hash: String,
    /// The software's node URI.
    pub node: String,
    /// The verification string.
    pub ver: String,
}

impl Caps {
    /// The caps of a presence, if it has a `<c/>` with hash, node and ver
    /// (§5.4 step 1: without `hash` it is the legacy format, ignored).
    pub fn of_presence(presence: &Element) -> Option<Caps> {
        let c = presence.child("c", NS_CAPS)?;
        Some(Caps {
            hash: c.attr("hash")?.to_owned(),
            node: c.attr("node")?.to_owned(),
            ver: c.attr("ver")?.to_owned(),
        })
    }

    /// Whether this server can check the hash (§5.4 step 2).
    pub fn hash_supported(&self) -> bool {
        matches!(self.hash.as_str(), "sha-1" | "sha-256" | "sha-512")
    }

    /// The disco#info node to query (§6.2): `node#ver`.
    pub fn disco_node(&self) -> String {
        format!("{}#{}", self.node, self.ver)
    }
}

/// An extended disco form (XEP-0128): FORM_TYPE, and the fields sorted by
/// var with their values sorted.
type ExtendedForm = (String, Vec<(String, Vec<String>)>);

/// §5.1: the verification string S of a disco#info `<query/>`, or `None`
/// if §5.4 steps 3.3–3.5 find the answer ill-formed.
pub fn verification_string(query: &Element) -> Option<String> {
    let mut identities: Vec<String> = query
        .children()
        .filter(|c| c.is("identity", ns::DISCO_INFO))
        .map(|i| {
            format!(
                "{}/{}/{}/{}",
                i.attr("category").unwrap_or(""),
                i.attr("type").unwrap_or(""),
                i.attr_ns("lang", ns::XML).unwrap_or(""),
                i.attr("name").unwrap_or("")
            )
        })
        .collect();
    identities.sort();
    if identities.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    let mut features: Vec<&str> = query
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|f| f.attr("var"))
        .collect();
    features.sort_unstable();
    if features.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    let mut forms: Vec<ExtendedForm> = Vec::new();
    for x in query.children().filter(|c| c.is("x", ns::DATA_FORMS)) {
        let mut form_type: Option<Vec<String>> = None;
        let mut hidden = false;
        let mut fields = Vec::new();
        for f in x.children().filter(|f| f.is("field", ns::DATA_FORMS)) {
            let var = f.attr("var").unwrap_or("").to_owned();
            let mut values: Vec<String> = f
                .children()
                .filter(|v| v.is("value", ns::DATA_FORMS))
                .map(|v| v.text())
                .collect();
            if var == "FORM_TYPE" {
                hidden = f.attr("type") == Some("hidden");
                form_type = Some(values);
            } else {
                values.sort();
                fields.push((var, values));
            }
        }
        // Step 3.6: a form without a hidden FORM_TYPE is ignored.
        let Some(mut ft) = form_type.filter(|_| hidden) else {
            continue;
        };
        ft.dedup();
        if ft.len() != 1 {
            return None;
        }
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        forms.push((ft.remove(0), fields));
    }
    forms.sort_by(|a, b| a.0.cmp(&b.0));
    if forms.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    let mut s = String::new();
    for i in &identities {
        s.push_str(i);
        s.push('<');
    }
    for f in &features {
        s.push_str(f);
        s.push('<');
    }
    for (ft, fields) in &forms {
        s.push_str(ft);
        s.push('<');
        for (var, values) in fields {
            s.push_str(var);
            s.push('<');
            for v in values {
                s.push_str(v);
                s.push('<');
            }
        }
    }
    Some(s)
}

/// §5.1 step 9: the base64 hash of S with the named function.
pub fn hash(function: &str, s: &str) -> Option<String> {
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    Some(match function {
        "sha-1" => b64(&sha1::Sha1::digest(s.as_bytes())),
        "sha-256" => b64(&sha2::Sha256::digest(s.as_bytes())),
        "sha-512" => b64(&sha2::Sha512::digest(s.as_bytes())),
        _ => return None,
    })
}

/// §5.4 step 3: whether a disco#info answer matches the caps it was asked
/// for (then it may be cached for every entity announcing that `ver`).
pub fn verify(caps: &Caps, query: &Element) -> bool {
    verification_string(query)
        .and_then(|s| hash(&caps.hash, &s))
        .is_some_and(|h| h == caps.ver)
}

/// The features of a disco#info answer.
pub fn features(query: &Element) -> Vec<String> {
    query
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|f| f.attr("var").map(str::to_owned))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// §5.2, the simple generation example.
    #[test]
    fn simple_example() {
        let q = Element::parse(
            "<query xmlns='http://jabber.org/protocol/disco#info' node='http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0='>\
             <identity category='client' name='Exodus 0.9.1' type='pc'/>\
             <feature var='http://jabber.org/protocol/caps'/>\
             <feature var='http://jabber.org/protocol/disco#info'/>\
             <feature var='http://jabber.org/protocol/disco#items'/>\
             <feature var='http://jabber.org/protocol/muc'/></query>",
        )
        .unwrap();
        assert_eq!(
            verification_string(&q).unwrap(),
            "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<"
        );
        let caps = Caps {
            hash: "sha-1".into(),
            node: "http://code.google.com/p/exodus".into(),
            ver: "QgayPKawpkPSDYmwT/WM94uAlu0=".into(),
        };
        assert!(verify(&caps, &q));
        let forged = Caps {
            ver: "AAAAPKawpkPSDYmwT/WM94uAlu0=".into(),
            ..caps.clone()
        };
        assert!(!verify(&forged, &q));
    }

    /// §5.3, the complex generation example (languages, an extended form).
    #[test]
    fn complex_example() {
        let q = Element::parse(
            "<query xmlns='http://jabber.org/protocol/disco#info' node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>\
             <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
             <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>\
             <feature var='http://jabber.org/protocol/caps'/>\
             <feature var='http://jabber.org/protocol/disco#info'/>\
             <feature var='http://jabber.org/protocol/disco#items'/>\
             <feature var='http://jabber.org/protocol/muc'/>\
             <x xmlns='jabber:x:data' type='result'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
             <field var='ip_version' type='text-multi' ><value>ipv4</value><value>ipv6</value></field>\
             <field var='os'><value>Mac</value></field>\
             <field var='os_version'><value>10.5.1</value></field>\
             <field var='software'><value>Psi</value></field>\
             <field var='software_version'><value>0.11</value></field>\
             </x></query>",
        )
        .unwrap();
        let caps = Caps {
            hash: "sha-1".into(),
            node: "http://psi-im.org".into(),
            ver: "q07IKJEyjvHSyhy//CH0CxmKi8w=".into(),
        };
        assert!(verify(&caps, &q));
    }

    /// §5.4 steps 3.3 and 3.4: duplicates make the answer ill-formed.
    #[test]
    fn duplicates_are_ill_formed() {
        let q = Element::parse(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity category='client' type='pc'/>\
             <feature var='a'/><feature var='a'/></query>",
        )
        .unwrap();
        assert_eq!(verification_string(&q), None);
    }

    #[test]
    fn caps_of_presence() {
        let p = Element::parse(
            "<presence xmlns='jabber:client'><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://code.google.com/p/exodus' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/></presence>",
        )
        .unwrap();
        let c = Caps::of_presence(&p).unwrap();
        assert!(c.hash_supported());
        assert_eq!(
            c.disco_node(),
            "http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0="
        );
    }
}
