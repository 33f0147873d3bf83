//! XEP-0313 black-box: archiving of sent and received messages with XEP-0359
//! stanza-ids, queries with data form filters and XEP-0059 paging in both
//! directions, errors, XEP-0441 preferences, hints and offline messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rookery_e2e::{RawClient, TestServer};
use rookery_xml::Element;

const MAM: &str = "urn:xmpp:mam:2";
const RSM: &str = "http://jabber.org/protocol/rsm";

async fn online(s: &TestServer, user: &str, res: &str) -> RawClient {
    let mut c = s.login(user, "pw", res).await;
    c.send("<presence/>").await;
    c.next_presence().await;
    c
}

async fn sync(c: &mut RawClient) {
    let r = c
        .iq("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
}

/// A result of a query: its archive id, delay stamp and forwarded message.
#[derive(Debug)]
struct Item {
    id: String,
    stamp: String,
    message: Element,
}

/// Sends a MAM query with `form` fields and an RSM `set` body; returns the
/// result messages (checked to precede the iq answer) and the answer.
async fn query(c: &mut RawClient, qid: &str, form: &str, set: &str) -> (Vec<Item>, Element) {
    let x = if form.is_empty() {
        String::new()
    } else {
        format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>{form}</x>"
        )
    };
    let set = if set.is_empty() {
        String::new()
    } else {
        format!("<set xmlns='{RSM}'>{set}</set>")
    };
    c.send(&format!(
        "<iq type='set' id='{qid}'><query xmlns='{MAM}' queryid='{qid}'>{x}{set}</query></iq>"
    ))
    .await;
    let mut items = Vec::new();
    loop {
        let el = c.next_stanza().await;
        if el.name() == "iq" && el.attr("id") == Some(qid) {
            return (items, el);
        }
        if el.name() != "message" {
            continue;
        }
        let Some(r) = el.child("result", MAM) else {
            continue;
        };
        assert_eq!(r.attr("queryid"), Some(qid), "{el}");
        let fwd = r
            .child("forwarded", "urn:xmpp:forward:0")
            .expect("forwarded");
        items.push(Item {
            id: r.attr("id").unwrap().to_owned(),
            stamp: fwd
                .child("delay", "urn:xmpp:delay")
                .and_then(|d| d.attr("stamp"))
                .unwrap()
                .to_owned(),
            message: fwd.child("message", "jabber:client").unwrap().clone(),
        });
    }
}

fn field(var: &str, value: &str) -> String {
    format!("<field var='{var}'><value>{value}</value></field>")
}

fn fin(iq: &Element) -> &Element {
    assert_eq!(iq.attr("type"), Some("result"), "{iq}");
    iq.child("fin", MAM).expect("fin")
}

fn complete(iq: &Element) -> bool {
    fin(iq).attr("complete") == Some("true")
}

fn rsm<'a>(iq: &'a Element, name: &str) -> Option<&'a Element> {
    fin(iq).child("set", RSM).unwrap().child(name, RSM)
}

fn ids(items: &[Item]) -> Vec<String> {
    items.iter().map(|i| i.id.clone()).collect()
}

fn error_condition(iq: &Element) -> String {
    assert_eq!(iq.attr("type"), Some("error"), "{iq}");
    iq.child("error", "jabber:client")
        .unwrap()
        .children()
        .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas")
        .unwrap()
        .name()
        .to_owned()
}

/// The stanza-id a message carries for the archive `by`.
fn stanza_id(m: &Element, by: &str) -> Option<String> {
    let found: Vec<_> = m
        .children()
        .filter(|c| c.is("stanza-id", "urn:xmpp:sid:0") && c.attr("by") == Some(by))
        .collect();
    assert!(found.len() <= 1, "one stanza-id per archive: {m}");
    found.first().map(|c| c.attr("id").unwrap().to_owned())
}

