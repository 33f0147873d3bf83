//! XEP-0045 Multi-User Chat black-box: fresh users and rooms on
//! `conference.localhost`, asserting on the exact XML each occupant gets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rookery_e2e::TestServer;
use rookery_e2e::muc::{MUC, USER, codes, configure, create, is_self, join, stanza_id, xml};

async fn server() -> TestServer {
    server_with(|_| {}).await
}

async fn server_with(f: impl FnOnce(&mut rookery::config::Config)) -> TestServer {
    let s = TestServer::start_with(f).await;
    for u in ["alice", "bob", "carol", "dave"] {
        s.add_user(u, "pw").await;
    }
    s
}

#[tokio::test]
async fn join_order_status_codes_groupchat_and_exit() {
    let s = server().await;
    let mut alice = s.online("alice", "a").await;
    let mut bob = s.online("bob", "b").await;

    // §10.1.2: a new room, locked until configured; 110 and 201.
    alice
        .send(&format!(
            "<presence to='coven@conference.localhost/Alice' id='j1'><x xmlns='{MUC}'/></presence>"
        ))
        .await;
    assert_eq!(
        xml(&alice.next_stanza().await),
        "<presence xmlns='jabber:client' from='coven@conference.localhost/Alice' to='alice@localhost/a' id='j1'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='owner' jid='alice@localhost/a' role='moderator'/><status code='110'/><status code='201'/></x></presence>"
    );
    assert_eq!(
        xml(&alice.next_stanza().await),
        "<message xmlns='jabber:client' from='coven@conference.localhost' to='alice@localhost/a' type='groupchat'><subject/></message>"
    );
    // Locked: nobody else may enter yet.
    bob.send(&format!(
        "<presence to='coven@conference.localhost/Bob'><x xmlns='{MUC}'/></presence>"
    ))
    .await;
    let e = bob.next_stanza().await;
    assert_eq!(
        xml(&e),
        "<presence xmlns='jabber:client' to='bob@localhost/b' from='coven@conference.localhost/Bob' type='error'><x xmlns='http://jabber.org/protocol/muc'/><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>"
    );
    // The instant configuration unlocks it.
    let r = alice
        .iq(&format!("<iq type='set' to='coven@conference.localhost' id='inst'><query xmlns='{MUC}#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>"))
        .await;
    assert_eq!(
        xml(&r),
        "<iq xmlns='jabber:client' type='result' id='inst' to='alice@localhost/a' from='coven@conference.localhost'/>"
    );

    // §7.2.2: Bob gets Alice (no real JID: semi-anonymous), then himself.
    bob.send(&format!("<presence to='coven@conference.localhost/Bob'><x xmlns='{MUC}'/><show>away</show></presence>"))
        .await;
    assert_eq!(
        xml(&bob.next_stanza().await),
        "<presence xmlns='jabber:client' from='coven@conference.localhost/Alice' to='bob@localhost/b'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='owner' role='moderator'/></x></presence>"
    );
    assert_eq!(
        xml(&bob.next_stanza().await),
        "<presence xmlns='jabber:client' from='coven@conference.localhost/Bob' to='bob@localhost/b'><show>away</show><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='participant'/><status code='110'/></x></presence>"
    );
    assert_eq!(
        xml(&bob.next_stanza().await),
        "<message xmlns='jabber:client' from='coven@conference.localhost' to='bob@localhost/b' type='groupchat'><subject/></message>"
    );
    // Alice, a moderator, sees Bob's real JID.
    assert_eq!(
        xml(&alice.next_stanza().await),
        "<presence xmlns='jabber:client' from='coven@conference.localhost/Bob' to='alice@localhost/a'><show>away</show><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' jid='bob@localhost/b' role='participant'/></x></presence>"
    );

    // §7.4: a groupchat message reaches everyone, from the sender's room JID.
    bob.send("<message to='coven@conference.localhost' type='groupchat' id='m1'><body>Thrice the brinded cat hath mew'd.</body></message>")
        .await;
    // XEP-0313 §6.1.2: archived by the room, one stanza-id for all copies.
    let mut first = None;
    for (c, to) in [
        (&mut alice, "alice@localhost/a"),
        (&mut bob, "bob@localhost/b"),
    ] {
        let m = c.next_stanza().await;
        let sid = stanza_id(&m, "coven@conference.localhost");
        assert_eq!(first.get_or_insert_with(|| sid.clone()), &sid);
        assert_eq!(
            xml(&m),
            format!(
                "<message xmlns='jabber:client' type='groupchat' id='m1' from='coven@conference.localhost/Bob' to='{to}'><body>Thrice the brinded cat hath mew'd.</body><stanza-id xmlns='urn:xmpp:sid:0' by='coven@conference.localhost' id='{sid}'/></message>"
            )
        );
    }

    // §8.1: the owner changes the subject.
    alice
        .send("<message to='coven@conference.localhost' type='groupchat'><subject>Fire Burn and Cauldron Bubble!</subject></message>")
        .await;
    for (c, to) in [
        (&mut alice, "alice@localhost/a"),
        (&mut bob, "bob@localhost/b"),
    ] {
        assert_eq!(
            xml(&c.next_stanza().await),
            format!(
                "<message xmlns='jabber:client' type='groupchat' from='coven@conference.localhost/Alice' to='{to}'><subject>Fire Burn and Cauldron Bubble!</subject></message>"
            )
        );
    }
    // A participant may not (muc#roomconfig_changesubject is off).
    bob.send("<message to='coven@conference.localhost' type='groupchat'><subject>mine</subject></message>")
        .await;
    let e = bob.next_stanza().await;
    assert_eq!(e.attr("type"), Some("error"));
    assert!(xml(&e).contains("<forbidden"), "{}", xml(&e));

    // §7.14: Bob leaves; 110 for himself.
    bob.send("<presence to='coven@conference.localhost/Bob' type='unavailable'><status>gone</status></presence>")
        .await;
    assert_eq!(
        xml(&alice.next_stanza().await),
        "<presence xmlns='jabber:client' from='coven@conference.localhost/Bob' to='alice@localhost/a' type='unavailable'><status>gone</status><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' jid='bob@localhost/b' role='none'/></x></presence>"
    );
    assert_eq!(
        xml(&bob.next_stanza().await),
        "<presence xmlns='jabber:client' from='coven@conference.localhost/Bob' to='bob@localhost/b' type='unavailable'><status>gone</status><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='none'/><status code='110'/></x></presence>"
    );

    // The subject comes on join, from who set it.
    let got = join(&mut bob, "coven@conference.localhost/Bob", "").await;
    assert_eq!(
        xml(got.last().unwrap()),
        "<message xmlns='jabber:client' from='coven@conference.localhost/Alice' to='bob@localhost/b' type='groupchat'><subject>Fire Burn and Cauldron Bubble!</subject></message>"
    );
}

