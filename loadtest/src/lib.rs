//! `rookery-load`: a load generator that speaks real XMPP to any server
//! (Rookery, Prosody, ejabberd) on loopback, so that the same scenario can
//! be measured against each of them.
//!
//! Scenarios (each bounded in count and time):
//! - `register`: in-band registration (XEP-0077) of the test accounts;
//! - `login`: a login storm (TLS, SASL, bind, roster, presence) at a target
//!   rate or as fast as the concurrency allows, with the latency of each step;
//! - `messaging`: pairs of users exchange one-to-one messages at a target
//!   total rate, or closed-loop at saturation; end-to-end latency from the
//!   timestamp in each body, errors, and lost messages;
//! - `presence`: users with rosters of K contacts (provisioned through
//!   subscription handshakes on first use) log in and change presence;
//! - `idle`: N authenticated connections held open; server RSS per connection.
//! - `muc-fanout`: N occupants in one MUC room, a steady groupchat rate;
//!   join time, delivered copies/s, end-to-end latency, lost copies
//!   (`fanout` module).
//!
//! Server CPU seconds and RSS are read from `/proc/PID` (`--server-pid`), and
//! the generator reports its own CPU so that it can be ruled out as the
//! bottleneck.
#![allow(clippy::cast_precision_loss)]

pub mod conn;
mod fanout;
pub mod measure;
pub mod sasl;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use rookery_xml::Element;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use conn::{Conn, LoginSteps, StepTimes, Target, TlsMode};
use measure::{Latency, Phase, Report};
use sasl::{Mechanism, SaltCache};

/// Options common to every scenario.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// Server c2s address (loopback).
    #[arg(long, default_value = "127.0.0.1:5222")]
    pub addr: SocketAddr,
    /// XMPP domain of the accounts.
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// TLS mode.
    #[arg(long, value_enum, default_value = "starttls")]
    pub tls: TlsMode,
    /// SASL mechanism.
    #[arg(long, value_enum, default_value = "SCRAM-SHA-1")]
    pub mech: Mechanism,
    /// Number of accounts (and connections) in the scenario.
    #[arg(long, default_value_t = 100)]
    pub users: u64,
    /// Number of the first account (accounts are `<prefix><n>`), so that
    /// several generator processes can share one account range.
    #[arg(long, default_value_t = 0)]
    pub first_user: u64,
    /// Account name prefix.
    #[arg(long, default_value = "load")]
    pub prefix: String,
    /// Password of every account.
    #[arg(long, default_value = "loadpass")]
    pub password: String,
    /// Logins (or registrations, or `muc-fanout` room joins) in flight at once.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Target rate: logins/s (`login`, `idle`, `presence`) or total
    /// messages/s (`messaging`, `muc-fanout`); 0 = as fast as possible
    /// (not for `muc-fanout`).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Length of the measured phase in seconds (`messaging`: sending time;
    /// `idle`: how long connections are held).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Messages in flight per direction of a pair in closed-loop mode
    /// (`messaging` with `--rate 0`).
    #[arg(long, default_value_t = 4)]
    pub window: u32,
    /// Roster size of each user in the `presence` scenario (even, < users).
    #[arg(long, default_value_t = 50)]
    pub contacts: u64,
    /// `muc-fanout`: how many occupants send (the first ones); `--rate` is
    /// their total.
    #[arg(long, default_value_t = 10)]
    pub senders: u64,
    /// `muc-fanout`: the room's bare JID; empty = `fanout@conference.<domain>`.
    #[arg(long, default_value = "")]
    pub room: String,
    /// PID of the server process, for its CPU time and RSS.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Name of the server under test, for the report.
    #[arg(long, default_value = "server")]
    pub label: String,
    /// Loopback source addresses to spread connections over (127.1.x.y);
    /// 0 = one per 30,000 connections.
    #[arg(long, default_value_t = 0)]
    pub source_ips: u32,
    /// Longest wait for a single answer, and for each phase to settle, in s.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// File that keeps SCRAM salted passwords between runs, so that a
    /// login storm measures the server's work rather than the generator's
    /// PBKDF2.
    #[arg(long)]
    pub salt_cache: Option<std::path::PathBuf>,
}

