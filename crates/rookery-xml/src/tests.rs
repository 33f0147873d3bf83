use super::*;

const HEADER: &str = "<?xml version='1.0'?><stream:stream from='juliet@im.example.com' to='im.example.com' version='1.0' xml:lang='en' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

const SHORT: &str =
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

fn events(input: &[u8], chunk: usize) -> Result<Vec<StreamEvent>, XmlError> {
    let mut p = Parser::new(Limits::default());
    let mut out = Vec::new();
    for c in input.chunks(chunk.max(1)) {
        p.feed(c)?;
        while let Some(ev) = p.next_event()? {
            out.push(ev);
        }
    }
    Ok(out)
}

fn err(input: &str) -> XmlError {
    events(input.as_bytes(), usize::MAX).expect_err("should fail")
}

fn with_header(body: &str) -> String {
    format!("{HEADER}{body}")
}

#[test]
fn rfc6120_stream_negotiation_example() {
    // RFC 6120 §9.1.1 / §4.7 style stream with a message and the close.
    let xml = with_header(
        "<message from='juliet@im.example.com/balcony' id='ju2ba41c' to='romeo@example.net' type='chat' xml:lang='en'>\n <body>Art thou not Romeo, and a Montague?</body>\n</message></stream:stream>",
    );
    let evs = events(xml.as_bytes(), usize::MAX).unwrap();
    assert_eq!(evs.len(), 3);
    let StreamEvent::Open(h) = &evs[0] else {
        panic!()
    };
    assert_eq!(h.name, "stream");
    assert_eq!(h.ns, ns::STREAMS);
    assert_eq!(h.default_ns.as_deref(), Some(ns::CLIENT));
    assert_eq!(h.attr("to"), Some("im.example.com"));
    assert_eq!(h.attr("version"), Some("1.0"));
    assert_eq!(h.lang(), Some("en"));
    let StreamEvent::Stanza(m) = &evs[1] else {
        panic!()
    };
    assert!(m.is("message", ns::CLIENT));
    assert_eq!(m.attr("type"), Some("chat"));
    assert_eq!(m.attr_ns("lang", ns::XML), Some("en"));
    assert_eq!(
        m.child("body", ns::CLIENT).unwrap().text(),
        "Art thou not Romeo, and a Montague?"
    );
    assert_eq!(evs[2], StreamEvent::Close);
}

#[test]
fn byte_by_byte_equals_whole() {
    let xml = with_header(
        "<iq type='get' id='x'><query xmlns='http://jabber.org/protocol/disco#info'/></iq> \n<message to='a@b'><body>caf\u{e9} \u{1F600} &lt;&amp;&#x41;&#66;</body></message><stream:features/></stream:stream>",
    );
    let whole = events(xml.as_bytes(), usize::MAX).unwrap();
    for chunk in [1, 2, 3, 7, 64] {
        assert_eq!(
            events(xml.as_bytes(), chunk).unwrap(),
            whole,
            "chunk {chunk}"
        );
    }
    let StreamEvent::Stanza(m) = &whole[2] else {
        panic!()
    };
    assert_eq!(
        m.child("body", ns::CLIENT).unwrap().text(),
        "caf\u{e9} \u{1F600} <&AB"
    );
    let StreamEvent::Stanza(f) = &whole[3] else {
        panic!()
    };
    assert!(f.is("features", ns::STREAMS));
}

#[test]
fn round_trip_is_stable() {
    let xml = with_header(
        "<message to='a@b' xmlns:x='urn:x'><x:data a='&apos;&quot;'>1 &gt; 0</x:data><body xml:lang='de'>t&#9;ab</body></message>",
    );
    let evs = events(xml.as_bytes(), usize::MAX).unwrap();
    let StreamEvent::Stanza(m) = &evs[1] else {
        panic!()
    };
    let out = m.to_bytes(ns::CLIENT);
    let again = events(&[HEADER.as_bytes(), &out].concat(), usize::MAX).unwrap();
    assert_eq!(&again[1], &evs[1]);
    assert_eq!(m.child("data", "urn:x").unwrap().attr("a"), Some("'\""));
}

#[test]
fn restricted_xml() {
    for (body, what) in [
        ("<!-- hi -->", "comment"),
        ("<message><!-- hi --></message>", "comment"),
        ("<?php x?>", "processing instruction"),
        ("<message><?pi?></message>", "processing instruction"),
        ("<message><body>&lol;</body></message>", "entity reference"),
        ("<message a='&lol;'/>", "entity reference"),
        ("<?xml version='1.0'?>", "processing instruction"),
    ] {
        assert_eq!(
            err(&with_header(body)),
            XmlError::RestrictedXml(what),
            "{body}"
        );
    }
    // A DTD before the stream header, and the billion laughs payload.
    let laughs = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><message><body>&lol2;</body></message>";
    assert_eq!(err(laughs), XmlError::RestrictedXml("DTD"));
    // Refused as soon as the markup is recognisable, without waiting for its end.
    let mut p = Parser::new(Limits::default());
    p.feed(b"<!DOCTYPE x [").unwrap();
    assert_eq!(p.next_event(), Err(XmlError::RestrictedXml("DTD")));
    let mut p = Parser::new(Limits::default());
    p.feed(HEADER.as_bytes()).unwrap();
    p.next_event().unwrap();
    p.feed(b"<!-- never closed").unwrap();
    assert_eq!(p.next_event(), Err(XmlError::RestrictedXml("comment")));
    assert_eq!(XmlError::RestrictedXml("x").condition(), "restricted-xml");
}