#[tokio::test]
async fn history_on_join_with_limits() {
    let s = server().await;
    let mut alice = s.online("alice", "a").await;
    create(&mut alice, "hist", "Alice").await;
    for i in 1..=3 {
        alice
            .send(&format!("<message to='hist@conference.localhost' type='groupchat' id='h{i}'><body>line {i}</body></message>"))
            .await;
        alice.next_message().await;
    }
    let mut bob = s.online("bob", "b").await;
    let got = join(
        &mut bob,
        "hist@conference.localhost/Bob",
        "<history maxstanzas='2'/>",
    )
    .await;
    // Alice's presence, Bob's own, two history messages, the subject.
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(is_self(&got[1]));
    for (m, i) in got[2..4].iter().zip([2, 3]) {
        let stamp = m
            .child("delay", "urn:xmpp:delay")
            .unwrap()
            .attr("stamp")
            .unwrap();
        assert!(stamp.ends_with('Z') && stamp.len() == 20, "{stamp}");
        let sid = stanza_id(m, "hist@conference.localhost");
        assert_eq!(
            xml(m),
            format!(
                "<message xmlns='jabber:client' type='groupchat' id='h{i}' from='hist@conference.localhost/Alice' to='bob@localhost/b'><body>line {i}</body><stanza-id xmlns='urn:xmpp:sid:0' by='hist@conference.localhost' id='{sid}'/><delay xmlns='urn:xmpp:delay' from='hist@conference.localhost' stamp='{stamp}'/></message>"
            )
        );
    }
    // No history at all when asked for none; all (3) by default.
    let mut carol = s.online("carol", "c").await;
    let got = join(
        &mut carol,
        "hist@conference.localhost/Carol",
        "<history maxstanzas='0'/>",
    )
    .await;
    assert!(
        got.iter()
            .all(|e| e.child("body", "jabber:client").is_none())
    );
    let mut dave = s.online("dave", "d").await;
    let got = join(&mut dave, "hist@conference.localhost/Dave", "").await;
    assert_eq!(
        got.iter()
            .filter(|e| e.child("body", "jabber:client").is_some())
            .count(),
        3
    );
    // since= in the future: nothing.
    dave.send("<presence to='hist@conference.localhost/Dave' type='unavailable'/>")
        .await;
    dave.until(|e| e.attr("type") == Some("unavailable") && is_self(e))
        .await;
    let got = join(
        &mut dave,
        "hist@conference.localhost/Dave",
        "<history since='2999-01-01T00:00:00Z'/>",
    )
    .await;
    assert!(
        got.iter()
            .all(|e| e.child("body", "jabber:client").is_none())
    );
}

