//! XEP-0060 black-box on the service `pubsub.localhost`: fresh users,
//! the spec's examples, the exact XML each subscriber receives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rookery_e2e::{TestServer, assert_reply_xml};

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const SVC: &str = "pubsub.localhost";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

async fn server() -> TestServer {
    let s = TestServer::start().await;
    for u in ["hamlet", "francisco", "bernardo"] {
        s.add_user(u, "pw").await;
    }
    s
}

const ENTRY: &str = "<entry xmlns='http://www.w3.org/2005/Atom'><title>Soliloquy</title><summary>To be, or not to be: that is the question</summary><id>tag:denmark.lit,2003:entry-32397</id></entry>";

/// XEP-0060 §8.1 create, §6.1 subscribe, §7.1 publish with the event to
/// the subscriber (example 101), §6.5 items, §7.2 retract, §6.2
/// unsubscribe, §8.4 delete.
#[tokio::test]
async fn create_subscribe_publish_retract_delete() {
    let s = server().await;
    let mut h = s.online("hamlet", "elsinore").await;
    let mut f = s.online("francisco", "barracks").await;
    let mut b = s.online("bernardo", "castle").await;

    // §8.1.2 example 132: create with configuration (open, notify retract).
    let r = h
        .iq(&format!(
            "<iq type='set' to='{SVC}' id='create1'><pubsub xmlns='{PUBSUB}'><create node='princely_musings'/><configure><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#node_config</value></field><field var='pubsub#notify_retract'><value>1</value></field><field var='pubsub#max_items'><value>10</value></field></x></configure></pubsub></iq>"
        ))
        .await;
    assert_reply_xml(
        &r,
        &format!("<iq type='result' id='create1' from='{SVC}' to='hamlet@localhost/elsinore'/>"),
    );
    // Creating it again: conflict (§8.1.3.x).
    let r = f
        .iq(&format!("<iq type='set' to='{SVC}' id='create2'><pubsub xmlns='{PUBSUB}'><create node='princely_musings'/></pubsub></iq>"))
        .await;
    assert_reply_xml(
        &r,
        &format!(
            "<iq type='error' id='create2' from='{SVC}' to='francisco@localhost/barracks'><error type='cancel'><conflict xmlns='{STANZAS}'/><text xmlns='{STANZAS}' xml:lang='en'>the node exists</text></error></iq>"
        ),
    );

    // §6.1.1 example 32 and §6.1.2 example 33.
    let r = f
        .iq(&format!(
            "<iq type='set' to='{SVC}' id='sub1'><pubsub xmlns='{PUBSUB}'><subscribe node='princely_musings' jid='francisco@localhost'/></pubsub></iq>"
        ))
        .await;
    assert_reply_xml(
        &r,
        &format!(
            "<iq type='result' id='sub1' from='{SVC}' to='francisco@localhost/barracks'><pubsub xmlns='{PUBSUB}'><subscription node='princely_musings' jid='francisco@localhost' subscription='subscribed'/></pubsub></iq>"
        ),
    );
    // §6.1.3.1: someone else's JID.
    let r = b
        .iq(&format!(
            "<iq type='set' to='{SVC}' id='sub2'><pubsub xmlns='{PUBSUB}'><subscribe node='princely_musings' jid='francisco@localhost'/></pubsub></iq>"
        ))
        .await;
    assert_reply_xml(
        &r,
        &format!(
            "<iq type='error' id='sub2' from='{SVC}' to='bernardo@localhost/castle'><error type='modify'><bad-request xmlns='{STANZAS}'/><text xmlns='{STANZAS}' xml:lang='en'>one subscribes one&apos;s own JID</text><invalid-jid xmlns='{PUBSUB}#errors'/></error></iq>"
        ),
    );

    // §7.1.1 example 99, §7.1.2 examples 100 and 101.
    let r = h
        .iq(&format!(
            "<iq type='set' to='{SVC}' id='publish1'><pubsub xmlns='{PUBSUB}'><publish node='princely_musings'><item id='ae890ac52d0df67ed7cfdf51b644e901'>{ENTRY}</item></publish></pubsub></iq>"
        ))
        .await;
    assert_reply_xml(
        &r,
        &format!(
            "<iq type='result' id='publish1' from='{SVC}' to='hamlet@localhost/elsinore'><pubsub xmlns='{PUBSUB}'><publish node='princely_musings'><item id='ae890ac52d0df67ed7cfdf51b644e901'/></publish></pubsub></iq>"
        ),
    );
    let (m, _) = f.until(|e| e.name() == "message").await;
    assert_reply_xml(
        &m,
        &format!(
            "<message from='{SVC}' to='francisco@localhost' type='headline'><event xmlns='{EVENT}'><items node='princely_musings'><item id='ae890ac52d0df67ed7cfdf51b644e901'>{ENTRY}</item></items></event></message>"
        ),
    );
    // Only owners and publishers publish (§7.1.3.1).
    let r = f
        .iq(&format!(
            "<iq type='set' to='{SVC}' id='publish2'><pubsub xmlns='{PUBSUB}'><publish node='princely_musings'><item>{ENTRY}</item></publish></pubsub></iq>"
        ))
        .await;
    assert_reply_xml(
        &r,
        &format!(
            "<iq type='error' id='publish2' from='{SVC}' to='francisco@localhost/barracks'><error type='auth'><forbidden xmlns='{STANZAS}'/></error></iq>"
        ),
    );
    // §6.5.2 example 78: all items.
    let r = b
        .iq(&format!("<iq type='get' to='{SVC}' id='items1'><pubsub xmlns='{PUBSUB}'><items node='princely_musings'/></pubsub></iq>"))
        .await;
    assert_reply_xml(
        &r,
        &format!(
            "<iq type='result' id='items1' from='{SVC}' to='bernardo@localhost/castle'><pubsub xmlns='{PUBSUB}'><items node='princely_musings'><item id='ae890ac52d0df67ed7cfdf51b644e901'>{ENTRY}</item></items></pubsub></iq>"
        ),
    );
    // §7.2.1 example 115, §7.2.2.1 example 117 (notify_retract is on).
    h.iq_ok(&format!("<iq type='set' to='{SVC}' id='retract1'><pubsub xmlns='{PUBSUB}'><retract node='princely_musings'><item id='ae890ac52d0df67ed7cfdf51b644e901'/></retract></pubsub></iq>")).await;
    let (m, _) = f.until(|e| e.name() == "message").await;
    assert_reply_xml(
        &m,
        &format!(
            "<message from='{SVC}' to='francisco@localhost' type='headline'><event xmlns='{EVENT}'><items node='princely_musings'><retract id='ae890ac52d0df67ed7cfdf51b644e901'/></items></event></message>"
        ),
    );
    // §6.2 unsubscribe; twice is not-subscribed (§6.2.3.2).
    let unsub = format!(
        "<pubsub xmlns='{PUBSUB}'><unsubscribe node='princely_musings' jid='francisco@localhost'/></pubsub>"
    );
    f.iq_ok(&format!(
        "<iq type='set' to='{SVC}' id='unsub1'>{unsub}</iq>"
    ))
    .await;
    let r = f
        .iq(&format!(
            "<iq type='set' to='{SVC}' id='unsub2'>{unsub}</iq>"
        ))
        .await;
    assert_reply_xml(
        &r,
        &format!(
            "<iq type='error' id='unsub2' from='{SVC}' to='francisco@localhost/barracks'><error type='wait'><unexpected-request xmlns='{STANZAS}'/><text xmlns='{STANZAS}' xml:lang='en'>not subscribed</text><not-subscribed xmlns='{PUBSUB}#errors'/></error></iq>"
        ),
    );
    // disco#items lists the node (§5.2).
    let r = b
        .iq(&format!("<iq type='get' to='{SVC}' id='nodes'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"))
        .await;
    assert_reply_xml(
        &r,
        &format!(
            "<iq type='result' id='nodes' from='{SVC}' to='bernardo@localhost/castle'><query xmlns='http://jabber.org/protocol/disco#items'><item jid='{SVC}' node='princely_musings'/></query></iq>"
        ),
    );
    // §8.4: only the owner deletes; then it is gone.
    let del = format!("<pubsub xmlns='{OWNER}'><delete node='princely_musings'/></pubsub>");
    let r = b
        .iq(&format!("<iq type='set' to='{SVC}' id='del1'>{del}</iq>"))
        .await;
    assert_reply_xml(
        &r,
        &format!(
            "<iq type='error' id='del1' from='{SVC}' to='bernardo@localhost/castle'><error type='auth'><forbidden xmlns='{STANZAS}'/></error></iq>"
        ),
    );
    h.iq_ok(&format!("<iq type='set' to='{SVC}' id='del2'>{del}</iq>"))
        .await;
    let r = b
        .iq(&format!("<iq type='get' to='{SVC}' id='items2'><pubsub xmlns='{PUBSUB}'><items node='princely_musings'/></pubsub></iq>"))
        .await;
    assert_reply_xml(
        &r,
        &format!(
            "<iq type='error' id='items2' from='{SVC}' to='bernardo@localhost/castle'><error type='cancel'><item-not-found xmlns='{STANZAS}'/></error></iq>"
        ),
    );
}

