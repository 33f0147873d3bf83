//! The load generator's own tests: small scenarios against a Rookery
//! started in-process, asserting on counts (never on times).
#![allow(clippy::unwrap_used)]

use rookery_e2e::TestServer;
use rookery_loadtest::conn::TlsMode;
use rookery_loadtest::sasl::Mechanism;
use rookery_loadtest::{Options, Scenario, run};

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.registration.enabled = true;
        c.registration.min_interval_secs = 0;
    })
    .await
}

fn options(s: &TestServer, users: u64, prefix: &str) -> Options {
    Options {
        addr: s.addr(),
        domain: s.domain().to_owned(),
        tls: TlsMode::Starttls,
        mech: Mechanism::ScramSha1,
        users,
        first_user: 0,
        prefix: prefix.to_owned(),
        password: "loadpass".into(),
        concurrency: 8,
        rate: 0.0,
        duration: 1.0,
        window: 4,
        contacts: 4,
        senders: 2,
        room: String::new(),
        // The server runs in this process: its figures are ours too.
        server_pid: Some(std::process::id()),
        label: "rookery-in-process".into(),
        source_ips: 4,
        timeout: 30.0,
        salt_cache: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_then_login_storm() {
    let s = server().await;
    let mut o = options(&s, 12, "storm");
    let r = run(Scenario::Register, &o).await.unwrap();
    assert_eq!(
        (r.errors, r.figures["created"], r.figures["existing"]),
        (0, 12.0, 0.0)
    );
    // Registering again finds the accounts.
    let r = run(Scenario::Register, &o).await.unwrap();
    assert_eq!(
        (r.errors, r.figures["created"], r.figures["existing"]),
        (0, 0.0, 12.0)
    );

    for (tls, mech) in [
        (TlsMode::Starttls, Mechanism::ScramSha1),
        (TlsMode::Direct, Mechanism::ScramSha256),
        (TlsMode::Starttls, Mechanism::Plain),
    ] {
        o.tls = tls;
        o.mech = mech;
        o.addr = if tls == TlsMode::Direct {
            s.tls_addr()
        } else {
            s.addr()
        };
        let r = run(Scenario::Login, &o).await.unwrap();
        assert_eq!(r.errors, 0, "{tls:?} {mech:?}: {:?}", r.error_samples);
        assert_eq!(r.figures["logins"], 12.0);
        assert_eq!(r.latency["login"].count, 12);
        assert_eq!(r.latency["auth"].count, 12);
        assert_eq!(r.latency.contains_key("starttls"), tls == TlsMode::Starttls);
        assert!(r.server_cpu_s.is_some() && r.server_peak_rss_kib.is_some());
        // The JSON line carries the same figures.
        let j: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(j["figures"]["logins"], 12.0);
        assert_eq!(j["latency"]["login"]["count"], 12);
    }

    // A wrong password is an error, not a login.
    o.password = "wrong".into();
    o.users = 2;
    let r = run(Scenario::Login, &o).await.unwrap();
    assert_eq!((r.errors, r.figures["logins"]), (2, 0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messaging_loses_nothing() {
    let s = server().await;
    let mut o = options(&s, 6, "chat");
    run(Scenario::Register, &o).await.unwrap();
    // At a target rate: 6 users = 3 pairs, 150 msg/s in all for 1 s.
    o.rate = 150.0;
    let r = run(Scenario::Messaging, &o).await.unwrap();
    assert_eq!(r.errors, 0, "{:?}", r.error_samples);
    let sent = r.figures["sent"];
    assert!(sent >= 60.0, "sent {sent}");
    assert_eq!(r.figures["delivered"], sent);
    assert_eq!((r.figures["lost"], r.figures["out_of_order"]), (0.0, 0.0));
    assert_eq!(r.latency["message"].count as f64, sent);
    // Closed loop (saturation) with a window of 4 per direction.
    o.rate = 0.0;
    let r = run(Scenario::Messaging, &o).await.unwrap();
    assert_eq!(r.errors, 0, "{:?}", r.error_samples);
    assert!(r.figures["sent"] >= 24.0);
    assert_eq!(r.figures["delivered"], r.figures["sent"]);
    assert_eq!(r.figures["lost"], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_storm_provisions_rosters_once() {
    let s = server().await;
    let o = options(&s, 10, "pres");
    run(Scenario::Register, &o).await.unwrap();
    let r = run(Scenario::Presence, &o).await.unwrap();
    assert_eq!(r.errors, 0, "{:?}", r.error_samples);
    assert_eq!(r.figures["provisioned_now"], 1.0);
    assert_eq!(r.figures["logins"], 10.0);
    // Every user got one presence change from each of its 4 contacts.
    assert_eq!(r.figures["change_deliveries"], 40.0);
    assert_eq!(r.figures["change_expected"], 40.0);
    assert!(r.figures["login_presence_received"] >= 40.0);
    // The rosters persist: the second run does not provision again.
    let r = run(Scenario::Presence, &o).await.unwrap();
    assert_eq!(r.errors, 0, "{:?}", r.error_samples);
    assert_eq!(r.figures["provisioned_now"], 0.0);
    assert_eq!(r.figures["change_deliveries"], 40.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_stay_alive() {
    let s = server().await;
    let mut o = options(&s, 20, "idle");
    run(Scenario::Register, &o).await.unwrap();
    o.duration = 0.2;
    let r = run(Scenario::Idle, &o).await.unwrap();
    assert_eq!(r.errors, 0, "{:?}", r.error_samples);
    assert_eq!(r.figures["connections"], 20.0);
    assert_eq!(r.figures["alive_after_hold"], 20.0);
    assert!(r.figures.contains_key("server_kib_per_connection"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn muc_fanout_delivers_every_copy() {
    let s = server().await;
    let mut o = options(&s, 20, "muc");
    run(Scenario::Register, &o).await.unwrap();
    // 20 occupants, 2 senders at 20 msg/s in all for 1 s.
    o.rate = 20.0;
    let r = run(Scenario::MucFanout, &o).await.unwrap();
    assert_eq!(r.errors, 0, "{:?}", r.error_samples);
    assert_eq!(r.params["room"], "fanout@conference.localhost");
    assert_eq!((r.figures["logins"], r.figures["occupants"]), (20.0, 20.0));
    // Every occupant saw every occupant's presence, itself included.
    assert!(r.figures["join_presences"] >= 400.0);
    assert_eq!(r.latency["join"].count, 20);
    let sent = r.figures["sent"];
    assert!(sent >= 2.0, "sent {sent}");
    // Every copy reached every occupant, the senders' reflections included.
    assert_eq!(r.figures["expected_copies"], sent * 20.0);
    assert_eq!(r.figures["delivered_copies"], sent * 20.0);
    assert_eq!(r.figures["lost_copies"], 0.0);
    assert_eq!(r.latency["message"].count as f64, sent * 20.0);

    // A second run finds the room gone (temporary rooms vanish when empty,
    // XEP-0045 §10.1.2) and creates it again.
    let r = run(Scenario::MucFanout, &o).await.unwrap();
    assert_eq!(r.errors, 0, "{:?}", r.error_samples);
    assert_eq!(r.figures["lost_copies"], 0.0);

    // Above the service's occupant limit the join fails and is reported.
    o.users = 20;
    o.room = "small@conference.localhost".into();
    let s2 = TestServer::start_with(|c| {
        c.registration.enabled = true;
        c.registration.min_interval_secs = 0;
        c.muc.max_occupants_per_room = 10;
    })
    .await;
    o.addr = s2.addr();
    run(Scenario::Register, &o).await.unwrap();
    let r = run(Scenario::MucFanout, &o).await.unwrap();
    assert!(r.errors > 0);
    assert!(!r.figures.contains_key("delivered_copies"));
    assert!(
        r.error_samples.iter().any(|e| e.contains("join refused")),
        "{:?}",
        r.error_samples
    );
}

#[tokio::test]
async fn refuses_addresses_off_loopback() {
    let s = server().await;
    let mut o = options(&s, 1, "x");
    o.addr = "192.0.2.1:5222".parse().unwrap();
    let e = run(Scenario::Login, &o).await.unwrap_err();
    assert!(e.to_string().contains("loopback"), "{e}");
}
