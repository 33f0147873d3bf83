//! RFC 6121 §3 and §4 black-box between accounts of one server: the
//! subscription handshake, pre-approval, stored requests, cancellation,
//! presence broadcast, probes, unavailable on disconnect, directed presence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rookery_e2e::{RawClient, TestServer};

fn xml(e: &rookery_xml::Element) -> String {
    e.to_xml_string()
}

async fn online(s: &TestServer, user: &str, res: &str) -> RawClient {
    let mut c = s.login(user, "pw", res).await;
    c.iq("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    c.send("<presence/>").await;
    // Its own initial presence comes back (RFC 6121 §4.2.2).
    let p = c.next_presence().await;
    assert_eq!(
        p.attr("from"),
        Some(format!("{user}@localhost/{res}").as_str())
    );
    c
}

async fn server() -> TestServer {
    let s = TestServer::start().await;
    for u in ["juliet", "romeo", "nurse", "benvolio"] {
        s.add_user(u, "pw").await;
    }
    s
}

#[tokio::test]
async fn subscription_handshake_and_presence() {
    let s = server().await;
    let mut romeo = online(&s, "romeo", "orchard").await;
    let mut juliet = online(&s, "juliet", "balcony").await;

    // §3.1.1–§3.1.3: Romeo asks.
    romeo
        .send("<presence to='Juliet@localhost' type='subscribe' id='sub1'/>")
        .await;
    assert_eq!(
        xml(&romeo.roster_push().await),
        "<item xmlns='jabber:iq:roster' jid='juliet@localhost' subscription='none' ask='subscribe'/>"
    );
    let req = juliet.next_presence().await;
    assert_eq!(
        xml(&req),
        "<presence xmlns='jabber:client' to='juliet@localhost' type='subscribe' id='sub1' from='romeo@localhost'/>"
    );

    // §3.1.5: Juliet approves.
    juliet
        .send("<presence to='romeo@localhost' type='subscribed'/>")
        .await;
    assert_eq!(
        xml(&juliet.roster_push().await),
        "<item xmlns='jabber:iq:roster' jid='romeo@localhost' subscription='from'/>"
    );
    // §3.1.6: Romeo's roster moves to 'to', he is told, and gets her presence.
    assert_eq!(
        xml(&romeo.roster_push().await),
        "<item xmlns='jabber:iq:roster' jid='juliet@localhost' subscription='to'/>"
    );
    let (ok, _) = romeo.until(|e| e.attr("type") == Some("subscribed")).await;
    assert_eq!(ok.attr("from"), Some("juliet@localhost"));
    let (avail, _) = romeo
        .until(|e| e.name() == "presence" && e.attr("type").is_none())
        .await;
    assert_eq!(avail.attr("from"), Some("juliet@localhost/balcony"));
    assert_eq!(avail.attr("to"), Some("romeo@localhost"));

    // The other way round, so that both are 'both'.
    juliet
        .send("<presence to='romeo@localhost' type='subscribe'/>")
        .await;
    juliet.roster_push().await;
    romeo.until(|e| e.attr("type") == Some("subscribe")).await;
    romeo
        .send("<presence to='juliet@localhost' type='subscribed'/>")
        .await;
    assert_eq!(
        xml(&romeo.roster_push().await),
        "<item xmlns='jabber:iq:roster' jid='juliet@localhost' subscription='both'/>"
    );
    assert_eq!(
        xml(&juliet.roster_push().await),
        "<item xmlns='jabber:iq:roster' jid='romeo@localhost' subscription='both'/>"
    );

    // §4.4: a presence change reaches the subscribed contact.
    juliet
        .send("<presence><show>away</show><status>on the balcony</status></presence>")
        .await;
    let (p, _) = romeo
        .until(|e| e.name() == "presence" && e.child("show", "jabber:client").is_some())
        .await;
    assert_eq!(
        xml(&p),
        "<presence xmlns='jabber:client' from='juliet@localhost/balcony' to='romeo@localhost'><show>away</show><status>on the balcony</status></presence>"
    );

    // §4.5.2: the connection drops; the contact sees her go unavailable.
    drop(juliet);
    let (gone, _) = romeo.until(|e| e.attr("type") == Some("unavailable")).await;
    assert_eq!(
        xml(&gone),
        "<presence xmlns='jabber:client' type='unavailable' from='juliet@localhost/balcony' to='romeo@localhost'/>"
    );

    // §4.2/§4.3: back online — her probe brings Romeo's presence, and he sees her.
    let mut juliet = s.login("juliet", "pw", "chamber").await;
    juliet.send("<presence/>").await;
    let (his, _) = juliet
        .until(|e| e.attr("from") == Some("romeo@localhost/orchard"))
        .await;
    assert_eq!(his.name(), "presence");
    assert_eq!(his.attr("type"), None);
    let (hers, _) = romeo
        .until(|e| e.attr("from") == Some("juliet@localhost/chamber"))
        .await;
    assert_eq!(hers.attr("type"), None);

    // §3.3: Romeo unsubscribes from her presence; both rosters follow.
    romeo
        .send("<presence to='juliet@localhost' type='unsubscribe'/>")
        .await;
    assert_eq!(
        xml(&romeo.roster_push().await),
        "<item xmlns='jabber:iq:roster' jid='juliet@localhost' subscription='from'/>"
    );
}

#[tokio::test]
async fn requests_wait_for_an_offline_contact_and_preapproval() {
    let s = server().await;
    let mut romeo = online(&s, "romeo", "orchard").await;
    // The nurse is offline: the request is stored (§3.1.3).
    romeo
        .send("<presence to='nurse@localhost' type='subscribe'/>")
        .await;
    romeo.roster_push().await;
    let mut nurse = s.login("nurse", "pw", "kitchen").await;
    nurse.send("<presence/>").await;
    let (req, _) = nurse.until(|e| e.attr("type") == Some("subscribe")).await;
    assert_eq!(req.attr("from"), Some("romeo@localhost"));
    // Denied (§3.2).
    nurse
        .send("<presence to='romeo@localhost' type='unsubscribed'/>")
        .await;
    assert_eq!(
        xml(&romeo.roster_push().await),
        "<item xmlns='jabber:iq:roster' jid='nurse@localhost' subscription='none'/>"
    );
    let (no, _) = romeo
        .until(|e| e.attr("type") == Some("unsubscribed"))
        .await;
    assert_eq!(no.attr("from"), Some("nurse@localhost"));
    // Once answered, it is not shown again at the next login.
    drop(nurse);
    let mut nurse = s.login("nurse", "pw", "again").await;
    nurse.send("<presence/>").await;
    nurse.next_presence().await; // its own
    let ping = nurse
        .iq("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(ping.attr("type"), Some("result"));

    // §3.4: Benvolio pre-approves Romeo, whose request is then granted at once.
    let mut ben = online(&s, "benvolio", "street").await;
    ben.send("<presence to='romeo@localhost' type='subscribed'/>")
        .await;
    assert_eq!(
        xml(&ben.roster_push().await),
        "<item xmlns='jabber:iq:roster' jid='romeo@localhost' subscription='none' approved='true'/>"
    );
    romeo
        .send("<presence to='benvolio@localhost' type='subscribe'/>")
        .await;
    romeo.roster_push().await; // ask='subscribe'
    assert_eq!(
        xml(&romeo.roster_push().await),
        "<item xmlns='jabber:iq:roster' jid='benvolio@localhost' subscription='to'/>"
    );
    assert_eq!(
        xml(&ben.roster_push().await),
        "<item xmlns='jabber:iq:roster' jid='romeo@localhost' subscription='from'/>"
    );
}

#[tokio::test]
async fn subscription_to_oneself_does_nothing() {
    let s = server().await;
    let mut romeo = online(&s, "romeo", "orchard").await;
    romeo
        .send("<presence to='romeo@localhost' type='subscribe'/>")
        .await;
    let r = romeo
        .iq("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    assert_eq!(
        r.child("query", "jabber:iq:roster")
            .unwrap()
            .children()
            .count(),
        0,
        "{r}"
    );
}

#[tokio::test]
async fn directed_presence_is_cancelled_by_unavailable() {
    let s = server().await;
    let mut juliet = online(&s, "juliet", "balcony").await;
    let mut ben = online(&s, "benvolio", "street").await;
    juliet
        .send("<presence to='benvolio@localhost/street'><status>psst</status></presence>")
        .await;
    let (p, _) = ben
        .until(|e| e.attr("from") == Some("juliet@localhost/balcony"))
        .await;
    assert_eq!(p.child("status", "jabber:client").unwrap().text(), "psst");
    juliet.send("<presence type='unavailable'/>").await;
    let (u, _) = ben
        .until(|e| e.attr("from") == Some("juliet@localhost/balcony"))
        .await;
    assert_eq!(
        xml(&u),
        "<presence xmlns='jabber:client' type='unavailable' from='juliet@localhost/balcony' to='benvolio@localhost/street'/>"
    );
    // Probing is the server's job: a client's probe is ignored.
    ben.send("<presence to='juliet@localhost' type='probe'/>")
        .await;
    let pong = ben
        .iq("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(pong.attr("type"), Some("result"));
}
