//! Per-user data the server keeps and answers for, black-box: XEP-0054
//! vcard-temp, XEP-0049 private XML storage, XEP-0012 last activity, and their
//! removal with the account (XEP-0077 §3.2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rookery_e2e::{RawClient, TestServer, WAIT, assert_xml};
use rookery_session::LastActivityStore;
use rookery_xml::{Element, ns};

const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

async fn two_users(s: &TestServer) -> (RawClient, RawClient) {
    s.add_user("alice", "pw").await;
    s.add_user("bob", "pw").await;
    let a = s.login("alice", "pw", "laptop").await;
    let b = s.login("bob", "pw", "phone").await;
    (a, b)
}

/// Subscribes `watcher` (bare JID `watcher_jid`) to the presence of `owner`
/// (`owner_jid`), RFC 6121 §3.1: afterwards `owner`'s roster has `watcher`
/// with subscription 'from'.
async fn subscribe(
    watcher: &mut RawClient,
    watcher_jid: &str,
    owner: &mut RawClient,
    owner_jid: &str,
) {
    watcher
        .iq("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    watcher
        .send(&format!("<presence to='{owner_jid}' type='subscribe'/>"))
        .await;
    // The pending request is in the roster once the request was processed.
    assert_eq!(watcher.roster_push().await.attr("ask"), Some("subscribe"));
    owner
        .send(&format!("<presence to='{watcher_jid}' type='subscribed'/>"))
        .await;
    assert_eq!(watcher.roster_push().await.attr("subscription"), Some("to"));
}

fn sessions(s: &TestServer) -> &rookery_session::LocalSessions {
    &s.running.as_ref().unwrap().sessions
}

/// Waits until the server has exactly `n` sessions bound.
async fn wait_sessions(s: &TestServer, n: usize) {
    rookery_e2e::eventually(|| sessions(s).session_count() == n).await;
}

/// Asks `who`'s last activity (XEP-0012 §3) as `c`, whose full JID is `me`,
/// and asserts the answer: exactly a result with `status` and some seconds
/// of the test's own duration.
async fn assert_last(c: &mut RawClient, me: &str, id: &str, who: &str, status: &str) {
    let r = last_of(c, id, who).await;
    assert_last_answer(&r, me, id, who, status);
}

async fn last_of(c: &mut RawClient, id: &str, who: &str) -> Element {
    c.iq(&format!(
        "<iq type='get' id='{id}' to='{who}'><query xmlns='jabber:iq:last'/></iq>"
    ))
    .await
}

#[track_caller]
fn assert_last_answer(r: &Element, me: &str, id: &str, who: &str, status: &str) {
    let seconds: u64 = r
        .child("query", ns::LAST)
        .and_then(|q| q.attr("seconds"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no seconds in {r}"));
    assert!(seconds <= WAIT.as_secs() * 3, "{r}");
    let body = if status.is_empty() {
        format!("<query xmlns='jabber:iq:last' seconds='{seconds}'/>")
    } else {
        format!("<query xmlns='jabber:iq:last' seconds='{seconds}'>{status}</query>")
    };
    assert_xml(
        r,
        &format!("<iq type='result' id='{id}' from='{who}' to='{me}'>{body}</iq>"),
    );
}

/// Like [`assert_last`], asking again until the status is `status`: the
/// record is written just after a session ends.
async fn poll_last(c: &mut RawClient, me: &str, who: &str, status: &str) {
    let start = std::time::Instant::now();
    for n in 0.. {
        let id = format!("poll{n}");
        let r = last_of(c, &id, who).await;
        let text = r.child("query", ns::LAST).map(|q| q.text());
        if text.as_deref() == Some(status) || start.elapsed() > WAIT {
            assert_last_answer(&r, me, &id, who, status);
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn vcard_own_and_others() {
    let s = TestServer::start().await;
    let (mut a, mut b) = two_users(&s).await;

    // §3.1: no vCard yet is an empty one, with no 'to' or to one's own bare JID.
    let r = a
        .iq("<iq type='get' id='v1'><vCard xmlns='vcard-temp'/></iq>")
        .await;
    assert_xml(
        &r,
        "<iq type='result' id='v1' to='alice@localhost/laptop'><vCard xmlns='vcard-temp'/></iq>",
    );
    let r = a
        .iq("<iq type='get' id='v2' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>")
        .await;
    assert_xml(
        &r,
        "<iq type='result' id='v2' from='alice@localhost' to='alice@localhost/laptop'><vCard xmlns='vcard-temp'/></iq>",
    );

    // §3.3 (1.3.0): another account with no vCard is <service-unavailable/>,
    // the same as an account that does not exist.
    let r = b
        .iq("<iq type='get' id='v3' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>")
        .await;
    assert_xml(
        &r,
        &format!(
            "<iq type='error' id='v3' from='alice@localhost' to='bob@localhost/phone'><vCard xmlns='vcard-temp'/><error type='cancel'><service-unavailable xmlns='{STANZAS}'/></error></iq>"
        ),
    );
    let r = b
        .iq("<iq type='get' id='v4' to='nobody@localhost'><vCard xmlns='vcard-temp'/></iq>")
        .await;
    assert_xml(
        &r,
        &format!(
            "<iq type='error' id='v4' from='nobody@localhost' to='bob@localhost/phone'><vCard xmlns='vcard-temp'/><error type='cancel'><service-unavailable xmlns='{STANZAS}'/></error></iq>"
        ),
    );

    // §3.2: set, then read back by the owner and by others, byte for byte.
    let card = "<vCard xmlns='vcard-temp'><FN>Alice &amp; Co</FN><N><FAMILY>Liddell</FAMILY><GIVEN>Alice</GIVEN><MIDDLE/></N><PHOTO><TYPE>image/png</TYPE><BINVAL>iVBORw0KGgo=</BINVAL></PHOTO><x xmlns='urn:example:ext' a='1'>kept</x></vCard>";
    let r = a.iq(&format!("<iq type='set' id='v5'>{card}</iq>")).await;
    assert_xml(
        &r,
        "<iq type='result' id='v5' to='alice@localhost/laptop'/>",
    );
    let r = a
        .iq("<iq type='get' id='v6'><vCard xmlns='vcard-temp'/></iq>")
        .await;
    assert_xml(
        &r,
        &format!("<iq type='result' id='v6' to='alice@localhost/laptop'>{card}</iq>"),
    );
    let r = b
        .iq("<iq type='get' id='v7' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>")
        .await;
    assert_xml(
        &r,
        &format!(
            "<iq type='result' id='v7' from='alice@localhost' to='bob@localhost/phone'>{card}</iq>"
        ),
    );

    // §3.2: setting another account's vCard is <forbidden/>.
    let evil = "<vCard xmlns='vcard-temp'><FN>Mallory</FN></vCard>";
    let r = b
        .iq(&format!(
            "<iq type='set' id='v8' to='alice@localhost'>{evil}</iq>"
        ))
        .await;
    assert_xml(
        &r,
        &format!(
            "<iq type='error' id='v8' from='alice@localhost' to='bob@localhost/phone'>{evil}<error type='auth'><forbidden xmlns='{STANZAS}'/></error></iq>"
        ),
    );

    // Size limit ([modules] vcard_max_bytes, 64 KiB by default).
    let big = format!(
        "<vCard xmlns='vcard-temp'><PHOTO><BINVAL>{}</BINVAL></PHOTO></vCard>",
        "A".repeat(70_000)
    );
    let r = a.iq(&format!("<iq type='set' id='v9'>{big}</iq>")).await;
    assert_xml(
        &r,
        &format!(
            "<iq type='error' id='v9' to='alice@localhost/laptop'>{big}<error type='modify'><not-acceptable xmlns='{STANZAS}'/><text xmlns='{STANZAS}' xml:lang='en'>a vCard may have at most 65536 bytes</text></error></iq>"
        ),
    );
    // Nothing changed, and the other account still sees the old one.
    let r = b
        .iq("<iq type='get' id='v10' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>")
        .await;
    assert_xml(
        &r,
        &format!(
            "<iq type='result' id='v10' from='alice@localhost' to='bob@localhost/phone'>{card}</iq>"
        ),
    );

    // The server itself has no vCard (§3.3 note).
    let r = a
        .iq("<iq type='get' id='v11' to='localhost'><vCard xmlns='vcard-temp'/></iq>")
        .await;
    assert_xml(
        &r,
        &format!(
            "<iq type='error' id='v11' from='localhost' to='alice@localhost/laptop'><vCard xmlns='vcard-temp'/><error type='cancel'><service-unavailable xmlns='{STANZAS}'/></error></iq>"
        ),
    );

    // A new session reads the stored vCard (§3.1).
    let mut a2 = s.login("alice", "pw", "phone").await;
    let r = a2
        .iq("<iq type='get' id='v12'><vCard xmlns='vcard-temp'/></iq>")
        .await;
    assert_xml(
        &r,
        &format!("<iq type='result' id='v12' to='alice@localhost/phone'>{card}</iq>"),
    );
}

#[tokio::test]
async fn features_are_advertised() {
    let s = TestServer::start().await;
    let (mut a, _b) = two_users(&s).await;
    let info = a.iq("<iq to='localhost' type='get' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let vars: Vec<&str> = info
        .child("query", ns::DISCO_INFO)
        .unwrap()
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|c| c.attr("var"))
        .collect();
    for f in ["vcard-temp", "jabber:iq:private", "jabber:iq:last"] {
        assert!(vars.contains(&f), "{f} missing from {vars:?}");
    }
}

#[tokio::test]
async fn private_xml_storage() {
    let s = TestServer::start_with(|c| c.modules.private_max_bytes = 400).await;
    let (mut a, mut b) = two_users(&s).await;

    // §2.3: nothing stored yet is the requested element, empty.
    let r = a
        .iq("<iq type='get' id='p1'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>")
        .await;
    assert_xml(
        &r,
        "<iq type='result' id='p1' to='alice@localhost/laptop'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>",
    );

    // Example 1 and 2: store, then read back.
    let prefs = "<exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></exodus>";
    let r = a
        .iq(&format!(
            "<iq type='set' id='p2'><query xmlns='jabber:iq:private'>{prefs}</query></iq>"
        ))
        .await;
    assert_xml(
        &r,
        "<iq type='result' id='p2' to='alice@localhost/laptop'/>",
    );
    let r = a
        .iq("<iq type='get' id='p3' to='alice@localhost'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>")
        .await;
    assert_xml(
        &r,
        &format!(
            "<iq type='result' id='p3' from='alice@localhost' to='alice@localhost/laptop'><query xmlns='jabber:iq:private'>{prefs}</query></iq>"
        ),
    );

    // Keyed by (namespace, name): another element of the namespace is separate,
    // and a set may hold several elements of one namespace.
    let marks = "<storage xmlns='storage:bookmarks'><conference jid='r@muc.localhost' autojoin='true'><nick>al</nick></conference></storage>";
    let other = "<notes xmlns='storage:bookmarks'>x</notes>";
    let r = a
        .iq(&format!(
            "<iq type='set' id='p4'><query xmlns='jabber:iq:private'>{marks}{other}</query></iq>"
        ))
        .await;
    assert_xml(
        &r,
        "<iq type='result' id='p4' to='alice@localhost/laptop'/>",
    );
    let r = a
        .iq("<iq type='get' id='p5'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>")
        .await;
    assert_xml(
        &r,
        &format!(
            "<iq type='result' id='p5' to='alice@localhost/laptop'><query xmlns='jabber:iq:private'>{marks}</query></iq>"
        ),
    );
    let r = a
        .iq("<iq type='get' id='p6'><query xmlns='jabber:iq:private'><notes xmlns='storage:bookmarks'/><storage xmlns='storage:bookmarks'/></query></iq>")
        .await;
    assert_xml(
        &r,
        &format!(
            "<iq type='result' id='p6' to='alice@localhost/laptop'><query xmlns='jabber:iq:private'>{other}{marks}</query></iq>"
        ),
    );

    // Example 3: another user's data is <forbidden/>, to get and to set.
    let r = b
        .iq("<iq type='get' id='p7' to='alice@localhost'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>")
        .await;
    assert_xml(
        &r,
        &format!(
            "<iq type='error' id='p7' from='alice@localhost' to='bob@localhost/phone'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query><error type='auth'><forbidden xmlns='{STANZAS}'/></error></iq>"
        ),
    );
    let r = b
        .iq("<iq type='set' id='p8' to='alice@localhost'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'><defaultnick>Macbeth</defaultnick></exodus></query></iq>")
        .await;
    assert_xml(
        &r,
        &format!(
            "<iq type='error' id='p8' from='alice@localhost' to='bob@localhost/phone'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'><defaultnick>Macbeth</defaultnick></exodus></query><error type='auth'><forbidden xmlns='{STANZAS}'/></error></iq>"
        ),
    );
    // Bob's own storage is his own.
    let r = b
        .iq("<iq type='get' id='p9'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>")
        .await;
    assert_xml(
        &r,
        "<iq type='result' id='p9' to='bob@localhost/phone'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>",
    );

    // §2.3: no child element is <not-acceptable/>.
    let r = a
        .iq("<iq type='get' id='p10'><query xmlns='jabber:iq:private'/></iq>")
        .await;
    assert_xml(
        &r,
        &format!(
            "<iq type='error' id='p10' to='alice@localhost/laptop'><query xmlns='jabber:iq:private'/><error type='modify'><not-acceptable xmlns='{STANZAS}'/><text xmlns='{STANZAS}' xml:lang='en'>private XML storage needs a child element</text></error></iq>"
        ),
    );
    // A child with no namespace of its own (jabber:client), or in
    // jabber:iq:private, is <not-acceptable/>.
    for (id, child) in [
        ("p11", "<prefs/>"),
        ("p12", "<query xmlns='jabber:iq:private'/>"),
    ] {
        let r = a
            .iq(&format!(
                "<iq type='set' id='{id}'><query xmlns='jabber:iq:private'>{child}</query></iq>"
            ))
            .await;
        assert_xml(
            &r,
            &format!(
                "<iq type='error' id='{id}' to='alice@localhost/laptop'><query xmlns='jabber:iq:private'>{child}</query><error type='modify'><not-acceptable xmlns='{STANZAS}'/><text xmlns='{STANZAS}' xml:lang='en'>that namespace cannot be stored</text></error></iq>"
            ),
        );
    }

    // Quota ([modules] private_max_bytes = 400 here): refused whole, and the
    // stored data is unchanged.
    let huge = format!(
        "<exodus xmlns='exodus:prefs'><defaultnick>{}</defaultnick></exodus>",
        "H".repeat(300)
    );
    let r = a
        .iq(&format!(
            "<iq type='set' id='p13'><query xmlns='jabber:iq:private'>{huge}</query></iq>"
        ))
        .await;
    assert_xml(
        &r,
        &format!(
            "<iq type='error' id='p13' to='alice@localhost/laptop'><query xmlns='jabber:iq:private'>{huge}</query><error type='modify'><policy-violation xmlns='{STANZAS}'/><text xmlns='{STANZAS}' xml:lang='en'>private XML storage is limited to 400 bytes per account</text></error></iq>"
        ),
    );
    let r = a
        .iq("<iq type='get' id='p14'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>")
        .await;
    assert_xml(
        &r,
        &format!(
            "<iq type='result' id='p14' to='alice@localhost/laptop'><query xmlns='jabber:iq:private'>{prefs}</query></iq>"
        ),
    );
}

#[tokio::test]
async fn last_activity() {
    const ME: &str = "alice@localhost/laptop";
    let s = TestServer::start().await;
    s.add_user("carol", "pw").await;
    let (mut a, mut b) = two_users(&s).await;
    subscribe(&mut a, "alice@localhost", &mut b, "bob@localhost").await;

    // §5: to the server, its uptime.
    let r = a
        .iq("<iq type='get' id='l1' to='localhost'><query xmlns='jabber:iq:last'/></iq>")
        .await;
    let q = r.child("query", ns::LAST).unwrap();
    let up: u64 = q.attr("seconds").unwrap().parse().unwrap();
    assert!(up < 600, "{r}");
    assert_xml(
        &r,
        &format!(
            "<iq type='result' id='l1' from='localhost' to='alice@localhost/laptop'><query xmlns='jabber:iq:last' seconds='{up}'/></iq>"
        ),
    );

    // §3: an account whose presence one is not subscribed to is <forbidden/>.
    let r = a
        .iq("<iq type='get' id='l2' to='carol@localhost'><query xmlns='jabber:iq:last'/></iq>")
        .await;
    assert_xml(
        &r,
        &format!(
            "<iq type='error' id='l2' from='carol@localhost' to='alice@localhost/laptop'><query xmlns='jabber:iq:last'/><error type='auth'><forbidden xmlns='{STANZAS}'/></error></iq>"
        ),
    );
    // A contact that never logged out has nothing to tell: the same answer as
    // an account that does not exist.
    for (id, who) in [("l3", "bob@localhost"), ("l3b", "nobody@localhost")] {
        let r = a
            .iq(&format!(
                "<iq type='get' id='{id}' to='{who}'><query xmlns='jabber:iq:last'/></iq>"
            ))
            .await;
        assert_xml(
            &r,
            &format!(
                "<iq type='error' id='{id}' from='{who}' to='alice@localhost/laptop'><query xmlns='jabber:iq:last'/><error type='cancel'><service-unavailable xmlns='{STANZAS}'/></error></iq>"
            ),
        );
    }

    // §3: an account with an available resource: 0 seconds.
    b.send("<presence/>").await;
    b.iq("<iq type='get' id='sync0'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let r = a
        .iq("<iq type='get' id='l4' to='bob@localhost'><query xmlns='jabber:iq:last'/></iq>")
        .await;
    assert_xml(
        &r,
        "<iq type='result' id='l4' from='bob@localhost' to='alice@localhost/laptop'><query xmlns='jabber:iq:last' seconds='0'/></iq>",
    );

    // §3: after unavailable presence, the seconds since and its status.
    b.send("<presence type='unavailable'><status>Gone fishing</status></presence>")
        .await;
    b.iq("<iq type='get' id='sync1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_last(&mut a, ME, "l5", "bob@localhost", "Gone fishing").await;

    // §4: to a full JID it is the client's to answer.
    a.send("<iq type='get' id='l6' to='bob@localhost/phone'><query xmlns='jabber:iq:last'/></iq>")
        .await;
    let (fwd, _) = b.until(|e| e.name() == "iq").await;
    assert_xml(
        &fwd,
        "<iq type='get' id='l6' from='alice@localhost/laptop' to='bob@localhost/phone'><query xmlns='jabber:iq:last'/></iq>",
    );

    // The session ends: the status of its last unavailable presence is kept.
    drop(b);
    wait_sessions(&s, 1).await;
    assert_last(&mut a, ME, "l6b", "bob@localhost", "Gone fishing").await;

    // A resource that is bound but not available does not make bob online;
    // one that goes away without unavailable presence leaves no status.
    let mut b2 = s.login("bob", "pw", "tablet").await;
    assert_last(&mut a, ME, "l7", "bob@localhost", "Gone fishing").await;
    b2.send("<presence type='unavailable'><status>brb</status></presence><presence/>")
        .await;
    b2.iq("<iq type='get' id='sync2'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    drop(b2);
    wait_sessions(&s, 1).await;
    poll_last(&mut a, ME, "bob@localhost", "").await;

    // Carol, not subscribed to Bob, may not know.
    let mut c = s.login("carol", "pw", "desk").await;
    let r = last_of(&mut c, "l9", "bob@localhost").await;
    assert_xml(
        &r,
        &format!(
            "<iq type='error' id='l9' from='bob@localhost' to='carol@localhost/desk'><query xmlns='jabber:iq:last'/><error type='auth'><forbidden xmlns='{STANZAS}'/></error></iq>"
        ),
    );
    // One's own account (no 'to', RFC 6120 §10.3.3): online now.
    a.send("<presence/>").await;
    let r = a
        .iq("<iq type='get' id='l10'><query xmlns='jabber:iq:last'/></iq>")
        .await;
    assert_xml(
        &r,
        "<iq type='result' id='l10' to='alice@localhost/laptop'><query xmlns='jabber:iq:last' seconds='0'/></iq>",
    );

    // Only get exists.
    let r = a
        .iq("<iq type='set' id='l8' to='bob@localhost'><query xmlns='jabber:iq:last'/></iq>")
        .await;
    assert_xml(
        &r,
        &format!(
            "<iq type='error' id='l8' from='bob@localhost' to='alice@localhost/laptop'><query xmlns='jabber:iq:last'/><error type='modify'><bad-request xmlns='{STANZAS}'/><text xmlns='{STANZAS}' xml:lang='en'>last activity is a get</text></error></iq>"
        ),
    );
}

#[tokio::test]
async fn account_removal_deletes_per_user_data() {
    let s = TestServer::start().await;
    let (mut a, mut b) = two_users(&s).await;
    subscribe(&mut b, "bob@localhost", &mut a, "alice@localhost").await;
    let card = "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>";
    let prefs = "<exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></exodus>";
    let r = a.iq(&format!("<iq type='set' id='s1'>{card}</iq>")).await;
    assert_xml(
        &r,
        "<iq type='result' id='s1' to='alice@localhost/laptop'/>",
    );
    let r = a
        .iq(&format!(
            "<iq type='set' id='s2'><query xmlns='jabber:iq:private'>{prefs}</query></iq>"
        ))
        .await;
    assert_xml(
        &r,
        "<iq type='result' id='s2' to='alice@localhost/laptop'/>",
    );
    // A second session, alice's only available one, ends with a status: a
    // last-activity record.
    let mut a2 = s.login("alice", "pw", "old").await;
    a2.send("<presence/>").await;
    a2.send("<presence type='unavailable'><status>bye</status></presence>")
        .await;
    a2.iq("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    drop(a2);
    wait_sessions(&s, 2).await;
    assert_last(
        &mut b,
        "bob@localhost/phone",
        "l1",
        "alice@localhost",
        "bye",
    )
    .await;

    // XEP-0077 §3.2: the account goes, and its sessions with it.
    let r = a
        .iq("<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>")
        .await;
    assert_xml(
        &r,
        "<iq type='result' id='rm' to='alice@localhost/laptop'/>",
    );
    assert_eq!(a.expect_stream_error().await, "not-authorized");
    wait_sessions(&s, 1).await;

    // Its record went with it, and the ended session wrote no new one.
    let store = rookery::server::open_store(&s.config).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let alice = rookery_core::Jid::parse("alice@localhost").unwrap();
    assert_eq!(store.last_activity(&alice).await.unwrap(), None);

    // A new account of the same name starts empty.
    s.add_user("alice", "pw2").await;
    let r = b
        .iq("<iq type='get' id='g1' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>")
        .await;
    assert_xml(
        &r,
        &format!(
            "<iq type='error' id='g1' from='alice@localhost' to='bob@localhost/phone'><vCard xmlns='vcard-temp'/><error type='cancel'><service-unavailable xmlns='{STANZAS}'/></error></iq>"
        ),
    );
    // Her roster went too: Bob is no longer a subscribed contact.
    let r = b
        .iq("<iq type='get' id='g2' to='alice@localhost'><query xmlns='jabber:iq:last'/></iq>")
        .await;
    assert_xml(
        &r,
        &format!(
            "<iq type='error' id='g2' from='alice@localhost' to='bob@localhost/phone'><query xmlns='jabber:iq:last'/><error type='auth'><forbidden xmlns='{STANZAS}'/></error></iq>"
        ),
    );
    let mut a = s.login("alice", "pw2", "new").await;
    let r = a
        .iq("<iq type='get' id='g3'><vCard xmlns='vcard-temp'/></iq>")
        .await;
    assert_xml(
        &r,
        "<iq type='result' id='g3' to='alice@localhost/new'><vCard xmlns='vcard-temp'/></iq>",
    );
    let r = a
        .iq("<iq type='get' id='g4'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>")
        .await;
    assert_xml(
        &r,
        "<iq type='result' id='g4' to='alice@localhost/new'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>",
    );
}
