//! `muc-fanout`: one Multi-User Chat room (XEP-0045) with `--users`
//! occupants and a steady groupchat message rate; issue 6.
//!
//! 1. Every account logs in (not measured beyond its wall time).
//! 2. Join: occupant 0 enters first (`<x xmlns='…/muc'>` with
//!    `<history maxstanzas='0'/>`, §7.2.1, §7.2.15) and, when the room is
//!    new (status 201), accepts the default configuration as an instant
//!    room (§10.1.2); then the others enter, `--concurrency` joins in
//!    flight (a join is in flight until the joiner's own presence, §7.2.2,
//!    comes back). The phase ends when every occupant has seen every
//!    occupant (itself included) available: n² presence stanzas, the cost
//!    of a real room's join.
//! 3. Fan-out: the first `--senders` occupants send groupchat messages to
//!    the room at `--rate` messages/s in all for `--duration` seconds (each
//!    sender at rate/senders, staggered), each body `fanout <sender> <seq>
//!    <unix ns>`; every occupant counts the copies it gets (the senders'
//!    reflections included, §7.2.2) and records their end-to-end latency.
//!    After sending stops, every copy (sent × occupants) is waited for, up
//!    to `--timeout`; what is missing then is lost.
//!
//! The report's measured phase (server CPU, RSS, elapsed) is the fan-out
//! phase; the join phase has its own figures (`join_*`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use rookery_xml::Element;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::conn::{self, Conn, Target};
use crate::measure::{self, Phase, Report};
use crate::{FULL, Options, SharedLatency, close_all, login_many, now_nanos, record_shared};

const NS_MUC: &str = "http://jabber.org/protocol/muc";
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const CREATE_ID: &str = "fanout-create";

/// Phases, broadcast to every occupant.
const JOINING: u8 = 0;
const SENDING: u8 = 1;
const STOP_SENDING: u8 = 2;
const DONE: u8 = 3;

/// State shared by the occupants' tasks and the conductor.
struct Shared {
    room: String,
    n: usize,
    senders: usize,
    /// Time between two messages of one sender.
    interval: Duration,
    /// Occupants whose own presence came back (and, for the creator, whose
    /// room is configured).
    joined: AtomicUsize,
    /// Occupants that have seen all `n` occupants available.
    complete: AtomicUsize,
    /// Available presences from the room received.
    presences: AtomicU64,
    /// Groupchat copies received (bodies of this scenario only).
    received: AtomicU64,
    /// Groupchat messages sent.
    sent: AtomicU64,
    /// Senders that have stopped sending.
    stopped: AtomicUsize,
    /// Occupants whose task ended with an error (a refused join, a closed
    /// stream): the conductor stops waiting for them.
    failed: AtomicUsize,
    join_latency: SharedLatency,
    latency: SharedLatency,
    join_slots: Arc<Semaphore>,
}

fn has_status(e: &Element, code: &str) -> bool {
    e.child("x", NS_MUC_USER).is_some_and(|x| {
        x.children()
            .any(|s| s.is("status", NS_MUC_USER) && s.attr("code") == Some(code))
    })
}

fn groupchat(room: &str, me: usize, seq: u64) -> String {
    format!(
        "<message to='{room}' type='groupchat' id='f{me}-{seq}'><body>fanout {me} {seq} {}</body></message>",
        now_nanos()
    )
}

