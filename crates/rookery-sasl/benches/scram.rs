//! Benchmarks for server-side SASL verification, driven through the crate's
//! public server API ([`SaslServer`] with a one-account [`CredentialLookup`]).
//!
//! * `scram_server/*`: one complete server-side SCRAM exchange (client-first
//!   → server-first, client-final → proof verification and server-final) for
//!   SCRAM-SHA-1, SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (`tls-exporter`
//!   binding with a fixed 32-byte exporter value), stored credentials at 4096
//!   iterations. Only the server is timed: the client's `SaltedPassword`
//!   (PBKDF2) is computed once up front, and the client-final message, which
//!   depends on the random server nonce, is built per iteration outside the
//!   timed region (`iter_custom`, summing the server's two steps).
//! * `plain_server/verify`: one PLAIN exchange (RFC 4616), which the server
//!   verifies by re-deriving the SHA-256 `StoredKey` (PBKDF2, 4096 iterations).
//! * `credentials/derive_4096`: [`StoredCredentials::derive`] at 4096
//!   iterations, i.e. the cost of setting a password (SHA-1, SHA-256 and
//!   SHA-512 verifiers).
//!
//! The store lookup is an in-memory clone of one account's credentials, and
//! the async `step` futures are polled once with a no-op waker (they never
//! wait), so no runtime overhead is measured.
//!
//! Run with:
//! `cargo bench -p rookery-sasl --bench scram -- --warm-up-time 1 --measurement-time 3`

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use hmac::digest::core_api::BlockSizeUser;
use hmac::digest::{Digest, KeyInit};
use hmac::{Mac, SimpleHmac};
use rookery_sasl::{
    CredentialLookup, LookupError, Mechanism, SaslServer, ScramKeys, Step, StoredCredentials,
};
use sha1::Sha1;
use sha2::Sha256;

const USER: &str = "juliet";
const PASSWORD: &str = "r0m30myr0m30";
const ITERATIONS: u32 = 4096;
/// Stand-in for the RFC 9266 `tls-exporter` value of a TLS connection.
const EXPORTER: [u8; 32] = [0x5a; 32];

/// A credential store holding one account.
struct OneUser(StoredCredentials);

#[async_trait::async_trait]
impl CredentialLookup for OneUser {
    async fn credentials(&self, username: &str) -> Result<Option<StoredCredentials>, LookupError> {
        Ok((username == USER).then(|| self.0.clone()))
    }
}

/// Runs a future that never waits (the store above answers at once).
fn now<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the in-memory exchange should never wait"),
    }
}

#[derive(Clone, Copy)]
enum Hash {
    Sha1,
    Sha256,
}

fn hmac_with<D: Digest + BlockSizeUser>(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <SimpleHmac<D> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

impl Hash {
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => hmac_with::<Sha1>(key, data),
            Hash::Sha256 => hmac_with::<Sha256>(key, data),
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => Sha1::digest(data).to_vec(),
            Hash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    fn pbkdf2(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Hash::Sha1 => {
                let mut out = vec![0u8; 20];
                pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out);
                out
            }
            Hash::Sha256 => {
                let mut out = vec![0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out
            }
        }
    }
}

