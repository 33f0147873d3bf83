//! XEP-0077 black-box: in-band registration (off by default), password change,
//! account removal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rookery_e2e::{RawClient, TestServer};
use rookery_xml::ns;

async fn tls_stream(s: &TestServer) -> RawClient {
    let mut c = RawClient::connect(s.addr()).await;
    c.open("localhost").await;
    c.starttls("localhost").await;
    c
}

#[tokio::test]
async fn registration_is_off_by_default() {
    let s = TestServer::start().await;
    let mut c = tls_stream(&s).await;
    assert!(
        c.features
            .as_ref()
            .unwrap()
            .child("register", ns::REGISTER_FEATURE)
            .is_none()
    );
    c.send("<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>")
        .await;
    let r = c.next().await;
    assert!(r.to_string().contains("service-unavailable"), "{r}");
}

#[tokio::test]
async fn register_then_log_in_and_rate_limit() {
    let s = TestServer::start_with(|c| c.registration.enabled = true).await;
    s.add_user("taken", "pw").await;
    let mut c = tls_stream(&s).await;
    assert!(
        c.features
            .as_ref()
            .unwrap()
            .child("register", ns::REGISTER_FEATURE)
            .is_some()
    );
    c.send("<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>")
        .await;
    let fields = c.next().await;
    let q = fields.child("query", ns::REGISTER).unwrap();
    assert!(
        q.child("username", ns::REGISTER).is_some() && q.child("password", ns::REGISTER).is_some()
    );
    c.send("<iq type='set' id='r2'><query xmlns='jabber:iq:register'><username>taken</username><password>x</password></query></iq>").await;
    assert!(c.next().await.to_string().contains("<conflict"));
    c.send("<iq type='set' id='r3'><query xmlns='jabber:iq:register'><username>new</username></query></iq>").await;
    assert!(c.next().await.to_string().contains("not-acceptable"));
    c.send("<iq type='set' id='r4'><query xmlns='jabber:iq:register'><username>New</username><password>s3cret</password></query></iq>").await;
    let ok = c.next().await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    // One account per stream.
    c.send("<iq type='set' id='r5'><query xmlns='jabber:iq:register'><username>other</username><password>p</password></query></iq>").await;
    assert!(c.next().await.to_string().contains("not-acceptable"));
    c.auth_scram("SCRAM-SHA-256", "new", "s3cret")
        .await
        .unwrap();
    // Another account from the same address right away is refused.
    let mut d = tls_stream(&s).await;
    d.send("<iq type='set' id='r6'><query xmlns='jabber:iq:register'><username>second</username><password>p</password></query></iq>").await;
    let e = d.next().await;
    assert!(e.to_string().contains("resource-constraint"), "{e}");
    // Stanzas other than registration still need authentication.
    d.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(d.expect_stream_error().await, "not-authorized");
}

#[tokio::test]
async fn password_change_and_account_removal() {
    let s = TestServer::start().await;
    s.add_user("gus", "old").await;
    let mut a = s.login("gus", "old", "one").await;
    let mut b = s.login("gus", "old", "two").await;
    let reg = a
        .iq("<iq type='get' id='g'><query xmlns='jabber:iq:register'/></iq>")
        .await;
    assert!(
        reg.child("query", ns::REGISTER)
            .unwrap()
            .child("registered", ns::REGISTER)
            .is_some()
    );
    let e = a.iq("<iq type='set' id='c0'><query xmlns='jabber:iq:register'><username>gus</username><password/></query></iq>").await;
    assert!(e.to_string().contains("not-acceptable"), "{e}");
    let e = a.iq("<iq type='set' id='c1'><query xmlns='jabber:iq:register'><username>other</username><password>x</password></query></iq>").await;
    assert!(e.to_string().contains("not-allowed"), "{e}");
    let ok = a.iq("<iq type='set' id='c2' to='localhost'><query xmlns='jabber:iq:register'><username>gus</username><password>new</password></query></iq>").await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    let mut c = tls_stream(&s).await;
    assert_eq!(
        c.auth_scram("SCRAM-SHA-256", "gus", "old").await,
        Err("not-authorized".into())
    );
    c.auth_scram("SCRAM-SHA-256", "gus", "new").await.unwrap();
    // Removal: the result, then every session ends with <not-authorized/>.
    let ok = a
        .iq("<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>")
        .await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    assert_eq!(a.expect_stream_error().await, "not-authorized");
    assert_eq!(b.expect_stream_error().await, "not-authorized");
    let mut c = tls_stream(&s).await;
    assert_eq!(
        c.auth_plain("gus", "new").await,
        Err("not-authorized".into())
    );
}
