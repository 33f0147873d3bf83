//! XEP-0045 helpers for the MUC tests: joining, creating and configuring
//! rooms on `conference.localhost` with a raw client.

use rookery_xml::Element;

use crate::RawClient;

/// XEP-0045 namespace.
pub const MUC: &str = "http://jabber.org/protocol/muc";
/// `muc#user`
pub const USER: &str = "http://jabber.org/protocol/muc#user";

/// An element as XML text.
pub fn xml(e: &Element) -> String {
    e.to_xml_string()
}

/// True for the self-presence of a join (status 110).
pub fn is_self(e: &Element) -> bool {
    e.name() == "presence"
        && e.child("x", USER).is_some_and(|x| {
            x.children()
                .any(|s| s.name() == "status" && s.attr("code") == Some("110"))
        })
}

/// Status codes of a MUC presence or message.
pub fn codes(e: &Element) -> Vec<String> {
    e.child("x", USER)
        .map(|x| {
            x.children()
                .filter(|s| s.name() == "status")
                .filter_map(|s| s.attr("code").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Sends a join presence and reads everything up to the subject message
/// (which the service sends last); returns it all, in order.
pub async fn join(c: &mut RawClient, occupant: &str, x_inner: &str) -> Vec<Element> {
    c.send(&format!(
        "<presence to='{occupant}'><x xmlns='{MUC}'>{x_inner}</x></presence>"
    ))
    .await;
    let mut got = Vec::new();
    loop {
        let e = c.next_stanza().await;
        let done = e.name() == "message" && e.child("subject", "jabber:client").is_some();
        let error = e.attr("type") == Some("error");
        got.push(e);
        if done || error {
            return got;
        }
    }
}

/// Creates an instant room (§10.1.2) owned by `c`.
pub async fn create(c: &mut RawClient, room: &str, nick: &str) {
    let got = join(c, &format!("{room}@conference.localhost/{nick}"), "").await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(codes(&got[0]), ["110", "201"]);
    let r = c
        .iq(&format!(
            "<iq type='set' to='{room}@conference.localhost' id='inst'><query xmlns='{MUC}#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>"
        ))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
}

/// Submits room configuration fields (var, value).
pub async fn configure(c: &mut RawClient, room: &str, fields: &[(&str, &str)]) {
    let fs: String = fields
        .iter()
        .map(|(v, x)| format!("<field var='muc#roomconfig_{v}'><value>{x}</value></field>"))
        .collect();
    c.send(&format!(
        "<iq type='set' to='{room}@conference.localhost' id='cfg'><query xmlns='{MUC}#owner'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>{MUC}#roomconfig</value></field>{fs}</x></query></iq>"
    ))
    .await;
    let (r, _) = c.until(|e| e.attr("id") == Some("cfg")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
}

/// The id of the XEP-0359 `<stanza-id/>` by `by` (an archive: a room's
/// bare JID) that a message carries; panics if there is none.
pub fn stanza_id(m: &Element, by: &str) -> String {
    m.children()
        .find(|c| c.is("stanza-id", "urn:xmpp:sid:0") && c.attr("by") == Some(by))
        .and_then(|c| c.attr("id"))
        .unwrap_or_else(|| panic!("no stanza-id by {by} in {m}"))
        .to_owned()
}
