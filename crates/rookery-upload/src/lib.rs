//! XEP-0363: HTTP File Upload (docs/decisions/0020-http-upload.md).
//!
//! Two halves that share nothing but a key:
//!
//! - the slot service ([`Upload`], a [`Component`] on `upload.<domain>`):
//!   disco#info with the `max-file-size` form (§3), slot requests with
//!   their limits and quotas (§4, §6); it signs each slot ([`slot`]);
//! - the HTTP side ([`UploadHttp`], routes merged into the `[web]`
//!   listener): `PUT` checks the slot's signature, size and type and
//!   streams the body into a [`FileStore`]; `GET` serves it with headers
//!   that keep a browser from running it.
//!
//! A cleanup task ([`cleanup`]) deletes files after `file_ttl_secs`.

pub mod http;
mod service;
pub mod slot;
pub mod store;

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use rookery_core::{Component, ComponentRouter, Stanza};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

pub use http::UploadHttp;
pub use slot::{FileId, Signer, Slot, SlotError};
pub use store::{ByteStream, DiskStore, FileMeta, FileStore, PutError};

/// The namespace of XEP-0363 (§11.1).
pub const NS_UPLOAD: &str = "urn:xmpp:http:upload:0";

/// The XEP this crate implements, with the version it follows.
pub const SPEC: (u16, &str) = (363, "1.2.0");

/// `[upload]` section of the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadConfig {
    /// Runs the slot service and serves slot URLs on the `[web]` listener.
    pub enabled: bool,
    /// The service's domain; empty means `upload.<server domain>`.
    pub domain: String,
    /// Largest file, bytes (announced in disco#info, XEP-0363 §3).
    pub max_file_size: u64,
    /// Media types a file may have: `type/subtype` or `type/*`; empty
    /// allows any.
    pub allowed_content_types: Vec<String>,
    /// Bytes one user may be granted slots for within `quota_window_secs`;
    /// 0 for no quota.
    pub quota_bytes_per_user: u64,
    /// The window of the per-user quota, seconds.
    pub quota_window_secs: u64,
    /// How long a PUT URL is good for, seconds (XEP-0363 §8 recommends
    /// about 300).
    pub slot_ttl_secs: u64,
    /// Seconds after its upload at which a file is deleted; 0 keeps files
    /// for ever.
    pub file_ttl_secs: u64,
    /// Where files are stored; empty means `<server.data_dir>/upload`.
    pub directory: PathBuf,
    /// The base URL of slot URLs, e.g. `https://upload.example.org`; empty
    /// means the `[web]` listener's public URL.
    pub public_url: String,
    /// The key that signs slot URLs (at least 16 characters); empty means
    /// one derived from `<server.data_dir>/secret`. Every process that
    /// serves `[web]` in a cluster must have the same.
    pub secret: String,
    /// Domains besides the server's own whose users may request slots.
    pub allowed_domains: Vec<String>,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            enabled: true,
            domain: String::new(),
            max_file_size: 10 * 1024 * 1024,
            allowed_content_types: Vec::new(),
            quota_bytes_per_user: 100 * 1024 * 1024,
            quota_window_secs: 24 * 3600,
            slot_ttl_secs: 300,
            file_ttl_secs: 7 * 24 * 3600,
            directory: PathBuf::new(),
            public_url: String::new(),
            secret: String::new(),
            allowed_domains: Vec::new(),
        }
    }
}

