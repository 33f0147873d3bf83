//! XEP-0313 room archives (§6.1.2) black-box: fresh users and rooms on
//! `conference.localhost`; the stanza-id every occupant's copy carries, and
//! queries on the room's JID with the exact XML the requester gets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rookery_e2e::muc::{configure, create, join, stanza_id, xml};
use rookery_e2e::{RawClient, TestServer, assert_reply_xml};
use rookery_xml::Element;

const MAM: &str = "urn:xmpp:mam:2";
const RSM: &str = "http://jabber.org/protocol/rsm";

async fn server() -> TestServer {
    let s = TestServer::start().await;
    for u in ["alice", "bob", "carol", "dave"] {
        s.add_user(u, "pw").await;
    }
    s
}

/// The next groupchat message with a body.
async fn next_groupchat(c: &mut RawClient) -> Element {
    c.until(|e| e.name() == "message" && e.child("body", "jabber:client").is_some())
        .await
        .0
}

/// Sends a query `<iq/>` (id `id`) and returns the `<result/>` messages
/// before its answer, and the answer.
async fn query(c: &mut RawClient, iq: &str, id: &str) -> (Vec<Element>, Element) {
    c.send(iq).await;
    let (answer, before) = c
        .until(|e| e.name() == "iq" && e.attr("id") == Some(id))
        .await;
    let results = before
        .into_iter()
        .filter(|m| m.name() == "message" && m.child("result", MAM).is_some())
        .collect();
    (results, answer)
}

/// A query of `room`'s archive with an RSM `<set/>` and form fields.
fn mam_iq(room: &str, id: &str, fields: &str, set: &str) -> String {
    let form = if fields.is_empty() {
        String::new()
    } else {
        format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>{fields}</x>"
        )
    };
    format!(
        "<iq type='set' to='{room}@conference.localhost' id='{id}'><query xmlns='{MAM}' queryid='{id}'>{form}<set xmlns='{RSM}'>{set}</set></query></iq>"
    )
}