#[test]
fn not_well_formed() {
    for body in [
        "<message></iq>",
        "<message><body></message></body>",
        "<x:message/>",
        "<message a='<'/>",
        "<message a='1' a='2'/>",
        "hello",
        "<message>\u{1}</message>",
        "<message>&#0;</message>",
        "<message>&#xFFFE;</message>",
        "<message a=b/>",
        "<1message/>",
        "<message>&amp</message>",
        "</stream:other>",
    ] {
        let e = err(&with_header(body));
        assert!(matches!(e, XmlError::NotWellFormed(_)), "{body}: {e:?}");
        assert_eq!(e.condition(), "not-well-formed");
    }
    let mut bad = with_header("<message><body>").into_bytes();
    bad.extend_from_slice(&[0xff, 0xfe]);
    bad.extend_from_slice(b"</body></message>");
    assert!(matches!(events(&bad, 3), Err(XmlError::NotWellFormed(_))));
    assert_eq!(
        err("<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream>"),
        XmlError::UnsupportedEncoding
    );
}

#[test]
fn limits_are_enforced_before_building() {
    let small = Limits {
        max_stanza_bytes: 1000,
        max_depth: 4,
        max_attrs: 3,
        max_name_len: 16,
    };
    let run = |body: &str| -> Result<Vec<StreamEvent>, XmlError> {
        let mut p = Parser::new(small);
        let mut out = Vec::new();
        p.feed(format!("{SHORT}{body}").as_bytes())?;
        while let Some(ev) = p.next_event()? {
            out.push(ev);
        }
        Ok(out)
    };
    let big = format!("<message><body>{}</body></message>", "a".repeat(1000));
    assert_eq!(
        run(&big),
        Err(XmlError::PolicyViolation("stanza too large"))
    );
    assert_eq!(
        run("<a><b><c><d><e/></d></c></b></a>"),
        Err(XmlError::PolicyViolation("too deeply nested"))
    );
    assert!(run("<a><b><c><d/></c></b></a>").is_ok());
    assert_eq!(
        run("<a w='1' x='2' y='3' z='4'/>"),
        Err(XmlError::PolicyViolation("too many attributes"))
    );
    assert_eq!(
        run("<abcdefghijklmnopq/>"),
        Err(XmlError::PolicyViolation("name too long"))
    );
    // An unterminated tag is refused once its pending bytes pass the limit,
    // however it is split.
    let mut p = Parser::new(small);
    p.feed(SHORT.as_bytes()).unwrap();
    p.next_event().unwrap();
    p.feed(b"<message to='").unwrap();
    assert_eq!(p.next_event(), Ok(None));
    let mut res: Result<(), XmlError> = Ok(());
    for _ in 0..100 {
        p.feed(&[b'x'; 100]).unwrap();
        res = p.next_event().map(|_| ());
        if res.is_err() {
            break;
        }
    }
    assert_eq!(res, Err(XmlError::PolicyViolation("stanza too large")));
    // The limit is per stanza: many stanzas in one stream are fine.
    let many = "<message><body>0123456789</body></message>".repeat(200);
    assert_eq!(run(&many).unwrap().len(), 201);
}

#[test]
fn idle_parser_releases_its_buffer() {
    let mut p = Parser::new(Limits::default());
    p.feed(HEADER.as_bytes()).unwrap();
    p.next_event().unwrap();
    let big = format!("<message><body>{}</body></message>", "a".repeat(100_000));
    p.feed(big.as_bytes()).unwrap();
    assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Stanza(_)))));
    assert_eq!(p.next_event(), Ok(None));
    assert_eq!(p.buffered_capacity(), 0);
    assert!(p.is_idle());
}

#[test]
fn reset_after_starttls_and_sasl() {
    let mut p = Parser::new(Limits::default());
    p.feed(HEADER.as_bytes()).unwrap();
    p.next_event().unwrap();
    p.feed(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><injected/>")
        .unwrap();
    let StreamEvent::Stanza(s) = p.next_event().unwrap().unwrap() else {
        panic!()
    };
    assert!(s.is("starttls", ns::TLS));
    // Plaintext sent after <starttls/> must not survive the TLS upgrade.
    p.reset(false);
    assert_eq!(p.next_event(), Ok(None));
    // After SASL the pipelined new header is kept.
    p.feed(HEADER.as_bytes()).unwrap();
    p.next_event().unwrap();
    p.feed(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>")
        .unwrap();
    p.feed(HEADER.as_bytes()).unwrap();
    assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Stanza(_)))));
    p.reset(true);
    assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Open(_)))));
}