impl UploadConfig {
    /// Start-up checks; fills in the domain (`upload.<server_domain>`) and
    /// prepares the domains (RFC 7622).
    pub fn check(&mut self, server_domain: &str) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let d = if self.domain.is_empty() {
            format!("upload.{server_domain}")
        } else {
            self.domain.clone()
        };
        self.domain = rookery_jid::prep_domainpart(&d)
            .map_err(|e| format!("upload.domain {d:?}: {e}"))?
            .into_owned();
        if self.domain == server_domain {
            return Err("upload.domain must differ from server.domain".into());
        }
        for d in &mut self.allowed_domains {
            let prepped = rookery_jid::prep_domainpart(d)
                .map_err(|e| format!("upload.allowed_domains {d:?}: {e}"))?
                .into_owned();
            *d = prepped;
        }
        if self.max_file_size == 0 {
            return Err("upload.max_file_size must be at least 1".into());
        }
        if self.slot_ttl_secs == 0 || self.quota_window_secs == 0 {
            return Err(
                "upload.slot_ttl_secs and upload.quota_window_secs must be at least 1".into(),
            );
        }
        if self.file_ttl_secs != 0 && self.file_ttl_secs <= self.slot_ttl_secs {
            return Err(
                "upload.file_ttl_secs must be 0 (keep) or longer than upload.slot_ttl_secs".into(),
            );
        }
        for t in &self.allowed_content_types {
            if service::media_type(t).is_none() && !t.ends_with("/*") {
                return Err(format!(
                    "upload.allowed_content_types: {t:?} is not type/subtype or type/*"
                ));
            }
        }
        if !self.public_url.is_empty()
            && !self.public_url.starts_with("https://")
            && !self.public_url.starts_with("http://")
        {
            return Err(format!(
                "upload.public_url must be an http:// or https:// URL, not {:?}",
                self.public_url
            ));
        }
        if !self.secret.is_empty() && self.secret.len() < 16 {
            return Err("upload.secret must be at least 16 characters (or empty)".into());
        }
        Ok(())
    }

    /// The signer of slot URLs: from `secret`, or derived from the
    /// installation secret.
    pub fn signer(&self, installation_secret: &[u8]) -> Signer {
        let secret = if self.secret.is_empty() {
            installation_secret
        } else {
            self.secret.as_bytes()
        };
        Signer::from_installation_secret(secret)
    }
}

/// The slot service as the session service sees it: a [`Component`] whose
/// stanzas one task handles in order.
#[derive(Debug)]
pub struct Upload {
    domain: String,
    queue: mpsc::UnboundedSender<Stanza>,
}

impl Upload {
    /// Starts the service on `config.domain` (checked) for the accounts of
    /// `server_domain`; slot URLs start with `base_url` (no trailing
    /// slash). `router` is weak because the session service holds the
    /// component.
    pub fn start(
        config: &UploadConfig,
        server_domain: &str,
        base_url: &str,
        signer: Signer,
        router: Weak<dyn ComponentRouter>,
    ) -> Arc<Upload> {
        let (tx, rx) = mpsc::unbounded_channel();
        let svc = service::Service::new(config, server_domain, base_url, signer, router);
        tokio::spawn(svc.run(rx));
        Arc::new(Upload {
            domain: config.domain.clone(),
            queue: tx,
        })
    }
}

impl Component for Upload {
    fn domain(&self) -> &str {
        &self.domain
    }

    fn handle(&self, stanza: Stanza) {
        if self.queue.send(stanza).is_err() {
            tracing::warn!(domain = %self.domain, "the upload service has stopped; stanza dropped");
        }
    }
}

/// Deletes the files uploaded more than `file_ttl` ago, now and then
/// every `file_ttl / 8` (at least a second, at most an hour), until
/// `shutdown`. Several processes may run it on one shared directory.
pub async fn cleanup(
    store: Arc<dyn FileStore>,
    file_ttl: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = (file_ttl / 8).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    loop {
        let before = SystemTime::now() - file_ttl;
        match store.list_expired(before).await {
            Ok(ids) => {
                for id in ids {
                    match store.delete(&id).await {
                        Ok(_) => tracing::debug!(%id, "expired upload deleted"),
                        Err(e) => {
                            tracing::warn!(%id, error = %e, "cannot delete an expired upload")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list expired uploads"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// docs/xeps.md lists XEP-0363 with the version this crate follows.
    #[test]
    fn xeps_doc_lists_the_spec() {
        let doc = include_str!("../../../docs/xeps.md");
        let row = format!("| XEP-{:04} | {} |", SPEC.0, SPEC.1);
        assert!(doc.contains(&row), "docs/xeps.md lacks {row}");
    }

    #[test]
    fn config_checks() {
        let mut c = UploadConfig::default();
        c.check("example.org").unwrap();
        assert_eq!(c.domain, "upload.example.org");
        for bad in [
            UploadConfig {
                domain: "example.org".into(),
                ..Default::default()
            },
            UploadConfig {
                max_file_size: 0,
                ..Default::default()
            },
            UploadConfig {
                file_ttl_secs: 300,
                ..Default::default()
            },
            UploadConfig {
                allowed_content_types: vec!["image".into()],
                ..Default::default()
            },
            UploadConfig {
                secret: "short".into(),
                ..Default::default()
            },
            UploadConfig {
                public_url: "upload.example.org".into(),
                ..Default::default()
            },
        ] {
            let mut bad = bad;
            assert!(bad.check("example.org").is_err(), "{bad:?}");
        }
        let mut keep = UploadConfig {
            file_ttl_secs: 0,
            allowed_content_types: vec!["image/*".into(), "application/pdf".into()],
            ..Default::default()
        };
        keep.check("example.org").unwrap();
    }
}
