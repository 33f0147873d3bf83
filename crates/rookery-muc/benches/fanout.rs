//! The MUC fan-out hot path (issue 6): one groupchat message to a room of
//! N occupants, through the real [`Muc`] service (its queue, its task, the
//! room's checks, the history, and the hand-over of every copy to the
//! [`ComponentRouter`]).
//!
//! Setup: a service for `conference.load.test` with the default `[muc]`
//! configuration except `max_occupants_per_room` (raised to 2,000, as in
//! `loadtest/`), one room `bench@conference.load.test` with default room
//! configuration (20 history messages kept), joined by N occupants
//! `user{i}@load.test/res` under the nick `nick{i}` without `<x/>` (so the
//! room is an instant room, XEP-0045 §10.1.2). The router only counts the
//! stanzas it is given and drops them: what is measured ends where the
//! session service would start delivering. The room archives its messages
//! (XEP-0313, on by default) into a store that keeps nothing, so the
//! archiving work of the service is measured and the store's write is not.
//!
//! `groupchat/N`: occupant 0 sends `<message type='groupchat'>` with a
//! 40-byte body to the room; the timed region is handing the stanza to
//! [`Component::handle`] until the router has been given all N copies (the
//! sender's reflection included, §7.2.2). Throughput is per copy, so
//! criterion's `elem/s` is delivered copies/s and time/N the cost of one.
//! Messages go one at a time (the next is queued only after the previous
//! one's copies all arrived), so queueing never overlaps fan-out.
//!
//! Run with:
//! `cargo bench -p rookery-muc --bench fanout -- --warm-up-time 1 --measurement-time 5`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rookery_core::{Component, ComponentRouter, Element, Jid, Stanza, StanzaKind, ns};
use rookery_mam::NoArchiveStore;
use rookery_muc::{Muc, MucConfig, NoRoomStore, RoomArchive};
use tokio::runtime::Runtime;
use tokio::sync::Notify;

const SERVICE: &str = "conference.load.test";
const ROOM: &str = "bench@conference.load.test";

/// A router that counts the stanzas it is given and wakes a waiter when a
/// target count is reached.
#[derive(Debug, Default)]
struct CountingRouter {
    count: AtomicU64,
    target: AtomicU64,
    reached: Notify,
}

impl CountingRouter {
    /// Waits until `n` stanzas in all have been routed.
    async fn wait_for(&self, n: u64) {
        self.target.store(n, Ordering::SeqCst);
        while self.count.load(Ordering::SeqCst) < n {
            self.reached.notified().await;
        }
    }
}

#[async_trait]
impl ComponentRouter for CountingRouter {
    async fn route_from_component(&self, stanza: Stanza) {
        drop(stanza);
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= self.target.load(Ordering::SeqCst) {
            self.reached.notify_one();
        }
    }
}

fn jid(s: &str) -> Jid {
    Jid::parse(s).expect("valid JID")
}

fn stanza(kind: StanzaKind, from: &str, to: &str, el: Element) -> Stanza {
    let el = el.with_attr("from", from).with_attr("to", to);
    Stanza::new(kind, Some(jid(from)), Some(jid(to)), el)
}

fn join(i: usize) -> Stanza {
    stanza(
        StanzaKind::Presence,
        &format!("user{i}@load.test/res"),
        &format!("{ROOM}/nick{i}"),
        Element::new_static("presence", ns::CLIENT),
    )
}

fn groupchat() -> Stanza {
    stanza(
        StanzaKind::Message,
        "user0@load.test/res",
        ROOM,
        Element::new_static("message", ns::CLIENT)
            .with_attr("type", "groupchat")
            .with_attr("id", "fanout-bench-1")
            .with_child(
                Element::new_static("body", ns::CLIENT)
                    .with_text("1764170000000000000 a body of some text"),
            ),
    )
}

/// A service with one room of `n` occupants; returns it with its router
/// and the number of stanzas routed so far.
fn room_of(rt: &Runtime, n: usize) -> (Arc<Muc>, Arc<CountingRouter>, u64) {
    rt.block_on(async {
        let router = Arc::new(CountingRouter::default());
        let weak: Weak<dyn ComponentRouter> = Arc::downgrade(&(router.clone() as _));
        let config = MucConfig {
            max_occupants_per_room: 2000,
            ..MucConfig::default()
        };
        let archive = RoomArchive {
            store: Arc::new(NoArchiveStore),
            max_page: 100,
        };
        let muc = Muc::start(SERVICE, config, Arc::new(NoRoomStore), archive, weak);
        let t = Instant::now();
        // Joiner k gets the k others' presence, the k others get its
        // presence, and it gets its own and the (empty) subject.
        let mut expected = 0u64;
        for i in 0..n {
            muc.handle(join(i));
            expected += 2 * i as u64 + 2;
        }
        router.wait_for(expected).await;
        assert_eq!(router.count.load(Ordering::SeqCst), expected);
        eprintln!(
            "room of {n}: {expected} join stanzas routed in {:.2?}",
            t.elapsed()
        );
        (muc, router, expected)
    })
}

fn fanout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("groupchat");
    for n in [100usize, 1000] {
        let (muc, router, mut routed) = room_of(&rt, n);
        let msg = groupchat();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(n.to_string(), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        muc.handle(msg.clone());
                        routed += n as u64;
                        router.wait_for(routed).await;
                        spent += t.elapsed();
                    }
                    spent
                })
            });
        });
        assert_eq!(router.count.load(Ordering::SeqCst), routed);
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
