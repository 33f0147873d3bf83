use super::*;

fn parts(s: &str) -> (Option<String>, String, Option<String>) {
    let j = Jid::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"));
    (
        j.node().map(str::to_owned),
        j.domain().to_owned(),
        j.resource().map(str::to_owned),
    )
}

fn ok(s: &str, node: Option<&str>, domain: &str, resource: Option<&str>) {
    assert_eq!(
        parts(s),
        (
            node.map(str::to_owned),
            domain.to_owned(),
            resource.map(str::to_owned)
        ),
        "parts of {s:?}"
    );
}

fn norm(s: &str) -> String {
    Jid::parse(s)
        .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
        .as_str()
        .to_owned()
}

fn err(s: &str) -> JidError {
    match Jid::parse(s) {
        Ok(j) => panic!("{s:?} should be rejected, got {j:?}"),
        Err(e) => e,
    }
}

// RFC 7622 §3.5, Table 1: legal JIDs.

#[test]
fn rfc7622_example_01_bare_jid() {
    ok("juliet@example.com", Some("juliet"), "example.com", None);
}

#[test]
fn rfc7622_example_02_full_jid() {
    ok(
        "juliet@example.com/foo",
        Some("juliet"),
        "example.com",
        Some("foo"),
    );
}

#[test]
fn rfc7622_example_03_space_in_resource() {
    ok(
        "juliet@example.com/foo bar",
        Some("juliet"),
        "example.com",
        Some("foo bar"),
    );
}

#[test]
fn rfc7622_example_04_at_sign_in_resource() {
    ok(
        "juliet@example.com/foo@bar",
        Some("juliet"),
        "example.com",
        Some("foo@bar"),
    );
}

#[test]
fn rfc7622_example_05_escaped_space_in_localpart() {
    ok(
        r"foo\20bar@example.com",
        Some(r"foo\20bar"),
        "example.com",
        None,
    );
}

#[test]
fn rfc7622_example_06_another_bare_jid() {
    ok(
        "fussball@example.com",
        Some("fussball"),
        "example.com",
        None,
    );
}

#[test]
fn rfc7622_example_07_sharp_s() {
    ok(
        "fu\u{DF}ball@example.com",
        Some("fu\u{DF}ball"),
        "example.com",
        None,
    );
    // Examples 6 and 7 are different localparts.
    assert_ne!(
        norm("fussball@example.com"),
        norm("fu\u{DF}ball@example.com")
    );
}

#[test]
fn rfc7622_example_08_greek_pi() {
    ok("\u{3C0}@example.com", Some("\u{3C0}"), "example.com", None);
}

#[test]
fn rfc7622_example_09_10_11_sigma() {
    // Capital sigma is case-mapped to small sigma, so 9 and 10 match ...
    ok(
        "\u{3A3}@example.com/foo",
        Some("\u{3C3}"),
        "example.com",
        Some("foo"),
    );
    ok(
        "\u{3C3}@example.com/foo",
        Some("\u{3C3}"),
        "example.com",
        Some("foo"),
    );
    assert_eq!(
        Jid::parse("\u{3A3}@example.com/foo").unwrap(),
        Jid::parse("\u{3C3}@example.com/foo").unwrap()
    );
    // ... but final sigma stays distinct.
    ok(
        "\u{3C2}@example.com/foo",
        Some("\u{3C2}"),
        "example.com",
        Some("foo"),
    );
    assert_ne!(
        Jid::parse("\u{3C2}@example.com/foo").unwrap(),
        Jid::parse("\u{3C3}@example.com/foo").unwrap()
    );
}

#[test]
fn rfc7622_example_12_chess_king_resource() {
    ok(
        "king@example.com/\u{265A}",
        Some("king"),
        "example.com",
        Some("\u{265A}"),
    );
}

#[test]
fn rfc7622_example_13_domain_only() {
    ok("example.com", None, "example.com", None);
}

#[test]
fn rfc7622_example_14_domain_and_resource() {
    ok("example.com/foobar", None, "example.com", Some("foobar"));
}

#[test]
fn rfc7622_example_15_resource_with_at_sign() {
    ok(
        "a.example.com/b@example.net",
        None,
        "a.example.com",
        Some("b@example.net"),
    );
}

// RFC 7622 §3.5, Table 2: strings that are not JIDs.

#[test]
fn rfc7622_example_16_quotes_in_localpart() {
    assert_eq!(err("\"juliet\"@example.com"), JidError::BadLocalpart);
}