#[tokio::test]
async fn nick_conflict_nick_change_private_messages_and_bad_nick() {
    let s = server().await;
    let mut alice = s.online("alice", "a").await;
    create(&mut alice, "nicks", "Alice").await;
    let mut bob = s.online("bob", "b").await;
    // §7.2.9: the nick is taken.
    bob.send(&format!(
        "<presence to='nicks@conference.localhost/Alice'><x xmlns='{MUC}'/></presence>"
    ))
    .await;
    assert_eq!(
        xml(&bob.next_stanza().await),
        "<presence xmlns='jabber:client' to='bob@localhost/b' from='nicks@conference.localhost/Alice' type='error'><x xmlns='http://jabber.org/protocol/muc'/><error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>"
    );
    // §7.2.1: no nick.
    bob.send(&format!(
        "<presence to='nicks@conference.localhost'><x xmlns='{MUC}'/></presence>"
    ))
    .await;
    let e = bob.next_stanza().await;
    assert!(xml(&e).contains("<jid-malformed"), "{}", xml(&e));
    // A nick that is not a valid resourcepart (an unassigned code point).
    bob.send(&format!(
        "<presence to='nicks@conference.localhost/bad\u{0378}nick'><x xmlns='{MUC}'/></presence>"
    ))
    .await;
    let e = bob.next_stanza().await;
    assert_eq!(e.attr("type"), Some("error"));
    assert!(xml(&e).contains("<jid-malformed"), "{}", xml(&e));

    join(&mut bob, "nicks@conference.localhost/Bob", "").await;
    alice.next_presence().await;
    // §7.6: Bob becomes Robert: 303 from the old nick, then the new one.
    bob.send("<presence to='nicks@conference.localhost/Robert'/>")
        .await;
    assert_eq!(
        xml(&bob.next_stanza().await),
        "<presence xmlns='jabber:client' from='nicks@conference.localhost/Bob' to='bob@localhost/b' type='unavailable'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' nick='Robert' role='participant'/><status code='110'/><status code='303'/></x></presence>"
    );
    assert_eq!(
        xml(&bob.next_stanza().await),
        "<presence xmlns='jabber:client' from='nicks@conference.localhost/Robert' to='bob@localhost/b'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='participant'/><status code='110'/></x></presence>"
    );
    assert_eq!(
        xml(&alice.next_stanza().await),
        "<presence xmlns='jabber:client' from='nicks@conference.localhost/Bob' to='alice@localhost/a' type='unavailable'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' jid='bob@localhost/b' nick='Robert' role='participant'/><status code='303'/></x></presence>"
    );
    assert_eq!(
        xml(&alice.next_stanza().await),
        "<presence xmlns='jabber:client' from='nicks@conference.localhost/Robert' to='alice@localhost/a'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' jid='bob@localhost/b' role='participant'/></x></presence>"
    );
    // Changing to a taken nick: conflict, nothing else changes.
    bob.send("<presence to='nicks@conference.localhost/Alice'/>")
        .await;
    let e = bob.next_stanza().await;
    assert!(xml(&e).contains("<conflict"), "{}", xml(&e));

    // §7.5: private messages between occupants, from the room JID.
    alice.send("<message to='nicks@conference.localhost/Robert' type='chat' id='pm1'><body>psst</body></message>").await;
    let m = bob.next_message().await;
    assert_eq!(m.attr("from"), Some("nicks@conference.localhost/Alice"));
    assert_eq!(m.attr("to"), Some("bob@localhost/b"));
    assert_eq!(m.child("body", "jabber:client").unwrap().text(), "psst");
    assert!(m.child("x", USER).is_some());
    // To nobody: item-not-found; from a non-occupant: not-acceptable.
    alice.send("<message to='nicks@conference.localhost/Nobody' type='chat' id='pm2'><body>?</body></message>").await;
    let e = alice.next_message().await;
    assert!(xml(&e).contains("<item-not-found"), "{}", xml(&e));
    let mut carol = s.online("carol", "c").await;
    carol.send("<message to='nicks@conference.localhost' type='groupchat' id='gc'><body>hi</body></message>").await;
    let e = carol.next_message().await;
    assert!(xml(&e).contains("<not-acceptable"), "{}", xml(&e));
}