impl Options {
    fn target(&self) -> anyhow::Result<Target> {
        if !self.addr.ip().is_loopback() {
            bail!("the load generator only targets loopback addresses");
        }
        let source_ips = if self.source_ips == 0 {
            u32::try_from(self.users / 30_000 + 1).unwrap_or(1)
        } else {
            self.source_ips
        };
        Ok(Target {
            addr: self.addr,
            domain: self.domain.clone(),
            tls: self.tls,
            mech: self.mech,
            source_ips,
            step_timeout: Duration::from_secs_f64(self.timeout),
            tls_config: conn::tls_config()?,
            salts: match &self.salt_cache {
                Some(p) => SaltCache::load(p)?,
                None => SaltCache::default(),
            },
        })
    }

    fn user(&self, i: u64) -> String {
        format!("{}{}", self.prefix, self.first_user + i)
    }

    fn bare(&self, i: u64) -> String {
        format!("{}@{}", self.user(i), self.domain)
    }

    fn report(&self, scenario: &str) -> Report {
        let mut r = Report {
            scenario: scenario.to_owned(),
            server: self.label.clone(),
            ..Report::default()
        };
        r.param("users", self.users);
        r.param("tls", format!("{:?}", self.tls).to_lowercase());
        r.param("mech", self.mech.name());
        r.param("concurrency", self.concurrency as u64);
        r.param("rate", self.rate);
        r
    }
}

/// The scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// In-band registration of the accounts.
    Register,
    /// Login storm.
    Login,
    /// One-to-one messaging between pairs.
    Messaging,
    /// Presence storm with rosters of `--contacts`.
    Presence,
    /// Idle authenticated connections.
    Idle,
    /// Groupchat fan-out in one MUC room of `--users` occupants.
    MucFanout,
}

/// Runs one scenario.
pub async fn run(scenario: Scenario, opts: &Options) -> anyhow::Result<Report> {
    let target = Arc::new(opts.target()?);
    let report = match scenario {
        Scenario::Register => register(opts, &target).await,
        Scenario::Login => login(opts, &target).await,
        Scenario::Messaging => messaging(opts, &target).await,
        Scenario::Presence => presence(opts, &target).await,
        Scenario::Idle => idle(opts, &target).await,
        Scenario::MucFanout => fanout::muc_fanout(opts, &target).await,
    }?;
    if let Some(p) = &opts.salt_cache {
        target.salts.save(p)?;
    }
    Ok(report)
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Latency histograms of the login steps.
#[derive(Debug, Default)]
struct LoginLatency {
    connect: Latency,
    stream: Latency,
    tls: Latency,
    auth: Latency,
    bind: Latency,
    roster: Latency,
    presence: Latency,
    total: Latency,
}

impl LoginLatency {
    fn record(&mut self, t: &StepTimes, steps: LoginSteps, tls: bool) {
        self.connect.record(t.connect);
        self.stream.record(t.stream);
        if tls {
            self.tls.record(t.tls);
        }
        self.auth.record(t.auth);
        self.bind.record(t.bind);
        if steps.roster {
            self.roster.record(t.roster);
        }
        if steps.presence {
            self.presence.record(t.presence);
        }
        self.total.record(t.total);
    }

    fn into_report(self, r: &mut Report, prefix: &str) {
        for (name, l) in [
            ("connect", self.connect),
            ("stream", self.stream),
            ("starttls", self.tls),
            ("auth", self.auth),
            ("bind", self.bind),
            ("roster", self.roster),
            ("presence", self.presence),
            ("login", self.total),
        ] {
            if l.count() > 0 {
                r.latency.insert(format!("{prefix}{name}"), l.summary());
            }
        }
    }
}

/// Logs in accounts `0..n` with at most `concurrency` logins in flight and,
/// if `rate` > 0, login k started no earlier than k/rate seconds in.
/// Returns the connections in account order (`None` where a login failed).
async fn login_many(
    opts: &Options,
    target: &Arc<Target>,
    steps: LoginSteps,
    rate: f64,
    report: &mut Report,
) -> (Vec<Option<Conn>>, LoginLatency) {
    let sem = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let start = tokio::time::Instant::now();
    let mut set = JoinSet::new();
    let first = opts.first_user;
    for i in 0..opts.users {
        let (sem, target) = (sem.clone(), target.clone());
        let (user, password) = (opts.user(i), opts.password.clone());
        set.spawn(async move {
            if rate > 0.0 {
                tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
            }
            let _permit = sem.acquire_owned().await;
            (
                i,
                Conn::login(&target, first + i, &user, &password, steps).await,
            )
        });
    }
    let mut conns: Vec<Option<Conn>> = (0..opts.users).map(|_| None).collect();
    let mut lat = LoginLatency::default();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((i, Ok((c, t)))) => {
                lat.record(&t, steps, target.tls == TlsMode::Starttls);
                if let Some(slot) = usize::try_from(i).ok().and_then(|i| conns.get_mut(i)) {
                    *slot = Some(c);
                }
            }
            Ok((i, Err(e))) => report.error(format!("login {}: {e:#}", opts.user(i))),
            Err(e) => report.error(format!("login task: {e}")),
        }
    }
    (conns, lat)
}