/// One occupant: joins, counts presences, sends its share of messages if it
/// is a sender, counts the copies it gets, until the conductor says `DONE`.
async fn occupant(
    mut c: Conn,
    i: usize,
    sh: Arc<Shared>,
    mut phase: watch::Receiver<u8>,
) -> anyhow::Result<()> {
    let room = sh.room.as_str();
    let me = format!("{room}/n{i}");
    let mut seen = vec![false; sh.n];
    let mut seen_count = 0usize;
    let mut joined = false;
    let mut complete = false;
    let mut sending = false;
    let mut seq = 0u64;
    let mut tick: Option<tokio::time::Interval> = None;
    let permit = sh.join_slots.clone().acquire_owned().await?;
    let mut permit = Some(permit);
    c.send(&format!(
        "<presence to='{me}'><x xmlns='{NS_MUC}'><history maxstanzas='0'/></x></presence>"
    ))
    .await?;
    let t0 = Instant::now();
    let result = loop {
        if !complete && seen_count == sh.n {
            complete = true;
            sh.complete.fetch_add(1, Ordering::Relaxed);
        }
        let e = tokio::select! {
            biased;
            r = phase.changed() => {
                if r.is_err() {
                    break Ok(());
                }
                let state = *phase.borrow_and_update();
                if state == SENDING && i < sh.senders && tick.is_none() {
                    // Staggered so that the senders' messages are evenly spaced.
                    let offset = sh.interval.mul_f64(i as f64 / sh.senders as f64);
                    let mut t = tokio::time::interval_at(
                        tokio::time::Instant::now() + offset,
                        sh.interval,
                    );
                    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    tick = Some(t);
                    sending = true;
                }
                if state >= STOP_SENDING && sending {
                    sending = false;
                    sh.stopped.fetch_add(1, Ordering::Relaxed);
                }
                if state == DONE {
                    break Ok(());
                }
                continue;
            }
            _ = async {
                match tick.as_mut() {
                    Some(t) => { t.tick().await; }
                    None => std::future::pending().await,
                }
            }, if sending => {
                if let Err(e) = c.send(&groupchat(room, i, seq)).await {
                    break Err(e);
                }
                seq += 1;
                sh.sent.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            e = c.next_stanza() => match e {
                Ok(e) => e,
                Err(e) => break Err(e),
            },
        };
        if let Some(answer) = conn::iq_answer(&e) {
            if let Err(e) = c.send(&answer).await {
                break Err(e);
            }
            continue;
        }
        let from = e.attr("from").unwrap_or_default();
        match e.name() {
            "iq" if e.attr("id") == Some(CREATE_ID) => {
                if e.attr("type") != Some("result") {
                    break Err(anyhow::anyhow!(
                        "instant room refused: {}",
                        e.to_xml_string()
                    ));
                }
                joined = true;
                sh.joined.fetch_add(1, Ordering::Relaxed);
            }
            "presence" => {
                let Some(nick) = from.strip_prefix(room).and_then(|r| r.strip_prefix('/')) else {
                    continue;
                };
                match e.attr("type") {
                    Some("error") => {
                        break Err(anyhow::anyhow!("join refused: {}", e.to_xml_string()));
                    }
                    Some(_) => continue,
                    None => {}
                }
                sh.presences.fetch_add(1, Ordering::Relaxed);
                if let Some(j) = nick
                    .strip_prefix('n')
                    .and_then(|j| j.parse::<usize>().ok())
                    .filter(|j| *j < sh.n)
                    && !seen[j]
                {
                    seen[j] = true;
                    seen_count += 1;
                }
                if from == me && permit.is_some() {
                    permit = None;
                    record_latency(&sh.join_latency, t0.elapsed());
                    if i == 0 && has_status(&e, "201") {
                        // §10.1.2: accept the default configuration.
                        let form = format!(
                            "<iq type='set' id='{CREATE_ID}' to='{room}'><query xmlns='{NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'/></query></iq>"
                        );
                        if let Err(e) = c.send(&form).await {
                            break Err(e);
                        }
                    } else {
                        joined = true;
                        sh.joined.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            "message" => {
                if e.attr("type") == Some("error") {
                    break Err(anyhow::anyhow!("message error: {}", e.to_xml_string()));
                }
                let Some(body) = e.child("body", "jabber:client").map(|b| b.text()) else {
                    continue;
                };
                let mut parts = body.split_whitespace();
                if parts.next() != Some("fanout") {
                    continue;
                }
                let Some(t) = parts.nth(2).and_then(|t| t.parse::<u128>().ok()) else {
                    continue;
                };
                record_shared(&sh.latency, t);
                sh.received.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    };
    if sending {
        sh.stopped.fetch_add(1, Ordering::Relaxed);
    }
    c.close().await;
    if result.is_err() {
        sh.failed.fetch_add(1, Ordering::Relaxed);
    }
    result?;
    if !joined {
        bail!("{me}: not joined");
    }
    if !complete {
        bail!("{me}: saw {seen_count}/{} occupants", sh.n);
    }
    Ok(())
}

fn record_latency(l: &SharedLatency, d: Duration) {
    l.lock().unwrap_or_else(|e| e.into_inner()).record(d);
}

/// Waits until `cond` holds or `deadline` passes; true if it holds.
async fn wait_until(deadline: Instant, cond: impl Fn() -> bool) -> bool {
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// After the run: waits (up to 60 s) until the server has worked off the
/// departures (under 5% of a core over 250 ms), so that the next scenario,
/// or the next server, does not pay for this one.
async fn settle(pid: Option<u32>) {
    let Some(pid) = pid else { return };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = measure::cpu_seconds(pid);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = measure::cpu_seconds(pid);
        match (last, now) {
            (Some(a), Some(b)) if b - a < 0.0125 => return,
            (_, None) => return,
            _ => last = now,
        }
    }
}

/// The scenario; see the module documentation.
pub(crate) async fn muc_fanout(opts: &Options, target: &Arc<Target>) -> anyhow::Result<Report> {
    let mut report = opts.report("muc-fanout");
    let n = usize::try_from(opts.users)?;
    let senders = usize::try_from(opts.senders)?.min(n);
    if n == 0 || senders == 0 || opts.rate <= 0.0 {
        bail!("muc-fanout needs --users, --senders and --rate above 0");
    }
    let room = if opts.room.is_empty() {
        format!("fanout@conference.{}", opts.domain)
    } else {
        opts.room.clone()
    };
    report.param("room", room.as_str());
    report.param("senders", senders as u64);
    report.param("duration_s", opts.duration);
    let timeout = Duration::from_secs_f64(opts.timeout);

    let t = Instant::now();
    let (conns, _) = login_many(opts, target, FULL, 0.0, &mut report).await;
    report.figure("logins", conns.iter().flatten().count() as f64);
    report.figure("login_s", t.elapsed().as_secs_f64());
    if report.errors > 0 {
        close_all(conns).await;
        return Ok(report);
    }

    let sh = Arc::new(Shared {
        room,
        n,
        senders,
        interval: Duration::from_secs_f64(senders as f64 / opts.rate),
        joined: AtomicUsize::new(0),
        complete: AtomicUsize::new(0),
        presences: AtomicU64::new(0),
        received: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        stopped: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        join_latency: SharedLatency::default(),
        latency: SharedLatency::default(),
        join_slots: Arc::new(Semaphore::new(opts.concurrency.max(1))),
    });
    let (tx, rx) = watch::channel(JOINING);
    let mut set = JoinSet::new();
    let join_cpu0 = opts.server_pid.and_then(measure::cpu_seconds);
    let join_start = Instant::now();
    let mut conns = conns.into_iter().flatten();
    // The creator first, alone: the room exists (and is configured) before
    // anyone else asks to enter.
    if let Some(c) = conns.next() {
        set.spawn(occupant(c, 0, sh.clone(), rx.clone()));
    }
    let deadline = Instant::now() + timeout;
    let failed = || sh.failed.load(Ordering::Relaxed);
    let created = wait_until(deadline, || {
        sh.joined.load(Ordering::Relaxed) >= 1 || failed() > 0
    })
    .await
        && failed() == 0;
    if created {
        for (k, c) in conns.enumerate() {
            set.spawn(occupant(c, k + 1, sh.clone(), rx.clone()));
        }
    } else {
        close_all(conns.map(Some).collect()).await;
    }
    let all_joined = created
        && wait_until(deadline, || {
            sh.joined.load(Ordering::Relaxed) + failed() >= n
        })
        .await
        && failed() == 0;
    let joined_s = join_start.elapsed().as_secs_f64();
    let all_seen = all_joined
        && wait_until(deadline, || {
            sh.complete.load(Ordering::Relaxed) >= n || failed() > 0
        })
        .await
        && failed() == 0;
    let join_s = join_start.elapsed().as_secs_f64();
    let join_cpu = opts
        .server_pid
        .and_then(measure::cpu_seconds)
        .zip(join_cpu0)
        .map(|(b, a)| b - a);
    let presences = sh.presences.load(Ordering::Relaxed);
    report.figure("occupants", sh.joined.load(Ordering::Relaxed) as f64);
    report.figure("join_all_own_presence_s", joined_s);
    report.figure("join_s", join_s);
    report.figure("join_presences", presences as f64);
    report.figure("join_presences_per_s", presences as f64 / join_s.max(1e-9));
    if let Some(cpu) = join_cpu {
        report.figure("join_server_cpu_s", cpu);
    }
    let join_latency = sh
        .join_latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .summary();
    report.latency.insert("join".into(), join_latency);

    if all_seen {
        let phase = Phase::start(opts.server_pid);
        let send_start = Instant::now();
        let _ = tx.send(SENDING);
        tokio::time::sleep(Duration::from_secs_f64(opts.duration)).await;
        let _ = tx.send(STOP_SENDING);
        let send_s = send_start.elapsed().as_secs_f64();
        let deadline = Instant::now() + timeout;
        wait_until(deadline, || sh.stopped.load(Ordering::Relaxed) >= senders).await;
        let sent = sh.sent.load(Ordering::Relaxed);
        let expected = sent * n as u64;
        wait_until(deadline, || sh.received.load(Ordering::Relaxed) >= expected).await;
        phase.finish(&mut report);
        let delivered = sh.received.load(Ordering::Relaxed);
        report.figure("send_phase_s", send_s);
        report.figure("sent", sent as f64);
        report.figure("expected_copies", expected as f64);
        report.figure("delivered_copies", delivered as f64);
        report.figure("lost_copies", expected.saturating_sub(delivered) as f64);
        report.figure(
            "delivered_per_s",
            delivered as f64 / report.elapsed_s.max(1e-9),
        );
        if delivered > 0
            && let Some(cpu) = report.server_cpu_s
        {
            report.figure("server_cpu_us_per_copy", cpu * 1e6 / delivered as f64);
        }
        let latency = sh
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .summary();
        report.latency.insert("message".into(), latency);
    } else {
        report.error(format!(
            "join incomplete after {join_s:.1} s: {} of {n} joined, {} saw everyone",
            sh.joined.load(Ordering::Relaxed),
            sh.complete.load(Ordering::Relaxed)
        ));
    }
    // Occupants still waiting for a join slot give up (an error each).
    sh.join_slots.close();
    let _ = tx.send(DONE);
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => report.error(format!("{e:#}")),
            Err(e) => report.error(format!("occupant task: {e}")),
        }
    }
    settle(opts.server_pid).await;
    Ok(report)
}