#[test]
fn rfc7622_example_17_space_in_localpart() {
    assert_eq!(err("foo bar@example.com"), JidError::BadLocalpart);
}

#[test]
fn rfc7622_example_18_leading_space_in_resource() {
    assert_eq!(err("juliet@example.com/ foo"), JidError::BadResource);
}

#[test]
fn rfc7622_example_19_empty_localpart_and_resource() {
    assert_eq!(err("@example.com/"), JidError::EmptyLocalpart);
}

#[test]
fn rfc7622_example_20_roman_numeral_four() {
    assert_eq!(err("henry\u{2163}@example.com"), JidError::BadLocalpart);
}

#[test]
fn rfc7622_example_21_chess_king_localpart() {
    assert_eq!(err("\u{265A}@example.com"), JidError::BadLocalpart);
}

#[test]
fn rfc7622_example_22_localpart_without_domain() {
    assert_eq!(err("juliet@"), JidError::EmptyDomain);
}

#[test]
fn rfc7622_example_23_resource_without_domain() {
    assert_eq!(err("/foobar"), JidError::EmptyDomain);
}

// Splitting (RFC 7622 §3.1, §3.2).

#[test]
fn empty_parts_are_errors() {
    assert_eq!(err(""), JidError::EmptyDomain);
    assert_eq!(err("@example.com"), JidError::EmptyLocalpart);
    assert_eq!(err("node@"), JidError::EmptyDomain);
    assert_eq!(err("example.com/"), JidError::EmptyResource);
    assert_eq!(err("node@example.com/"), JidError::EmptyResource);
    assert_eq!(err("@"), JidError::EmptyLocalpart);
    assert_eq!(err("/"), JidError::EmptyDomain);
}

#[test]
fn resource_may_contain_slashes_and_at_signs() {
    ok("a@b.example/c/d@e", Some("a"), "b.example", Some("c/d@e"));
}

#[test]
fn second_at_sign_lands_in_domain() {
    assert_eq!(err("a@b@example.com"), JidError::BadDomain);
}

#[test]
fn separators_are_matched_before_mapping() {
    // U+FF20 FULLWIDTH COMMERCIAL AT is width-mapped to '@' only after splitting,
    // and '@' is excluded from localparts (RFC 7622 §3.3.1).
    assert_eq!(err("a\u{FF20}b@example.com"), JidError::BadLocalpart);
    // U+FF0F FULLWIDTH SOLIDUS in a resourcepart is kept as is (no width mapping there).
    ok(
        "a@example.com/x\u{FF0F}y",
        Some("a"),
        "example.com",
        Some("x\u{FF0F}y"),
    );
}

#[test]
fn rfc7622_3_3_1_excluded_characters() {
    for c in ['"', '&', '\'', '/', ':', '<', '>', '@'] {
        let local = format!("a{c}b");
        assert_eq!(prep_localpart(&local), Err(JidError::BadLocalpart), "{c:?}");
    }
    // Other printable ASCII is allowed by the IdentifierClass.
    assert_eq!(
        prep_localpart("a!#$%()*+,-.;=?[\\]^_`{|}~z").unwrap(),
        "a!#$%()*+,-.;=?[\\]^_`{|}~z"
    );
}

// Case mapping, width mapping, normalization.

#[test]
fn case_mapping() {
    assert_eq!(
        norm("Juliet@Example.COM/Balcony"),
        "juliet@example.com/Balcony"
    );
    assert_eq!(
        Jid::parse("JULIET@example.com").unwrap(),
        Jid::parse("juliet@EXAMPLE.com").unwrap()
    );
    assert_eq!(norm("\u{C9}lise@example.com"), "\u{E9}lise@example.com");
}

#[test]
fn localpart_fullwidth_is_width_mapped() {
    assert_eq!(
        norm("\u{FF2A}\u{FF35}\u{FF2C}\u{FF29}\u{FF25}\u{FF34}@example.com"),
        "juliet@example.com"
    );
}

#[test]
fn localpart_is_nfc_normalized() {
    // e + COMBINING ACUTE ACCENT composes to U+00E9.
    assert_eq!(prep_localpart("caf\u{65}\u{301}").unwrap(), "caf\u{E9}");
    assert_eq!(
        Jid::parse("caf\u{65}\u{301}@example.com").unwrap(),
        Jid::parse("caf\u{E9}@example.com").unwrap()
    );
}