/// §5.1: the service's identity and features; §8.1.2 instant nodes; the
/// whitelist with §8.9 affiliations.
#[tokio::test]
async fn disco_instant_nodes_and_whitelist() {
    let s = server().await;
    let mut h = s.online("hamlet", "elsinore").await;
    let mut f = s.online("francisco", "barracks").await;
    let r = f
        .iq(&format!("<iq type='get' to='{SVC}' id='info'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"))
        .await;
    let q = r
        .child("query", "http://jabber.org/protocol/disco#info")
        .unwrap();
    assert!(
        q.children()
            .any(|i| i.attr("category") == Some("pubsub") && i.attr("type") == Some("service")),
        "{r}"
    );
    let vars: Vec<&str> = q.children().filter_map(|c| c.attr("var")).collect();
    for v in [
        PUBSUB,
        "http://jabber.org/protocol/pubsub#publish",
        "http://jabber.org/protocol/pubsub#instant-nodes",
    ] {
        assert!(vars.contains(&v), "{v}: {vars:?}");
    }
    // The server lists the service.
    let r = f
        .iq("<iq type='get' to='localhost' id='items'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        .await;
    assert!(
        r.to_string().contains(&format!("jid=\"{SVC}\""))
            || r.to_string().contains(&format!("jid='{SVC}'")),
        "{r}"
    );

    // §8.1.2 example 129: an instant node gets its NodeID from the service.
    let r = h
        .iq(&format!("<iq type='set' to='{SVC}' id='create'><pubsub xmlns='{PUBSUB}'><create/><configure><x xmlns='jabber:x:data' type='submit'><field var='pubsub#access_model'><value>whitelist</value></field></x></configure></pubsub></iq>"))
        .await;
    let node = r
        .child("pubsub", PUBSUB)
        .and_then(|p| p.child("create", PUBSUB))
        .and_then(|c| c.attr("node"))
        .unwrap()
        .to_owned();
    h.iq(&format!("<iq type='set' to='{SVC}' id='p'><pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='1'>{ENTRY}</item></publish></pubsub></iq>"))
        .await;
    let items = format!("<pubsub xmlns='{PUBSUB}'><items node='{node}'/></pubsub>");
    let r = f
        .iq(&format!("<iq type='get' to='{SVC}' id='i1'>{items}</iq>"))
        .await;
    assert_reply_xml(
        &r,
        &format!(
            "<iq type='error' id='i1' from='{SVC}' to='francisco@localhost/barracks'><error type='cancel'><not-allowed xmlns='{STANZAS}'/><closed-node xmlns='{PUBSUB}#errors'/></error></iq>"
        ),
    );
    // §8.9.2 example 170: the owner adds a member.
    h.iq_ok(&format!("<iq type='set' to='{SVC}' id='aff'><pubsub xmlns='{OWNER}'><affiliations node='{node}'><affiliation jid='francisco@localhost' affiliation='member'/></affiliations></pubsub></iq>")).await;
    let r = h
        .iq(&format!("<iq type='get' to='{SVC}' id='aff2'><pubsub xmlns='{OWNER}'><affiliations node='{node}'/></pubsub></iq>"))
        .await;
    assert_reply_xml(
        &r,
        &format!(
            "<iq type='result' id='aff2' from='{SVC}' to='hamlet@localhost/elsinore'><pubsub xmlns='{OWNER}'><affiliations node='{node}'><affiliation jid='francisco@localhost' affiliation='member'/><affiliation jid='hamlet@localhost' affiliation='owner'/></affiliations></pubsub></iq>"
        ),
    );
    let r = f
        .iq(&format!("<iq type='get' to='{SVC}' id='i2'>{items}</iq>"))
        .await;
    assert_reply_xml(
        &r,
        &format!(
            "<iq type='result' id='i2' from='{SVC}' to='francisco@localhost/barracks'><pubsub xmlns='{PUBSUB}'><items node='{node}'><item id='1'>{ENTRY}</item></items></pubsub></iq>"
        ),
    );
}
