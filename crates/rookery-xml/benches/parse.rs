//! Benchmarks for the incremental XMPP stream parser and the canonical serializer.
//!
//! Each workload is measured twice: once in a `*_bytes` group
//! (`Throughput::Bytes`, reported as MiB/s or GiB/s) and once in a `*_stanzas`
//! group (`Throughput::Elements`, reported as elem/s = stanzas/s).
//!
//! Run with:
//! `cargo bench -p rookery-xml --bench parse -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rookery_xml::{Element, Limits, Parser, StreamEvent, ns};

/// Chunk size of one socket read in the benchmarks that model the server's reads.
const CHUNK: usize = 4096;
/// Messages in the chat stream workload.
const MESSAGES: usize = 1000;

const HEADER: &str = "<?xml version='1.0'?><stream:stream from='juliet@im.example.com' \
    to='im.example.com' version='1.0' xml:lang='en' xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams'>";

/// One realistic one-to-one chat message (~250 bytes): addresses, id, type,
/// a body, a XEP-0085 chat state and a XEP-0184 receipt request.
fn chat_message(i: usize) -> String {
    format!(
        "<message from='juliet@im.example.com/balcony' to='romeo@example.net/orchard' \
         id='ju2ba41c-{i:06}' type='chat'><body>Art thou not Romeo, and a Montague?</body>\
         <active xmlns='http://jabber.org/protocol/chatstates'/>\
         <request xmlns='urn:xmpp:receipts'/></message>"
    )
}

/// Header, `MESSAGES` chat messages separated by newlines, and the stream close.
fn chat_stream() -> Vec<u8> {
    let mut s = String::from(HEADER);
    for i in 0..MESSAGES {
        s.push_str(&chat_message(i));
        s.push('\n');
    }
    s.push_str("</stream:stream>");
    s.into_bytes()
}

/// A roster push-sized result of ~64 KiB: one iq with hundreds of items,
/// each with attributes, an escaped name and a group child.
fn large_stanza() -> Vec<u8> {
    let mut body = String::from(
        "<iq to='juliet@example.com/balcony' type='result' id='roster_1'>\
         <query xmlns='jabber:iq:roster' ver='ver-20240101'>",
    );
    let mut i = 0;
    while body.len() < 64 * 1024 - 200 {
        body.push_str(&format!(
            "<item jid='contact{i:04}@example.net' name='Contact {i} &amp; co' \
             subscription='both'><group>Friends</group></item>"
        ));
        i += 1;
    }
    body.push_str("</query></iq>");
    let mut s = String::from(HEADER);
    s.push_str(&body);
    s.into_bytes()
}

/// Parses `input` as a stream fed in `chunk`-byte pieces and returns the number of
/// stanzas. With `reserialize`, every stanza is written back out with
/// `to_bytes` as the server does for each stanza it forwards.
fn run_stream(input: &[u8], chunk: usize, reserialize: bool) -> usize {
    let mut p = Parser::new(Limits::default());
    let mut stanzas = 0;
    let mut out_bytes = 0;
    for c in input.chunks(chunk) {
        p.feed(c).expect("feed");
        while let Some(ev) = p.next_event().expect("valid stream") {
            if let StreamEvent::Stanza(el) = ev {
                stanzas += 1;
                if reserialize {
                    out_bytes += black_box(el.to_bytes(ns::CLIENT)).len();
                } else {
                    black_box(&el);
                }
            }
        }
    }
    black_box(out_bytes);
    stanzas
}

fn stanza_bytes_of(input: &[u8]) -> u64 {
    (input.len() - HEADER.len()) as u64
}

fn benches(c: &mut Criterion) {
    let stream = chat_stream();
    let large = large_stanza();
    assert_eq!(run_stream(&stream, CHUNK, false), MESSAGES);
    assert_eq!(run_stream(&stream, stream.len(), false), MESSAGES);
    assert_eq!(run_stream(&large, CHUNK, false), 1);
    assert_eq!(run_stream(&large, large.len(), false), 1);

    // A parsed message, as the router holds it before forwarding.
    let msg =
        Element::parse(&chat_message(42).replace("<message ", "<message xmlns='jabber:client' "))
            .expect("valid message");
    let msg_out = msg.to_bytes(ns::CLIENT);
    assert_eq!(
        msg_out,
        chat_message(42).into_bytes(),
        "canonical form is the input"
    );

    eprintln!(
        "workloads: chat stream {} bytes ({} messages, {} bytes/stanza), large stanza {} bytes, \
         serialized message {} bytes",
        stream.len(),
        MESSAGES,
        stanza_bytes_of(&stream) / MESSAGES as u64,
        stanza_bytes_of(&large),
        msg_out.len()
    );

    for (unit, bytes) in [("bytes", true), ("stanzas", false)] {
        let tp = |b: u64, n: u64| {
            if bytes {
                Throughput::Bytes(b)
            } else {
                Throughput::Elements(n)
            }
        };
        let mut g = c.benchmark_group(format!("xml_{unit}"));

        // (a) 1,000 chat messages fed in 4 KiB reads.
        g.throughput(tp(stream.len() as u64, MESSAGES as u64));
        g.bench_function("chat_stream_4k_chunks", |b| {
            b.iter(|| run_stream(black_box(&stream), CHUNK, false))
        });

        // (b) the same stream fed in one piece.
        g.bench_function("chat_stream_one_chunk", |b| {
            b.iter(|| run_stream(black_box(&stream), stream.len(), false))
        });

        // (c) one ~64 KiB stanza with ~500 children, fed in 4 KiB reads.
        g.throughput(tp(large.len() as u64, 1));
        g.bench_function("large_stanza_64k_4k_chunks", |b| {
            b.iter(|| run_stream(black_box(&large), CHUNK, false))
        });

        // (c') the same stanza in one piece, to show what 4 KiB reads cost.
        g.bench_function("large_stanza_64k_one_chunk", |b| {
            b.iter(|| run_stream(black_box(&large), large.len(), false))
        });

        // (d) serializing one parsed message.
        g.throughput(tp(msg_out.len() as u64, 1));
        g.bench_function("serialize_message", |b| {
            b.iter(|| black_box(&msg).to_bytes(ns::CLIENT))
        });

        // (e) parse + re-serialize every stanza (the per-forwarded-stanza cost).
        g.throughput(tp(stream.len() as u64, MESSAGES as u64));
        g.bench_function("chat_stream_roundtrip_4k_chunks", |b| {
            b.iter(|| run_stream(black_box(&stream), CHUNK, true))
        });

        g.finish();
    }
}

criterion_group!(parse, benches);
criterion_main!(parse);