#[test]
fn resource_is_nfc_and_space_mapped_but_not_case_mapped() {
    assert_eq!(prep_resourcepart("Caf\u{65}\u{301}").unwrap(), "Caf\u{E9}");
    // Non-ASCII spaces are mapped to U+0020 (RFC 8265 §4.2.1).
    assert_eq!(prep_resourcepart("foo\u{A0}bar").unwrap(), "foo bar");
    assert_eq!(prep_resourcepart("\u{3000}foo"), Err(JidError::BadResource));
    assert_eq!(prep_resourcepart("foo "), Err(JidError::BadResource));
    assert_eq!(prep_resourcepart("foo\u{7}"), Err(JidError::BadResource));
    assert_eq!(prep_resourcepart("foo\u{200B}"), Err(JidError::BadResource));
}

#[test]
fn localpart_bidi_rule() {
    assert_eq!(
        prep_localpart("\u{5E9}\u{5DC}\u{5D5}\u{5DD}").unwrap(),
        "\u{5E9}\u{5DC}\u{5D5}\u{5DD}"
    );
    assert_eq!(prep_localpart("a\u{5D0}"), Err(JidError::BadLocalpart));
}

#[test]
fn localpart_rejects_controls_and_spaces() {
    assert_eq!(prep_localpart("a\tb"), Err(JidError::BadLocalpart));
    assert_eq!(prep_localpart("a\u{A0}b"), Err(JidError::BadLocalpart));
    assert_eq!(prep_localpart("\u{7F}"), Err(JidError::BadLocalpart));
}

// Domainpart (RFC 7622 §3.2).

#[test]
fn domain_idna_mapping() {
    assert_eq!(prep_domainpart("EXAMPLE.Com").unwrap(), "example.com");
    assert_eq!(
        prep_domainpart("B\u{FC}cher.example").unwrap(),
        "b\u{FC}cher.example"
    );
    // A-labels are converted to U-labels (RFC 7622 §3.2.1).
    assert_eq!(
        prep_domainpart("xn--bcher-kva.example").unwrap(),
        "b\u{FC}cher.example"
    );
    assert_eq!(
        prep_domainpart("XN--BCHER-KVA.example").unwrap(),
        "b\u{FC}cher.example"
    );
    // Fullwidth letters are width-mapped.
    assert_eq!(
        prep_domainpart("\u{FF45}\u{FF58}\u{FF41}\u{FF4D}\u{FF50}\u{FF4C}\u{FF45}.com").unwrap(),
        "example.com"
    );
    // Non-transitional processing keeps sharp s.
    assert_eq!(
        prep_domainpart("fu\u{DF}ball.example").unwrap(),
        "fu\u{DF}ball.example"
    );
    assert_eq!(
        norm("Juliet@B\u{DC}CHER.example/R"),
        "juliet@b\u{FC}cher.example/R"
    );
}

#[test]
fn domain_rejects_invalid() {
    for bad in [
        "exa mple.com",
        "example_com",
        "-example.com",
        "example-.com",
        "a..b",
        ".example.com",
        "example.com..",
        "xn--a.example",
        "ex\u{265A}mple.com",
        "a:b",
        "[::1",
        "::1",
        "[example.com]",
        "[fe80::1%25eth0]",
        "[v1.fe80::1]",
    ] {
        assert_eq!(prep_domainpart(bad), Err(JidError::BadDomain), "{bad:?}");
    }
}

#[test]
fn domain_idna2008_repertoire() {
    // U-labels with letters from various scripts are fine ...
    assert_eq!(
        prep_domainpart("\u{4F8B}\u{3048}.\u{30C6}\u{30B9}\u{30C8}").unwrap(),
        "\u{4F8B}\u{3048}.\u{30C6}\u{30B9}\u{30C8}"
    );
    assert_eq!(
        prep_domainpart("xn--r8jz45g.xn--zckzah").unwrap(),
        "\u{4F8B}\u{3048}.\u{30C6}\u{30B9}\u{30C8}"
    );
    assert_eq!(
        prep_domainpart("\u{3A0}\u{391}.example").unwrap(),
        "\u{3C0}\u{3B1}.example"
    );
    // ... but symbols and emoji, valid under UTS #46, are not IDNA2008 U-labels.
    assert_eq!(
        prep_domainpart("\u{2665}.example"),
        Err(JidError::BadDomain)
    );
    assert_eq!(prep_domainpart("xn--g6h.example"), Err(JidError::BadDomain));
    assert_eq!(
        prep_domainpart("\u{1F600}.example"),
        Err(JidError::BadDomain)
    );
}