#[tokio::test]
async fn archive_paging_filters_and_errors() {
    let s = TestServer::start_with(|c| c.session.mam_max_page = 20).await;
    for u in ["alice", "bob", "carol"] {
        s.add_user(u, "pw").await;
    }
    let mut alice = online(&s, "alice", "a").await;
    let mut bob = online(&s, "bob", "b").await;
    let mut carol = online(&s, "carol", "c").await;

    // 25 messages, alternating: even ones Alice → Bob, odd ones Bob → Alice.
    // The recipient's copy carries the stanza-id of the recipient's archive.
    let mut received_ids = Vec::new();
    for i in 0..25 {
        let (from, to, to_jid) = if i % 2 == 0 {
            (&mut alice, &mut bob, "bob@localhost")
        } else {
            (&mut bob, &mut alice, "alice@localhost")
        };
        from.send(&format!(
            "<message to='{to_jid}' type='chat' id='m{i}'><body>{i}</body></message>"
        ))
        .await;
        sync(from).await;
        let m = to.next_message().await;
        assert_eq!(m.attr("id"), Some(format!("m{i}").as_str()));
        received_ids.push(stanza_id(&m, to_jid).expect("stanza-id on delivery"));
    }
    // Carol writes twice to Alice.
    for i in 0..2 {
        carol
            .send(&format!(
                "<message to='alice@localhost/a' id='c{i}'><body>carol {i}</body></message>"
            ))
            .await;
        sync(&mut carol).await;
        alice.next_message().await;
    }

    // Forward through all of Alice's messages with Bob, 10 at a time.
    let with_bob = field("with", "bob@localhost");
    let (p1, fin1) = query(&mut alice, "q1", &with_bob, "<max>10</max>").await;
    assert_eq!(p1.len(), 10);
    assert!(!complete(&fin1));
    assert_eq!(rsm(&fin1, "first").unwrap().text(), p1[0].id);
    assert_eq!(rsm(&fin1, "first").unwrap().attr("index"), Some("0"));
    assert_eq!(rsm(&fin1, "last").unwrap().text(), p1[9].id);
    assert_eq!(rsm(&fin1, "count").unwrap().text(), "25");
    let (p2, fin2) = query(
        &mut alice,
        "q2",
        &with_bob,
        &format!("<max>10</max><after>{}</after>", p1[9].id),
    )
    .await;
    assert_eq!(p2.len(), 10);
    assert!(!complete(&fin2));
    assert_eq!(rsm(&fin2, "first").unwrap().attr("index"), Some("10"));
    let (p3, fin3) = query(
        &mut alice,
        "q3",
        &with_bob,
        &format!("<max>10</max><after>{}</after>", p2[9].id),
    )
    .await;
    assert_eq!(p3.len(), 5);
    assert!(complete(&fin3));
    let all: Vec<&Item> = p1.iter().chain(&p2).chain(&p3).collect();
    for (i, item) in all.iter().enumerate() {
        // Chronological, each once, the original stanza kept.
        assert_eq!(
            item.message.child("body", "jabber:client").unwrap().text(),
            i.to_string()
        );
        assert_eq!(item.message.attr("id"), Some(format!("m{i}").as_str()));
        if i % 2 == 1 {
            // Received by Alice: the archive id is the stanza-id she got.
            assert_eq!(item.id, received_ids[i]);
            assert_eq!(item.message.attr("from"), Some("bob@localhost/b"));
        } else {
            assert_eq!(item.message.attr("from"), Some("alice@localhost/a"));
            assert_eq!(item.message.attr("to"), Some("bob@localhost"));
        }
    }
    let all_ids: Vec<String> = all.iter().map(|i| i.id.clone()).collect();
    let mut unique = all_ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 25);

    // Backward from the end with an empty <before/>.
    let (b1, bfin1) = query(&mut alice, "b1", &with_bob, "<max>10</max><before/>").await;
    assert_eq!(ids(&b1), all_ids[15..25]);
    assert!(!complete(&bfin1));
    assert_eq!(rsm(&bfin1, "first").unwrap().attr("index"), Some("15"));
    let (b2, bfin2) = query(
        &mut alice,
        "b2",
        &with_bob,
        &format!("<max>10</max><before>{}</before>", b1[0].id),
    )
    .await;
    assert_eq!(ids(&b2), all_ids[5..15]);
    assert!(!complete(&bfin2));
    let (b3, bfin3) = query(
        &mut alice,
        "b3",
        &with_bob,
        &format!("<max>10</max><before>{}</before>", b2[0].id),
    )
    .await;
    assert_eq!(ids(&b3), all_ids[0..5]);
    assert!(complete(&bfin3));

    // Bob's archive has the same conversation under his own ids.
    let (bob_all, bob_fin) = query(&mut bob, "bob", "", "<max>30</max>").await;
    assert_eq!(bob_all.len(), 20, "capped at mam_max_page");
    assert!(!complete(&bob_fin));
    assert_eq!(bob_all[0].id, received_ids[0]);
    assert_eq!(bob_all[2].id, received_ids[2]);

    // 'with' Carol, with a full JID too.
    let (c, cfin) = query(&mut alice, "wc", &field("with", "carol@localhost"), "").await;
    assert_eq!(c.len(), 2);
    assert!(complete(&cfin));
    assert_eq!(
        c[0].message.child("body", "jabber:client").unwrap().text(),
        "carol 0"
    );
    let (c, _) = query(&mut alice, "wc2", &field("with", "carol@localhost/c"), "").await;
    assert_eq!(c.len(), 2);

    // start/end (inclusive) from the stamps of results 5 and 9.
    let times = format!(
        "{}{}{}",
        with_bob,
        field("start", &all[5].stamp),
        field("end", &all[9].stamp)
    );
    let (t, tfin) = query(&mut alice, "t", &times, "").await;
    assert_eq!(ids(&t), all_ids[5..10]);
    assert!(complete(&tfin));

    // ids, and before-id/after-id.
    let (some, _) = query(
        &mut alice,
        "ids",
        &format!(
            "<field var='ids'><value>{}</value><value>{}</value></field>",
            all_ids[20], all_ids[3]
        ),
        "",
    )
    .await;
    assert_eq!(ids(&some), [all_ids[3].clone(), all_ids[20].clone()]);
    let (between, _) = query(
        &mut alice,
        "between",
        &format!(
            "{}{}",
            field("after-id", &all_ids[2]),
            field("before-id", &all_ids[6])
        ),
        "",
    )
    .await;
    assert_eq!(ids(&between), all_ids[3..6]);

    // max=1000000 is capped (20 here); with no <max/> too.
    let (capped, cfin) = query(&mut alice, "cap", "", "<max>1000000</max>").await;
    assert_eq!(capped.len(), 20);
    assert!(!complete(&cfin));
    assert_eq!(rsm(&cfin, "count").unwrap().text(), "27");
    let (capped, _) = query(&mut alice, "cap2", "", "").await;
    assert_eq!(capped.len(), 20);

    // An empty result is a complete, successful query.
    let (none, nfin) = query(&mut alice, "none", &field("with", "nobody@localhost"), "").await;
    assert!(none.is_empty());
    assert!(complete(&nfin));
    assert_eq!(rsm(&nfin, "count").unwrap().text(), "0");
    assert!(rsm(&nfin, "first").is_none());

    // Errors: malformed form, unknown ids, someone else's archive.
    let (r, e) = query(&mut alice, "bad", &field("start", "yesterday"), "").await;
    assert!(r.is_empty());
    assert_eq!(error_condition(&e), "bad-request");
    let (_, e) = query(&mut alice, "bad2", "", "<max>many</max>").await;
    assert_eq!(error_condition(&e), "bad-request");
    let (r, e) = query(&mut alice, "nf", "", "<after>no-such-id</after>").await;
    assert!(r.is_empty());
    assert_eq!(error_condition(&e), "item-not-found");
    let (_, e) = query(&mut alice, "nf2", "", "<before>no-such-id</before>").await;
    assert_eq!(error_condition(&e), "item-not-found");
    let (_, e) = query(&mut alice, "nf3", &field("ids", "no-such-id"), "").await;
    assert_eq!(error_condition(&e), "item-not-found");
    // Bob's ids are not in Alice's archive.
    let (_, e) = query(
        &mut alice,
        "nf4",
        "",
        &format!("<after>{}</after>", bob_all[1].id),
    )
    .await;
    assert_eq!(error_condition(&e), "item-not-found");
    let e = alice
        .iq(&format!(
            "<iq type='set' id='other' to='bob@localhost'><query xmlns='{MAM}'/></iq>"
        ))
        .await;
    assert_eq!(error_condition(&e), "forbidden");

    // §4.1.5 form, §5 metadata, §7 disco on the account.
    let form = alice
        .iq(&format!(
            "<iq type='get' id='form'><query xmlns='{MAM}'/></iq>"
        ))
        .await;
    let x = form
        .child("query", MAM)
        .unwrap()
        .child("x", "jabber:x:data")
        .unwrap();
    let vars: Vec<_> = x.children().filter_map(|f| f.attr("var")).collect();
    for v in [
        "FORM_TYPE",
        "with",
        "start",
        "end",
        "before-id",
        "after-id",
        "ids",
    ] {
        assert!(vars.contains(&v), "{v} in {form}");
    }
    let meta = alice
        .iq(&format!(
            "<iq type='get' id='meta'><metadata xmlns='{MAM}'/></iq>"
        ))
        .await;
    let meta = meta.child("metadata", MAM).unwrap();
    assert_eq!(
        meta.child("start", MAM).unwrap().attr("id"),
        Some(all_ids[0].as_str())
    );
    assert_eq!(
        meta.child("start", MAM).unwrap().attr("timestamp"),
        Some(all[0].stamp.as_str())
    );
    let info = alice
        .iq("<iq type='get' id='d' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await
        .to_string();
    assert!(info.contains("'urn:xmpp:mam:2'"), "{info}");
    assert!(info.contains("'urn:xmpp:mam:2#extended'"), "{info}");
    let info = alice
        .iq("<iq type='get' id='d2' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await
        .to_string();
    assert!(info.contains("'urn:xmpp:mam:2'"), "{info}");

    // Flipped page: same results, newest first.
    let (flipped, _) = {
        alice
            .send(&format!(
                "<iq type='set' id='flip'><query xmlns='{MAM}' queryid='flip'><set xmlns='{RSM}'><max>3</max></set><flip-page/></query></iq>"
            ))
            .await;
        let (iq, skipped) = alice
            .until(|e| e.name() == "iq" && e.attr("id") == Some("flip"))
            .await;
        (skipped, iq)
    };
    let flipped_ids: Vec<_> = flipped
        .iter()
        .filter_map(|m| m.child("result", MAM))
        .map(|r| r.attr("id").unwrap().to_owned())
        .collect();
    assert_eq!(
        flipped_ids,
        [all_ids[2].clone(), all_ids[1].clone(), all_ids[0].clone()]
    );
}

#[tokio::test]
async fn preferences_hints_forged_ids_and_offline() {
    let s = TestServer::start().await;
    for u in ["alice", "bob", "carol"] {
        s.add_user(u, "pw").await;
    }
    let mut alice = online(&s, "alice", "a").await;
    let mut bob = online(&s, "bob", "b").await;
    let mut carol = online(&s, "carol", "c").await;

    // XEP-0441 defaults.
    let p = alice
        .iq(&format!(
            "<iq type='get' id='p0'><prefs xmlns='{MAM}'/></iq>"
        ))
        .await;
    assert_eq!(
        p.child("prefs", MAM).unwrap().to_xml_string(),
        format!("<prefs xmlns='{MAM}' default='always'><always/><never/></prefs>")
    );
    // Never archive for Alice; Bob still archives his side.
    let p = alice
        .iq(&format!(
            "<iq type='set' id='p1'><prefs xmlns='{MAM}' default='never'><always/><never/></prefs></iq>"
        ))
        .await;
    assert_eq!(
        p.child("prefs", MAM).unwrap().attr("default"),
        Some("never"),
        "{p}"
    );
    alice
        .send("<message to='bob@localhost' type='chat' id='n1'><body>not kept</body></message>")
        .await;
    let m = bob.next_message().await;
    assert!(stanza_id(&m, "bob@localhost").is_some());
    bob.send("<message to='alice@localhost' type='chat' id='n2'><body>not kept</body></message>")
        .await;
    sync(&mut bob).await;
    let m = alice.next_message().await;
    assert_eq!(stanza_id(&m, "alice@localhost"), None, "{m}");
    let (r, f) = query(&mut alice, "q0", "", "").await;
    assert!(r.is_empty() && complete(&f));

    // Always again, but never with Carol (a bare JID matches every resource).
    let p = alice
        .iq(&format!(
            "<iq type='set' id='p2'><prefs xmlns='{MAM}' default='always'><always/><never><jid>carol@localhost</jid></never></prefs></iq>"
        ))
        .await;
    assert!(p.to_string().contains("<jid>carol@localhost</jid>"), "{p}");
    carol
        .send("<message to='alice@localhost' type='chat' id='c1'><body>from carol</body></message>")
        .await;
    let m = alice.next_message().await;
    assert_eq!(m.attr("id"), Some("c1"));
    assert_eq!(stanza_id(&m, "alice@localhost"), None);

    // no-store hint: in neither archive.
    alice
        .send("<message to='bob@localhost' type='chat' id='h1'><body>ephemeral</body><no-store xmlns='urn:xmpp:hints'/></message>")
        .await;
    let m = bob.next_message().await;
    assert_eq!(m.attr("id"), Some("h1"));
    assert_eq!(stanza_id(&m, "bob@localhost"), None);

    // A forged stanza-id by the recipient's archive is replaced.
    alice
        .send("<message to='bob@localhost' type='chat' id='f1'><body>forged</body><stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='forged'/></message>")
        .await;
    let m = bob.next_message().await;
    let forged_id = stanza_id(&m, "bob@localhost").expect("a real stanza-id");
    assert_ne!(forged_id, "forged");
    // A forged one without archiving (no-store) is removed all the same.
    alice
        .send("<message to='bob@localhost' type='chat' id='f2'><body>forged</body><no-store xmlns='urn:xmpp:hints'/><stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='forged'/></message>")
        .await;
    let m = bob.next_message().await;
    assert_eq!(stanza_id(&m, "bob@localhost"), None, "{m}");
    sync(&mut alice).await;

    // Alice's archive: only the forged-id message (n1/n2 under 'never',
    // c1 from Carol refused, h1 not stored); without the forged stanza-id.
    let (r, _) = query(&mut alice, "q1", "", "").await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].message.attr("id"), Some("f1"));
    assert_eq!(
        stanza_id(&r[0].message, "bob@localhost").as_deref(),
        Some("forged")
    );
    // Bob's: n1, n2, f1 (with his real stanza-id in the archived copy).
    let (r, _) = query(&mut bob, "q2", "", "").await;
    let got: Vec<_> = r.iter().map(|i| i.message.attr("id").unwrap()).collect();
    assert_eq!(got, ["n1", "n2", "f1"]);
    assert_eq!(r[2].id, forged_id);
    assert_eq!(
        stanza_id(&r[2].message, "bob@localhost").as_deref(),
        Some(forged_id.as_str())
    );

    // Messages to an offline account are archived too, with the stanza-id
    // in the copy delivered from offline storage.
    drop(carol);
    let sessions = s.running.as_ref().unwrap().sessions.clone();
    rookery_e2e::eventually(|| sessions.session_count() == 2).await;
    bob.send(
        "<message to='carol@localhost' type='chat' id='off'><body>while away</body></message>",
    )
    .await;
    sync(&mut bob).await;
    let mut carol = s.login("carol", "pw", "again").await;
    let (r, _) = query(&mut carol, "q3", &field("with", "bob@localhost"), "").await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].message.attr("id"), Some("off"));
    carol.send("<presence/>").await;
    let (m, _) = carol
        .until(|e| e.name() == "message" && e.attr("id") == Some("off"))
        .await;
    assert_eq!(stanza_id(&m, "carol@localhost"), Some(r[0].id.clone()));
    assert!(m.child("delay", "urn:xmpp:delay").is_some());
}

#[tokio::test]
async fn account_removal_deletes_the_archive() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw").await;
    s.add_user("bob", "pw").await;
    let mut alice = online(&s, "alice", "a").await;
    let mut bob = online(&s, "bob", "b").await;
    bob.send("<message to='alice@localhost' type='chat' id='x'><body>hi</body></message>")
        .await;
    alice.next_message().await;
    let (r, _) = query(&mut alice, "q", "", "").await;
    assert_eq!(r.len(), 1);
    let r = alice
        .iq("<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(alice.expect_stream_error().await, "not-authorized");
    s.add_user("alice", "pw2").await;
    let mut alice = s.login("alice", "pw2", "new").await;
    let (r, f) = query(&mut alice, "q2", "", "").await;
    assert!(r.is_empty(), "{r:?}");
    assert_eq!(rsm(&f, "count").unwrap().text(), "0");
    // Bob's side of the conversation is his and stays.
    let (r, _) = query(&mut bob, "q3", "", "").await;
    assert_eq!(r.len(), 1);
}
