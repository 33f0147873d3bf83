//! XEP-0357 push notifications, black-box. The app server is a local
//! account's raw client (`push@localhost/appserver`) that reads the publish
//! requests and answers them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rookery_e2e::{RawClient, TestServer, eventually};
use rookery_session::modules::push::PushRegistration;
use rookery_xml::Element;

const SM: &str = "urn:xmpp:sm:3";
const APP: &str = "push@localhost/appserver";
const OPTIONS: &str = "<x xmlns='jabber:x:data' type='submit'>\
    <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
    <field var='secret'><value>eruio234vzxc2kla-91</value></field></x>";

async fn server_with(f: impl FnOnce(&mut rookery::config::Config)) -> TestServer {
    let s = TestServer::start_with(f).await;
    for u in ["alice", "bob", "push"] {
        s.add_user(u, "pw").await;
    }
    s
}

async fn server() -> TestServer {
    server_with(|_| {}).await
}

fn error_condition(el: &Element) -> String {
    assert_eq!(el.attr("type"), Some("error"), "{el}");
    let e = el.child("error", "jabber:client").expect("error child");
    e.children()
        .find(|c| c.name() != "text")
        .unwrap()
        .name()
        .to_owned()
}

/// Enables push to the app server's `node` with the publish options;
/// asserts the empty result.
async fn enable(c: &mut RawClient, node: &str) {
    let r = c.iq_ok(&format!(
            "<iq type='set' id='en-{node}'><enable xmlns='urn:xmpp:push:0' jid='{APP}' node='{node}'>{OPTIONS}</enable></iq>"
        )).await;
    assert!(r.first_child().is_none(), "{r}");
}

/// The registrations the store holds for `user`.
async fn registrations(s: &TestServer, user: &str) -> Vec<PushRegistration> {
    let jid = rookery_core::Jid::parse(&format!("{user}@localhost")).unwrap();
    let mut v = s
        .running
        .as_ref()
        .unwrap()
        .sessions
        .stores()
        .push
        .push_registrations(&jid)
        .await
        .unwrap();
    v.sort_by(|a, b| a.node.cmp(&b.node));
    v
}

/// The next stanza of the app server, which must be a notification for
/// `node`; returns it (not yet answered).
async fn notification(app: &mut RawClient, node: &str) -> Element {
    let n = app.next_non_presence().await;
    assert_eq!(n.name(), "iq", "expected a notification, got {n}");
    assert_eq!(n.attr("type"), Some("set"), "{n}");
    let publish = n
        .child("pubsub", "http://jabber.org/protocol/pubsub")
        .and_then(|p| p.child("publish", "http://jabber.org/protocol/pubsub"))
        .unwrap_or_else(|| panic!("no publish in {n}"));
    assert_eq!(publish.attr("node"), Some(node), "{n}");
    n
}

/// The notification of XEP-0357 §7 Example 13 as this server sends it
/// with `fields` in the summary form.
fn expected(id: &str, node: &str, fields: &str) -> String {
    format!(
        "<iq xmlns='jabber:client' type='set' from='localhost' to='{APP}' id='{id}'>\
         <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item>\
         <notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field>{fields}</x>\
         </notification></item></publish><publish-options>{OPTIONS}</publish-options></pubsub></iq>"
    )
}

fn count(n: u32) -> String {
    format!("<field var='message-count'><value>{n}</value></field>")
}

async fn answer_result(app: &mut RawClient, n: &Element) {
    let id = n.attr("id").unwrap();
    app.send(&format!("<iq type='result' to='localhost' id='{id}'/>"))
        .await;
}

/// Proves that nothing else reached the app server before: `from` sends
/// it a message, which must be its next stanza.
async fn nothing_more(from: &mut RawClient, app: &mut RawClient, tag: &str) {
    from.send(&format!(
        "<message to='{APP}' id='{tag}'><body>marker</body></message>"
    ))
    .await;
    let m = app.next_non_presence().await;
    assert_eq!(m.name(), "message", "expected only the marker, got {m}");
    assert_eq!(m.attr("id"), Some(tag), "{m}");
}

