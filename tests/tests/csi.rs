//! XEP-0352 black-box: an inactive client gets presence and chat-state-only
//! messages late (latest presence per sender only), urgent stanzas at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rookery_e2e::{RawClient, TestServer};

async fn online(s: &TestServer, user: &str, res: &str) -> RawClient {
    let mut c = s.login(user, "pw", res).await;
    c.iq("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    c.send("<presence/>").await;
    c.next_presence().await;
    c
}

#[tokio::test]
async fn inactive_client_gets_held_stanzas_on_urgent_or_active() {
    let s = TestServer::start().await;
    s.add_user("juliet", "pw").await;
    s.add_user("romeo", "pw").await;
    let mut juliet = online(&s, "juliet", "balcony").await;
    let mut romeo = online(&s, "romeo", "phone").await;
    // Mutual subscription so that presence flows.
    romeo
        .send("<presence to='juliet@localhost' type='subscribe'/>")
        .await;
    juliet.until(|e| e.attr("type") == Some("subscribe")).await;
    juliet
        .send("<presence to='romeo@localhost' type='subscribed'/>")
        .await;
    romeo
        .until(|e| e.name() == "presence" && e.attr("from") == Some("juliet@localhost/balcony"))
        .await;

    // Romeo's phone goes to sleep.
    romeo.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    let pong = romeo
        .iq("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(pong.attr("type"), Some("result"));
    for show in ["away", "xa", "dnd"] {
        juliet
            .send(&format!("<presence><show>{show}</show></presence>"))
            .await;
    }
    juliet.send("<message to='romeo@localhost/phone' type='chat' id='cs'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>").await;
    juliet.send("<message to='romeo@localhost/phone' type='chat' id='body'><body>wake up</body></message>").await;
    // The urgent message releases what was held, in order, with only the
    // latest of Juliet's three presence updates.
    let mut got = Vec::new();
    loop {
        let e = romeo.next_stanza().await;
        let done = e.attr("id") == Some("body");
        got.push(e);
        if done {
            break;
        }
    }
    let presences: Vec<_> = got.iter().filter(|e| e.name() == "presence").collect();
    assert_eq!(presences.len(), 1, "{got:?}");
    assert_eq!(
        presences[0].child("show", "jabber:client").unwrap().text(),
        "dnd"
    );
    let ids: Vec<_> = got.iter().filter_map(|e| e.attr("id")).collect();
    assert_eq!(ids, vec!["cs", "body"]);

    // Held again; <active/> releases it.
    juliet.send("<presence><show>chat</show></presence>").await;
    juliet.send("<message to='romeo@localhost/phone' type='chat' id='cs2'><paused xmlns='http://jabber.org/protocol/chatstates'/></message>").await;
    let ping = juliet
        .iq("<iq type='get' id='j'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(ping.attr("type"), Some("result"));
    romeo.send("<active xmlns='urn:xmpp:csi:0'/>").await;
    let p = romeo.next_presence().await;
    assert_eq!(p.child("show", "jabber:client").unwrap().text(), "chat");
    assert_eq!(romeo.next_stanza().await.attr("id"), Some("cs2"));
}

#[tokio::test]
async fn csi_feature_is_advertised() {
    let s = TestServer::start().await;
    s.add_user("romeo", "pw").await;
    let mut c = RawClient::connect(s.addr()).await;
    c.open("localhost").await;
    c.starttls("localhost").await;
    c.auth_scram("SCRAM-SHA-256", "romeo", "pw").await.unwrap();
    let f = c.open("localhost").await;
    assert!(f.child("csi", "urn:xmpp:csi:0").is_some(), "{f}");
}