#[tokio::test]
async fn password_protected_room() {
    let s = server().await;
    let mut alice = s.online("alice", "a").await;
    create(&mut alice, "secret", "Alice").await;
    configure(
        &mut alice,
        "secret",
        &[("passwordprotectedroom", "1"), ("roomsecret", "cauldron")],
    )
    .await;
    let mut bob = s.online("bob", "b").await;
    for (x, echoed) in [
        ("", "<x xmlns='http://jabber.org/protocol/muc'/>"),
        (
            "<password>wrong</password>",
            "<x xmlns='http://jabber.org/protocol/muc'><password>wrong</password></x>",
        ),
    ] {
        let got = join(&mut bob, "secret@conference.localhost/Bob", x).await;
        assert_eq!(
            xml(&got[0]),
            format!(
                "<presence xmlns='jabber:client' to='bob@localhost/b' from='secret@conference.localhost/Bob' type='error'>{echoed}<error type='auth'><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>"
            )
        );
    }
    let got = join(
        &mut bob,
        "secret@conference.localhost/Bob",
        "<password>cauldron</password>",
    )
    .await;
    assert!(is_self(&got[1]), "{got:?}");
}

#[tokio::test]
async fn members_only_ban_and_admin_lists() {
    let s = server().await;
    let mut alice = s.online("alice", "a").await;
    create(&mut alice, "club", "Alice").await;
    configure(&mut alice, "club", &[("membersonly", "1")]).await;
    let mut bob = s.online("bob", "b").await;
    let got = join(&mut bob, "club@conference.localhost/Bob", "").await;
    assert_eq!(
        xml(&got[0]),
        "<presence xmlns='jabber:client' to='bob@localhost/b' from='club@conference.localhost/Bob' type='error'><x xmlns='http://jabber.org/protocol/muc'/><error type='auth'><registration-required xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>"
    );
    // §9.3: Alice makes Bob a member.
    let r = alice
        .iq("<iq type='set' to='club@conference.localhost' id='mem'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member' jid='bob@localhost'/></query></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    let got = join(&mut bob, "club@conference.localhost/Bob", "").await;
    assert_eq!(
        xml(&got[1]),
        "<presence xmlns='jabber:client' from='club@conference.localhost/Bob' to='bob@localhost/b'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='member' role='participant'/><status code='110'/></x></presence>"
    );
    alice.next_presence().await;
    // §9.5: the member list.
    let r = alice
        .iq("<iq type='get' to='club@conference.localhost' id='ml'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member'/></query></iq>")
        .await;
    assert_eq!(
        xml(&r),
        "<iq xmlns='jabber:client' type='result' id='ml' to='alice@localhost/a' from='club@conference.localhost'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member' jid='bob@localhost'/></query></iq>"
    );
    // Only admins see it.
    let r = bob
        .iq("<iq type='get' to='club@conference.localhost' id='ml2'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member'/></query></iq>")
        .await;
    assert!(xml(&r).contains("<forbidden"), "{}", xml(&r));

    // §9.1: Alice bans Bob: 301 for both, 110 for Bob.
    alice
        .send("<iq type='set' to='club@conference.localhost' id='ban'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='outcast' jid='bob@localhost'><reason>Treason</reason></item></query></iq>")
        .await;
    assert_eq!(
        xml(&bob.next_stanza().await),
        "<presence xmlns='jabber:client' from='club@conference.localhost/Bob' to='bob@localhost/b' type='unavailable'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='outcast' role='none'><actor nick='Alice'/><reason>Treason</reason></item><status code='110'/><status code='301'/></x></presence>"
    );
    assert_eq!(
        xml(&alice.next_stanza().await),
        "<presence xmlns='jabber:client' from='club@conference.localhost/Bob' to='alice@localhost/a' type='unavailable'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='outcast' jid='bob@localhost/b' role='none'><actor nick='Alice'/><reason>Treason</reason></item><status code='301'/></x></presence>"
    );
    let r = alice.next_stanza().await;
    assert_eq!(r.attr("id"), Some("ban"));
    assert_eq!(r.attr("type"), Some("result"));
    // §7.2.7: banned users may not come back.
    let got = join(&mut bob, "club@conference.localhost/Bob", "").await;
    assert!(
        xml(&got[0]).contains("<error type='auth'><forbidden"),
        "{}",
        xml(&got[0])
    );
    // Bob (not an admin) may not ban.
    let mut carol = s.online("carol", "c").await;
    let r = carol
        .iq("<iq type='set' to='club@conference.localhost' id='b2'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='outcast' jid='alice@localhost'/></query></iq>")
        .await;
    assert!(xml(&r).contains("<forbidden"), "{}", xml(&r));
}

#[tokio::test]
async fn kick_with_307_seen_by_everyone() {
    let s = server().await;
    let mut alice = s.online("alice", "a").await;
    create(&mut alice, "kick", "Alice").await;
    let mut bob = s.online("bob", "b").await;
    join(&mut bob, "kick@conference.localhost/Bob", "").await;
    alice.next_presence().await;
    let mut carol = s.online("carol", "c").await;
    join(&mut carol, "kick@conference.localhost/Carol", "").await;
    alice.next_presence().await;
    bob.next_presence().await;

    // A participant may not kick.
    let r = carol
        .iq("<iq type='set' to='kick@conference.localhost' id='k0'><query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Bob' role='none'/></query></iq>")
        .await;
    assert!(xml(&r).contains("<forbidden"), "{}", xml(&r));
    // Nor may anyone kick the owner.
    alice
        .send("<iq type='set' to='kick@conference.localhost' id='k1'><query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Bob' role='none'><reason>Avaunt, you cullion!</reason></item></query></iq>")
        .await;
    assert_eq!(
        xml(&bob.next_stanza().await),
        "<presence xmlns='jabber:client' from='kick@conference.localhost/Bob' to='bob@localhost/b' type='unavailable'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='none'><actor nick='Alice'/><reason>Avaunt, you cullion!</reason></item><status code='110'/><status code='307'/></x></presence>"
    );
    assert_eq!(
        xml(&alice.next_stanza().await),
        "<presence xmlns='jabber:client' from='kick@conference.localhost/Bob' to='alice@localhost/a' type='unavailable'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' jid='bob@localhost/b' role='none'><actor nick='Alice'/><reason>Avaunt, you cullion!</reason></item><status code='307'/></x></presence>"
    );
    assert_eq!(
        xml(&carol.next_stanza().await),
        "<presence xmlns='jabber:client' from='kick@conference.localhost/Bob' to='carol@localhost/c' type='unavailable'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='none'><actor nick='Alice'/><reason>Avaunt, you cullion!</reason></item><status code='307'/></x></presence>"
    );
    assert_eq!(
        xml(&alice.next_stanza().await),
        "<iq xmlns='jabber:client' type='result' id='k1' to='alice@localhost/a' from='kick@conference.localhost'/>"
    );
    // Bob is no longer an occupant.
    bob.send("<message to='kick@conference.localhost' type='groupchat'><body>still here?</body></message>").await;
    let e = bob.next_message().await;
    assert!(xml(&e).contains("<not-acceptable"), "{}", xml(&e));
}

#[tokio::test]
async fn moderated_room_visitors_need_voice() {
    let s = server().await;
    let mut alice = s.online("alice", "a").await;
    create(&mut alice, "mod", "Alice").await;
    configure(&mut alice, "mod", &[("moderatedroom", "1")]).await;
    let mut bob = s.online("bob", "b").await;
    let got = join(&mut bob, "mod@conference.localhost/Bob", "").await;
    assert_eq!(
        xml(&got[1]),
        "<presence xmlns='jabber:client' from='mod@conference.localhost/Bob' to='bob@localhost/b'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='visitor'/><status code='110'/></x></presence>"
    );
    alice.next_presence().await;
    bob.send("<message to='mod@conference.localhost' type='groupchat' id='v1'><body>hear me</body></message>").await;
    assert_eq!(
        xml(&bob.next_stanza().await),
        "<message xmlns='jabber:client' type='error' id='v1' to='bob@localhost/b' from='mod@conference.localhost'><body>hear me</body><error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
    );
    // §8.3: voice granted.
    alice
        .send("<iq type='set' to='mod@conference.localhost' id='voice'><query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Bob' role='participant'/></query></iq>")
        .await;
    assert_eq!(
        xml(&bob.next_stanza().await),
        "<presence xmlns='jabber:client' from='mod@conference.localhost/Bob' to='bob@localhost/b'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='participant'/><status code='110'/></x></presence>"
    );
    bob.send("<message to='mod@conference.localhost' type='groupchat' id='v2'><body>hear me</body></message>").await;
    let m = bob.next_message().await;
    assert_eq!(m.attr("from"), Some("mod@conference.localhost/Bob"));
    assert_eq!(m.attr("type"), Some("groupchat"));
}

#[tokio::test]
async fn config_form_round_trip_and_disco() {
    let s = server().await;
    let mut alice = s.online("alice", "a").await;
    // The service (§6.1).
    let r = alice
        .iq("<iq type='get' to='conference.localhost' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    assert_eq!(
        xml(&r),
        "<iq xmlns='jabber:client' type='result' id='d1' to='alice@localhost/a' from='conference.localhost'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='conference' type='text' name='Chatrooms'/><feature var='http://jabber.org/protocol/disco#info'/><feature var='http://jabber.org/protocol/disco#items'/><feature var='http://jabber.org/protocol/muc'/></query></iq>"
    );
    // XEP-0030 §4: the server lists the service.
    let r = alice
        .iq("<iq type='get' to='localhost' id='d0'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        .await;
    assert_eq!(
        xml(&r),
        "<iq xmlns='jabber:client' type='result' id='d0' to='alice@localhost/a' from='localhost'><query xmlns='http://jabber.org/protocol/disco#items'><item jid='conference.localhost'/><item jid='pubsub.localhost'/></query></iq>"
    );
    create(&mut alice, "cfg", "Alice").await;
    let r = alice
        .iq("<iq type='get' to='cfg@conference.localhost' id='f1'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>")
        .await;
    let form = r.first_child().unwrap().first_child().unwrap();
    assert_eq!(form.attr("type"), Some("form"));
    let vars: Vec<&str> = form.children().filter_map(|f| f.attr("var")).collect();
    assert_eq!(
        vars,
        [
            "FORM_TYPE",
            "muc#roomconfig_roomname",
            "muc#roomconfig_roomdesc",
            "muc#roomconfig_persistentroom",
            "muc#roomconfig_publicroom",
            "muc#roomconfig_membersonly",
            "muc#roomconfig_moderatedroom",
            "muc#roomconfig_passwordprotectedroom",
            "muc#roomconfig_roomsecret",
            "muc#roomconfig_whois",
            "muc#roomconfig_maxusers",
            "muc#roomconfig_changesubject",
            "muc#roomconfig_allowinvites",
            "muc#roomconfig_enablearchiving",
        ]
    );
    configure(
        &mut alice,
        "cfg",
        &[
            ("roomname", "The Coven"),
            ("roomdesc", "Witches only"),
            ("whois", "anyone"),
            ("persistentroom", "1"),
        ],
    )
    .await;
    let r = alice
        .iq("<iq type='get' to='cfg@conference.localhost' id='f2'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>")
        .await;
    let form = r.first_child().unwrap().first_child().unwrap();
    let value = |var: &str| {
        form.children()
            .find(|f| f.attr("var") == Some(var))
            .and_then(|f| f.first_child())
            .map(|v| v.text())
            .unwrap()
    };
    assert_eq!(value("muc#roomconfig_roomname"), "The Coven");
    assert_eq!(value("muc#roomconfig_roomdesc"), "Witches only");
    assert_eq!(value("muc#roomconfig_whois"), "anyone");
    assert_eq!(value("muc#roomconfig_persistentroom"), "1");
    // §6.4: the room's features and muc#roominfo.
    let r = alice
        .iq("<iq type='get' to='cfg@conference.localhost' id='d2'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    assert_eq!(
        xml(&r),
        "<iq xmlns='jabber:client' type='result' id='d2' to='alice@localhost/a' from='cfg@conference.localhost'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='conference' type='text' name='The Coven'/><feature var='http://jabber.org/protocol/disco#info'/><feature var='http://jabber.org/protocol/muc'/><feature var='http://jabber.org/protocol/muc#self-ping-optimization'/><feature var='muc_persistent'/><feature var='muc_open'/><feature var='muc_unsecured'/><feature var='muc_public'/><feature var='muc_unmoderated'/><feature var='muc_nonanonymous'/><feature var='urn:xmpp:mam:2'/><feature var='urn:xmpp:mam:2#extended'/><feature var='urn:xmpp:sid:0'/><x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/muc#roominfo</value></field><field var='muc#roominfo_description' label='Description'><value>Witches only</value></field><field var='muc#roominfo_occupants' label='Number of occupants'><value>1</value></field><field var='muc#roominfo_subject' label='Current Subject'><value/></field></x></query></iq>"
    );
    // §6.3: public rooms are listed.
    let r = alice
        .iq("<iq type='get' to='conference.localhost' id='d3'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        .await;
    assert_eq!(
        xml(&r),
        "<iq xmlns='jabber:client' type='result' id='d3' to='alice@localhost/a' from='conference.localhost'><query xmlns='http://jabber.org/protocol/disco#items'><item jid='cfg@conference.localhost' name='The Coven'/></query></iq>"
    );
    // Non-anonymous now: a newcomer gets 100 and everyone's real JID.
    let mut bob = s.online("bob", "b").await;
    let got = join(&mut bob, "cfg@conference.localhost/Bob", "").await;
    assert_eq!(
        xml(&got[0]),
        "<presence xmlns='jabber:client' from='cfg@conference.localhost/Alice' to='bob@localhost/b'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='owner' jid='alice@localhost/a' role='moderator'/></x></presence>"
    );
    assert_eq!(codes(&got[1]), ["100", "110"]);
    // Only owners configure.
    let r = bob
        .iq("<iq type='get' to='cfg@conference.localhost' id='f3'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>")
        .await;
    assert!(xml(&r).contains("<forbidden"), "{}", xml(&r));
    // Made private: no longer listed; §10.2.1 status 104 to occupants.
    configure(&mut alice, "cfg", &[("publicroom", "0")]).await;
    let (m, _) = bob.until(|e| e.name() == "message").await;
    assert_eq!(
        xml(&m),
        "<message xmlns='jabber:client' from='cfg@conference.localhost' to='bob@localhost/b' type='groupchat'><x xmlns='http://jabber.org/protocol/muc#user'><status code='104'/></x></message>"
    );
    let r = alice
        .iq("<iq type='get' to='conference.localhost' id='d4'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        .await;
    assert_eq!(r.first_child().unwrap().children().count(), 0);
}

#[tokio::test]
async fn destroy_room() {
    let s = server().await;
    let mut alice = s.online("alice", "a").await;
    create(&mut alice, "doomed", "Alice").await;
    let mut bob = s.online("bob", "b").await;
    join(&mut bob, "doomed@conference.localhost/Bob", "").await;
    alice.next_presence().await;
    // Bob may not.
    let r = bob
        .iq("<iq type='set' to='doomed@conference.localhost' id='x0'><query xmlns='http://jabber.org/protocol/muc#owner'><destroy/></query></iq>")
        .await;
    assert!(xml(&r).contains("<forbidden"), "{}", xml(&r));
    alice
        .send("<iq type='set' to='doomed@conference.localhost' id='x1'><query xmlns='http://jabber.org/protocol/muc#owner'><destroy jid='heath@conference.localhost'><reason>Macbeth doth come.</reason></destroy></query></iq>")
        .await;
    assert_eq!(
        xml(&bob.next_stanza().await),
        "<presence xmlns='jabber:client' from='doomed@conference.localhost/Bob' to='bob@localhost/b' type='unavailable'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='none'/><destroy jid='heath@conference.localhost'><reason>Macbeth doth come.</reason></destroy></x></presence>"
    );
    assert_eq!(
        xml(&alice.next_stanza().await),
        "<presence xmlns='jabber:client' from='doomed@conference.localhost/Alice' to='alice@localhost/a' type='unavailable'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='none'/><destroy jid='heath@conference.localhost'><reason>Macbeth doth come.</reason></destroy></x></presence>"
    );
    assert_eq!(alice.next_stanza().await.attr("id"), Some("x1"));
    let r = alice
        .iq("<iq type='get' to='doomed@conference.localhost' id='x2'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    assert!(xml(&r).contains("<item-not-found"), "{}", xml(&r));
}

#[tokio::test]
async fn limits_and_session_end() {
    let s = server_with(|c| {
        c.muc.max_occupants_per_room = 2;
        c.muc.max_rooms_per_user = 1;
    })
    .await;
    let mut alice = s.online("alice", "a").await;
    create(&mut alice, "small", "Alice").await;
    // One room per user.
    let got = join(&mut alice, "second@conference.localhost/Alice", "").await;
    assert!(xml(&got[0]).contains("<not-allowed"), "{}", xml(&got[0]));
    let mut bob = s.online("bob", "b").await;
    join(&mut bob, "small@conference.localhost/Bob", "").await;
    alice.next_presence().await;
    // §7.2.10: full.
    let mut carol = s.online("carol", "c").await;
    let got = join(&mut carol, "small@conference.localhost/Carol", "").await;
    assert_eq!(
        xml(&got[0]),
        "<presence xmlns='jabber:client' to='carol@localhost/c' from='small@conference.localhost/Carol' type='error'><x xmlns='http://jabber.org/protocol/muc'/><error type='wait'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>"
    );
    // Bob's session ends: he leaves the room.
    drop(bob);
    let p = alice.next_presence().await;
    assert_eq!(
        xml(&p),
        "<presence xmlns='jabber:client' from='small@conference.localhost/Bob' to='alice@localhost/a' type='unavailable'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' jid='bob@localhost/b' role='none'/></x></presence>"
    );
    let got = join(&mut carol, "small@conference.localhost/Carol", "").await;
    assert!(is_self(&got[1]), "{got:?}");
    // The last occupants leave: a temporary room vanishes.
    alice
        .send("<presence to='small@conference.localhost/Alice' type='unavailable'/>")
        .await;
    carol
        .send("<presence to='small@conference.localhost/Carol' type='unavailable'/>")
        .await;
    carol
        .until(|e| e.attr("type") == Some("unavailable") && is_self(e))
        .await;
    let r = alice
        .iq("<iq type='get' to='small@conference.localhost' id='i'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    assert!(xml(&r).contains("<item-not-found"), "{}", xml(&r));
}

/// XEP-0410 §3.1: a client pings its own occupant JID to learn whether it
/// is still joined; the service answers (`muc#self-ping-optimization`,
/// §3.2). Not joined (or left): `not-acceptable`. Another occupant's JID
/// is not pinged through.
#[tokio::test]
async fn self_ping() {
    let s = server().await;
    let mut alice = s.login("alice", "pw", "a").await;
    let mut bob = s.login("bob", "pw", "b").await;
    create(&mut alice, "pingme", "Alice").await;
    let r = alice
        .iq("<iq type='get' to='pingme@conference.localhost/Alice' id='sp1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(
        xml(&r),
        "<iq xmlns='jabber:client' type='result' id='sp1' to='alice@localhost/a' from='pingme@conference.localhost/Alice'/>"
    );
    // Bob is not in the room.
    let r = bob
        .iq("<iq type='get' to='pingme@conference.localhost/Bob' id='sp2'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("error"), "{}", xml(&r));
    let e = r.child("error", "jabber:client").unwrap();
    assert_eq!(e.attr("type"), Some("cancel"));
    assert!(
        e.child("not-acceptable", "urn:ietf:params:xml:ns:xmpp-stanzas")
            .is_some(),
        "{}",
        xml(&r)
    );
    // Joined as Bob, a ping to Alice's occupant JID is not answered for her.
    join(&mut bob, "pingme@conference.localhost/Bob", "").await;
    let r = bob
        .iq("<iq type='get' to='pingme@conference.localhost/Alice' id='sp3'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("error"), "{}", xml(&r));
    // After leaving, Alice's own ping says she is out.
    alice
        .send("<presence to='pingme@conference.localhost/Alice' type='unavailable'/>")
        .await;
    alice
        .until(|e| e.name() == "presence" && e.attr("type") == Some("unavailable"))
        .await;
    let r = alice
        .iq("<iq type='get' to='pingme@conference.localhost/Alice' id='sp4'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert!(
        r.child("error", "jabber:client")
            .and_then(|e| e.child("not-acceptable", "urn:ietf:params:xml:ns:xmpp-stanzas"))
            .is_some(),
        "{}",
        xml(&r)
    );
}

/// XEP-0249: a direct invitation goes from the inviter to the invitee like
/// any message (the room is not involved), kept offline when the invitee
/// is away, and delivered intact.
#[tokio::test]
async fn direct_invitation() {
    let s = server().await;
    let mut alice = s.login("alice", "pw", "a").await;
    create(&mut alice, "direct", "Alice").await;
    let invite = "<message to='bob@localhost' id='di1'><x xmlns='jabber:x:conference' jid='direct@conference.localhost' reason='Join us'/></message>";
    alice.send(invite).await;
    // Bob was offline: he gets it when he comes online.
    let mut bob = s.login("bob", "pw", "b").await;
    bob.send("<presence/>").await;
    let m = bob.next_message().await;
    assert_eq!(m.attr("from"), Some("alice@localhost/a"));
    let x = m.child("x", "jabber:x:conference").expect("the invitation");
    assert_eq!(x.attr("jid"), Some("direct@conference.localhost"));
    assert_eq!(x.attr("reason"), Some("Join us"));
    // And online: at once.
    alice
        .send("<message to='bob@localhost/b' id='di2'><x xmlns='jabber:x:conference' jid='direct@conference.localhost'/></message>")
        .await;
    let m = bob.next_message().await;
    assert_eq!(m.attr("id"), Some("di2"));
    assert!(m.child("x", "jabber:x:conference").is_some());
}
