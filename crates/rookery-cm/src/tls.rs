//! TLS for client streams: rustls with the ring provider, TLS 1.2 and 1.3 only
//! (RFC 7590 §3.1), a configured certificate or a self-signed one generated on
//! first start and kept in the data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::info;

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

/// Loads (or generates) the certificate and builds the rustls configuration.
pub fn server_config(source: &CertSource) -> Result<Arc<ServerConfig>, TlsError> {
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
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| TlsError::Pem(format!("{}: {e}", cert_path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("{}: {e}", cert_path.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(format!(
            "{}: no certificate",
            cert_path.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| TlsError::Pem(format!("{}: {e}", key_path.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![ALPN_XMPP_CLIENT.to_vec()];
    // Fewer tickets, less memory; session resumption still works.
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
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

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("rookery-tls-{}", rookery_core::new_id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