async fn close_all(conns: Vec<Option<Conn>>) {
    let mut set = JoinSet::new();
    for c in conns.into_iter().flatten() {
        set.spawn(c.close());
    }
    while set.join_next().await.is_some() {}
}

const FULL: LoginSteps = LoginSteps {
    roster: true,
    presence: true,
};

/// `register`: creates the accounts by in-band registration; existing
/// accounts count as `existing`, not as errors.
async fn register(opts: &Options, target: &Arc<Target>) -> anyhow::Result<Report> {
    let mut report = opts.report("register");
    let phase = Phase::start(opts.server_pid);
    let sem = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut set = JoinSet::new();
    for i in 0..opts.users {
        let (sem, target) = (sem.clone(), target.clone());
        let (user, password) = (opts.user(i), opts.password.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            (i, Conn::register(&target, i, &user, &password).await)
        });
    }
    let (mut created, mut existing) = (0u64, 0u64);
    while let Some(r) = set.join_next().await {
        match r {
            Ok((_, Ok(true))) => created += 1,
            Ok((_, Ok(false))) => existing += 1,
            Ok((i, Err(e))) => report.error(format!("register {}: {e:#}", opts.user(i))),
            Err(e) => report.error(format!("register task: {e}")),
        }
    }
    phase.finish(&mut report);
    report.figure("created", created as f64);
    report.figure("existing", existing as f64);
    Ok(report)
}

/// `login`: the login storm. The measured phase ends when the last login
/// completed (initial presence echoed back); the connections are closed
/// after it.
async fn login(opts: &Options, target: &Arc<Target>) -> anyhow::Result<Report> {
    let mut report = opts.report("login");
    let phase = Phase::start(opts.server_pid);
    let (conns, lat) = login_many(opts, target, FULL, opts.rate, &mut report).await;
    phase.finish(&mut report);
    let ok = conns.iter().flatten().count() as f64;
    report.figure("logins", ok);
    report.figure("logins_per_s", ok / report.elapsed_s.max(1e-9));
    if ok > 0.0 {
        if let Some(cpu) = report.server_cpu_s {
            report.figure("server_cpu_ms_per_login", cpu * 1000.0 / ok);
        }
        if let Some(cpu) = report.generator_cpu_s {
            report.figure("generator_cpu_ms_per_login", cpu * 1000.0 / ok);
        }
    }
    lat.into_report(&mut report, "");
    close_all(conns).await;
    Ok(report)
}