#[test]
fn domain_trailing_dot_is_stripped() {
    assert_eq!(prep_domainpart("example.com.").unwrap(), "example.com");
    assert_eq!(
        prep_domainpart("example.com\u{3002}").unwrap(),
        "example.com"
    );
    assert_eq!(norm("juliet@example.com."), "juliet@example.com");
    assert_eq!(norm("juliet@example.com./res"), "juliet@example.com/res");
    assert_eq!(norm("Example.COM."), "example.com");
    assert_eq!(
        Jid::parse("example.com.").unwrap(),
        Jid::parse("example.com").unwrap()
    );
    assert_eq!(err("."), JidError::EmptyDomain);
    assert_eq!(err("juliet@./r"), JidError::EmptyDomain);
}

#[test]
fn domain_ip_literals() {
    ok("juliet@[::1]/r", Some("juliet"), "[::1]", Some("r"));
    ok("[2001:db8::1]", None, "[2001:db8::1]", None);
    assert_eq!(prep_domainpart("[0:0:0:0:0:0:0:1]").unwrap(), "[::1]");
    assert_eq!(prep_domainpart("[2001:DB8::1]").unwrap(), "[2001:db8::1]");
    assert_eq!(prep_domainpart("[::1].").unwrap(), "[::1]");
    assert!(matches!(prep_domainpart("[::1]"), Ok(Cow::Borrowed(_))));
    ok(
        "juliet@192.168.0.1/r",
        Some("juliet"),
        "192.168.0.1",
        Some("r"),
    );
    ok("127.0.0.1", None, "127.0.0.1", None);
}

#[test]
fn unqualified_hostname() {
    ok("juliet@localhost", Some("juliet"), "localhost", None);
}

// Length limits (RFC 7622 §3.1: 1..=1023 octets per part after preparation).

fn long_domain(len: usize) -> String {
    // A first label of 1..=63 bytes, then ".<62 x 'a'>" chunks.
    let chunks = (len - 1) / 63;
    let mut d = "a".repeat(len - 63 * chunks);
    for _ in 0..chunks {
        d.push('.');
        d.push_str(&"a".repeat(62));
    }
    assert_eq!(d.len(), len);
    d
}

#[test]
fn localpart_length_limit() {
    let l = "a".repeat(1023);
    let j = Jid::parse(&format!("{l}@example.com")).unwrap();
    assert_eq!(j.node(), Some(l.as_str()));
    assert_eq!(
        err(&format!("{}@example.com", "a".repeat(1024))),
        JidError::LocalpartTooLong
    );
    // Octets, not characters: 511 * 2 + 1 = 1023 ok, one more two-byte char is not.
    let pi = "\u{3C0}".repeat(511);
    assert!(prep_localpart(&format!("{pi}a")).is_ok());
    assert_eq!(
        prep_localpart(&format!("{pi}\u{3C0}")),
        Err(JidError::LocalpartTooLong)
    );
    // The limit applies after mapping: 1023 fullwidth letters (3069 bytes) map to 1023.
    let wide = "\u{FF41}".repeat(1023);
    assert_eq!(prep_localpart(&wide).unwrap(), "a".repeat(1023));
}

#[test]
fn domain_length_limit() {
    let d = long_domain(1023);
    assert_eq!(Jid::parse(&d).unwrap().domain(), d);
    assert_eq!(err(&long_domain(1024)), JidError::DomainTooLong);
    // A trailing dot is stripped before the length check.
    assert_eq!(Jid::parse(&format!("{d}.")).unwrap().domain(), d);
}

#[test]
fn resource_length_limit() {
    let r = "r".repeat(1023);
    let j = Jid::parse(&format!("a@example.com/{r}")).unwrap();
    assert_eq!(j.resource(), Some(r.as_str()));
    assert_eq!(
        err(&format!("a@example.com/{}", "r".repeat(1024))),
        JidError::ResourceTooLong
    );
}

