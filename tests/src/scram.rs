//! A small SCRAM client (RFC 5802, RFC 7677) written for the tests, separate
//! from the server's implementation so that the two check each other.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};

/// Hash of a SCRAM mechanism.
#[derive(Clone, Copy, Debug)]
pub enum Hash {
    Sha1,
    Sha256,
    Sha512,
}

impl Hash {
    /// From a mechanism name such as `SCRAM-SHA-512-PLUS`.
    pub fn from_mechanism(m: &str) -> Hash {
        if m.starts_with("SCRAM-SHA-1") {
            Hash::Sha1
        } else if m.starts_with("SCRAM-SHA-256") {
            Hash::Sha256
        } else if m.starts_with("SCRAM-SHA-512") {
            Hash::Sha512
        } else {
            panic!("not a SCRAM mechanism: {m}")
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        macro_rules! mac {
            ($d:ty) => {{
                let mut m = <Hmac<$d> as Mac>::new_from_slice(key).unwrap();
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }};
        }
        match self {
            Hash::Sha1 => mac!(sha1::Sha1),
            Hash::Sha256 => mac!(sha2::Sha256),
            Hash::Sha512 => mac!(sha2::Sha512),
        }
    }

    fn h(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            Hash::Sha1 => sha1::Sha1::digest(data).to_vec(),
            Hash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    fn pbkdf2(self, pw: &[u8], salt: &[u8], i: u32) -> Vec<u8> {
        match self {
            Hash::Sha1 => pbkdf2::pbkdf2_hmac_array::<sha1::Sha1, 20>(pw, salt, i).to_vec(),
            Hash::Sha256 => pbkdf2::pbkdf2_hmac_array::<sha2::Sha256, 32>(pw, salt, i).to_vec(),
            Hash::Sha512 => pbkdf2::pbkdf2_hmac_array::<sha2::Sha512, 64>(pw, salt, i).to_vec(),
        }
    }
}

/// The client's channel-binding stance (RFC 5802 §6).
#[derive(Clone, Debug)]
pub enum Binding {
    /// `n`: the client does not support binding.
    NotSupported,
    /// `y`: the client supports it but thinks the server does not.
    SupportedNotUsed,
    /// `p=tls-exporter` with the exporter data.
    TlsExporter(Vec<u8>),
}

/// One SCRAM exchange.
#[derive(Debug)]
pub struct Client {
    hash: Hash,
    user: String,
    password: String,
    binding: Binding,
    nonce: String,
    client_first_bare: String,
    server_signature: Vec<u8>,
}

impl Client {
    /// A new exchange.
    pub fn new(hash: Hash, user: &str, password: &str, binding: Binding) -> Client {
        let nonce: String = (0..24)
            .map(|_| (b'a' + rand::random::<u8>() % 26) as char)
            .collect();
        Client {
            hash,
            user: user.replace('=', "=3D").replace(',', "=2C"),
            password: password.to_owned(),
            binding,
            nonce,
            client_first_bare: String::new(),
            server_signature: Vec::new(),
        }
    }

    fn gs2_header(&self) -> &'static str {
        match self.binding {
            Binding::NotSupported => "n,,",
            Binding::SupportedNotUsed => "y,,",
            Binding::TlsExporter(_) => "p=tls-exporter,,",
        }
    }

    /// client-first-message.
    pub fn client_first(&mut self) -> Vec<u8> {
        self.client_first_bare = format!("n={},r={}", self.user, self.nonce);
        format!("{}{}", self.gs2_header(), self.client_first_bare).into_bytes()
    }

    /// client-final-message for a server-first-message, or `None` if the
    /// server's message is unusable.
    pub fn client_final(&mut self, server_first: &[u8]) -> Option<Vec<u8>> {
        let sf = std::str::from_utf8(server_first).ok()?;
        let mut r = None;
        let mut s = None;
        let mut i = None;
        for part in sf.split(',') {
            let (k, v) = part.split_at_checked(2)?;
            match k {
                "r=" => r = Some(v),
                "s=" => s = Some(B64.decode(v).ok()?),
                "i=" => i = Some(v.parse::<u32>().ok()?),
                _ => {}
            }
        }
        let (r, salt, iters) = (r?, s?, i?);
        if !r.starts_with(&self.nonce) {
            return None;
        }
        let mut cbind = self.gs2_header().as_bytes().to_vec();
        if let Binding::TlsExporter(data) = &self.binding {
            cbind.extend_from_slice(data);
        }
        let without_proof = format!("c={},r={r}", B64.encode(&cbind));
        let auth_message = format!("{},{sf},{without_proof}", self.client_first_bare);
        let salted = self.hash.pbkdf2(self.password.as_bytes(), &salt, iters);
        let client_key = self.hash.hmac(&salted, b"Client Key");
        let stored_key = self.hash.h(&client_key);
        let signature = self.hash.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = self.hash.hmac(&salted, b"Server Key");
        self.server_signature = self.hash.hmac(&server_key, auth_message.as_bytes());
        Some(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final-message's `v=`.
    pub fn verify_server_final(&self, data: &[u8]) -> bool {
        let Ok(s) = std::str::from_utf8(data) else {
            return false;
        };
        s.strip_prefix("v=")
            .and_then(|v| B64.decode(v).ok())
            .is_some_and(|v| v == self.server_signature)
    }
}