/// The `<delay stamp/>` of a result.
fn stamp(r: &Element) -> String {
    r.child("result", MAM)
        .and_then(|r| r.child("forwarded", "urn:xmpp:forward:0"))
        .and_then(|f| f.child("delay", "urn:xmpp:delay"))
        .and_then(|d| d.attr("stamp"))
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn every_copy_carries_the_rooms_stanza_id_and_the_archive_pages() {
    let s = server().await;
    let mut alice = s.online("alice", "a").await;
    let mut bob = s.online("bob", "b").await;
    create(&mut alice, "arch", "Alice").await;
    join(&mut bob, "arch@conference.localhost/Bob", "").await;

    // §7: the room advertises its archive.
    let r = alice
        .iq("<iq type='get' to='arch@conference.localhost' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    assert_eq!(
        xml(&r),
        "<iq xmlns='jabber:client' type='result' id='d1' to='alice@localhost/a' from='arch@conference.localhost'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='conference' type='text' name='arch'/><feature var='http://jabber.org/protocol/disco#info'/><feature var='http://jabber.org/protocol/muc'/><feature var='http://jabber.org/protocol/muc#self-ping-optimization'/><feature var='muc_temporary'/><feature var='muc_open'/><feature var='muc_unsecured'/><feature var='muc_public'/><feature var='muc_unmoderated'/><feature var='muc_semianonymous'/><feature var='urn:xmpp:mam:2'/><feature var='urn:xmpp:mam:2#extended'/><feature var='urn:xmpp:sid:0'/><x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/muc#roominfo</value></field><field var='muc#roominfo_description' label='Description'><value/></field><field var='muc#roominfo_occupants' label='Number of occupants'><value>2</value></field><field var='muc#roominfo_subject' label='Current Subject'><value/></field></x></query></iq>"
    );

    // Five messages; the first claims a stanza-id by the room (XEP-0359
    // §5: replaced) and a muc#user item (§6.1.2: stripped).
    let mut ids = Vec::new();
    for (i, (sender, nick)) in [
        ("bob", "Bob"),
        ("bob", "Bob"),
        ("alice", "Alice"),
        ("bob", "Bob"),
        ("alice", "Alice"),
    ]
    .into_iter()
    .enumerate()
    {
        let extra = if i == 0 {
            "<stanza-id xmlns='urn:xmpp:sid:0' by='arch@conference.localhost' id='forged'/><stanza-id xmlns='urn:xmpp:sid:0' by='elsewhere@localhost' id='kept'/><x xmlns='http://jabber.org/protocol/muc#user'><item jid='someone@else'/></x>"
        } else {
            ""
        };
        let send = format!(
            "<message to='arch@conference.localhost' type='groupchat' id='m{i}'><body>line {i}</body>{extra}</message>"
        );
        if sender == "bob" {
            bob.send(&send).await;
        } else {
            alice.send(&send).await;
        }
        let mut sid = None;
        for (c, to) in [
            (&mut alice, "alice@localhost/a"),
            (&mut bob, "bob@localhost/b"),
        ] {
            let m = next_groupchat(c).await;
            let id = stanza_id(&m, "arch@conference.localhost");
            assert_eq!(
                sid.get_or_insert_with(|| id.clone()),
                &id,
                "one id per room"
            );
            let kept = if i == 0 {
                "<stanza-id xmlns='urn:xmpp:sid:0' by='elsewhere@localhost' id='kept'/>"
            } else {
                ""
            };
            assert_eq!(
                xml(&m),
                format!(
                    "<message xmlns='jabber:client' type='groupchat' id='m{i}' from='arch@conference.localhost/{nick}' to='{to}'><body>line {i}</body>{kept}<stanza-id xmlns='urn:xmpp:sid:0' by='arch@conference.localhost' id='{id}'/></message>"
                )
            );
        }
        ids.push((sid.unwrap(), nick));
    }
    // A private message is not archived (§6.1.2).
    bob.send("<message to='arch@conference.localhost/Alice' type='chat' id='pm'><body>psst</body></message>")
        .await;
    alice.until(|e| e.attr("id") == Some("pm")).await;

    // §4.1.5: the form.
    let r = bob
        .iq(&format!(
            "<iq type='get' to='arch@conference.localhost' id='form'><query xmlns='{MAM}'/></iq>"
        ))
        .await;
    assert!(
        xml(&r).contains("<field type='jid-single' var='with'/>"),
        "{}",
        xml(&r)
    );

    // A participant of a semi-anonymous room pages through: results from
    // the room, the archived messages from occupant JIDs, without `to` and
    // without real JIDs.
    let (results, fin) = query(&mut bob, &mam_iq("arch", "q1", "", "<max>2</max>"), "q1").await;
    assert_eq!(results.len(), 2);
    for (r, (i, (sid, nick))) in results.iter().zip(ids.iter().enumerate()) {
        let stamp = stamp(r);
        assert_reply_xml(
            r,
            &format!(
                "<message from='arch@conference.localhost' to='bob@localhost/b'><result xmlns='{MAM}' id='{sid}' queryid='q1'><forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='{stamp}'/><message xmlns='jabber:client' type='groupchat' id='m{i}' from='arch@conference.localhost/{nick}'><body>line {i}</body>{}<stanza-id xmlns='urn:xmpp:sid:0' by='arch@conference.localhost' id='{sid}'/></message></forwarded></result></message>",
                if i == 0 {
                    "<stanza-id xmlns='urn:xmpp:sid:0' by='elsewhere@localhost' id='kept'/>"
                } else {
                    ""
                }
            ),
        );
    }
    let (first, second) = (&ids[0].0, &ids[1].0);
    assert_eq!(
        xml(&fin),
        format!(
            "<iq xmlns='jabber:client' type='result' id='q1' to='bob@localhost/b' from='arch@conference.localhost'><fin xmlns='{MAM}' complete='false'><set xmlns='{RSM}'><first index='0'>{first}</first><last>{second}</last><count>5</count></set></fin></iq>"
        )
    );
    let (results, fin) = query(
        &mut bob,
        &mam_iq(
            "arch",
            "q2",
            "",
            &format!("<max>2</max><after>{second}</after>"),
        ),
        "q2",
    )
    .await;
    assert_eq!(results.len(), 2);
    assert!(xml(&fin).contains("complete='false'"), "{}", xml(&fin));
    let (results, fin) = query(
        &mut bob,
        &mam_iq(
            "arch",
            "q3",
            "",
            &format!("<max>2</max><after>{}</after>", ids[3].0),
        ),
        "q3",
    )
    .await;
    assert_eq!(results.len(), 1);
    assert!(xml(&results[0]).contains("line 4"));
    assert!(xml(&fin).contains("complete='true'"), "{}", xml(&fin));

    // The last page, flipped (§4.3.3): newest first.
    let (results, _) = query(
        &mut bob,
        &format!(
            "<iq type='set' to='arch@conference.localhost' id='q4'><query xmlns='{MAM}'><set xmlns='{RSM}'><max>2</max><before/></set><flip-page/></query></iq>"
        ),
        "q4",
    )
    .await;
    let order: Vec<String> = results
        .iter()
        .map(|r| {
            r.child("result", MAM)
                .unwrap()
                .attr("id")
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(order, [ids[4].0.clone(), ids[3].0.clone()]);

    // `with` an occupant JID: that occupant's messages. Alice, an owner
    // and moderator, sees the real JID of the sender (§6.1.2).
    let (results, fin) = query(
        &mut alice,
        &mam_iq(
            "arch",
            "q5",
            "<field var='with'><value>arch@conference.localhost/Alice</value></field>",
            "",
        ),
        "q5",
    )
    .await;
    assert_eq!(results.len(), 2);
    let sid = &ids[2].0;
    let stamp2 = stamp(&results[0]);
    assert_reply_xml(
        &results[0],
        &format!(
            "<message from='arch@conference.localhost' to='alice@localhost/a'><result xmlns='{MAM}' id='{sid}' queryid='q5'><forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='{stamp2}'/><message xmlns='jabber:client' type='groupchat' id='m2' from='arch@conference.localhost/Alice'><body>line 2</body><stanza-id xmlns='urn:xmpp:sid:0' by='arch@conference.localhost' id='{sid}'/><x xmlns='http://jabber.org/protocol/muc#user'><item jid='alice@localhost/a'/></x></message></forwarded></result></message>"
        ),
    );
    assert!(xml(&fin).contains("<count>2</count>"), "{}", xml(&fin));

    // §5 metadata: the first and the last message.
    let r = bob
        .iq(&format!(
            "<iq type='get' to='arch@conference.localhost' id='meta'><metadata xmlns='{MAM}'/></iq>"
        ))
        .await;
    let m = r.child("metadata", MAM).unwrap();
    let ends: Vec<&str> = m.children().map(|c| c.attr("id").unwrap()).collect();
    assert_eq!(ends, [ids[0].0.as_str(), ids[4].0.as_str()], "{}", xml(&r));

    // Errors as for user archives: an unknown id, a bad form.
    let (_, e) = query(
        &mut bob,
        &mam_iq("arch", "q6", "", "<after>no-such-id</after>"),
        "q6",
    )
    .await;
    assert_reply_xml(
        &e,
        "<iq type='error' id='q6' to='bob@localhost/b' from='arch@conference.localhost'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
    );
    let (_, e) = query(
        &mut bob,
        &mam_iq(
            "arch",
            "q7",
            "<field var='start'><value>yesterday</value></field>",
            "",
        ),
        "q7",
    )
    .await;
    assert!(xml(&e).contains("<bad-request"), "{}", xml(&e));
}

#[tokio::test]
async fn who_may_read_a_room_archive() {
    let s = server().await;
    let mut alice = s.online("alice", "a").await;
    let mut carol = s.online("carol", "c").await;
    let mut dave = s.online("dave", "d").await;

    // A room that does not exist.
    let (_, e) = query(&mut dave, &mam_iq("nowhere", "n1", "", ""), "n1").await;
    assert_reply_xml(
        &e,
        "<iq type='error' id='n1' to='dave@localhost/d' from='nowhere@conference.localhost'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
    );

    // A members-only room: its member Carol may read it without being in
    // it; Dave, a stranger, may not.
    create(&mut alice, "club", "Alice").await;
    configure(&mut alice, "club", &[("membersonly", "1")]).await;
    let r = alice
        .iq("<iq type='set' to='club@conference.localhost' id='mem'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member' jid='carol@localhost'/></query></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    alice
        .send("<message to='club@conference.localhost' type='groupchat' id='c1'><body>members only</body></message>")
        .await;
    next_groupchat(&mut alice).await;
    let (results, fin) = query(&mut carol, &mam_iq("club", "c1", "", ""), "c1").await;
    assert_eq!(results.len(), 1);
    assert!(xml(&fin).contains("<count>1</count>"), "{}", xml(&fin));
    let (results, e) = query(&mut dave, &mam_iq("club", "c2", "", ""), "c2").await;
    assert!(results.is_empty());
    assert_reply_xml(
        &e,
        "<iq type='error' id='c2' to='dave@localhost/d' from='club@conference.localhost'><error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
    );

    // An open public room: anyone may read it without entering, but an
    // outcast may not.
    create(&mut alice, "pub", "Alice").await;
    alice
        .send("<message to='pub@conference.localhost' type='groupchat' id='p1'><body>hello world</body></message>")
        .await;
    next_groupchat(&mut alice).await;
    let (results, _) = query(&mut carol, &mam_iq("pub", "p1", "", ""), "p1").await;
    assert_eq!(results.len(), 1);
    // Semi-anonymous: the sender's real JID is not for her; once the room
    // is non-anonymous, it is (§6.1.2, decided at query time).
    assert!(
        !xml(&results[0]).contains("alice@localhost"),
        "{}",
        xml(&results[0])
    );
    configure(&mut alice, "pub", &[("whois", "anyone")]).await;
    let (results, _) = query(&mut carol, &mam_iq("pub", "p1b", "", ""), "p1b").await;
    assert!(
        xml(&results[0]).contains(
            "<x xmlns='http://jabber.org/protocol/muc#user'><item jid='alice@localhost/a'/></x>"
        ),
        "{}",
        xml(&results[0])
    );
    let r = alice
        .iq("<iq type='set' to='pub@conference.localhost' id='ban'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='outcast' jid='dave@localhost'/></query></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let (_, e) = query(&mut dave, &mam_iq("pub", "p2", "", ""), "p2").await;
    assert!(xml(&e).contains("<forbidden"), "{}", xml(&e));

    // Archiving switched off by the owner: no stanza-id, no feature, and
    // the archive is not served.
    configure(&mut alice, "pub", &[("enablearchiving", "0")]).await;
    alice
        .send("<message to='pub@conference.localhost' type='groupchat' id='p2'><body>off the record</body></message>")
        .await;
    let m = next_groupchat(&mut alice).await;
    assert_eq!(
        xml(&m),
        "<message xmlns='jabber:client' type='groupchat' id='p2' from='pub@conference.localhost/Alice' to='alice@localhost/a'><body>off the record</body></message>"
    );
    let r = alice
        .iq("<iq type='get' to='pub@conference.localhost' id='d'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    assert!(!xml(&r).contains(MAM), "{}", xml(&r));
    let (_, e) = query(&mut alice, &mam_iq("pub", "p3", "", ""), "p3").await;
    assert!(xml(&e).contains("<service-unavailable"), "{}", xml(&e));

    // Destroying a room deletes its archive: a new room of the same name
    // starts empty.
    let r = alice
        .iq("<iq type='set' to='club@conference.localhost' id='x'><query xmlns='http://jabber.org/protocol/muc#owner'><destroy/></query></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    create(&mut alice, "club", "Alice").await;
    let (results, fin) = query(&mut alice, &mam_iq("club", "c3", "", ""), "c3").await;
    assert!(results.is_empty());
    assert!(xml(&fin).contains("<count>0</count>"), "{}", xml(&fin));
}