/// `idle`: logs every account in, waits two seconds for the server to
/// settle, reads its RSS, holds the connections for `--duration` seconds,
/// then checks each is still alive with an XEP-0199 ping.
async fn idle(opts: &Options, target: &Arc<Target>) -> anyhow::Result<Report> {
    let mut report = opts.report("idle");
    report.param("hold_s", opts.duration);
    let own = std::process::id();
    let gen_rss0 = measure::rss_kib(own).unwrap_or(0);
    let phase = Phase::start(opts.server_pid);
    let (conns, lat) = login_many(opts, target, FULL, opts.rate, &mut report).await;
    let ok = conns.iter().flatten().count() as u64;
    report.figure("connections", ok as f64);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server_rss_held = opts.server_pid.and_then(measure::rss_kib);
    let gen_rss_held = measure::rss_kib(own).unwrap_or(0);
    tokio::time::sleep(Duration::from_secs_f64(opts.duration)).await;
    // Every held connection must still work.
    let alive = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for mut c in conns.into_iter().flatten() {
        let (alive, domain) = (alive.clone(), opts.domain.clone());
        set.spawn(async move {
            let r: anyhow::Result<()> = async {
                c.send(&format!(
                    "<iq type='get' id='alive' to='{domain}'><ping xmlns='urn:xmpp:ping'/></iq>"
                ))
                .await?;
                let e = c
                    .until(|e| e.name() == "iq" && e.attr("id") == Some("alive"))
                    .await?;
                if e.attr("type") != Some("result") {
                    bail!("ping answered {}", e.to_xml_string());
                }
                Ok(())
            }
            .await;
            if r.is_ok() {
                alive.fetch_add(1, Ordering::Relaxed);
            }
            c.close().await;
        });
    }
    while set.join_next().await.is_some() {}
    phase.finish(&mut report);
    report.figure("alive_after_hold", alive.load(Ordering::Relaxed) as f64);
    if ok > 0 {
        if let (Some(start), Some(held)) = (report.server_rss_start_kib, server_rss_held) {
            report.figure("server_rss_held_kib", held as f64);
            report.figure(
                "server_kib_per_connection",
                (held as f64 - start as f64) / ok as f64,
            );
        }
        report.figure(
            "generator_kib_per_connection",
            (gen_rss_held as f64 - gen_rss0 as f64) / ok as f64,
        );
    }
    lat.into_report(&mut report, "");
    Ok(report)
}

/// What one chat connection did.
#[derive(Debug, Default)]
struct ChatOutcome {
    sent: u64,
    received: u64,
    out_of_order: u64,
    errors: Vec<String>,
}

/// A latency histogram shared by all connections of a run (one histogram
/// per connection would cost ~200 KiB each).
type SharedLatency = Arc<std::sync::Mutex<Latency>>;

fn record_shared(l: &SharedLatency, sent_nanos: u128) {
    let us = u64::try_from(now_nanos().saturating_sub(sent_nanos) / 1000).unwrap_or(u64::MAX);
    l.lock()
        .unwrap_or_else(|e| e.into_inner())
        .record_micros(us);
}

/// Phases of the messaging run, broadcast to every connection.
const SENDING: u8 = 0;
const STOP_SENDING: u8 = 1;
const COUNTS_FINAL: u8 = 2;
const ABORT: u8 = 3;

struct ChatPlan {
    me: u64,
    partner: u64,
    partner_jid: String,
    /// Seconds between two messages of this connection; `None` = closed loop.
    interval: Option<Duration>,
    window: u32,
    sent: Arc<Vec<AtomicU64>>,
    stopped: Arc<AtomicUsize>,
    latency: SharedLatency,
}

fn chat_message(to: &str, seq: u64) -> String {
    format!(
        "<message to='{to}' type='chat' id='m{seq}'><body>{seq} {}</body></message>",
        now_nanos()
    )
}

