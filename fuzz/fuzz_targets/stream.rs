//! Stream parser fuzz target.
//!
//! Input: the first byte picks a chunk size, the rest is the byte stream. The
//! stream is parsed with small limits, once in chunks and once in one piece, and
//! checked for:
//!
//! 1. chunking independence: both runs give the same events and the same error
//!    condition (or none);
//! 2. round trip: every stanza, written with `to_bytes("jabber:client")` and parsed
//!    again inside a fresh stream header, is the same element, and writing that
//!    one again gives the same bytes (the canonical form is a fixed point).

#![no_main]

use libfuzzer_sys::fuzz_target;
use rookery_xml::{Element, Limits, Parser, StreamEvent, XmlError};

const LIMITS: Limits = Limits {
    max_stanza_bytes: 2048,
    max_depth: 12,
    max_attrs: 12,
    max_name_len: 48,
};

/// Re-serializing may grow a stanza (escapes, generated `xmlns:nsN`
/// declarations, one per namespaced attribute), so the re-parse gets room.
const ROOMY: Limits = Limits {
    max_stanza_bytes: 1 << 20,
    max_depth: 64,
    max_attrs: 256,
    max_name_len: 4096,
};

/// Known bug (see README.md, "Known bugs"): quick-xml strips a UTF-8 BOM at the
/// start of every fresh `Reader`, and the parser makes a fresh one over the
/// unconsumed bytes on each `next_event` call, without counting the 3 stripped
/// bytes. A U+FEFF that starts a read (or a kept split UTF-8 tail) is dropped and
/// the next 3 bytes are parsed twice, so chunked and whole parses differ. While
/// this is `true` the chunking comparison skips inputs that contain EF BB BF, so
/// that fuzzing can look for other bugs; set it to `false` once the parser is
/// fixed (corpus/stream/bug-bom-* then must pass).
const SKIP_KNOWN_BOM_BUG: bool = false;

/// Known bug (see README.md): an XML declaration cut by a read right after
/// `<?xml` is accepted only if a space follows, while quick-xml takes a complete
/// one with any XML whitespace (`<?xml\nversion='1.0'?>`) or none (`<?xml?>`)
/// as a declaration, so the same bytes split by a read are refused as
/// restricted XML. Same handling as above
/// (corpus/stream/bug-xmldecl-*).
const SKIP_KNOWN_DECL_BUG: bool = false;

/// Known bug (see README.md): a qualified name with an empty prefix (`:to`,
/// `:xmlns`, `<:message>`) is taken as unprefixed. Attributes `:xmlns='…'` and
/// `:to='…'` then become an attribute `xmlns` or a second `to` in no namespace,
/// which the serializer writes as a namespace declaration or a duplicate
/// attribute, so the round trip breaks. While `true`, the round-trip check skips
/// stanzas with such attributes (corpus/stream/bug-empty-prefix-*).
const SKIP_KNOWN_EMPTY_PREFIX_BUG: bool = false;

/// True if some element of the tree has an unprefixed `xmlns` attribute or two
/// unprefixed attributes with the same name: only the empty-prefix bug makes those.
fn has_empty_prefix_artifact(el: &Element) -> bool {
    let attrs = el.attrs();
    attrs.iter().enumerate().any(|(i, a)| {
        a.ns.is_none()
            && (&*a.name == "xmlns"
                || attrs[i + 1..]
                    .iter()
                    .any(|b| b.ns.is_none() && b.name == a.name))
    }) || el.children().any(has_empty_prefix_artifact)
}

const HEADER: &[u8] =
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<StreamEvent>,
    /// `XmlError::condition()` of the error that ended the stream.
    error: Option<&'static str>,
    /// The full error, for the assertion message only.
    detail: Option<XmlError>,
}

fn run(input: &[u8], chunk: usize, limits: Limits) -> Outcome {
    let mut p = Parser::new(limits);
    let mut events = Vec::new();
    let fail = |e: XmlError, events: Vec<StreamEvent>| Outcome {
        events,
        error: Some(e.condition()),
        detail: Some(e),
    };
    for c in input.chunks(chunk.max(1)) {
        if let Err(e) = p.feed(c) {
            return fail(e, events);
        }
        loop {
            match p.next_event() {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => break,
                Err(e) => return fail(e, events),
            }
        }
    }
    // Exercise the accessors on whatever state is left.
    let _ = (p.is_idle(), p.buffered_capacity(), p.limits());
    Outcome {
        events,
        error: None,
        detail: None,
    }
}

