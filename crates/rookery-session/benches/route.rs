//! Benchmarks for the router's per-stanza session lookup, through the public
//! [`SessionService::route`] of [`LocalSessions`] (the lookups themselves,
//! `deliver_full` and `bare_targets`, are private).
//!
//! Setup: a `LocalSessions` for `example.com` with the default configuration
//! and the production store layout (`rookery_store::SqliteStore::in_memory()`
//! behind every feature store, the roster behind `CachedRosterStore`, as
//! `rookery::server::stores` does), so nothing touches the disk. 100,000
//! users `user{i}@example.com` are bound with one resource each, plus one
//! user with 10 resources. Every [`ClientLink`] is a no-op sink that only
//! counts deliveries. 4,096 sender → recipient pairs of distinct users,
//! spread over all shards, are used in turn; the recipients (and the
//! 10-resource user) have sent initial presence, and every pair has routed
//! one message before measuring, so the block-list and archive-preference
//! caches are warm.
//!
//! `route_chat/*`: `route` of one `<message type='chat'>` with a body from a
//! bound user to a bound user, timed per call with the stanza built outside
//! the timed region (`iter_batched`), each call driven by `block_on` on a
//! current-thread tokio runtime:
//! * `full_jid/*`: to the recipient's full JID (lookup of one session);
//! * `bare_jid/*`: to the bare JID (lookup of the available resources with
//!   the highest priority);
//! * `*_10_resources/*`: the same to the user with 10 available resources
//!   (the bare JID delivers to all 10).
//!
//! With the default XEP-0441 preferences (`default='always'`) every such
//! message is archived twice (the recipient's and the sender's copy): `route`
//! queues two rows for the SQLite group-commit writer thread. `*/archived` is
//! that default; `*/no_archive` carries a XEP-0334 `<no-permanent-store/>`
//! hint, so nothing is written to a store.
//!
//! `lookup/*`: the only public read-only lookup of the session table,
//! `LocalSessions::has_available_resource` (bare JID → any available
//! resource), on the same table.
//!
//! Run with:
//! `cargo bench -p rookery-session --bench route -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rookery_core::metrics::Metrics;
use rookery_core::{
    BindRequest, ClientLink, DeliverError, Element, Jid, SessionService, Stanza, StanzaKind,
    StreamError, ns,
};
use rookery_session::modules::ModulesConfig;
use rookery_session::roster_cache::CachedRosterStore;
use rookery_session::{LocalSessions, SessionConfig, Stores};
use rookery_store::SqliteStore;
use tokio::runtime::Runtime;

const DOMAIN: &str = "example.com";
/// Users bound with one resource each.
const USERS: usize = 100_000;
/// Sender → recipient pairs used in turn.
const PAIRS: usize = 4096;
/// Distance between the users of consecutive pairs (PAIRS * STRIDE <= USERS).
const STRIDE: usize = 24;
/// Resources of the multi-resource user (the default `max_resources`).
const RESOURCES: usize = 10;
const HINTS: &str = "urn:xmpp:hints";

/// A client connection that only counts what it is given.
#[derive(Debug, Default)]
struct CountingLink {
    delivered: AtomicU64,
    closed: AtomicU64,
}