async fn chat_task(mut c: Conn, plan: ChatPlan, mut phase: watch::Receiver<u8>) -> ChatOutcome {
    let mut out = ChatOutcome::default();
    let mut seq = 0u64;
    let mut expect = 0u64;
    let mut sending = true;
    let mut state = SENDING;
    let me = usize::try_from(plan.me).unwrap_or(usize::MAX);
    let partner = usize::try_from(plan.partner).unwrap_or(usize::MAX);
    let count = |s: &ChatPlan| s.sent.get(me).map(|a| a.fetch_add(1, Ordering::Relaxed));
    let mut tick = plan.interval.map(|iv| {
        // Spread the connections' ticks over one interval.
        let offset = iv.mul_f64(rand::random::<f64>());
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, iv);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    if tick.is_none() {
        for _ in 0..plan.window {
            if let Err(e) = c.send(&chat_message(&plan.partner_jid, seq)).await {
                out.errors.push(format!("send: {e:#}"));
                return out;
            }
            seq += 1;
            count(&plan);
        }
    }
    loop {
        if state == COUNTS_FINAL {
            let partner_sent = plan
                .sent
                .get(partner)
                .map_or(0, |a| a.load(Ordering::Relaxed));
            if out.received >= partner_sent {
                break;
            }
        }
        tokio::select! {
            biased;
            r = phase.changed() => {
                if r.is_err() { break; }
                state = *phase.borrow_and_update();
                if sending && state >= STOP_SENDING {
                    sending = false;
                    plan.stopped.fetch_add(1, Ordering::Relaxed);
                }
                if state == ABORT { break; }
            }
            _ = async { match tick.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } }, if sending => {
                if let Err(e) = c.send(&chat_message(&plan.partner_jid, seq)).await {
                    out.errors.push(format!("send: {e:#}"));
                    break;
                }
                seq += 1;
                count(&plan);
            }
            ev = c.next_stanza() => {
                let e = match ev {
                    Ok(e) => e,
                    Err(e) => { out.errors.push(format!("read: {e:#}")); break; }
                };
                if let Some(answer) = conn::iq_answer(&e) {
                    let _ = c.send(&answer).await;
                    continue;
                }
                if e.name() != "message" { continue; }
                if e.attr("type") == Some("error") {
                    out.errors.push(format!("message error: {}", e.to_xml_string()));
                    continue;
                }
                let Some(body) = e.child("body", "jabber:client").map(|b| b.text()) else { continue };
                let mut parts = body.split_whitespace();
                let (Some(s), Some(t)) = (
                    parts.next().and_then(|s| s.parse::<u64>().ok()),
                    parts.next().and_then(|t| t.parse::<u128>().ok()),
                ) else { continue };
                record_shared(&plan.latency, t);
                out.received += 1;
                if s != expect { out.out_of_order += 1; }
                expect = s + 1;
                if tick.is_none() && sending {
                    if let Err(e) = c.send(&chat_message(&plan.partner_jid, seq)).await {
                        out.errors.push(format!("send: {e:#}"));
                        break;
                    }
                    seq += 1;
                    count(&plan);
                }
            }
        }
    }
    out.sent = seq;
    if sending {
        plan.stopped.fetch_add(1, Ordering::Relaxed);
    }
    c.close().await;
    out
}

/// `messaging`: accounts 2k and 2k+1 form a pair and send each other chat
/// messages to the bare JID for `--duration` seconds, then every message
/// sent is waited for (up to `--timeout`). Lost = sent − received.
async fn messaging(opts: &Options, target: &Arc<Target>) -> anyhow::Result<Report> {
    let mut report = opts.report("messaging");
    report.param("duration_s", opts.duration);
    if opts.rate <= 0.0 {
        report.param("window", opts.window);
    }
    let n = opts.users - opts.users % 2;
    if n < 2 {
        bail!("messaging needs at least two users");
    }
    let (conns, _) = login_many(opts, target, FULL, 0.0, &mut report).await;
    if report.errors > 0 {
        close_all(conns).await;
        return Ok(report);
    }
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let stopped = Arc::new(AtomicUsize::new(0));
    let latency = SharedLatency::default();
    let (tx, rx) = watch::channel(SENDING);
    let interval = (opts.rate > 0.0).then(|| Duration::from_secs_f64(n as f64 / opts.rate));
    let phase = Phase::start(opts.server_pid);
    let send_start = Instant::now();
    let mut set = JoinSet::new();
    for (i, c) in conns.into_iter().enumerate() {
        let Some(c) = c else { continue };
        let i = i as u64;
        if i >= n {
            set.spawn(async move {
                c.close().await;
                ChatOutcome::default()
            });
            continue;
        }
        let partner = i ^ 1;
        let plan = ChatPlan {
            me: i,
            partner,
            partner_jid: opts.bare(partner),
            interval,
            window: opts.window.max(1),
            sent: sent.clone(),
            stopped: stopped.clone(),
            latency: latency.clone(),
        };
        set.spawn(chat_task(c, plan, rx.clone()));
    }
    tokio::time::sleep(Duration::from_secs_f64(opts.duration)).await;
    let send_elapsed = send_start.elapsed().as_secs_f64();
    let _ = tx.send(STOP_SENDING);
    let deadline = Instant::now() + Duration::from_secs_f64(opts.timeout);
    while stopped.load(Ordering::Relaxed) < usize::try_from(n).unwrap_or(usize::MAX)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = tx.send(COUNTS_FINAL);
    let abort = tokio::spawn(async move {
        tokio::time::sleep_until(deadline.into()).await;
        let _ = tx.send(ABORT);
    });
    let mut total = ChatOutcome::default();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(o) => {
                total.sent += o.sent;
                total.received += o.received;
                total.out_of_order += o.out_of_order;
                for e in o.errors {
                    report.error(e);
                }
            }
            Err(e) => report.error(format!("chat task: {e}")),
        }
    }
    abort.abort();
    phase.finish(&mut report);
    report.figure("sent", total.sent as f64);
    report.figure("delivered", total.received as f64);
    report.figure("lost", total.sent.saturating_sub(total.received) as f64);
    report.figure("out_of_order", total.out_of_order as f64);
    report.figure("send_phase_s", send_elapsed);
    report.figure(
        "delivered_per_s",
        total.received as f64 / report.elapsed_s.max(1e-9),
    );
    if total.received > 0
        && let Some(cpu) = report.server_cpu_s
    {
        report.figure(
            "server_cpu_us_per_message",
            cpu * 1e6 / total.received as f64,
        );
    }
    let latency = latency.lock().unwrap_or_else(|e| e.into_inner()).summary();
    report.latency.insert("message".into(), latency);
    Ok(report)
}

