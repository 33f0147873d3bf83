//! Benchmarks for RFC 7622 JID parsing.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rookery_jid::Jid;

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("jid_parse");
    // Already normalized ASCII: fast path, no PRECIS/IDNA work.
    group.bench_function("ascii_full", |b| {
        b.iter(|| Jid::parse(black_box("juliet@example.com/balcony")))
    });
    // ASCII with upper case: still avoids PRECIS but has to allocate the mapped parts.
    group.bench_function("ascii_full_mixed_case", |b| {
        b.iter(|| Jid::parse(black_box("Juliet@Example.COM/Balcony")))
    });
    // Non-ASCII in every part: PRECIS UsernameCaseMapped, UTS #46, OpaqueString.
    group.bench_function("unicode_full", |b| {
        b.iter(|| {
            Jid::parse(black_box(
                "\u{3A3}\u{3C0}caf\u{E9}@b\u{FC}cher.example/\u{265A} k\u{F6}nig",
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
