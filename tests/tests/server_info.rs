//! The Compliance Suites' server information: XEP-0157 contact addresses
//! in the server's disco#info, and XEP-0215 external services (STUN/TURN)
//! with time-limited TURN credentials.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rookery_e2e::TestServer;
use rookery_session::modules::extdisco::{ExternalService, NS, turn_rest_password};
use rookery_xml::{Element, ns};

async fn server() -> TestServer {
    let s = TestServer::start_with(|c| {
        c.modules.contact.abuse = vec!["mailto:abuse@localhost".into()];
        c.modules.contact.admin = vec![
            "xmpp:admin@localhost".into(),
            "mailto:admin@localhost".into(),
        ];
        c.modules.external_services = vec![
            ExternalService {
                kind: "stun".into(),
                host: "turn.localhost".into(),
                port: 3478,
                transport: "udp".into(),
                ..Default::default()
            },
            ExternalService {
                kind: "turn".into(),
                host: "turn.localhost".into(),
                port: 3478,
                transport: "udp".into(),
                secret: "coturn-static-auth-secret".into(),
                credentials_ttl_secs: 600,
                ..Default::default()
            },
        ];
    })
    .await;
    s.add_user("alice", "pw").await;
    s.add_user("bob", "pw").await;
    s
}

fn field_values(x: &Element, var: &str) -> Vec<String> {
    x.children()
        .find(|f| f.name() == "field" && f.attr("var") == Some(var))
        .map(|f| {
            f.children()
                .filter(|v| v.name() == "value")
                .map(|v| v.text().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn disco_info_carries_the_contact_addresses_form() {
    let s = server().await;
    let mut a = s.login("alice", "pw", "laptop").await;
    let r = a
        .iq("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    let q = r.child("query", ns::DISCO_INFO).unwrap();
    // XEP-0157 §3, Example 1: a result form with the serverinfo FORM_TYPE.
    let x = q.child("x", ns::DATA_FORMS).expect("a data form");
    assert_eq!(x.attr("type"), Some("result"));
    assert_eq!(
        field_values(x, "FORM_TYPE"),
        vec!["http://jabber.org/network/serverinfo".to_string()]
    );
    assert_eq!(
        field_values(x, "admin-addresses"),
        vec!["xmpp:admin@localhost", "mailto:admin@localhost"]
    );
    assert_eq!(
        field_values(x, "abuse-addresses"),
        vec!["mailto:abuse@localhost"]
    );
    // Lists not configured are left out.
    assert!(
        x.children()
            .all(|f| f.attr("var") != Some("sales-addresses"))
    );
    assert!(
        q.children()
            .any(|f| f.name() == "feature" && f.attr("var") == Some(NS))
    );
}

#[tokio::test]
async fn external_services_come_with_turn_credentials() {
    let s = server().await;
    let mut a = s.login("alice", "pw", "laptop").await;
    // XEP-0215 §3.1: every service.
    let r = a
        .iq("<iq type='get' id='e1' to='localhost'><services xmlns='urn:xmpp:extdisco:2'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml_string());
    let services: Vec<&Element> = r.child("services", NS).unwrap().children().collect();
    assert_eq!(services.len(), 2);
    assert_eq!(services[0].attr("type"), Some("stun"));
    assert_eq!(services[0].attr("username"), None);
    let turn = services[1];
    assert_eq!(turn.attr("type"), Some("turn"));
    assert_eq!(turn.attr("port"), Some("3478"));
    // TURN REST credentials: `<expiry>:<bare JID>` and its HMAC, as coturn checks them.
    let user = turn.attr("username").unwrap();
    let (expiry, who) = user.split_once(':').unwrap();
    assert_eq!(who, "alice@localhost");
    let expiry: u64 = expiry.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(expiry > now && expiry <= now + 601, "{expiry} vs {now}");
    assert_eq!(
        turn.attr("password"),
        Some(turn_rest_password("coturn-static-auth-secret", user).as_str())
    );
    assert!(turn.attr("expires").is_some());

    // §3.2: one type.
    let r = a
        .iq("<iq type='get' id='e2' to='localhost'><services xmlns='urn:xmpp:extdisco:2' type='stun'/></iq>")
        .await;
    let services: Vec<&Element> = r.child("services", NS).unwrap().children().collect();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].attr("type"), Some("stun"));

    // §3.3: credentials for one service; none for a service without any.
    let r = a
        .iq("<iq type='get' id='e3' to='localhost'><credentials xmlns='urn:xmpp:extdisco:2'><service host='turn.localhost' type='turn'/></credentials></iq>")
        .await;
    let c = r.child("credentials", NS).unwrap().first_child().unwrap();
    assert!(c.attr("password").is_some());
    let r = a
        .iq("<iq type='get' id='e4' to='localhost'><credentials xmlns='urn:xmpp:extdisco:2'><service host='turn.localhost' type='stun'/></credentials></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("error"));
    assert!(
        r.child("error", ns::CLIENT)
            .and_then(|e| e.child("item-not-found", ns::STANZAS))
            .is_some()
    );

    // Asked of another account instead of the server: not answered.
    let r = a
        .iq("<iq type='get' id='e5' to='bob@localhost'><services xmlns='urn:xmpp:extdisco:2'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("error"));
}