/// Waits until the server took the app server's answer: its stanzas are
/// handled in order, so its ping's answer comes after.
async fn synced(c: &mut RawClient) {
    let r = c
        .iq("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
}

/// Logs alice in as `phone` with XEP-0198 resumption enabled.
async fn alice_resumable(s: &TestServer) -> RawClient {
    let mut a = s.online("alice", "phone").await;
    a.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    loop {
        let e = a.next().await;
        if e.is("enabled", SM) {
            assert_eq!(e.attr("resume"), Some("true"));
            break;
        }
    }
    a
}

/// Drops alice's connection and waits until her session is detached.
async fn detach(s: &TestServer, a: RawClient) {
    drop(a);
    let jid = rookery_core::Jid::parse("alice@localhost/phone").unwrap();
    let sessions = s.running.as_ref().unwrap().sessions.clone();
    eventually(|| sessions.is_hibernated(&jid)).await;
}

/// Closes alice's stream and waits until her account has no session.
async fn offline(s: &TestServer, mut a: RawClient) {
    a.send("</stream:stream>").await;
    a.expect_closed().await;
    let jid = rookery_core::Jid::parse("alice@localhost").unwrap();
    let sessions = s.running.as_ref().unwrap().sessions.clone();
    eventually(|| sessions.connections_of(&jid).is_empty()).await;
}

/// §4.1: the account advertises the feature; §5 and §6 answers.
#[tokio::test]
async fn discovery_enable_and_disable() {
    let s = server().await;
    let mut a = s.online("alice", "phone").await;
    let info = a
        .iq("<iq type='get' to='alice@localhost' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let q = info
        .child("query", "http://jabber.org/protocol/disco#info")
        .unwrap();
    assert!(
        q.children()
            .any(|f| f.name() == "feature" && f.attr("var") == Some("urn:xmpp:push:0")),
        "{info}"
    );
    // Example 9 (no 'to': the own account), then Example 8 to the bare JID.
    enable(&mut a, "yxs32uqsflafdk3iuqo").await;
    let r = a
        .iq(&format!(
            "<iq type='set' to='alice@localhost' id='x42'><enable xmlns='urn:xmpp:push:0' jid='{APP}' node='other'/></iq>"
        ))
        .await;
    assert_eq!(
        r.to_xml_string(),
        "<iq xmlns='jabber:client' type='result' id='x42' to='alice@localhost/phone' from='alice@localhost'/>"
    );
    let regs = registrations(&s, "alice").await;
    assert_eq!(regs.len(), 2);
    assert_eq!(regs[0].node, "other");
    assert_eq!(regs[0].options, None);
    assert_eq!(regs[0].client, "alice@localhost/phone");
    assert_eq!(regs[1].node, "yxs32uqsflafdk3iuqo");
    assert_eq!(regs[1].options.as_deref(), Some(OPTIONS));
    // §5: the same jid and node again replaces the options.
    let r = a
        .iq(&format!(
            "<iq type='set' id='x44'><enable xmlns='urn:xmpp:push:0' jid='{APP}' node='yxs32uqsflafdk3iuqo'/></iq>"
        ))
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    let regs = registrations(&s, "alice").await;
    assert_eq!(regs.len(), 2);
    assert_eq!(regs[1].options, None);
    // Example 11: one node.
    a.iq_ok(&format!(
            "<iq type='set' id='x97'><disable xmlns='urn:xmpp:push:0' jid='{APP}' node='yxs32uqsflafdk3iuqo'/></iq>"
        )).await;
    let regs = registrations(&s, "alice").await;
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0].node, "other");
    // Example 10: every node of the service.
    enable(&mut a, "third").await;
    a.iq_ok(&format!(
        "<iq type='set' id='x98'><disable xmlns='urn:xmpp:push:0' jid='{APP}'/></iq>"
    ))
    .await;
    assert!(registrations(&s, "alice").await.is_empty());
    // Disabling what is not enabled is fine too.
    a.iq_ok(
        "<iq type='set' id='x99'><disable xmlns='urn:xmpp:push:0' jid='push.example.net'/></iq>",
    )
    .await;
}