/// Same error condition, or none on both sides. Tolerated: when the parser has
/// only a prefix of a token it decides early from that prefix (`<!--`,
/// `<!DOCTYPE`, `<?` other than `<?xml `, a reference still unterminated after
/// 32 bytes), whereas seen whole the same token can fail quick-xml's syntax
/// check first (not-well-formed) or be an unknown entity (restricted-xml).
/// Likewise the size limit is checked on buffered bytes before they are parsed,
/// so a stanza that is both too large and broken can fail either way
/// (policy-violation). The stream ends with an error in all these cases; only
/// the condition sent differs. Events and error-or-not must still match.
fn same_error_kind(a: Option<&XmlError>, b: Option<&XmlError>) -> bool {
    let early = |e: &XmlError| {
        matches!(e, XmlError::RestrictedXml(_) | XmlError::PolicyViolation(_))
            || matches!(e, XmlError::NotWellFormed(m) if m == "unterminated reference")
    };
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.condition() == b.condition() || early(a) || early(b),
        _ => false,
    }
}

fn chunk_size(b: u8) -> usize {
    match b {
        0..=127 => b as usize + 1,    // 1..=128 bytes
        _ => (b as usize - 127) * 32, // 32..=4096 bytes
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let chunked = run(input, chunk_size(first), LIMITS);
    let whole = run(input, input.len().max(1), LIMITS);
    let known_bug = (SKIP_KNOWN_BOM_BUG && input.windows(3).any(|w| w == b"\xEF\xBB\xBF"))
        || (SKIP_KNOWN_DECL_BUG
            && input
                .windows(6)
                .any(|w| w.starts_with(b"<?xml") && matches!(w[5], b'\t' | b'\r' | b'\n' | b'?')));
    // Before the stream header, the limit only applies to bytes still buffered
    // (see README.md, "Findings"): an XML declaration or stream header larger than
    // `max_stanza_bytes` is refused when it arrives in pieces but accepted when it
    // arrives in one read (whatever follows it then).
    let prolog_limit = chunked.events.is_empty()
        && matches!(chunked.detail, Some(XmlError::PolicyViolation(_)))
        && !matches!(whole.detail, Some(XmlError::PolicyViolation(_)));
    assert!(
        known_bug
            || prolog_limit
            || (chunked.events == whole.events
                && same_error_kind(chunked.detail.as_ref(), whole.detail.as_ref())),
        "chunked ({} bytes) and whole parses differ:\n  chunked: {:?} {:?}\n  whole:   {:?} {:?}",
        chunk_size(first),
        chunked.events,
        chunked.detail,
        whole.events,
        whole.detail,
    );

    for ev in &chunked.events {
        let StreamEvent::Stanza(el) = ev else {
            continue;
        };
        let _ = (el.heap_size(), el.to_xml_string());
        if SKIP_KNOWN_EMPTY_PREFIX_BUG && has_empty_prefix_artifact(el) {
            continue;
        }
        let bytes = el.to_bytes("jabber:client");
        let mut again = HEADER.to_vec();
        again.extend_from_slice(&bytes);
        let re = run(&again, again.len(), ROOMY);
        assert_eq!(
            re.error,
            None,
            "re-serialized stanza does not parse: {:?}\n{}",
            re.detail,
            String::from_utf8_lossy(&bytes)
        );
        assert!(
            re.events.len() == 2 && matches!(re.events[0], StreamEvent::Open(_)),
            "re-parse gave {:?}",
            re.events
        );
        let StreamEvent::Stanza(back) = &re.events[1] else {
            panic!("re-parse gave {:?}", re.events);
        };
        assert_eq!(
            back,
            el,
            "round trip changed the stanza: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(
            back.to_bytes("jabber:client"),
            bytes,
            "canonical form is not stable"
        );
    }
});