impl CountingLink {
    fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

impl ClientLink for CountingLink {
    fn deliver(&self, stanza: Arc<Element>) -> Result<(), DeliverError> {
        drop(stanza);
        self.delivered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn close(&self, _error: StreamError) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every feature store on one in-memory SQLite store, laid out as the server does.
fn stores() -> Stores {
    let store = SqliteStore::in_memory().expect("in-memory store");
    Stores {
        users: Arc::new(store.clone()),
        roster: Arc::new(CachedRosterStore::new(Arc::new(store.clone()), 10_000)),
        offline: Arc::new(store.clone()),
        blocklist: Arc::new(store.clone()),
        vcards: Arc::new(store.clone()),
        private: Arc::new(store.clone()),
        last_activity: Arc::new(store.clone()),
        archive: Arc::new(store.clone()),
        pubsub: Arc::new(store.clone()),
        push: Arc::new(store),
    }
}

fn jid(s: &str) -> Jid {
    Jid::parse(s).expect("valid JID")
}

/// A chat message from `from` (stamped, as the cm does) to `to`.
fn chat(from: &Jid, to: &Jid, archived: bool) -> Stanza {
    let mut el = Element::new_static("message", ns::CLIENT)
        .with_attr("from", from.as_str())
        .with_attr("to", to.as_str())
        .with_attr("type", "chat")
        .with_attr("id", "bench-1")
        .with_child(
            Element::new_static("body", ns::CLIENT)
                .with_text("Art thou not Romeo, and a Montague?"),
        );
    if !archived {
        el.push_child(Element::new_static("no-permanent-store", HINTS));
    }
    Stanza::new(
        StanzaKind::Message,
        Some(from.clone()),
        Some(to.clone()),
        el,
    )
}

/// Initial presence of `from`.
fn available(from: &Jid) -> Stanza {
    let el = Element::new_static("presence", ns::CLIENT).with_attr("from", from.as_str());
    Stanza::new(StanzaKind::Presence, Some(from.clone()), None, el)
}

struct Fixture {
    rt: Runtime,
    sessions: Arc<LocalSessions>,
    /// `user{i}@example.com/desk`, index = user number.
    full: Vec<Jid>,
    links: Vec<Arc<CountingLink>>,
    /// (sender, recipient) user numbers.
    pairs: Vec<(usize, usize)>,
    multi_bare: Jid,
    multi_full: Vec<Jid>,
    multi_links: Vec<Arc<CountingLink>>,
}

impl Fixture {
    fn new() -> Fixture {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let sessions = LocalSessions::new(
            DOMAIN,
            SessionConfig::default(),
            ModulesConfig::default(),
            4096,
            stores(),
            Metrics::new(),
        );
        let mut full = Vec::with_capacity(USERS);
        let mut links = Vec::with_capacity(USERS);
        let multi_bare = jid("multi@example.com");
        let mut multi_full = Vec::with_capacity(RESOURCES);
        let mut multi_links = Vec::with_capacity(RESOURCES);
        rt.block_on(async {
            for i in 0..USERS {
                let link = Arc::new(CountingLink::default());
                let bound = sessions
                    .bind(BindRequest {
                        user: jid(&format!("user{i}@{DOMAIN}")),
                        resource: Some("desk".to_owned()),
                        link: link.clone(),
                        conn_id: i as u64,
                    })
                    .await
                    .expect("bind");
                full.push(bound);
                links.push(link);
            }
            for r in 0..RESOURCES {
                let link = Arc::new(CountingLink::default());
                let bound = sessions
                    .bind(BindRequest {
                        user: multi_bare.clone(),
                        resource: Some(format!("res{r}")),
                        link: link.clone(),
                        conn_id: (USERS + r) as u64,
                    })
                    .await
                    .expect("bind");
                multi_full.push(bound);
                multi_links.push(link);
            }
        });
        assert_eq!(sessions.session_count(), USERS + RESOURCES);

        let pairs: Vec<(usize, usize)> = (0..PAIRS)
            .map(|k| (k * STRIDE, k * STRIDE + STRIDE / 2))
            .collect();
        rt.block_on(async {
            for &(_, to) in &pairs {
                sessions.route(&full[to], available(&full[to])).await;
            }
            for f in &multi_full {
                sessions.route(f, available(f)).await;
            }
            // Warm the per-user caches (block lists, archive preferences).
            for &(from, to) in &pairs {
                sessions
                    .route(&full[from], chat(&full[from], &full[to], true))
                    .await;
            }
        });
        assert!(
            pairs
                .iter()
                .all(|&(_, to)| sessions.has_available_resource(&full[to].to_bare()))
        );
        assert!(sessions.has_available_resource(&multi_bare));

        Fixture {
            rt,
            sessions,
            full,
            links,
            pairs,
            multi_bare,
            multi_full,
            multi_links,
        }
    }

    /// Routes one stanza and checks that exactly the expected links got it
    /// and the sender got nothing (no error bounced).
    fn check(&self, from: usize, stanza: Stanza, to: &[&Arc<CountingLink>]) {
        let before: Vec<u64> = to.iter().map(|l| l.delivered()).collect();
        let sender_before = self.links[from].delivered();
        self.rt
            .block_on(self.sessions.route(&self.full[from], stanza));
        for (l, b) in to.iter().zip(before) {
            assert_eq!(l.delivered(), b + 1, "recipient did not get the message");
        }
        assert_eq!(
            self.links[from].delivered(),
            sender_before,
            "the sender got something back"
        );
    }
}

fn route(c: &mut Criterion) {
    let f = Fixture::new();
    let n = f.pairs.len();

    // Sanity: every case delivers where it should.
    let (s, r) = f.pairs[0];
    let multi: Vec<&Arc<CountingLink>> = f.multi_links.iter().collect();
    for archived in [false, true] {
        f.check(s, chat(&f.full[s], &f.full[r], archived), &[&f.links[r]]);
        f.check(
            s,
            chat(&f.full[s], &f.full[r].to_bare(), archived),
            &[&f.links[r]],
        );
        f.check(s, chat(&f.full[s], &f.multi_bare, archived), &multi);
        f.check(
            s,
            chat(&f.full[s], &f.multi_full[7], archived),
            &[&f.multi_links[7]],
        );
    }

    let mut group = c.benchmark_group("route_chat");
    group.throughput(Throughput::Elements(1));
    for archived in [false, true] {
        let suffix = if archived { "archived" } else { "no_archive" };
        // Stanzas built once; each iteration routes a clone (Arc + 2 JIDs),
        // made in the untimed setup.
        let to_full: Vec<Stanza> = f
            .pairs
            .iter()
            .map(|&(s, r)| chat(&f.full[s], &f.full[r], archived))
            .collect();
        let to_bare: Vec<Stanza> = f
            .pairs
            .iter()
            .map(|&(s, r)| chat(&f.full[s], &f.full[r].to_bare(), archived))
            .collect();
        let to_multi_bare: Vec<Stanza> = f
            .pairs
            .iter()
            .map(|&(s, _)| chat(&f.full[s], &f.multi_bare, archived))
            .collect();
        let to_multi_full: Vec<Stanza> = f
            .pairs
            .iter()
            .enumerate()
            .map(|(k, &(s, _))| chat(&f.full[s], &f.multi_full[k % RESOURCES], archived))
            .collect();
        for (name, stanzas) in [
            ("full_jid", &to_full),
            ("bare_jid", &to_bare),
            ("full_jid_10_resources", &to_multi_full),
            ("bare_jid_10_resources", &to_multi_bare),
        ] {
            let mut k = 0usize;
            group.bench_function(format!("{name}/{suffix}"), |b| {
                b.iter_batched(
                    || {
                        k = (k + 1) % n;
                        (f.pairs[k].0, stanzas[k].clone())
                    },
                    |(from, stanza)| f.rt.block_on(f.sessions.route(&f.full[from], stanza)),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();

    let closed: u64 = f
        .links
        .iter()
        .chain(&f.multi_links)
        .map(|l| l.closed.load(Ordering::Relaxed))
        .sum();
    assert_eq!(closed, 0, "a session was closed during the benchmark");

    let mut group = c.benchmark_group("lookup");
    group.throughput(Throughput::Elements(1));
    let bares: Vec<Jid> = f.pairs.iter().map(|&(_, r)| f.full[r].to_bare()).collect();
    let mut k = 0usize;
    group.bench_function("has_available_resource/1_resource", |b| {
        b.iter(|| {
            k = (k + 1) % n;
            f.sessions.has_available_resource(black_box(&bares[k]))
        })
    });
    group.bench_function("has_available_resource/10_resources", |b| {
        b.iter(|| f.sessions.has_available_resource(black_box(&f.multi_bare)))
    });
    group.finish();
}

/// `traced/*`: `route` of a message to a full JID without archiving, as
/// the cm calls it, with tracing off (`off`: what every other bench here
/// measures) and on (`on`: an SDK tracer, always sampling, no exporter; each
/// call under a `c2s.receive` root span as at the cm, so `session.route`
/// and the delivery's carried span context are made too). Tracing is
/// installed for the rest of the process, so this group runs last.
fn traced(c: &mut Criterion) {
    use opentelemetry::trace::TracerProvider as _;
    use rookery_core::telemetry::{self, Context, Hop, SpanKind};

    let f = Fixture::new();
    let n = f.pairs.len();
    let stanzas: Vec<Stanza> = f
        .pairs
        .iter()
        .map(|&(s, r)| chat(&f.full[s], &f.full[r], false))
        .collect();
    let mut group = c.benchmark_group("traced");
    group.throughput(Throughput::Elements(1));
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    for on in [false, true] {
        if on {
            telemetry::install(
                opentelemetry::global::BoxedTracer::new(Box::new(provider.tracer("bench"))),
                Box::new(opentelemetry_sdk::propagation::TraceContextPropagator::new()),
                "bench",
            );
        }
        let mut k = 0usize;
        group.bench_function(if on { "on" } else { "off" }, |b| {
            b.iter_batched(
                || {
                    k = (k + 1) % n;
                    (f.pairs[k].0, stanzas[k].clone())
                },
                |(from, stanza)| {
                    f.rt.block_on(async {
                        let root =
                            Hop::start("c2s.receive", SpanKind::Server, &Context::new(), Vec::new);
                        telemetry::within(root.as_ref(), f.sessions.route(&f.full[from], stanza))
                            .await
                    })
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
    telemetry::uninstall();
}

criterion_group!(benches, route, traced);
criterion_main!(benches);