#[tokio::test]
async fn bad_enables_and_disables() {
    let s = server_with(|c| c.modules.push.max_registrations = 2).await;
    let mut a = s.online("alice", "phone").await;
    let cases = [
        // No jid.
        (
            "<enable xmlns='urn:xmpp:push:0' node='n'/>".to_owned(),
            "set",
            "",
            "bad-request",
        ),
        (
            "<disable xmlns='urn:xmpp:push:0'/>".to_owned(),
            "set",
            "",
            "bad-request",
        ),
        // No node.
        (
            format!("<enable xmlns='urn:xmpp:push:0' jid='{APP}'/>"),
            "set",
            "",
            "bad-request",
        ),
        // Not a JID.
        (
            "<enable xmlns='urn:xmpp:push:0' jid='a@b@c' node='n'/>".to_owned(),
            "set",
            "",
            "jid-malformed",
        ),
        // A form that is not publish options.
        (
            format!(
                "<enable xmlns='urn:xmpp:push:0' jid='{APP}' node='n'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:other</value></field></x></enable>"
            ),
            "set",
            "",
            "bad-request",
        ),
        // A get.
        (
            format!("<enable xmlns='urn:xmpp:push:0' jid='{APP}' node='n'/>"),
            "get",
            "",
            "bad-request",
        ),
        // Another user's account.
        (
            format!("<enable xmlns='urn:xmpp:push:0' jid='{APP}' node='n'/>"),
            "set",
            "bob@localhost",
            "forbidden",
        ),
        (
            format!("<disable xmlns='urn:xmpp:push:0' jid='{APP}'/>"),
            "set",
            "bob@localhost",
            "forbidden",
        ),
    ];
    for (i, (payload, kind, to, cond)) in cases.iter().enumerate() {
        let to = if to.is_empty() {
            String::new()
        } else {
            format!(" to='{to}'")
        };
        let r = a
            .iq(&format!("<iq type='{kind}' id='b{i}'{to}>{payload}</iq>"))
            .await;
        assert_eq!(error_condition(&r), *cond, "{payload}: {r}");
    }
    assert!(registrations(&s, "alice").await.is_empty());
    assert!(registrations(&s, "bob").await.is_empty());
    // The per-account limit.
    enable(&mut a, "n1").await;
    enable(&mut a, "n2").await;
    let r = a
        .iq(&format!(
            "<iq type='set' id='lim'><enable xmlns='urn:xmpp:push:0' jid='{APP}' node='n3'/></iq>"
        ))
        .await;
    assert_eq!(error_condition(&r), "policy-violation", "{r}");
    // Replacing one at the limit is fine.
    enable(&mut a, "n2").await;
    assert_eq!(registrations(&s, "alice").await.len(), 2);
}