#[test]
fn maximum_size_jid() {
    let l = "l".repeat(1023);
    let d = long_domain(1023);
    let r = "r".repeat(1023);
    let s = format!("{l}@{d}/{r}");
    let j = Jid::parse(&s).unwrap();
    assert_eq!(j.as_str().len(), 3071);
    assert_eq!(j.node(), Some(l.as_str()));
    assert_eq!(j.domain(), d);
    assert_eq!(j.resource(), Some(r.as_str()));
    assert_eq!(j.bare_str(), format!("{l}@{d}"));
}

// Fast paths.

#[test]
fn fast_paths_borrow() {
    assert!(matches!(
        prep_localpart("juliet"),
        Ok(Cow::Borrowed("juliet"))
    ));
    assert!(matches!(
        prep_domainpart("example.com"),
        Ok(Cow::Borrowed("example.com"))
    ));
    assert!(matches!(
        prep_domainpart("example.com."),
        Ok(Cow::Borrowed("example.com"))
    ));
    assert!(matches!(
        prep_resourcepart("Foo Bar"),
        Ok(Cow::Borrowed("Foo Bar"))
    ));
    assert!(matches!(prep_localpart("Juliet"), Ok(Cow::Owned(_))));
    assert!(matches!(prep_domainpart("Example.com"), Ok(Cow::Owned(_))));
}

#[test]
fn slow_paths_borrow_when_already_normalized() {
    assert!(matches!(prep_localpart("\u{3C0}"), Ok(Cow::Borrowed(_))));
    assert!(matches!(
        prep_resourcepart("\u{265A}"),
        Ok(Cow::Borrowed(_))
    ));
    assert!(matches!(
        prep_domainpart("b\u{FC}cher.example"),
        Ok(Cow::Borrowed(_))
    ));
}

// Jid API.

#[test]
fn accessors() {
    let j = Jid::parse("juliet@example.com/balcony").unwrap();
    assert_eq!(j.node(), Some("juliet"));
    assert_eq!(j.domain(), "example.com");
    assert_eq!(j.resource(), Some("balcony"));
    assert!(j.is_full());
    assert!(!j.is_bare());
    assert_eq!(j.bare_str(), "juliet@example.com");
    assert_eq!(j.as_str(), "juliet@example.com/balcony");

    let b = j.to_bare();
    assert!(b.is_bare());
    assert!(!b.is_full());
    assert_eq!(b.as_str(), "juliet@example.com");
    assert_eq!(b.node(), Some("juliet"));
    assert_eq!(b.domain(), "example.com");
    assert_eq!(b.resource(), None);
    assert_eq!(b, Jid::parse("juliet@example.com").unwrap());
    assert_eq!(b.to_bare(), b);

    let d = Jid::parse("example.com/r").unwrap();
    assert_eq!(d.node(), None);
    assert_eq!(d.domain(), "example.com");
    assert_eq!(d.bare_str(), "example.com");
    assert_eq!(d.to_bare().as_str(), "example.com");
}

#[test]
fn with_resource() {
    let j = Jid::parse("juliet@example.com/balcony").unwrap();
    let k = j.with_resource("Chamber\u{A0}2").unwrap();
    assert_eq!(k.as_str(), "juliet@example.com/Chamber 2");
    assert_eq!(k.resource(), Some("Chamber 2"));
    assert_eq!(k.node(), Some("juliet"));
    assert_eq!(k, Jid::parse("juliet@example.com/Chamber 2").unwrap());
    assert_eq!(j.with_resource(""), Err(JidError::EmptyResource));
    assert_eq!(j.with_resource(" x"), Err(JidError::BadResource));
    let d = Jid::parse("example.com")
        .unwrap()
        .with_resource("r/s")
        .unwrap();
    assert_eq!(d.domain(), "example.com");
    assert_eq!(d.resource(), Some("r/s"));
}

#[test]
fn new_prepares_parts() {
    let j = Jid::new(Some("Juliet"), "Example.COM.", Some("Balcony")).unwrap();
    assert_eq!(j.as_str(), "juliet@example.com/Balcony");
    assert_eq!(j, Jid::parse("Juliet@Example.COM/Balcony").unwrap());
    let d = Jid::new(None, "example.com", None).unwrap();
    assert_eq!(d.as_str(), "example.com");
    assert!(d.is_bare());
    assert_eq!(
        Jid::new(Some(""), "example.com", None),
        Err(JidError::EmptyLocalpart)
    );
    assert_eq!(Jid::new(None, "", None), Err(JidError::EmptyDomain));
    assert_eq!(
        Jid::new(None, "example.com", Some("")),
        Err(JidError::EmptyResource)
    );
    assert_eq!(
        Jid::new(Some("a@b"), "example.com", None),
        Err(JidError::BadLocalpart)
    );
    assert_eq!(Jid::new(Some("a"), "b/c", None), Err(JidError::BadDomain));
}

