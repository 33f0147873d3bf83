//! Client side of SASL for the load generator: PLAIN (RFC 4616) and SCRAM
//! (RFC 5802, RFC 7677) without channel binding (gs2 header `n,,`).
//!
//! PBKDF2 is by far the most expensive step of a SCRAM login on the client,
//! so the salted password is cached per (hash, password, salt, iterations):
//! logging the same account in again, in a later phase or scenario, costs
//! the generator only a few HMACs. Servers that give each account its own
//! salt still cost one PBKDF2 per account per generator process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Digest;

/// A SASL mechanism the generator can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
pub enum Mechanism {
    /// `PLAIN` (RFC 4616).
    #[value(name = "PLAIN")]
    #[serde(rename = "PLAIN")]
    Plain,
    /// `SCRAM-SHA-1` (RFC 5802).
    #[value(name = "SCRAM-SHA-1")]
    #[serde(rename = "SCRAM-SHA-1")]
    ScramSha1,
    /// `SCRAM-SHA-256` (RFC 7677).
    #[value(name = "SCRAM-SHA-256")]
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
}

impl Mechanism {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
        }
    }
}

/// HMAC with the mechanism's hash.
fn hmac(m: Mechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    macro_rules! mac {
        ($d:ty) => {{
            // HMAC accepts keys of any length.
            let mut h = <Hmac<$d> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
            h.update(data);
            h.finalize().into_bytes().to_vec()
        }};
    }
    match m {
        Mechanism::ScramSha1 => mac!(sha1::Sha1),
        _ => mac!(sha2::Sha256),
    }
}

fn hash(m: Mechanism, data: &[u8]) -> Vec<u8> {
    match m {
        Mechanism::ScramSha1 => sha1::Sha1::digest(data).to_vec(),
        _ => sha2::Sha256::digest(data).to_vec(),
    }
}

type CacheKey = (Mechanism, String, Vec<u8>, u32);

/// Salted passwords already computed (shared by every connection).
#[derive(Clone, Debug, Default)]
pub struct SaltCache(Arc<Mutex<HashMap<CacheKey, Vec<u8>>>>);

/// One cache entry on disk.
#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    mech: String,
    password: String,
    salt: String,
    iterations: u32,
    salted: String,
}

impl SaltCache {
    /// Loads a cache file written by [`SaltCache::save`]; a missing file is
    /// an empty cache. Real clients keep the salted password too (RFC 5802
    /// §5.1 lets them cache it), so logging in again costs only HMACs.
    pub fn load(path: &std::path::Path) -> anyhow::Result<SaltCache> {
        let cache = SaltCache::default();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(cache),
            Err(e) => return Err(e.into()),
        };
        let entries: Vec<Entry> = serde_json::from_str(&text)?;
        let mut map = cache.0.lock().unwrap_or_else(|e| e.into_inner());
        for e in entries {
            let mech = match e.mech.as_str() {
                "SCRAM-SHA-1" => Mechanism::ScramSha1,
                "SCRAM-SHA-256" => Mechanism::ScramSha256,
                _ => continue,
            };
            map.insert(
                (mech, e.password, B64.decode(e.salt)?, e.iterations),
                B64.decode(e.salted)?,
            );
        }
        drop(map);
        Ok(cache)
    }

    /// Writes the cache to a file.
    pub fn save(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entries: Vec<Entry> = map
            .iter()
            .map(|((m, pw, salt, it), salted)| Entry {
                mech: m.name().to_owned(),
                password: pw.clone(),
                salt: B64.encode(salt),
                iterations: *it,
                salted: B64.encode(salted),
            })
            .collect();
        drop(map);
        std::fs::write(path, serde_json::to_vec(&entries)?)?;
        Ok(())
    }

    fn salted(&self, m: Mechanism, password: &str, salt: &[u8], iters: u32) -> Vec<u8> {
        let key = (m, password.to_owned(), salt.to_vec(), iters);
        if let Some(v) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return v.clone();
        }
        let pw = password.as_bytes();
        let v = match m {
            Mechanism::ScramSha1 => {
                pbkdf2::pbkdf2_hmac_array::<sha1::Sha1, 20>(pw, salt, iters).to_vec()
            }
            _ => pbkdf2::pbkdf2_hmac_array::<sha2::Sha256, 32>(pw, salt, iters).to_vec(),
        };
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, v.clone());
        v
    }
}

/// One client-side SASL exchange.
#[derive(Debug)]
pub struct Exchange {
    mech: Mechanism,
    user: String,
    password: String,
    nonce: String,
    client_first_bare: String,
    server_signature: Vec<u8>,
}

