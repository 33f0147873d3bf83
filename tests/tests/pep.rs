//! XEP-0163 Personal Eventing Protocol black-box, with the flows clients
//! run: fresh users, mutual subscriptions, XEP-0115 caps with `+notify`,
//! and the exact XML each contact receives (the spec examples' payloads).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use rookery_e2e::{RawClient, TestServer, assert_reply_xml};
use rookery_xml::Element;
use sha1::Digest as _;

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const TUNE: &str = "http://jabber.org/protocol/tune";
const CAPS_NODE: &str = "https://example.org/testclient";

/// XEP-0115 §5.1 for an identity `client/pc//Test` and these features.
fn ver(features: &[&str]) -> String {
    let mut f: Vec<&str> = features.to_vec();
    f.sort_unstable();
    let mut s = String::from("client/pc//Test<");
    for x in f {
        s.push_str(x);
        s.push('<');
    }
    base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(s.as_bytes()))
}

/// The features of a test client: disco, caps, and `+notify` for `nodes`.
fn features(nodes: &[&str]) -> Vec<String> {
    let mut f = vec![
        DISCO_INFO.to_owned(),
        "http://jabber.org/protocol/caps".to_owned(),
    ];
    f.extend(nodes.iter().map(|n| format!("{n}+notify")));
    f
}

async fn server_with(f: impl FnOnce(&mut rookery::config::Config)) -> TestServer {
    let s = TestServer::start_with(f).await;
    for u in ["alice", "bob", "carol", "dave"] {
        s.add_user(u, "pw").await;
    }
    s
}

async fn server() -> TestServer {
    server_with(|_| {}).await
}

/// Makes the subscription between two online users mutual (`both`).
async fn befriend(a: &mut RawClient, a_jid: &str, b: &mut RawClient, b_jid: &str) {
    subscribe(a, a_jid, b, b_jid).await;
    subscribe(b, b_jid, a, a_jid).await;
    sync(a).await;
    sync(b).await;
}

