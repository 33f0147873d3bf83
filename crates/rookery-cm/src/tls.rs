//! TLS for client streams: rustls with the ring provider, TLS 1.2 and 1.3 only
//! (RFC 7590 §3.1), a configured certificate or a self-signed one generated on
//! first start and kept in the data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

/// XEP-0368 §3: the ALPN protocol of direct TLS client connections.
pub const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";

/// Errors loading or creating the certificate.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The PEM data could not be used.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where the certificate and key come from.
#[derive(Clone, Debug)]
pub enum CertSource {
    /// PEM files from the configuration.
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// A self-signed certificate for `domain` under `dir`, generated if missing.
    SelfSigned {
        /// Directory for `<domain>.crt` and `<domain>.key`.
        dir: PathBuf,
        /// The XMPP domain (also put in the SAN).
        domain: String,
    },
}

/// Paths of the generated certificate and key for a domain.
pub fn self_signed_paths(dir: &Path, domain: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{domain}.crt")),
        dir.join(format!("{domain}.key")),
    )
}

/// Creates a self-signed ECDSA P-256 certificate (cheap handshakes, DESIGN.md)
/// with the domain as DNS SAN and `CA:FALSE`, so rustls clients accept it
/// when they trust it.
fn generate(cert_path: &Path, key_path: &Path, domain: &str) -> Result<(), TlsError> {
    let mut names = vec![domain.to_owned()];
    if domain == "localhost" {
        names.push("127.0.0.1".to_owned());
        names.push("::1".to_owned());
    }
    let ck =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    if let Some(dir) = cert_path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    write_private(key_path, ck.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert_path, ck.cert.pem()).map_err(io(cert_path))?;
    info!(cert = %cert_path.display(), domain, "generated a self-signed certificate");
    Ok(())
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(data).map_err(io(path))
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    std::fs::write(path, data).map_err(io(path))
}

/// The certificate rustls serves, reloaded when its files change: a
/// renewed certificate (cert-manager, certbot, a rotated Kubernetes Secret)
/// is served to new connections without a restart; connections already up
/// keep theirs. A file that cannot be used is logged and the previous
/// certificate stays.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: std::sync::RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<rustls::sign::CertifiedKey>,
    /// The files' contents it was built from.
    files: (Vec<u8>, Vec<u8>),
}

impl Loaded {
    fn read(
        provider: &rustls::crypto::CryptoProvider,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<Loaded, TlsError> {
        let cert_pem = std::fs::read(cert_path).map_err(io(cert_path))?;
        let key_pem = std::fs::read(key_path).map_err(io(key_path))?;
        let key = certified_key(provider, &cert_pem, &key_pem, (cert_path, key_path))?;
        Ok(Loaded {
            key: Arc::new(key),
            files: (cert_pem, key_pem),
        })
    }
}

impl ReloadingCert {
    /// Loads the files again if their contents changed; returns whether a
    /// new certificate is now served.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let cert_pem = std::fs::read(&self.cert_path).map_err(io(&self.cert_path))?;
        let key_pem = std::fs::read(&self.key_path).map_err(io(&self.key_path))?;
        let unchanged = self
            .current
            .read()
            .is_ok_and(|c| c.files.0 == cert_pem && c.files.1 == key_pem);
        if unchanged {
            return Ok(false);
        }
        let loaded = Loaded::read(&self.provider, &self.cert_path, &self.key_path)?;
        if let Ok(mut c) = self.current.write() {
            *c = loaded;
        }
        info!(cert = %self.cert_path.display(), "reloaded the TLS certificate");
        Ok(true)
    }

    /// The certificate and key served now; also the client certificate of
    /// outbound server-to-server streams (RFC 6120 §6.4, SASL EXTERNAL).
    pub fn certified_key(&self) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.current.read().ok().map(|c| c.key.clone())
    }

    /// Checks the files every `every` until the process ends.
    pub fn watch(self: Arc<Self>, every: Duration) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = self.reload() {
                    warn!(error = %e, "TLS certificate not reloaded; serving the previous one");
                }
            }
        });
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.certified_key()
    }
}