/// The client side (RFC 5802 §3), with everything that does not depend on the
/// server nonce computed once.
struct Client {
    hash: Hash,
    /// `n,,` or `p=tls-exporter,,`.
    gs2_header: &'static str,
    /// `c=` value: base64(gs2-header || cbind-data).
    cbind: String,
    /// `client-first-message-bare`.
    first_bare: String,
    /// `client-first-message`.
    first: Vec<u8>,
    client_key: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl Client {
    fn new(mechanism: Mechanism, keys: &ScramKeys) -> Client {
        let (hash, plus) = match mechanism {
            Mechanism::ScramSha1 => (Hash::Sha1, false),
            Mechanism::ScramSha256 => (Hash::Sha256, false),
            Mechanism::ScramSha256Plus => (Hash::Sha256, true),
            other => panic!("not benchmarked: {other}"),
        };
        let gs2_header = if plus { "p=tls-exporter,," } else { "n,," };
        let mut cbind_input = gs2_header.as_bytes().to_vec();
        if plus {
            cbind_input.extend_from_slice(&EXPORTER);
        }
        let first_bare = format!("n={USER},r=fyko+d2lbbFgONRv9qkxdawL");
        // The expensive part of the client, done once: Hi() over the salt.
        let salted = hash.pbkdf2(PASSWORD.as_bytes(), &keys.salt, keys.iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        Client {
            hash,
            gs2_header,
            cbind: B64.encode(&cbind_input),
            first: format!("{gs2_header}{first_bare}").into_bytes(),
            first_bare,
            stored_key: hash.digest(&client_key),
            server_key: hash.hmac(&salted, b"Server Key"),
            client_key,
        }
    }

    /// `client-final-message` for `server_first`, and the `v=` the server
    /// must answer with.
    fn last(&self, server_first: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let server_first = std::str::from_utf8(server_first).expect("server-first is UTF-8");
        let nonce = server_first
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .expect("server-first has a nonce");
        let without_proof = format!("c={},r={nonce}", self.cbind);
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let signature = self.hash.hmac(&self.stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = self
            .client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let verifier = format!(
            "v={}",
            B64.encode(self.hash.hmac(&self.server_key, auth_message.as_bytes()))
        );
        (
            format!("{without_proof},p={}", B64.encode(proof)).into_bytes(),
            verifier.into_bytes(),
        )
    }
}

/// One server-side exchange; returns the time the server spent (its
/// construction and both steps), excluding the client's work in between.
fn timed_exchange(
    mechanism: Mechanism,
    exporter: Option<&[u8]>,
    client: &Client,
    store: &OneUser,
) -> Duration {
    let start = Instant::now();
    let mut server = SaslServer::new(mechanism, exporter.map(<[u8]>::to_vec));
    let server_first = match now(server.step(black_box(&client.first), store)) {
        Step::Challenge(data) => data,
        other => panic!("expected server-first, got {other:?}"),
    };
    let first_half = start.elapsed();

    let (client_final, _) = client.last(&server_first);

    let start = Instant::now();
    let result = now(server.step(black_box(&client_final), store));
    let second_half = start.elapsed();
    match result {
        Step::Success {
            additional_data: Some(v),
            ..
        } => {
            black_box(v);
        }
        other => panic!("expected success, got {other:?}"),
    }
    first_half + second_half
}

fn scram(c: &mut Criterion) {
    let store = OneUser(StoredCredentials::derive(PASSWORD, ITERATIONS));
    let mut group = c.benchmark_group("scram_server");
    group.throughput(Throughput::Elements(1));
    for (name, mechanism, exporter, keys) in [
        ("SCRAM-SHA-1", Mechanism::ScramSha1, None, &store.0.sha1),
        (
            "SCRAM-SHA-256",
            Mechanism::ScramSha256,
            None,
            &store.0.sha256,
        ),
        (
            "SCRAM-SHA-256-PLUS",
            Mechanism::ScramSha256Plus,
            Some(&EXPORTER[..]),
            &store.0.sha256,
        ),
    ] {
        let client = Client::new(mechanism, keys);
        assert_eq!(client.gs2_header.starts_with('p'), exporter.is_some());

        // Once, untimed: the whole exchange works and the server's `v=` is
        // the one the client expects (mutual authentication).
        let mut server = SaslServer::new(mechanism, exporter.map(<[u8]>::to_vec));
        let Step::Challenge(server_first) = now(server.step(&client.first, &store)) else {
            panic!("{name}: no server-first");
        };
        let (client_final, verifier) = client.last(&server_first);
        match now(server.step(&client_final, &store)) {
            Step::Success {
                authcid,
                additional_data,
                ..
            } => {
                assert_eq!(authcid, USER);
                assert_eq!(additional_data.as_deref(), Some(&verifier[..]));
            }
            other => panic!("{name}: expected success, got {other:?}"),
        }

        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| timed_exchange(mechanism, exporter, &client, &store))
                    .sum()
            })
        });
    }
    group.finish();
}

fn plain(c: &mut Criterion) {
    let store = OneUser(StoredCredentials::derive(PASSWORD, ITERATIONS));
    let message = format!("\0{USER}\0{PASSWORD}").into_bytes();
    let mut group = c.benchmark_group("plain_server");
    group.throughput(Throughput::Elements(1));
    // About a millisecond per exchange: flat sampling keeps the run short.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(20);
    group.bench_function("verify", |b| {
        b.iter(|| {
            let mut server = SaslServer::new(Mechanism::Plain, None);
            match now(server.step(black_box(&message), &store)) {
                Step::Success { authcid, .. } => authcid,
                other => panic!("expected success, got {other:?}"),
            }
        })
    });
    group.finish();
}

fn derive(c: &mut Criterion) {
    let mut group = c.benchmark_group("credentials");
    group.throughput(Throughput::Elements(1));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.bench_function("derive_4096", |b| {
        b.iter(|| StoredCredentials::derive(black_box(PASSWORD), black_box(ITERATIONS)))
    });
    group.finish();
}

criterion_group!(benches, scram, plain, derive);
criterion_main!(benches);