/// §7: alice's only session is detached by XEP-0198; messages for her
/// wake her device once (throttled), with the publish options she gave.
#[tokio::test]
async fn notification_while_detached() {
    let s = server().await;
    let mut app = s.online("push", "appserver").await;
    let mut b = s.online("bob", "desk").await;
    let mut a = alice_resumable(&s).await;
    enable(&mut a, "n1").await;
    detach(&s, a).await;
    b.send("<message to='alice@localhost' type='chat' id='m1'><body>Wherefore art thou?</body></message>")
        .await;
    let n = notification(&mut app, "n1").await;
    // Neither body nor sender by default (privacy).
    assert_eq!(
        n.to_xml_string(),
        expected(n.attr("id").unwrap(), "n1", &count(1))
    );
    answer_result(&mut app, &n).await;
    // More messages in the throttle window send nothing more; nor do
    // messages not worth a notification.
    b.send("<message to='alice@localhost/phone' type='chat' id='m2'><body>again</body></message>")
        .await;
    b.send("<message to='alice@localhost' type='chat' id='m3'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
        .await;
    nothing_more(&mut b, &mut app, "marker1").await;
    // Alice resumes, then drops again: the next message notifies at once.
    let mut a = RawClient::connect(s.addr()).await;
    a.open(s.domain()).await;
    a.starttls(s.domain()).await;
    a.auth_scram("SCRAM-SHA-256", "alice", "pw").await.unwrap();
    a.open(s.domain()).await;
    a.bind(Some("phone")).await;
    a.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    loop {
        if a.next().await.is("enabled", SM) {
            break;
        }
    }
    a.send("<presence/>").await;
    a.next_presence().await;
    detach(&s, a).await;
    b.send("<message to='alice@localhost' type='chat' id='m4'><body>hello?</body></message>")
        .await;
    let n = notification(&mut app, "n1").await;
    assert_eq!(
        n.to_xml_string(),
        expected(n.attr("id").unwrap(), "n1", &count(1))
    );
    answer_result(&mut app, &n).await;
    // An OMEMO message without a body wakes the device too.
    let s2 = server_with(|c| c.modules.push.throttle_secs = 0).await;
    let mut app2 = s2.online("push", "appserver").await;
    let mut b2 = s2.online("bob", "desk").await;
    let mut a2 = alice_resumable(&s2).await;
    enable(&mut a2, "n1").await;
    detach(&s2, a2).await;
    b2.send("<message to='alice@localhost' type='chat' id='o1'><encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'><iv>AAAA</iv></header><payload>BBBB</payload></encrypted><store xmlns='urn:xmpp:hints'/></message>")
        .await;
    let n = notification(&mut app2, "n1").await;
    answer_result(&mut app2, &n).await;
    // A headline does not.
    b2.send(
        "<message to='alice@localhost/phone' type='headline' id='h1'><body>news</body></message>",
    )
    .await;
    nothing_more(&mut b2, &mut app2, "marker2").await;
}

/// §7 with `include_sender` and `include_body` on, when the account is
/// offline: Example 13 exactly.
#[tokio::test]
async fn notification_while_offline_with_sender_and_body() {
    let s = server_with(|c| {
        c.modules.push.include_body = true;
        c.modules.push.include_sender = true;
    })
    .await;
    let mut app = s.online("push", "appserver").await;
    let mut b = s.online("bob", "balcony").await;
    let mut a = s.online("alice", "phone").await;
    enable(&mut a, "yxs32uqsflafdk3iuqo").await;
    offline(&s, a).await;
    b.send(
        "<message to='alice@localhost' id='m1'><body>Wherefore art thou, Romeo?</body></message>",
    )
    .await;
    let n = notification(&mut app, "yxs32uqsflafdk3iuqo").await;
    let fields = format!(
        "{}<field var='last-message-sender'><value>bob@localhost/balcony</value></field>\
         <field var='last-message-body'><value>Wherefore art thou, Romeo?</value></field>",
        count(1)
    );
    assert_eq!(
        n.to_xml_string(),
        expected(n.attr("id").unwrap(), "yxs32uqsflafdk3iuqo", &fields)
    );
    answer_result(&mut app, &n).await;
    // The message itself waits in offline storage.
    let mut a = s.online("alice", "phone").await;
    let m = a.next_message().await;
    assert_eq!(m.attr("id"), Some("m1"));
    // While alice is online and attached, nothing is published.
    b.send("<message to='alice@localhost' type='chat' id='m2'><body>online</body></message>")
        .await;
    assert_eq!(a.next_message().await.attr("id"), Some("m2"));
    nothing_more(&mut b, &mut app, "marker").await;
}

/// No notification while the session that enabled push is online, with or
/// without stream management.
#[tokio::test]
async fn no_notification_while_online() {
    let s = server_with(|c| c.modules.push.throttle_secs = 0).await;
    let mut app = s.online("push", "appserver").await;
    let mut b = s.online("bob", "desk").await;
    let mut a = alice_resumable(&s).await;
    enable(&mut a, "n1").await;
    for id in ["m1", "m2"] {
        b.send(&format!(
            "<message to='alice@localhost' type='chat' id='{id}'><body>hi</body></message>"
        ))
        .await;
    }
    b.send("<message to='alice@localhost/phone' type='chat' id='m3'><body>hi</body></message>")
        .await;
    for id in ["m1", "m2", "m3"] {
        let (m, _) = a.until(|e| e.name() == "message").await;
        assert_eq!(m.attr("id"), Some(id));
    }
    nothing_more(&mut b, &mut app, "marker").await;
}

/// §7.1: an error answer disables the registration, unless it is temporary.
#[tokio::test]
async fn error_answer_disables_the_registration() {
    let s = server_with(|c| c.modules.push.throttle_secs = 0).await;
    let mut app = s.online("push", "appserver").await;
    let mut b = s.online("bob", "desk").await;
    let mut a = s.online("alice", "phone").await;
    enable(&mut a, "n1").await;
    enable(&mut a, "n2").await;
    offline(&s, a).await;
    b.send("<message to='alice@localhost' type='chat' id='m1'><body>1</body></message>")
        .await;
    let mut got = [
        notification_any(&mut app).await,
        notification_any(&mut app).await,
    ];
    got.sort_by_key(|(node, _)| node.clone());
    // n1: a temporary error keeps it; n2: a result.
    let id = got[0].1.attr("id").unwrap();
    app.send(&format!(
        "<iq type='error' to='localhost' id='{id}'><error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    ))
    .await;
    answer_result(&mut app, &got[1].1).await;
    synced(&mut app).await;
    assert_eq!(registrations(&s, "alice").await.len(), 2);
    b.send("<message to='alice@localhost' type='chat' id='m2'><body>2</body></message>")
        .await;
    let mut got = [
        notification_any(&mut app).await,
        notification_any(&mut app).await,
    ];
    got.sort_by_key(|(node, _)| node.clone());
    // n1: item-not-found removes it.
    let id = got[0].1.attr("id").unwrap();
    app.send(&format!(
        "<iq type='error' to='localhost' id='{id}'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    ))
    .await;
    answer_result(&mut app, &got[1].1).await;
    synced(&mut app).await;
    let regs = registrations(&s, "alice").await;
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0].node, "n2");
    // An error from someone else than the app server changes nothing.
    b.send("<message to='alice@localhost' type='chat' id='m3'><body>3</body></message>")
        .await;
    let n = notification(&mut app, "n2").await;
    let id = n.attr("id").unwrap();
    b.send(&format!(
        "<iq type='error' to='localhost' id='{id}'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    ))
    .await;
    synced(&mut b).await;
    assert_eq!(registrations(&s, "alice").await.len(), 1);
    answer_result(&mut app, &n).await;
    nothing_more(&mut b, &mut app, "marker").await;
}

/// A registration whose app server is a local account that does not
/// exist: the server's own `service-unavailable` answer removes it.
#[tokio::test]
async fn a_missing_local_app_server_disables_the_registration() {
    let s = server().await;
    let mut b = s.online("bob", "desk").await;
    let mut a = s.online("alice", "phone").await;
    let r = a
        .iq("<iq type='set' id='e'><enable xmlns='urn:xmpp:push:0' jid='nobody@localhost' node='n'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    offline(&s, a).await;
    b.send("<message to='alice@localhost' type='chat' id='m1'><body>1</body></message>")
        .await;
    synced(&mut b).await;
    let jid = rookery_core::Jid::parse("alice@localhost").unwrap();
    let store = s.running.as_ref().unwrap().sessions.stores().push.clone();
    let start = std::time::Instant::now();
    while !store.push_registrations(&jid).await.unwrap().is_empty() {
        assert!(start.elapsed() < rookery_e2e::WAIT, "still registered");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The next notification, whichever node; returns (node, iq).
async fn notification_any(app: &mut RawClient) -> (String, Element) {
    let n = app.next_non_presence().await;
    let node = n
        .child("pubsub", "http://jabber.org/protocol/pubsub")
        .and_then(|p| p.child("publish", "http://jabber.org/protocol/pubsub"))
        .and_then(|p| p.attr("node"))
        .unwrap_or_else(|| panic!("expected a notification, got {n}"))
        .to_owned();
    (node, n)
}

/// §8: the push service (here the local account `push`, the app server)
/// removes the account's publish affiliation and says so with a message to
/// the bare JID (Example 15): that registration goes, the notice is not
/// delivered, and another node's registration stays. The same message from
/// anyone else, or for an affiliation that still publishes, is an ordinary
/// message.
#[tokio::test]
async fn remote_disabling_by_affiliation_notice() {
    let s = server().await;
    let mut a = s.online("alice", "phone").await;
    a.send("<presence/>").await;
    a.until(|e| e.name() == "presence").await;
    enable(&mut a, "yxs32uqsflafdk3iuqo").await;
    enable(&mut a, "kept").await;
    let mut app = s.online("push", "appserver").await;
    let mut bob = s.online("bob", "pc").await;
    let notice = |node: &str, aff: &str| {
        format!(
            "<message to='alice@localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub' node='{node}'><affiliation jid='alice@localhost' affiliation='{aff}'/></pubsub></message>"
        )
    };
    // Not from the push service: delivered, nothing removed.
    bob.send(&notice("yxs32uqsflafdk3iuqo", "none")).await;
    let m = a.next_message().await;
    assert_eq!(m.attr("from"), Some("bob@localhost/pc"), "{m}");
    // From the push service, but still a publisher: delivered.
    app.send(&notice("yxs32uqsflafdk3iuqo", "publish-only"))
        .await;
    let m = a.next_message().await;
    assert_eq!(m.attr("from"), Some(APP), "{m}");
    assert_eq!(registrations(&s, "alice").await.len(), 2);
    // Example 15: removed, not delivered.
    app.send(&notice("yxs32uqsflafdk3iuqo", "none")).await;
    bob.send("<message to='alice@localhost' id='after'><body>x</body></message>")
        .await;
    let m = a.next_message().await;
    assert_eq!(m.attr("id"), Some("after"), "the notice was delivered: {m}");
    let regs = registrations(&s, "alice").await;
    assert_eq!(regs.len(), 1, "{regs:?}");
    assert_eq!(regs[0].node, "kept");
}