/// The contacts of account `i` in the presence scenario: the K/2 accounts on
/// either side of it on a ring of `n` accounts.
fn contacts_of(i: u64, n: u64, k: u64) -> Vec<u64> {
    let half = k / 2;
    (1..=half)
        .flat_map(|j| [(i + j) % n, (i + n - j) % n])
        .collect()
}

fn bare_of(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

/// `presence`: makes sure every account has its K contacts with
/// subscription `both` (running the subscription handshakes over XMPP the
/// first time), then measures (1) a login of every account with initial
/// presence until each has seen all its contacts available, and (2) one
/// presence change per account until every contact has received it.
async fn presence(opts: &Options, target: &Arc<Target>) -> anyhow::Result<Report> {
    let mut report = opts.report("presence");
    let (n, k) = (opts.users, opts.contacts);
    report.param("contacts", k);
    if k == 0 || k % 2 == 1 || k >= n {
        bail!("--contacts must be even, positive and smaller than --users");
    }
    let index: Arc<HashMap<String, u64>> = Arc::new((0..n).map(|i| (opts.bare(i), i)).collect());
    // Provisioning (not measured). Subscription requests reach only
    // available resources (RFC 6121 §3.1.3), so this login sends presence.
    let (conns, _) = login_many(opts, target, FULL, 0.0, &mut report).await;
    if report.errors > 0 {
        close_all(conns).await;
        return Ok(report);
    }
    let complete = conns.iter().enumerate().all(|(i, c)| {
        c.as_ref().is_some_and(|c| {
            let both: HashSet<&str> = c
                .roster
                .iter()
                .filter(|it| it.attr("subscription") == Some("both"))
                .filter_map(|it| it.attr("jid"))
                .collect();
            contacts_of(i as u64, n, k)
                .iter()
                .all(|j| both.contains(opts.bare(*j).as_str()))
        })
    });
    report.figure("provisioned_now", if complete { 0.0 } else { 1.0 });
    if complete {
        close_all(conns).await;
    } else {
        let t = Instant::now();
        provision(opts, conns, index.clone(), &mut report).await;
        report.figure("provision_s", t.elapsed().as_secs_f64());
        if report.errors > 0 {
            return Ok(report);
        }
    }
    // (1) Everyone logs in and waits for all contacts to be available.
    let phase = Phase::start(opts.server_pid);
    let t0 = Instant::now();
    let (conns, lat) = login_many(opts, target, FULL, opts.rate, &mut report).await;
    lat.into_report(&mut report, "");
    let received = Arc::new(AtomicU64::new(0));
    let converged_count = Arc::new(AtomicUsize::new(0));
    let change = SharedLatency::default();
    let (go_tx, go_rx) = watch::channel(false);
    let mut set = JoinSet::new();
    for (i, c) in conns.into_iter().enumerate() {
        let Some(c) = c else { continue };
        let shared = PresenceShared {
            contacts: contacts_of(i as u64, n, k).into_iter().collect(),
            index: index.clone(),
            received: received.clone(),
            converged: converged_count.clone(),
            change: change.clone(),
            go: go_rx.clone(),
            timeout: Duration::from_secs_f64(opts.timeout),
            t0,
        };
        set.spawn(presence_task(c, shared));
    }
    // Phase (2) starts once every connection has seen all its contacts
    // (or the timeout passed; the stragglers then report errors).
    let tasks = set.len();
    let deadline = Instant::now() + Duration::from_secs_f64(opts.timeout);
    while converged_count.load(Ordering::Relaxed) < tasks && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_seen = t0.elapsed().as_secs_f64();
    let received_login = received.load(Ordering::Relaxed);
    let change_start = Instant::now();
    let _ = go_tx.send(true);
    let mut results = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(o)) => results.push(o),
            Ok(Err(e)) => report.error(format!("{e:#}")),
            Err(e) => report.error(format!("presence task: {e}")),
        }
    }
    let change_s = change_start.elapsed().as_secs_f64();
    let mut converged = Latency::default();
    phase.finish(&mut report);
    let mut deliveries = 0u64;
    for o in &results {
        converged.record(o.converged);
        deliveries += o.changes;
    }
    let total = received.load(Ordering::Relaxed);
    report.figure("logins", results.len() as f64);
    report.figure("all_contacts_seen_s", all_seen);
    report.figure("login_presence_received", received_login as f64);
    report.figure(
        "login_presence_per_s",
        received_login as f64 / all_seen.max(1e-9),
    );
    report.figure("change_s", change_s);
    report.figure("change_deliveries", deliveries as f64);
    report.figure("change_expected", (results.len() as u64 * k) as f64);
    report.figure("change_per_s", deliveries as f64 / change_s.max(1e-9));
    report.figure("presence_received", total as f64);
    report
        .latency
        .insert("converged".into(), converged.summary());
    let change = change.lock().unwrap_or_else(|e| e.into_inner()).summary();
    report.latency.insert("change".into(), change);
    Ok(report)
}