#[test]
fn display_debug_fromstr() {
    let j: Jid = "Juliet@Example.com/Balcony".parse().unwrap();
    assert_eq!(j.to_string(), "juliet@example.com/Balcony");
    assert_eq!(format!("{j:?}"), "Jid(\"juliet@example.com/Balcony\")");
    assert_eq!("@x".parse::<Jid>(), Err(JidError::EmptyLocalpart));
    assert_eq!(AsRef::<str>::as_ref(&j), "juliet@example.com/Balcony");
}

#[test]
fn equality_hash_and_order_follow_normalized_form() {
    use std::collections::HashSet;
    let a = Jid::parse("Juliet@Example.com/R").unwrap();
    let b = Jid::parse("juliet@example.com./R").unwrap();
    assert_eq!(a, b);
    let set: HashSet<Jid> = [a.clone(), b].into_iter().collect();
    assert_eq!(set.len(), 1);
    let mut v = [
        Jid::parse("b@example.com").unwrap(),
        Jid::parse("a@example.com/z").unwrap(),
        Jid::parse("a@example.com").unwrap(),
    ];
    v.sort();
    let s: Vec<&str> = v.iter().map(Jid::as_str).collect();
    assert_eq!(s, ["a@example.com", "a@example.com/z", "b@example.com"]);
}

#[test]
fn normalized_form_reparses_to_itself() {
    for s in [
        "Juliet@Example.COM/Balcony",
        "\u{3A3}@example.com/foo",
        "caf\u{65}\u{301}@XN--BCHER-KVA.example./\u{265A} x",
        "[0::1]",
        "example.com/a/b@c",
    ] {
        let j = Jid::parse(s).unwrap();
        let again = Jid::parse(j.as_str()).unwrap();
        assert_eq!(j, again, "{s:?}");
        assert_eq!(j.node(), again.node());
        assert_eq!(j.domain(), again.domain());
        assert_eq!(j.resource(), again.resource());
    }
}

#[test]
fn jid_is_compact() {
    assert!(std::mem::size_of::<Jid>() <= 24);
}

// The ASCII fast paths must agree with the full PRECIS / IDNA processing.

fn ascii_samples() -> Vec<String> {
    let mut v: Vec<String> = (0u8..0x80)
        .flat_map(|b| {
            let c = char::from(b);
            [
                format!("{c}"),
                format!("a{c}b"),
                format!("{c}b"),
                format!("a{c}"),
            ]
        })
        .collect();
    v.extend(
        [
            "juliet",
            "Juliet",
            "JULIET",
            "foo-bar",
            "-foo",
            "foo-",
            "a--b",
            "xn--a",
            "Xn--bcher-kva",
            "a.b",
            "a..b",
            ".a",
            "1.2.3.4",
            "ab--cd.example",
            "x_y",
            "Foo Bar",
        ]
        .map(str::to_owned),
    );
    v
}

#[test]
fn localpart_fast_path_matches_precis() {
    for s in ascii_samples() {
        let slow = UsernameCaseMapped::enforce(s.as_str())
            .ok()
            .filter(|o| !o.bytes().any(is_excluded_from_localpart))
            .map(|o| o.into_owned());
        let fast = prep_localpart(&s).ok().map(Cow::into_owned);
        assert_eq!(fast, slow, "{s:?}");
    }
}

#[test]
fn resourcepart_fast_path_matches_precis() {
    for s in ascii_samples() {
        let slow = OpaqueString::enforce(s.as_str())
            .ok()
            .filter(|o| !o.starts_with(' ') && !o.ends_with(' '))
            .map(|o| o.into_owned());
        let fast = prep_resourcepart(&s).ok().map(Cow::into_owned);
        assert_eq!(fast, slow, "{s:?}");
    }
}

#[test]
fn domain_fast_path_matches_idna() {
    for s in ascii_samples() {
        if s.is_empty() || s.starts_with('[') || strip_trailing_dot(&s).len() != s.len() {
            continue;
        }
        let slow = prep_idn(&s).ok().map(Cow::into_owned);
        let fast = prep_domainpart(&s).ok().map(Cow::into_owned);
        assert_eq!(fast, slow, "{s:?}");
    }
}
