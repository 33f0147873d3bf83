//! Certificates of server-to-server streams: the TLS configurations and the
//! verification of a peer's certificate for an XMPP domain (RFC 6120
//! §13.7.2, RFC 6125 §6, RFC 7590).
//!
//! rustls only runs the handshake here: it accepts whatever certificate the
//! peer presents (its handshake signature is still checked), and the chain
//! and name are verified afterwards, for the domain the stream is about.
//! That is what lets a stream whose certificate does not do fall back to
//! Server Dialback instead of failing the handshake.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rookery_cm::tls::ReloadingCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use tracing::warn;

/// XEP-0368 §3: the ALPN protocol of direct TLS server connections.
pub const ALPN_XMPP_SERVER: &[u8] = b"xmpp-server";

/// Why a certificate is not acceptable for a domain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The peer sent no certificate.
    #[error("no certificate")]
    Missing,
    /// The chain does not lead to a trusted root, or is expired or malformed.
    #[error("untrusted certificate: {0}")]
    Untrusted(String),
    /// The chain is trusted but names other domains (RFC 6125 §6).
    #[error("certificate is not valid for {0}")]
    WrongName(String),
}

/// What is trusted for one remote domain instead of the system roots.
#[derive(Debug, Default)]
struct DomainTrust {
    anchors: Vec<TrustAnchor<'static>>,
    /// End-entity certificates accepted as they are (`cert = ...`).
    pinned: Vec<CertificateDer<'static>>,
}

/// Verifies peer certificates: the system trust store (rustls-native-certs,
/// loaded on first use), or per domain the CA or certificate of the
/// `[s2s.peers]` table.
#[derive(Debug, Default)]
pub struct Trust {
    domains: HashMap<String, DomainTrust>,
    roots: OnceLock<Vec<TrustAnchor<'static>>>,
}

impl Trust {
    /// No per-domain trust yet.
    pub fn new() -> Trust {
        Trust::default()
    }

    /// Trusts the CA certificates in the PEM file `path` for `domain` (and
    /// only them).
    pub fn add_ca(&mut self, domain: &str, path: &Path) -> Result<(), String> {
        let certs = read_pem(path)?;
        let entry = self.domains.entry(domain.to_owned()).or_default();
        for c in certs {
            let anchor = webpki::anchor_from_trusted_cert(&c)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .to_owned();
            entry.anchors.push(anchor);
        }
        Ok(())
    }

    /// Accepts the certificate(s) in the PEM file `path` for `domain` as
    /// they are (a self-signed certificate of a private federation).
    pub fn add_pinned(&mut self, domain: &str, path: &Path) -> Result<(), String> {
        let certs = read_pem(path)?;
        self.domains
            .entry(domain.to_owned())
            .or_default()
            .pinned
            .extend(certs);
        Ok(())
    }

    fn system_roots(&self) -> &[TrustAnchor<'static>] {
        self.roots.get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            for e in &loaded.errors {
                warn!(error = %e, "system trust store");
            }
            loaded
                .certs
                .iter()
                .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
                .map(|a| a.to_owned())
                .collect()
        })
    }

    /// RFC 6120 §13.7.2.1: is `chain` (leaf first) a valid certificate of
    /// the XMPP domain `domain`?
    pub fn verify(&self, chain: &[CertificateDer<'_>], domain: &str) -> Result<(), CertError> {
        let leaf = chain.first().ok_or(CertError::Missing)?;
        let local = self.domains.get(domain);
        if let Some(t) = local
            && t.pinned.iter().any(|p| p.as_ref() == leaf.as_ref())
        {
            return Ok(());
        }
        let anchors: &[TrustAnchor<'static>] = match local {
            Some(t) if !t.anchors.is_empty() => &t.anchors,
            // A pinned certificate only: nothing else is trusted for it.
            Some(t) if !t.pinned.is_empty() => &[],
            _ => self.system_roots(),
        };
        let ee = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| CertError::Untrusted(e.to_string()))?;
        let now = UnixTime::now();
        // A server's certificate may carry serverAuth only, clientAuth only
        // (as the client of an outbound stream), both or no EKU at all.
        let verify = |usage: webpki::KeyUsage| {
            ee.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                anchors,
                &chain[1..],
                now,
                usage,
                None,
                None,
            )
            .map(|_| ())
        };
        verify(webpki::KeyUsage::server_auth())
            .or_else(|_| verify(webpki::KeyUsage::client_auth()))
            .map_err(|e| CertError::Untrusted(format!("{e:?}")))?;
        if names_match(leaf.as_ref(), domain) {
            Ok(())
        } else {
            Err(CertError::WrongName(domain.to_owned()))
        }
    }
}

fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    Ok(certs)
}

/// RFC 6120 §13.7.1.2.1 / RFC 6125 §6: the identifiers a certificate
/// presents for XMPP server use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identities {
    /// `dNSName` SANs (DNS-IDs).
    pub dns: Vec<String>,
    /// `SRVName` otherName SANs (RFC 4985) as `_service.domain`.
    pub srv: Vec<String>,
    /// `id-on-xmppAddr` otherName SANs (RFC 6120 §13.7.1.4).
    pub xmpp: Vec<String>,
    /// Any SAN at all (then the CN is not looked at, RFC 6125 §6.4.4).
    pub has_san: bool,
    /// The subject's common names.
    pub cn: Vec<String>,
}