struct PresenceOutcome {
    converged: Duration,
    changes: u64,
}

struct PresenceShared {
    contacts: HashSet<u64>,
    index: Arc<HashMap<String, u64>>,
    received: Arc<AtomicU64>,
    converged: Arc<AtomicUsize>,
    change: SharedLatency,
    go: watch::Receiver<bool>,
    timeout: Duration,
    t0: Instant,
}

async fn presence_task(mut c: Conn, sh: PresenceShared) -> anyhow::Result<PresenceOutcome> {
    let PresenceShared {
        contacts,
        index,
        received,
        converged: converged_count,
        change,
        mut go,
        timeout,
        t0,
    } = sh;
    let me = c.jid.clone();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut changed: HashSet<u64> = HashSet::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut converged = None;
    let mut sent_change = false;
    let handle = |e: &Element, seen: &mut HashSet<u64>, changed: &mut HashSet<u64>| {
        if e.name() != "presence" || e.attr("type").is_some() {
            return;
        }
        let Some(from) = e.attr("from") else { return };
        if from == me {
            return;
        }
        received.fetch_add(1, Ordering::Relaxed);
        let Some(&j) = index.get(bare_of(from)) else {
            return;
        };
        if !contacts.contains(&j) {
            return;
        }
        seen.insert(j);
        let status = e.child("status", "jabber:client").map(|s| s.text());
        if let Some(t) = status.and_then(|s| s.parse::<u128>().ok())
            && changed.insert(j)
        {
            record_shared(&change, t);
        }
    };
    loop {
        if converged.is_none() && seen.len() == contacts.len() {
            converged = Some(t0.elapsed());
            converged_count.fetch_add(1, Ordering::Relaxed);
        }
        if converged.is_some() && !sent_change && *go.borrow() {
            c.send(&format!(
                "<presence><show>away</show><status>{}</status></presence>",
                now_nanos()
            ))
            .await?;
            sent_change = true;
        }
        if sent_change && changed.len() == contacts.len() {
            break;
        }
        let e = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => bail!(
                "{me}: timed out (saw {}/{} contacts available, {} changes)",
                seen.len(), contacts.len(), changed.len()
            ),
            r = go.changed(), if !*go.borrow() => { r?; continue; }
            e = c.next_stanza() => e?,
        };
        if let Some(a) = conn::iq_answer(&e) {
            c.send(&a).await?;
            continue;
        }
        handle(&e, &mut seen, &mut changed);
    }
    c.close().await;
    Ok(PresenceOutcome {
        converged: converged.unwrap_or_default(),
        changes: changed.len() as u64,
    })
}