/// `w` subscribes to `o`'s presence and `o` approves (RFC 6121 §3.1).
async fn subscribe(w: &mut RawClient, wj: &str, o: &mut RawClient, oj: &str) {
    w.send(&format!("<presence to='{oj}' type='subscribe'/>"))
        .await;
    w.roster_push().await;
    o.until(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"))
        .await;
    o.send(&format!("<presence to='{wj}' type='subscribed'/>"))
        .await;
    o.roster_push().await;
    w.roster_push().await;
}

/// Waits until the server handled everything `c` sent before.
async fn sync(c: &mut RawClient) {
    let r = c
        .iq("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
}

/// Sends available presence with caps for `notify` nodes and answers the
/// server's disco#info query for them (XEP-0115 §6.2), checking its exact
/// form; returns the stanzas seen meanwhile.
async fn caps_presence(c: &mut RawClient, me: &str, tag: &str, notify: &[&str]) -> Vec<Element> {
    let mut feats = features(notify);
    feats.push(format!("urn:test:{tag}"));
    let refs: Vec<&str> = feats.iter().map(String::as_str).collect();
    let v = ver(&refs);
    c.send(&format!(
        "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{CAPS_NODE}' ver='{v}'/></presence>"
    ))
    .await;
    let (q, mut seen) = c
        .until(|e| e.name() == "iq" && e.child("query", DISCO_INFO).is_some())
        .await;
    let id = q.attr("id").unwrap().to_owned();
    let from = q.attr("from").unwrap().to_owned();
    assert_reply_xml(
        &q,
        &format!(
            "<iq type='get' id='{id}' from='{from}' to='{me}'><query xmlns='{DISCO_INFO}' node='{CAPS_NODE}#{v}'/></iq>"
        ),
    );
    let mut answer = format!(
        "<iq type='result' to='{from}' id='{id}'><query xmlns='{DISCO_INFO}' node='{CAPS_NODE}#{v}'><identity category='client' type='pc' name='Test'/>"
    );
    for f in &feats {
        answer.push_str(&format!("<feature var='{f}'/>"));
    }
    answer.push_str("</query></iq>");
    c.send(&answer).await;
    // The answer is handled before the ping that follows it.
    c.send("<iq type='get' id='capsync'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let (r, more) = c
        .until(|e| e.name() == "iq" && e.attr("id") == Some("capsync"))
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    seen.extend(more);
    seen.retain(|e| e.name() != "presence");
    seen
}

const TUNE_ITEM: &str = "<tune xmlns='http://jabber.org/protocol/tune'><artist>Gerald Finzi</artist><length>255</length><source>Music for Campion</source><title>Introduction (Allegro vigoroso)</title><track>1</track></tune>";

async fn publish_tune(c: &mut RawClient, id: &str) -> Element {
    c.iq(&format!(
        "<iq type='set' id='pub-{id}'><pubsub xmlns='{PUBSUB}'><publish node='{TUNE}'><item id='{id}'>{TUNE_ITEM}</item></publish></pubsub></iq>"
    ))
    .await
}

/// The next headline message.
async fn next_event(c: &mut RawClient) -> Element {
    c.until(|e| e.name() == "message").await.0
}

/// XEP-0163 §4.3.3 / example 4: a contact whose caps ask for the tune gets
/// it; the publisher gets the ItemID (XEP-0060 example 100).
#[tokio::test]
async fn publish_notifies_contacts_that_want_it() {
    let s = server().await;
    let mut a = s.online("alice", "home").await;
    let mut b = s.online("bob", "phone").await;
    let mut d = s.online("dave", "desk").await;
    befriend(&mut a, "alice@localhost", &mut b, "bob@localhost").await;
    befriend(&mut a, "alice@localhost", &mut d, "dave@localhost").await;
    caps_presence(&mut b, "bob@localhost/phone", "bob", &[TUNE]).await;
    // Dave's client does not want tunes.
    caps_presence(
        &mut d,
        "dave@localhost/desk",
        "dave",
        &["urn:xmpp:avatar:metadata"],
    )
    .await;
    sync(&mut a).await;

    let r = publish_tune(&mut a, "bffe6584-0f5f-4ff5-8d83-a49357a6e3dd").await;
    assert_reply_xml(
        &r,
        &format!(
            "<iq type='result' id='pub-bffe6584-0f5f-4ff5-8d83-a49357a6e3dd' to='alice@localhost/home'><pubsub xmlns='{PUBSUB}'><publish node='{TUNE}'><item id='bffe6584-0f5f-4ff5-8d83-a49357a6e3dd'/></publish></pubsub></iq>"
        ),
    );
    let m = next_event(&mut b).await;
    assert_reply_xml(
        &m,
        &format!(
            "<message from='alice@localhost' to='bob@localhost/phone' type='headline'><event xmlns='{EVENT}'><items node='{TUNE}'><item id='bffe6584-0f5f-4ff5-8d83-a49357a6e3dd'>{TUNE_ITEM}</item></items></event></message>"
        ),
    );
    // Dave got nothing before this message.
    a.send("<message to='dave@localhost/desk' type='chat' id='m1'><body>after</body></message>")
        .await;
    let next = d.next_non_presence().await;
    assert_eq!(next.attr("id"), Some("m1"), "{next}");

    // Retraction with notify (XEP-0060 §7.2.2.1, example 117).
    a.iq_ok(&format!(
            "<iq type='set' id='ret1'><pubsub xmlns='{PUBSUB}'><retract node='{TUNE}' notify='true'><item id='bffe6584-0f5f-4ff5-8d83-a49357a6e3dd'/></retract></pubsub></iq>"
        )).await;
    assert_reply_xml(
        &next_event(&mut b).await,
        &format!(
            "<message from='alice@localhost' to='bob@localhost/phone' type='headline'><event xmlns='{EVENT}'><items node='{TUNE}'><retract id='bffe6584-0f5f-4ff5-8d83-a49357a6e3dd'/></items></event></message>"
        ),
    );
    // Deletion (§8.4.2, example 158).
    a.iq_ok(&format!(
            "<iq type='set' id='del1'><pubsub xmlns='{PUBSUB}#owner'><delete node='{TUNE}'/></pubsub></iq>"
        )).await;
    assert_reply_xml(
        &next_event(&mut b).await,
        &format!(
            "<message from='alice@localhost' to='bob@localhost/phone' type='headline'><event xmlns='{EVENT}'><delete node='{TUNE}'/></event></message>"
        ),
    );
    let r = a
        .iq(&format!(
            "<iq type='get' id='gone'><pubsub xmlns='{PUBSUB}'><items node='{TUNE}'/></pubsub></iq>"
        ))
        .await;
    assert_reply_xml(
        &r,
        "<iq type='error' id='gone' to='alice@localhost/home'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
    );
}

/// XEP-0163 §4.3.1: the last item when a contact comes online, once its
/// caps are known; the account's own other resources get it too.
#[tokio::test]
async fn last_item_on_available_presence() {
    let s = server().await;
    let mut a = s.online("alice", "home").await;
    let mut b = s.online("bob", "phone").await;
    befriend(&mut a, "alice@localhost", &mut b, "bob@localhost").await;
    let r = publish_tune(&mut a, "t1").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    drop(b);
    // Bob's new session: the last item arrives once the caps are answered.
    let mut b = s.login("bob", "pw", "tablet").await;
    b.iq("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let mut got = caps_presence(&mut b, "bob@localhost/tablet", "bob2", &[TUNE]).await;
    if got.iter().all(|e| e.name() != "message") {
        got.push(next_event(&mut b).await);
    }
    let m = got.iter().find(|e| e.name() == "message").unwrap();
    assert_reply_xml(
        m,
        &format!(
            "<message from='alice@localhost' to='bob@localhost/tablet' type='headline'><event xmlns='{EVENT}'><items node='{TUNE}'><item id='t1'>{TUNE_ITEM}</item></items></event></message>"
        ),
    );
    // Alice's second resource with the same caps as Bob's: cached, the
    // last item comes at once.
    let mut a2 = s.login("alice", "pw", "work").await;
    let mut feats = features(&[TUNE]);
    feats.push("urn:test:bob2".into());
    let refs: Vec<&str> = feats.iter().map(String::as_str).collect();
    a2.send(&format!(
        "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{CAPS_NODE}' ver='{}'/></presence>",
        ver(&refs)
    ))
    .await;
    assert_reply_xml(
        &next_event(&mut a2).await,
        &format!(
            "<message from='alice@localhost' to='alice@localhost/work' type='headline'><event xmlns='{EVENT}'><items node='{TUNE}'><item id='t1'>{TUNE_ITEM}</item></items></event></message>"
        ),
    );
}

/// A caps answer that does not hash to its `ver` is not believed
/// (XEP-0115 §5.4 step 3.9): no notifications follow.
#[tokio::test]
async fn forged_caps_are_not_cached() {
    let s = server().await;
    let mut a = s.online("alice", "home").await;
    let mut b = s.online("bob", "phone").await;
    befriend(&mut a, "alice@localhost", &mut b, "bob@localhost").await;
    let v = ver(&[DISCO_INFO, "urn:test:honest"]);
    b.send(&format!(
        "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{CAPS_NODE}' ver='{v}'/></presence>"
    ))
    .await;
    let (q, _) = b
        .until(|e| e.name() == "iq" && e.child("query", DISCO_INFO).is_some())
        .await;
    let (id, from) = (q.attr("id").unwrap(), q.attr("from").unwrap());
    b.send(&format!(
        "<iq type='result' to='{from}' id='{id}'><query xmlns='{DISCO_INFO}' node='{CAPS_NODE}#{v}'><identity category='client' type='pc' name='Test'/><feature var='{DISCO_INFO}'/><feature var='{TUNE}+notify'/></query></iq>"
    ))
    .await;
    sync(&mut b).await;
    publish_tune(&mut a, "t1").await;
    a.send("<message to='bob@localhost/phone' type='chat' id='m1'><body>after</body></message>")
        .await;
    let next = b.next_non_presence().await;
    assert_eq!(next.attr("id"), Some("m1"), "{next}");
}

/// An error reply; `from` empty for an iq the account sent without `to`.
fn err(id: &str, from: &str, to: &str, ty: &str, cond: &str, app: Option<&str>) -> String {
    let app = app
        .map(|a| format!("<{a} xmlns='http://jabber.org/protocol/pubsub#errors'/>"))
        .unwrap_or_default();
    let from = if from.is_empty() {
        String::new()
    } else {
        format!(" from='{from}'")
    };
    format!(
        "<iq type='error' id='{id}'{from} to='{to}'><error type='{ty}'><{cond} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>{app}</error></iq>"
    )
}

/// The errors of XEP-0060 §6.5.9, §7.1.3 and XEP-0223, as clients get them.
#[tokio::test]
async fn access_models_and_bad_input() {
    let s = server_with(|c| c.pubsub.max_item_bytes = 300).await;
    let mut a = s.online("alice", "home").await;
    let mut b = s.online("bob", "phone").await;
    let mut c = s.online("carol", "pc").await;
    befriend(&mut a, "alice@localhost", &mut b, "bob@localhost").await;
    publish_tune(&mut a, "t1").await;

    // Someone else's PEP node (XEP-0060 §7.1.3.1).
    let r = b
        .iq(&format!(
            "<iq type='set' to='alice@localhost' id='p1'><pubsub xmlns='{PUBSUB}'><publish node='{TUNE}'><item>{TUNE_ITEM}</item></publish></pubsub></iq>"
        ))
        .await;
    assert_reply_xml(
        &r,
        &err(
            "p1",
            "alice@localhost",
            "bob@localhost/phone",
            "auth",
            "forbidden",
            None,
        ),
    );
    let r = b
        .iq(&format!(
            "<iq type='set' to='alice@localhost' id='p2'><pubsub xmlns='{PUBSUB}'><publish node='urn:new'><item><x xmlns='urn:new'/></item></publish></pubsub></iq>"
        ))
        .await;
    assert_reply_xml(
        &r,
        &err(
            "p2",
            "alice@localhost",
            "bob@localhost/phone",
            "auth",
            "forbidden",
            None,
        ),
    );

    // A subscriber reads (§6.5.2, example 78); a stranger may not (§6.5.9.6).
    let r = b
        .iq(&format!(
            "<iq type='get' to='alice@localhost' id='i1'><pubsub xmlns='{PUBSUB}'><items node='{TUNE}'/></pubsub></iq>"
        ))
        .await;
    assert_reply_xml(
        &r,
        &format!(
            "<iq type='result' id='i1' from='alice@localhost' to='bob@localhost/phone'><pubsub xmlns='{PUBSUB}'><items node='{TUNE}'><item id='t1'>{TUNE_ITEM}</item></items></pubsub></iq>"
        ),
    );
    let r = c
        .iq(&format!(
            "<iq type='get' to='alice@localhost' id='i2'><pubsub xmlns='{PUBSUB}'><items node='{TUNE}'/></pubsub></iq>"
        ))
        .await;
    assert_reply_xml(
        &r,
        &err(
            "i2",
            "alice@localhost",
            "carol@localhost/pc",
            "auth",
            "not-authorized",
            Some("presence-subscription-required"),
        ),
    );
    // Unknown node (§6.5.9.11).
    let r = b
        .iq(&format!(
            "<iq type='get' to='alice@localhost' id='i3'><pubsub xmlns='{PUBSUB}'><items node='urn:none'/></pubsub></iq>"
        ))
        .await;
    assert_reply_xml(
        &r,
        &err(
            "i3",
            "alice@localhost",
            "bob@localhost/phone",
            "cancel",
            "item-not-found",
            None,
        ),
    );

    // Too big (§7.1.3.5).
    let big = "z".repeat(400);
    let r = a
        .iq(&format!(
            "<iq type='set' id='big'><pubsub xmlns='{PUBSUB}'><publish node='urn:big'><item><x xmlns='urn:big'>{big}</x></item></publish></pubsub></iq>"
        ))
        .await;
    assert_reply_xml(
        &r,
        "<iq type='error' id='big' to='alice@localhost/home'><error type='modify'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>items are limited to 300 bytes</text><payload-too-big xmlns='http://jabber.org/protocol/pubsub#errors'/></error></iq>",
    );

    // Publish-options that the node does not match (XEP-0060 §7.1.5,
    // example 128).
    let r = a
        .iq(&format!(
            "<iq type='set' id='po'><pubsub xmlns='{PUBSUB}'><publish node='{TUNE}'><item id='t2'>{TUNE_ITEM}</item></publish><publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#publish-options</value></field><field var='pubsub#access_model'><value>open</value></field></x></publish-options></pubsub></iq>"
        ))
        .await;
    assert_eq!(r.attr("type"), Some("error"), "{r}");
    let e = r.child("error", "jabber:client").unwrap();
    assert_eq!(e.attr("type"), Some("cancel"));
    assert!(
        e.child("conflict", "urn:ietf:params:xml:ns:xmpp-stanzas")
            .is_some(),
        "{r}"
    );
    assert!(
        e.child(
            "precondition-not-met",
            "http://jabber.org/protocol/pubsub#errors"
        )
        .is_some(),
        "{r}"
    );
    // Nothing was published.
    let r = a
        .iq(&format!(
            "<iq type='get' id='i4'><pubsub xmlns='{PUBSUB}'><items node='{TUNE}'/></pubsub></iq>"
        ))
        .await;
    assert_eq!(
        r.child("pubsub", PUBSUB)
            .unwrap()
            .first_child()
            .unwrap()
            .children()
            .count(),
        1
    );

    // Whitelist (§6.5.9.8): the bookmarks node.
    publish_bookmark(
        &mut a,
        "theplay@conference.shakespeare.lit",
        "The Play&apos;s the Thing",
    )
    .await;
    let r = b
        .iq(&format!(
            "<iq type='get' to='alice@localhost' id='w1'><pubsub xmlns='{PUBSUB}'><items node='urn:xmpp:bookmarks:1'/></pubsub></iq>"
        ))
        .await;
    assert_reply_xml(
        &r,
        &err(
            "w1",
            "alice@localhost",
            "bob@localhost/phone",
            "cancel",
            "not-allowed",
            Some("closed-node"),
        ),
    );
    // A roster-group node (§6.5.9.7).
    a.iq_ok(&format!(
            "<iq type='set' id='cr'><pubsub xmlns='{PUBSUB}'><create node='urn:friends'/><configure><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#node_config</value></field><field var='pubsub#access_model'><value>roster</value></field><field var='pubsub#roster_groups_allowed'><value>Friends</value></field></x></configure></pubsub></iq>"
        )).await;
    let r = b
        .iq(&format!(
            "<iq type='get' to='alice@localhost' id='rg'><pubsub xmlns='{PUBSUB}'><items node='urn:friends'/></pubsub></iq>"
        ))
        .await;
    assert_reply_xml(
        &r,
        &err(
            "rg",
            "alice@localhost",
            "bob@localhost/phone",
            "auth",
            "not-authorized",
            Some("not-in-roster-group"),
        ),
    );
    a.iq("<iq type='set' id='grp'><query xmlns='jabber:iq:roster'><item jid='bob@localhost'><group>Friends</group></item></query></iq>")
        .await;
    b.iq_ok(&format!(
            "<iq type='get' to='alice@localhost' id='rg2'><pubsub xmlns='{PUBSUB}'><items node='urn:friends'/></pubsub></iq>"
        )).await;
    // Creating what exists (§8.1.3.x): conflict.
    let r = a
        .iq(&format!("<iq type='set' id='cr2'><pubsub xmlns='{PUBSUB}'><create node='urn:friends'/></pubsub></iq>"))
        .await;
    assert_reply_xml(
        &r,
        "<iq type='error' id='cr2' to='alice@localhost/home'><error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>the node exists</text></error></iq>",
    );
}

async fn publish_bookmark(a: &mut RawClient, room: &str, name: &str) -> Element {
    // XEP-0402 example 3, with the publish-options of §3.
    a.iq_ok(&format!(
            "<iq type='set' id='bm-{room}'><pubsub xmlns='{PUBSUB}'><publish node='urn:xmpp:bookmarks:1'><item id='{room}'><conference xmlns='urn:xmpp:bookmarks:1' name='{name}' autojoin='true'><nick>JC</nick></conference></item></publish><publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#publish-options</value></field><field var='pubsub#persist_items'><value>true</value></field><field var='pubsub#max_items'><value>max</value></field><field var='pubsub#send_last_published_item'><value>never</value></field><field var='pubsub#access_model'><value>whitelist</value></field></x></publish-options></pubsub></iq>"
        ))
    .await
}

/// XEP-0402 §5.3: private XML bookmarks and native ones are the same.
#[tokio::test]
async fn bookmarks_compat_with_private_xml() {
    let s = server().await;
    let mut a = s.online("alice", "home").await;
    publish_bookmark(
        &mut a,
        "theplay@conference.shakespeare.lit",
        "The Play&apos;s the Thing",
    )
    .await;
    publish_bookmark(&mut a, "orchard@conference.shakespeare.lit", "The Orchard").await;
    let r = a
        .iq("<iq type='get' id='pv1'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>")
        .await;
    assert_reply_xml(
        &r,
        "<iq type='result' id='pv1' to='alice@localhost/home'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'><conference jid='theplay@conference.shakespeare.lit' name='The Play&apos;s the Thing' autojoin='true'><nick>JC</nick></conference><conference jid='orchard@conference.shakespeare.lit' name='The Orchard' autojoin='true'><nick>JC</nick></conference></storage></query></iq>",
    );
    // An old client writes the list back: one changed, one removed, one new.
    a.iq_ok("<iq type='set' id='pv2'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'><conference jid='theplay@conference.shakespeare.lit' name='The Play' autojoin='false'><nick>JC</nick><password>pw</password></conference><conference jid='council@conference.shakespeare.lit' name='Council'/></storage></query></iq>").await;
    let r = a
        .iq(&format!(
            "<iq type='get' id='it'><pubsub xmlns='{PUBSUB}'><items node='urn:xmpp:bookmarks:1'/></pubsub></iq>"
        ))
        .await;
    assert_reply_xml(
        &r,
        &format!(
            "<iq type='result' id='it' to='alice@localhost/home'><pubsub xmlns='{PUBSUB}'><items node='urn:xmpp:bookmarks:1'><item id='theplay@conference.shakespeare.lit'><conference xmlns='urn:xmpp:bookmarks:1' name='The Play'><nick>JC</nick><password>pw</password></conference></item><item id='council@conference.shakespeare.lit'><conference xmlns='urn:xmpp:bookmarks:1' name='Council'/></item></items></pubsub></iq>"
        ),
    );
}

/// XEP-0398 §3.1: the PEP avatar becomes the vCard photo.
#[tokio::test]
async fn avatar_is_copied_to_the_vcard() {
    let s = server().await;
    let mut a = s.online("alice", "home").await;
    let png: Vec<u8> = (0u8..=255).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    let id: String = sha1::Sha1::digest(&png)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // XEP-0084 examples 1 and 3.
    a.iq_ok(&format!(
            "<iq type='set' id='d'><pubsub xmlns='{PUBSUB}'><publish node='urn:xmpp:avatar:data'><item id='{id}'><data xmlns='urn:xmpp:avatar:data'>{b64}</data></item></publish></pubsub></iq>"
        )).await;
    a.iq_ok(&format!(
            "<iq type='set' id='m'><pubsub xmlns='{PUBSUB}'><publish node='urn:xmpp:avatar:metadata'><item id='{id}'><metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='256' id='{id}' height='1' type='image/png' width='256'/></metadata></item></publish></pubsub></iq>"
        )).await;
    let r = a
        .iq("<iq type='get' id='v'><vCard xmlns='vcard-temp'/></iq>")
        .await;
    assert_reply_xml(
        &r,
        &format!(
            "<iq type='result' id='v' to='alice@localhost/home'><vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL>{b64}</BINVAL></PHOTO></vCard></iq>"
        ),
    );
    // Avatar disabled (XEP-0084 §4.2): the photo goes.
    a.iq(&format!(
        "<iq type='set' id='m2'><pubsub xmlns='{PUBSUB}'><publish node='urn:xmpp:avatar:metadata'><item id='off'><metadata xmlns='urn:xmpp:avatar:metadata'/></item></publish></pubsub></iq>"
    ))
    .await;
    let r = a
        .iq("<iq type='get' id='v2'><vCard xmlns='vcard-temp'/></iq>")
        .await;
    assert_reply_xml(
        &r,
        "<iq type='result' id='v2' to='alice@localhost/home'><vCard xmlns='vcard-temp'/></iq>",
    );
}

/// XEP-0384 as Conversations runs it: device list and bundle with
/// `access_model=open` (legacy and omemo:2 nodes), read by a stranger,
/// notified to a contact.
#[tokio::test]
async fn omemo_device_list_and_bundles() {
    let s = server().await;
    let mut a = s.online("alice", "home").await;
    let mut b = s.online("bob", "phone").await;
    let mut c = s.online("carol", "pc").await;
    befriend(&mut a, "alice@localhost", &mut b, "bob@localhost").await;
    let devices = "urn:xmpp:omemo:2:devices";
    let legacy = "eu.siacs.conversations.axolotl.devicelist";
    caps_presence(&mut b, "bob@localhost/phone", "bob", &[devices, legacy]).await;
    let open = format!(
        "<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#publish-options</value></field><field var='pubsub#access_model'><value>open</value></field></x></publish-options>"
    );
    // XEP-0384 example 2 (device list) and the legacy form.
    let list2 = "<devices xmlns='urn:xmpp:omemo:2'><device id='12345'/><device id='4223' label='Gajim on Ubuntu Linux'/></devices>";
    let list1 = "<list xmlns='eu.siacs.conversations.axolotl'><device id='12345'/></list>";
    for (node, item, payload) in [(devices, "current", list2), (legacy, "current", list1)] {
        a.iq_ok(&format!(
                "<iq type='set' id='dl-{node}'><pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='{item}'>{payload}</item></publish>{open}</pubsub></iq>"
            )).await;
        assert_reply_xml(
            &next_event(&mut b).await,
            &format!(
                "<message from='alice@localhost' to='bob@localhost/phone' type='headline'><event xmlns='{EVENT}'><items node='{node}'><item id='{item}'>{payload}</item></items></event></message>"
            ),
        );
    }
    // Bundles (XEP-0384 example 3, shortened keys) on omemo:2 and legacy.
    let bundle2 = "<bundle xmlns='urn:xmpp:omemo:2'><spk id='0'>BASE64ENCODED</spk><spks>BASE64ENCODED</spks><ik>BASE64ENCODED</ik><prekeys><pk id='0'>BASE64ENCODED</pk><pk id='1'>BASE64ENCODED</pk></prekeys></bundle>";
    let bundle1 = "<bundle xmlns='eu.siacs.conversations.axolotl'><signedPreKeyPublic signedPreKeyId='1'>BASE64</signedPreKeyPublic><signedPreKeySignature>BASE64</signedPreKeySignature><identityKey>BASE64</identityKey><prekeys><preKeyPublic preKeyId='1'>BASE64</preKeyPublic></prekeys></bundle>";
    let omemo2_opts = format!(
        "<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#publish-options</value></field><field var='pubsub#max_items'><value>max</value></field><field var='pubsub#access_model'><value>open</value></field></x></publish-options>"
    );
    for (node, item, payload, opts) in [
        ("urn:xmpp:omemo:2:bundles", "12345", bundle2, &omemo2_opts),
        (
            "eu.siacs.conversations.axolotl.bundles:12345",
            "current",
            bundle1,
            &open,
        ),
    ] {
        a.iq_ok(&format!(
                "<iq type='set' id='b-{item}'><pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='{item}'>{payload}</item></publish>{opts}</pubsub></iq>"
            )).await;
        // Carol, a stranger, fetches it (XEP-0384 §4.4 example 7).
        let r = c
            .iq(&format!(
                "<iq type='get' to='alice@localhost' id='f-{item}'><pubsub xmlns='{PUBSUB}'><items node='{node}'><item id='{item}'/></items></pubsub></iq>"
            ))
            .await;
        assert_reply_xml(
            &r,
            &format!(
                "<iq type='result' id='f-{item}' from='alice@localhost' to='carol@localhost/pc'><pubsub xmlns='{PUBSUB}'><items node='{node}'><item id='{item}'>{payload}</item></items></pubsub></iq>"
            ),
        );
    }
    // The device list is open too: Carol reads it, and sees it in disco.
    let r = c
        .iq(&format!(
            "<iq type='get' to='alice@localhost' id='dl'><pubsub xmlns='{PUBSUB}'><items node='{devices}' max_items='1'/></pubsub></iq>"
        ))
        .await;
    assert_reply_xml(
        &r,
        &format!(
            "<iq type='result' id='dl' from='alice@localhost' to='carol@localhost/pc'><pubsub xmlns='{PUBSUB}'><items node='{devices}'><item id='current'>{list2}</item></items></pubsub></iq>"
        ),
    );
}

/// XEP-0163 §6.1 and XEP-0060 §5: the account's disco.
#[tokio::test]
async fn account_disco() {
    let s = server().await;
    let mut a = s.online("alice", "home").await;
    let mut b = s.online("bob", "phone").await;
    let mut c = s.online("carol", "pc").await;
    befriend(&mut a, "alice@localhost", &mut b, "bob@localhost").await;
    publish_tune(&mut a, "t1").await;
    let r = b
        .iq(&format!(
            "<iq type='get' to='alice@localhost' id='di'><query xmlns='{DISCO_INFO}'/></iq>"
        ))
        .await;
    let q = r.child("query", DISCO_INFO).unwrap();
    assert!(
        q.children().any(|i| i.name() == "identity"
            && i.attr("category") == Some("pubsub")
            && i.attr("type") == Some("pep")),
        "{r}"
    );
    let vars: Vec<&str> = q.children().filter_map(|f| f.attr("var")).collect();
    for f in [
        "http://jabber.org/protocol/pubsub#publish",
        "http://jabber.org/protocol/pubsub#auto-create",
        "http://jabber.org/protocol/pubsub#publish-options",
        "http://jabber.org/protocol/pubsub#last-published",
        "urn:xmpp:bookmarks:1#compat",
        "urn:xmpp:pep-vcard-conversion:0",
    ] {
        assert!(vars.contains(&f), "{f} missing: {vars:?}");
    }
    let items = "http://jabber.org/protocol/disco#items";
    let r = b
        .iq(&format!(
            "<iq type='get' to='alice@localhost' id='dit'><query xmlns='{items}'/></iq>"
        ))
        .await;
    assert_reply_xml(
        &r,
        &format!(
            "<iq type='result' id='dit' from='alice@localhost' to='bob@localhost/phone'><query xmlns='{items}'><item jid='alice@localhost' node='{TUNE}'/></query></iq>"
        ),
    );
    // Carol may not see the presence-access node.
    let r = c
        .iq(&format!(
            "<iq type='get' to='alice@localhost' id='dit2'><query xmlns='{items}'/></iq>"
        ))
        .await;
    assert_reply_xml(
        &r,
        &format!(
            "<iq type='result' id='dit2' from='alice@localhost' to='carol@localhost/pc'><query xmlns='{items}'/></iq>"
        ),
    );
}

/// XEP-0060 §8.2: the configuration form, changed by the owner.
#[tokio::test]
async fn node_configuration() {
    let s = server().await;
    let mut a = s.online("alice", "home").await;
    let mut b = s.online("bob", "phone").await;
    publish_tune(&mut a, "t1").await;
    let r = a
        .iq(&format!("<iq type='get' id='cf'><pubsub xmlns='{PUBSUB}#owner'><configure node='{TUNE}'/></pubsub></iq>"))
        .await;
    let x = r
        .child("pubsub", "http://jabber.org/protocol/pubsub#owner")
        .and_then(|p| p.child("configure", "http://jabber.org/protocol/pubsub#owner"))
        .and_then(|c| c.child("x", "jabber:x:data"))
        .unwrap();
    let value = |var: &str| {
        x.children()
            .find(|f| f.attr("var") == Some(var))
            .and_then(|f| f.children().find(|v| v.name() == "value"))
            .map(|v| v.text())
    };
    assert_eq!(
        value("FORM_TYPE").as_deref(),
        Some("http://jabber.org/protocol/pubsub#node_config")
    );
    assert_eq!(value("pubsub#access_model").as_deref(), Some("presence"));
    assert_eq!(value("pubsub#max_items").as_deref(), Some("1"));
    // Others may not (§8.2.3.x: forbidden).
    let r = b
        .iq(&format!("<iq type='get' to='alice@localhost' id='cf2'><pubsub xmlns='{PUBSUB}#owner'><configure node='{TUNE}'/></pubsub></iq>"))
        .await;
    assert_reply_xml(
        &r,
        &err(
            "cf2",
            "alice@localhost",
            "bob@localhost/phone",
            "auth",
            "forbidden",
            None,
        ),
    );
    // Made open: Bob, a stranger, reads.
    a.iq_ok(&format!("<iq type='set' id='cf3'><pubsub xmlns='{PUBSUB}#owner'><configure node='{TUNE}'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field><field var='pubsub#access_model'><value>open</value></field><field var='pubsub#max_items'><value>5</value></field></x></configure></pubsub></iq>")).await;
    publish_tune(&mut a, "t2").await;
    let r = b
        .iq(&format!("<iq type='get' to='alice@localhost' id='i'><pubsub xmlns='{PUBSUB}'><items node='{TUNE}' max_items='1'/></pubsub></iq>"))
        .await;
    assert_reply_xml(
        &r,
        &format!(
            "<iq type='result' id='i' from='alice@localhost' to='bob@localhost/phone'><pubsub xmlns='{PUBSUB}'><items node='{TUNE}'><item id='t2'>{TUNE_ITEM}</item></items></pubsub></iq>"
        ),
    );
    let r = b
        .iq(&format!("<iq type='get' to='alice@localhost' id='i2'><pubsub xmlns='{PUBSUB}'><items node='{TUNE}'/></pubsub></iq>"))
        .await;
    let n = r
        .child("pubsub", PUBSUB)
        .unwrap()
        .first_child()
        .unwrap()
        .children()
        .count();
    assert_eq!(n, 2, "{r}");
    // A bad value is not-acceptable.
    let r = a
        .iq(&format!("<iq type='set' id='cf4'><pubsub xmlns='{PUBSUB}#owner'><configure node='{TUNE}'><x xmlns='jabber:x:data' type='submit'><field var='pubsub#max_items'><value>100000</value></field></x></configure></pubsub></iq>"))
        .await;
    assert_eq!(
        r.child("error", "jabber:client")
            .and_then(|e| e.first_child())
            .map(|c| c.name().to_owned())
            .as_deref(),
        Some("not-acceptable"),
        "{r}"
    );
}

/// Sends `sent` from alice's session and returns the copy bob gets.
async fn relayed(a: &mut RawClient, b: &mut RawClient, sent: &str) -> Element {
    a.send(sent).await;
    b.until(|e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/home"))
        .await
        .0
}

/// XEP-0398 §4: the server puts the vCard avatar's hash into every
/// available presence, broadcast and directed (a MUC join), unless the
/// client put a `<photo/>` itself; the hash follows a vCard set (XEP-0153)
/// and a PEP avatar publish (XEP-0084, §3.1).
#[tokio::test]
async fn avatar_hash_in_presence() {
    const UPDATE: &str = "vcard-temp:x:update";
    let s = server().await;
    let mut a = s.online("alice", "home").await;
    let mut b = s.online("bob", "desk").await;
    befriend(&mut a, "alice@localhost", &mut b, "bob@localhost").await;
    let hash_of = |bytes: &[u8]| -> String {
        sha1::Sha1::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    // No photo yet: the presence goes out as sent (§4 Example 3 without a
    // hash to add).
    let p = relayed(&mut a, &mut b, "<presence><show>chat</show></presence>").await;
    assert_reply_xml(
        &p,
        "<presence from='alice@localhost/home' to='bob@localhost'><show>chat</show></presence>",
    );

    // XEP-0153: a vCard with a photo; the next presence carries its hash
    // (§4 Example 4).
    let img = b"\x89PNG\r\n\x1a\n a tiny image";
    let b64 = base64::engine::general_purpose::STANDARD.encode(img);
    a.iq_ok(&format!(
            "<iq type='set' id='v'><vCard xmlns='vcard-temp'><FN>Alice</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>{b64}</BINVAL></PHOTO></vCard></iq>"
        )).await;
    let h1 = hash_of(img);
    let p = relayed(
        &mut a,
        &mut b,
        &format!("<presence><x xmlns='{UPDATE}'/></presence>"),
    )
    .await;
    assert_reply_xml(
        &p,
        &format!(
            "<presence from='alice@localhost/home' to='bob@localhost'><x xmlns='{UPDATE}'><photo>{h1}</photo></x></presence>"
        ),
    );
    // Her own resource gets the same.
    let (p, _) = a.until(|e| e.name() == "presence").await;
    assert_eq!(
        p.child("x", UPDATE)
            .and_then(|x| x.child("photo", UPDATE))
            .map(|p| p.text()),
        Some(h1.clone()),
        "{p}"
    );

    // §4 Examples 5 and 6: an empty photo is left alone.
    let p = relayed(
        &mut a,
        &mut b,
        &format!("<presence><x xmlns='{UPDATE}'><photo/></x></presence>"),
    )
    .await;
    assert_reply_xml(
        &p,
        &format!(
            "<presence from='alice@localhost/home' to='bob@localhost'><x xmlns='{UPDATE}'><photo/></x></presence>"
        ),
    );

    // XEP-0084: a new avatar through PEP replaces the vCard photo, and so
    // the hash.
    let png: Vec<u8> = (0u8..=255).collect();
    let (b64, h2) = (
        base64::engine::general_purpose::STANDARD.encode(&png),
        hash_of(&png),
    );
    for (id, node, payload) in [
        (
            "d",
            "urn:xmpp:avatar:data",
            format!("<data xmlns='urn:xmpp:avatar:data'>{b64}</data>"),
        ),
        (
            "m",
            "urn:xmpp:avatar:metadata",
            format!(
                "<metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='256' id='{h2}' type='image/png'/></metadata>"
            ),
        ),
    ] {
        a.iq_ok(&format!(
                "<iq type='set' id='{id}'><pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='{h2}'>{payload}</item></publish></pubsub></iq>"
            )).await;
    }
    let p = relayed(&mut a, &mut b, "<presence/>").await;
    assert_reply_xml(
        &p,
        &format!(
            "<presence from='alice@localhost/home' to='bob@localhost'><x xmlns='{UPDATE}'><photo>{h2}</photo></x></presence>"
        ),
    );

    // "The hash MUST also be injected into directed presences such as MUC
    // joins": bob's room sees alice's avatar.
    const MUC: &str = "http://jabber.org/protocol/muc";
    b.send(&format!(
        "<presence to='den@conference.localhost/Bob'><x xmlns='{MUC}'/></presence>"
    ))
    .await;
    b.until(|e| e.name() == "message" && e.child("subject", "jabber:client").is_some())
        .await;
    b.iq_ok(&format!(
            "<iq type='set' to='den@conference.localhost' id='inst'><query xmlns='{MUC}#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>"
        )).await;
    a.send(&format!(
        "<presence to='den@conference.localhost/Alice'><x xmlns='{MUC}'/></presence>"
    ))
    .await;
    let (p, _) = b
        .until(|e| {
            e.name() == "presence" && e.attr("from") == Some("den@conference.localhost/Alice")
        })
        .await;
    assert_eq!(
        p.child("x", UPDATE)
            .and_then(|x| x.child("photo", UPDATE))
            .map(|p| p.text()),
        Some(h2),
        "{p}"
    );
}