/// A certificate chain and its private key, checked to belong together.
fn certified_key(
    provider: &rustls::crypto::CryptoProvider,
    cert_pem: &[u8],
    key_pem: &[u8],
    (cert_path, key_path): (&Path, &Path),
) -> Result<rustls::sign::CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("{}: {e}", cert_path.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(format!(
            "{}: no certificate",
            cert_path.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::Pem(format!("{}: {e}", key_path.display())))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Pem(format!("{}: {e}", key_path.display())))?;
    let ck = rustls::sign::CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| {
        TlsError::Pem(format!(
            "{} does not match {}: {e}",
            key_path.display(),
            cert_path.display()
        ))
    })?;
    Ok(ck)
}

/// Loads (or generates) the certificate and builds the rustls configuration.
pub fn server_config(source: &CertSource) -> Result<Arc<ServerConfig>, TlsError> {
    Ok(reloading_server_config(source)?.0)
}

/// [`server_config`], and the certificate it serves, which
/// [`ReloadingCert::watch`] keeps up to date with its files.
pub fn reloading_server_config(
    source: &CertSource,
) -> Result<(Arc<ServerConfig>, Arc<ReloadingCert>), TlsError> {
    let (cert_path, key_path) = match source {
        CertSource::Files { cert, key } => (cert.clone(), key.clone()),
        CertSource::SelfSigned { dir, domain } => {
            let (c, k) = self_signed_paths(dir, domain);
            if !c.exists() || !k.exists() {
                generate(&c, &k, domain)?;
            }
            (c, k)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let loaded = Loaded::read(&provider, &cert_path, &key_path)?;
    let resolver = Arc::new(ReloadingCert {
        cert_path,
        key_path,
        provider: provider.clone(),
        current: std::sync::RwLock::new(loaded),
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![ALPN_XMPP_CLIENT.to_vec()];
    // Fewer tickets, less memory; session resumption still works.
    config.send_tls13_tickets = 1;
    Ok((Arc::new(config), resolver))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_reuses() {
        let dir = tempfile_dir();
        let src = CertSource::SelfSigned {
            dir: dir.clone(),
            domain: "example.org".into(),
        };
        server_config(&src).unwrap();
        let (c, k) = self_signed_paths(&dir, "example.org");
        let first = std::fs::read(&c).unwrap();
        server_config(&src).unwrap();
        assert_eq!(
            std::fs::read(&c).unwrap(),
            first,
            "certificate must be kept"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let bad = CertSource::Files {
            cert: dir.join("missing.crt"),
            key: k,
        };
        assert!(server_config(&bad).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A renewed certificate is served from the next handshake; a broken
    /// file (or a key of another certificate) leaves the previous one.
    #[test]
    fn reloads_a_changed_certificate_and_keeps_the_old_on_errors() {
        let dir = tempfile_dir();
        let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
        let write = |name: &str| {
            let ck = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
            std::fs::write(&cert, ck.cert.pem()).unwrap();
            std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
            (ck.cert.pem(), ck.signing_key.serialize_pem())
        };
        write("one.example");
        let (_, r) = reloading_server_config(&CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        })
        .unwrap();
        let served = || r.current.read().unwrap().key.cert[0].clone();
        let first = served();
        assert!(!r.reload().unwrap(), "nothing changed");
        let (second_pem, _) = write("two.example");
        assert!(r.reload().unwrap());
        let second = served();
        assert_ne!(first, second);
        assert_eq!(
            second,
            CertificateDer::from_pem_slice(second_pem.as_bytes()).unwrap()
        );
        // Half-written file: error, the second stays.
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nAAAA").unwrap();
        assert!(r.reload().is_err());
        assert_eq!(served(), second);
        // A key that is not the certificate's: refused.
        let other = rcgen::generate_simple_self_signed(vec!["three.example".to_owned()]).unwrap();
        std::fs::write(&cert, second_pem).unwrap();
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        let e = r.reload().unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        assert_eq!(served(), second);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("rookery-tls-{}", rookery_core::new_id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