/// Runs the subscription handshakes: account i asks the K/2 accounts after
/// it on the ring; each account approves every request and asks back, so
/// that all pairs end with subscription `both`.
async fn provision(
    opts: &Options,
    conns: Vec<Option<Conn>>,
    index: Arc<HashMap<String, u64>>,
    report: &mut Report,
) {
    let (n, k) = (opts.users, opts.contacts);
    let timeout = Duration::from_secs_f64(opts.timeout);
    let mut set = JoinSet::new();
    for (i, c) in conns.into_iter().enumerate() {
        let Some(mut c) = c else { continue };
        let i = i as u64;
        let index = index.clone();
        let jids: Vec<String> = (0..n).map(|j| opts.bare(j)).collect();
        set.spawn(async move {
            let r: anyhow::Result<()> = async {
                // Done when the roster (initial result, then roster pushes,
                // RFC 6121 §2.1.6) shows every contact with subscription
                // `both`; every request is approved until then.
                let wanted: HashSet<u64> = contacts_of(i, n, k).into_iter().collect();
                let mut both: HashSet<u64> = c
                    .roster
                    .iter()
                    .filter(|it| it.attr("subscription") == Some("both"))
                    .filter_map(|it| it.attr("jid").and_then(|j| index.get(j)).copied())
                    .collect();
                let mut asked: HashSet<u64> = HashSet::new();
                for j in 1..=k / 2 {
                    let t = (i + j) % n;
                    if both.contains(&t) {
                        continue;
                    }
                    asked.insert(t);
                    c.send(&format!(
                        "<presence type='subscribe' to='{}'/>",
                        jids[t as usize]
                    ))
                    .await?;
                }
                let deadline = tokio::time::Instant::now() + timeout;
                while !wanted.is_subset(&both) {
                    let e = tokio::time::timeout_at(deadline, c.next_stanza())
                        .await
                        .map_err(|_| {
                            anyhow::anyhow!(
                                "provisioning timed out with {}/{k} contacts",
                                wanted.intersection(&both).count()
                            )
                        })??;
                    if let Some(a) = conn::iq_answer(&e) {
                        if let Some(q) = e.child("query", "jabber:iq:roster") {
                            for it in q.children() {
                                let Some(&j) = it.attr("jid").and_then(|j| index.get(j)) else {
                                    continue;
                                };
                                if it.attr("subscription") == Some("both") {
                                    both.insert(j);
                                } else {
                                    both.remove(&j);
                                }
                            }
                        }
                        c.send(&a).await?;
                        continue;
                    }
                    if e.name() != "presence" || e.attr("type") != Some("subscribe") {
                        continue;
                    }
                    let Some(from) = e.attr("from").map(bare_of) else {
                        continue;
                    };
                    let Some(&j) = index.get(from) else { continue };
                    c.send(&format!("<presence type='subscribed' to='{from}'/>"))
                        .await?;
                    if asked.insert(j) {
                        c.send(&format!("<presence type='subscribe' to='{from}'/>"))
                            .await?;
                    }
                }
                Ok(())
            }
            .await;
            (i, r, c)
        });
    }
    let mut conns = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((_, Ok(()), c)) => conns.push(Some(c)),
            Ok((i, Err(e), c)) => {
                report.error(format!("provisioning {}: {e:#}", opts.user(i)));
                conns.push(Some(c));
            }
            Err(e) => report.error(format!("provisioning task: {e}")),
        }
    }
    close_all(conns).await;
}