impl Exchange {
    /// Starts an exchange for `user` (the localpart) and `password`.
    pub fn new(mech: Mechanism, user: &str, password: &str) -> Exchange {
        let nonce: String = (0..24)
            .map(|_| char::from(b'a' + rand::random::<u8>() % 26))
            .collect();
        Exchange {
            mech,
            user: user.replace('=', "=3D").replace(',', "=2C"),
            password: password.to_owned(),
            nonce,
            client_first_bare: String::new(),
            server_signature: Vec::new(),
        }
    }

    /// The initial response (sent base64-encoded inside `<auth/>`).
    pub fn initial(&mut self) -> Vec<u8> {
        match self.mech {
            Mechanism::Plain => format!("\0{}\0{}", self.user, self.password).into_bytes(),
            _ => {
                self.client_first_bare = format!("n={},r={}", self.user, self.nonce);
                format!("n,,{}", self.client_first_bare).into_bytes()
            }
        }
    }

    /// The answer to a server challenge (SCRAM server-first-message).
    pub fn respond(&mut self, challenge: &[u8], cache: &SaltCache) -> Result<Vec<u8>, String> {
        if self.mech == Mechanism::Plain {
            return Err("PLAIN got a challenge".into());
        }
        let sf = std::str::from_utf8(challenge).map_err(|_| "challenge is not UTF-8")?;
        let (mut r, mut s, mut i) = (None, None, None);
        for part in sf.split(',') {
            match part.split_at_checked(2) {
                Some(("r=", v)) => r = Some(v),
                Some(("s=", v)) => s = B64.decode(v).ok(),
                Some(("i=", v)) => i = v.parse::<u32>().ok(),
                _ => {}
            }
        }
        let (Some(r), Some(salt), Some(iters)) = (r, s, i) else {
            return Err(format!("bad server-first-message {sf:?}"));
        };
        if !r.starts_with(&self.nonce) {
            return Err("server nonce does not extend ours".into());
        }
        let without_proof = format!("c=biws,r={r}");
        let auth_message = format!("{},{sf},{without_proof}", self.client_first_bare);
        let salted = cache.salted(self.mech, &self.password, &salt, iters);
        let client_key = hmac(self.mech, &salted, b"Client Key");
        let stored_key = hash(self.mech, &client_key);
        let signature = hmac(self.mech, &stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac(self.mech, &salted, b"Server Key");
        self.server_signature = hmac(self.mech, &server_key, auth_message.as_bytes());
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the additional data of `<success/>` (SCRAM `v=`).
    pub fn verify_success(&self, data: &[u8]) -> Result<(), String> {
        if self.mech == Mechanism::Plain {
            return Ok(());
        }
        let v = std::str::from_utf8(data)
            .ok()
            .and_then(|s| s.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok());
        if v.as_deref() == Some(self.server_signature.as_slice()) {
            Ok(())
        } else {
            Err("server signature does not verify".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5802 §5 example: user "user", password "pencil".
    #[test]
    fn rfc5802_example() {
        let mut x = Exchange::new(Mechanism::ScramSha1, "user", "pencil");
        x.nonce = "fyko+d2lbbFgONRv9qkxdawL".into();
        assert_eq!(x.initial(), b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL");
        let sf = b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096";
        let out = x.respond(sf, &SaltCache::default()).unwrap();
        assert_eq!(
            out,
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        assert!(x.verify_success(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=").is_ok());
        assert!(x.verify_success(b"v=AAAApqV8S7suAoZWja4dJRkFsKQ=").is_err());
    }

    /// RFC 7677 §3 example.
    #[test]
    fn rfc7677_example() {
        let mut x = Exchange::new(Mechanism::ScramSha256, "user", "pencil");
        x.nonce = "rOprNGfwEbeRWgbNEkqO".into();
        x.initial();
        let sf = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let out = x.respond(sf, &SaltCache::default()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert!(
            x.verify_success(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .is_ok()
        );
    }

    #[test]
    fn cache_survives_a_file() {
        let dir = std::env::temp_dir().join(format!("salts-{}", std::process::id()));
        let c = SaltCache::default();
        let a = c.salted(Mechanism::ScramSha1, "pw", b"salt", 4096);
        c.save(&dir).unwrap();
        let d = SaltCache::load(&dir).unwrap();
        assert_eq!(d.0.lock().unwrap().len(), 1);
        assert_eq!(d.salted(Mechanism::ScramSha1, "pw", b"salt", 4096), a);
        std::fs::remove_file(&dir).unwrap();
        assert!(SaltCache::load(&dir).unwrap().0.lock().unwrap().is_empty());
    }

    #[test]
    fn foreign_nonce_is_refused() {
        let mut x = Exchange::new(Mechanism::ScramSha1, "u", "p");
        x.initial();
        assert!(
            x.respond(b"r=other,s=QSXCR+Q6sek8bf92,i=4096", &SaltCache::default())
                .is_err()
        );
    }
}