#[test]
fn fragments_for_websocket_framing() {
    let mut p = Parser::new_fragments(Limits::default(), ns::CLIENT);
    p.feed(b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.com' version='1.0'/>")
        .unwrap();
    let StreamEvent::Stanza(o) = p.next_event().unwrap().unwrap() else {
        panic!()
    };
    assert!(o.is("open", ns::FRAMING));
    p.feed(b"<message><body>x</body></message>").unwrap();
    let StreamEvent::Stanza(m) = p.next_event().unwrap().unwrap() else {
        panic!()
    };
    assert!(m.is("message", ns::CLIENT));
    assert!(Element::parse("<a/><b/>").is_err());
    assert!(Element::parse("<a>").is_err());
}

#[test]
fn cdata_and_whitespace_keepalives() {
    let xml = with_header(" \n <message><body><![CDATA[<b>&]]></body></message>\n\n ");
    let evs = events(xml.as_bytes(), 5).unwrap();
    let StreamEvent::Stanza(m) = &evs[1] else {
        panic!()
    };
    assert_eq!(m.child("body", ns::CLIENT).unwrap().text(), "<b>&");
    assert_eq!(
        String::from_utf8(m.to_bytes(ns::CLIENT)).unwrap(),
        "<message><body>&lt;b&gt;&amp;</body></message>"
    );
}

/// Found by fuzzing: a U+FEFF at the start of a read was dropped by a fresh
/// quick-xml reader and the following bytes parsed twice.
#[test]
fn bom_inside_text_across_reads() {
    let whole = with_header("<message><body>\u{FEFF}abc</body></message>");
    let expect = events(whole.as_bytes(), usize::MAX).unwrap();
    let StreamEvent::Stanza(m) = &expect[1] else {
        panic!()
    };
    assert_eq!(m.child("body", ns::CLIENT).unwrap().text(), "\u{FEFF}abc");
    let mut p = Parser::new(Limits::default());
    let mut got = Vec::new();
    for part in [
        with_header("<message><body>"),
        "\u{FEFF}abc</body></message>".to_owned(),
    ] {
        p.feed(part.as_bytes()).unwrap();
        while let Some(ev) = p.next_event().unwrap() {
            got.push(ev);
        }
    }
    assert_eq!(got, expect);
    for chunk in 1..8 {
        assert_eq!(
            events(whole.as_bytes(), chunk).unwrap(),
            expect,
            "chunk {chunk}"
        );
    }
    // Between stanzas it is character data, which is not allowed there.
    let mut p = Parser::new(Limits::default());
    p.feed(with_header("").as_bytes()).unwrap();
    p.next_event().unwrap();
    p.feed("\u{FEFF}<message/>".as_bytes()).unwrap();
    assert!(matches!(p.next_event(), Err(XmlError::NotWellFormed(_))));
    // At the start of the stream it is a byte-order mark.
    let bom = format!("\u{FEFF}{}", with_header("<message/>"));
    assert_eq!(events(bom.as_bytes(), 1).unwrap().len(), 2);
}

/// Found by fuzzing: `<?xml` split before a newline was refused.
#[test]
fn xml_declaration_split_anywhere() {
    let xml = "<?xml\nversion='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
    for chunk in 1..12 {
        assert_eq!(
            events(xml.as_bytes(), chunk).unwrap().len(),
            1,
            "chunk {chunk}"
        );
    }
    assert!(events(b"<?xmlfoo?>", 3).is_err());
}

/// Found by fuzzing: `:name` passed for `name`, so a forwarded stanza could
/// carry two `from` attributes or a second `xmlns`.
#[test]
fn empty_prefix_and_duplicate_resolved_attributes() {
    for body in [
        "<message from='a' :from='admin@example.com'/>",
        "<message><x xmlns='urn:a' :xmlns='urn:evil'/></message>",
        "<:message/>",
        "<message xmlns:p='urn:x' xmlns:q='urn:x' p:a='1' q:a='2'/>",
    ] {
        let e = err(&with_header(body));
        assert!(matches!(e, XmlError::NotWellFormed(_)), "{body}: {e:?}");
    }
}

/// A `jabber:client` tree written for a `jabber:server` stream, and back.
#[test]
fn namespace_mapping_for_server_streams() {
    let mut el = Element::parse(
        "<message xmlns='jabber:client' to='a@b'><body>hi</body><x xmlns='urn:x'><y/></x></message>",
    )
    .unwrap();
    let mut out = Vec::new();
    el.write_to_mapped(&mut out, ns::SERVER, (ns::CLIENT, ns::SERVER));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "<message to='a@b'><body>hi</body><x xmlns='urn:x'><y/></x></message>"
    );
    el.map_ns(ns::CLIENT, ns::SERVER);
    assert_eq!(el.ns(), ns::SERVER);
    assert_eq!(el.child("body", ns::SERVER).unwrap().text(), "hi");
    assert!(el.child("x", "urn:x").is_some());
}