/// id-on-dnsSRV, RFC 4985.
const OID_SRV_NAME: &str = "1.3.6.1.5.5.7.8.7";
/// id-on-xmppAddr, RFC 6120 §13.7.1.4.
const OID_XMPP_ADDR: &str = "1.3.6.1.5.5.7.8.5";

/// Reads the identities of a DER certificate.
pub fn identities(der: &[u8]) -> Option<Identities> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut ids = Identities::default();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        ids.has_san = !san.value.general_names.is_empty();
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => ids.dns.push((*d).to_owned()),
                GeneralName::OtherName(oid, value) => {
                    let oid = oid.to_id_string();
                    if let Some(s) = other_name_string(value) {
                        if oid == OID_SRV_NAME {
                            ids.srv.push(s);
                        } else if oid == OID_XMPP_ADDR {
                            ids.xmpp.push(s);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    for cn in cert.subject().iter_common_name() {
        if let Ok(s) = cn.as_str() {
            ids.cn.push(s.to_owned());
        }
    }
    Some(ids)
}

/// The string inside `[0] EXPLICIT` IA5String / UTF8String of an otherName.
fn other_name_string(value: &[u8]) -> Option<String> {
    fn header(b: &[u8]) -> Option<(u8, &[u8])> {
        let tag = *b.first()?;
        let first = *b.get(1)?;
        let (len, skip) = if first < 0x80 {
            (first as usize, 2)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 2 {
                return None;
            }
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | *b.get(2 + i)? as usize;
            }
            (len, 2 + n)
        };
        Some((tag, b.get(skip..skip + len)?))
    }
    let (tag, mut inner) = header(value)?;
    if tag == 0xA0 {
        inner = header(inner).map(|(t, v)| if matches!(t, 0x16 | 0x0C) { v } else { &[][..] })?;
    } else if !matches!(tag, 0x16 | 0x0C) {
        return None;
    }
    std::str::from_utf8(inner)
        .ok()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// RFC 6125 §6: does the certificate present `domain` as an XMPP server?
/// DNS-IDs (with §6.4.3 wildcards), SRV-IDs for `_xmpp-server` and
/// `_xmpps-server`, XmppAddr; the CN only when there are no SANs (§6.4.4).
pub fn names_match(der: &[u8], domain: &str) -> bool {
    identities(der).is_some_and(|ids| identities_match(&ids, domain))
}

/// [`names_match`] on already extracted identities.
pub fn identities_match(ids: &Identities, domain: &str) -> bool {
    let domain = normalize(domain);
    if ids.dns.iter().any(|d| dns_id_matches(d, &domain)) {
        return true;
    }
    let srv = |s: &String| {
        let s = normalize(s);
        ["_xmpp-server.", "_xmpps-server."]
            .iter()
            .any(|p| s.strip_prefix(p) == Some(domain.as_str()))
    };
    if ids.srv.iter().any(srv) {
        return true;
    }
    if ids.xmpp.iter().any(|x| normalize(x) == domain) {
        return true;
    }
    !ids.has_san && ids.cn.iter().any(|c| dns_id_matches(c, &domain))
}

fn normalize(s: &str) -> String {
    s.trim_end_matches('.').to_ascii_lowercase()
}

/// RFC 6125 §6.4.1 and §6.4.3: case-insensitive match; `*` only as the
/// whole left-most label, standing for exactly one label, never for a
/// public-suffix-like two-label name (`*.org`).
fn dns_id_matches(presented: &str, domain: &str) -> bool {
    let presented = normalize(presented);
    match presented.strip_prefix("*.") {
        Some(base) => {
            if !base.contains('.') || base.contains('*') {
                return false;
            }
            match domain.split_once('.') {
                Some((label, rest)) => !label.is_empty() && rest == base,
                None => false,
            }
        }
        None => !presented.contains('*') && presented == domain,
    }
}

/// Accepts any certificate during the handshake (it is verified after, see
/// the module comment) but checks the handshake signatures.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for AcceptAny {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Our certificate as the client of an outbound stream (for SASL EXTERNAL
/// at the peer, RFC 6120 §6.4 / XEP-0178).
#[derive(Debug)]
struct ClientIdentity(Arc<ReloadingCert>);

impl rustls::client::ResolvesClientCert for ClientIdentity {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.certified_key()
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// The TLS configurations of s2s streams.
pub(crate) struct TlsConfigs {
    /// Inbound: asks for (and does not require) a client certificate.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Outbound STARTTLS.
    pub starttls: tokio_rustls::TlsConnector,
    /// Outbound direct TLS (ALPN `xmpp-server`).
    pub direct: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for TlsConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfigs").finish_non_exhaustive()
    }
}

impl TlsConfigs {
    pub(crate) fn new(identity: Arc<ReloadingCert>) -> Result<TlsConfigs, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // RFC 7590 §3.1: TLS 1.2 or later.
        let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)?
            .with_client_cert_verifier(Arc::new(AcceptAny(provider.clone())))
            .with_cert_resolver(identity.clone());
        server.alpn_protocols = vec![ALPN_XMPP_SERVER.to_vec()];
        server.send_tls13_tickets = 0;
        let client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_client_cert_resolver(Arc::new(ClientIdentity(identity)));
        let mut direct = client.clone();
        direct.alpn_protocols = vec![ALPN_XMPP_SERVER.to_vec()];
        Ok(TlsConfigs {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            starttls: tokio_rustls::TlsConnector::from(Arc::new(client)),
            direct: tokio_rustls::TlsConnector::from(Arc::new(direct)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(dns: &[&str]) -> Identities {
        Identities {
            dns: dns.iter().map(|s| s.to_string()).collect(),
            has_san: !dns.is_empty(),
            ..Default::default()
        }
    }

    /// RFC 6125 §6.4.3: the wildcard is one whole left-most label.
    #[test]
    fn wildcards() {
        let w = ids(&["*.example.org"]);
        assert!(identities_match(&w, "im.example.org"));
        assert!(identities_match(&w, "IM.Example.ORG."));
        assert!(!identities_match(&w, "example.org"));
        assert!(!identities_match(&w, "a.b.example.org"));
        assert!(!identities_match(&ids(&["*.org"]), "example.org"));
        assert!(!identities_match(
            &ids(&["f*.example.org"]),
            "foo.example.org"
        ));
        assert!(!identities_match(
            &ids(&["*.*.example.org"]),
            "a.b.example.org"
        ));
        assert!(identities_match(&ids(&["example.org"]), "example.org"));
        assert!(!identities_match(&ids(&["example.org"]), "example.net"));
    }

    /// RFC 6125 §6.4.4: the CN counts only when there is no SAN at all.
    #[test]
    fn common_name_only_without_sans() {
        let mut i = Identities {
            cn: vec!["example.org".into()],
            ..Default::default()
        };
        assert!(identities_match(&i, "example.org"));
        i.has_san = true;
        i.dns = vec!["other.example".into()];
        assert!(!identities_match(&i, "example.org"));
    }

    /// SRV-IDs (RFC 6120 §13.7.1.2.1) and XmppAddr read from real DER:
    /// rcgen writes the XmppAddr (UTF8String); the SRV-ID (IA5String) is
    /// checked on hand-made bytes.
    #[test]
    fn srv_id_and_xmpp_addr() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::OtherName((
            vec![1, 3, 6, 1, 5, 5, 7, 8, 5],
            rcgen::OtherNameValue::Utf8String("xmpp.example".into()),
        ))];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let found = identities(cert.der()).unwrap();
        assert_eq!(found.xmpp, ["xmpp.example"]);
        assert!(names_match(cert.der(), "xmpp.example"));
        assert!(!names_match(cert.der(), "other.example"));

        // [0] { IA5String "_xmpp-server.example.net" }
        let s = b"_xmpp-server.example.net";
        let mut v = vec![0xA0, (s.len() + 2) as u8, 0x16, s.len() as u8];
        v.extend_from_slice(s);
        let srv = other_name_string(&v).unwrap();
        assert_eq!(srv, "_xmpp-server.example.net");
        let i = Identities {
            srv: vec![srv],
            has_san: true,
            ..Default::default()
        };
        assert!(identities_match(&i, "example.net"));
        assert!(!identities_match(&i, "xmpp-server.example.net"));
        let client = Identities {
            srv: vec!["_xmpp-client.example.net".into()],
            has_san: true,
            ..Default::default()
        };
        assert!(!identities_match(&client, "example.net"));
    }

    /// A pinned self-signed certificate is trusted for its domain only, and
    /// a CA-signed leaf is trusted through that CA and checked by name.
    #[test]
    fn per_domain_trust() {
        let dir = std::env::temp_dir().join(format!("rookery-s2s-{}", rookery_core::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["a.example".to_owned()]).unwrap();
        std::fs::write(dir.join("a.pem"), ck.cert.pem()).unwrap();
        // A CA and a leaf for b.example.
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["b.example".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();

        let mut t = Trust::new();
        t.add_pinned("a.example", &dir.join("a.pem")).unwrap();
        t.add_ca("b.example", &dir.join("ca.pem")).unwrap();
        t.add_ca("c.example", &dir.join("ca.pem")).unwrap();
        assert_eq!(t.verify(&[ck.cert.der().clone()], "a.example"), Ok(()));
        assert!(matches!(
            t.verify(&[ck.cert.der().clone()], "b.example"),
            Err(CertError::Untrusted(_))
        ));
        assert_eq!(t.verify(&[leaf.der().clone()], "b.example"), Ok(()));
        assert_eq!(
            t.verify(&[leaf.der().clone()], "c.example"),
            Err(CertError::WrongName("c.example".into()))
        );
        assert_eq!(t.verify(&[], "b.example"), Err(CertError::Missing));
        let _ = std::fs::remove_dir_all(dir);
    }
}
