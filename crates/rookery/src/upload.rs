//! Wiring of XEP-0363 HTTP File Upload (docs/decisions/0020-http-upload.md):
//! the file store and its cleanup, the routes of the `[web]` listener, and
//! the slot service on its domain.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rookery_session::LocalSessions;
use rookery_upload::{DiskStore, FileStore, Signer, Upload, UploadHttp};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::config::Config;

/// The HTTP side of uploads when `[upload] enabled`: opens the store,
/// starts its cleanup on `tasks`, and returns the routes for the web
/// listener and the signer of slot URLs. `secret`: the installation secret.
pub(crate) fn http(
    config: &Config,
    secret: &[u8],
    shutdown: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<Option<(UploadHttp, Signer)>> {
    let up = &config.upload;
    if !up.enabled {
        return Ok(None);
    }
    let dir = if up.directory.as_os_str().is_empty() {
        config.server.data_dir.join("upload")
    } else {
        up.directory.clone()
    };
    let store: Arc<dyn FileStore> = Arc::new(
        DiskStore::open(&dir)
            .with_context(|| format!("opening the upload directory {}", dir.display()))?,
    );
    if up.file_ttl_secs > 0 {
        tasks.spawn(rookery_upload::cleanup(
            store.clone(),
            Duration::from_secs(up.file_ttl_secs),
            shutdown.clone(),
        ));
    }
    let signer = up.signer(secret);
    let http = UploadHttp::new(up, store, signer.clone(), &config.web.cors_allow_origin);
    Ok(Some((http, signer)))
}

/// Starts the slot service and hands it to the session service; slot URLs
/// start with `[upload] public_url`, or else `web_url` (the `[web]`
/// listener's public URL, empty when it has none).
pub(crate) fn start_service(
    config: &Config,
    web_url: &str,
    signer: Signer,
    sessions: &Arc<LocalSessions>,
) {
    let up = &config.upload;
    let base = if up.public_url.is_empty() {
        web_url
    } else {
        up.public_url.as_str()
    };
    if base.is_empty() {
        warn!(domain = %up.domain, "no [web] listener and no upload.public_url: HTTP upload not offered");
        return;
    }
    let weak: std::sync::Weak<LocalSessions> = Arc::downgrade(sessions);
    let router: std::sync::Weak<dyn rookery_core::ComponentRouter> = weak;
    let upload = Upload::start(up, &config.server.domain, base, signer, router);
    info!(domain = %up.domain, base_url = %base, "HTTP upload service");
    sessions.add_component(upload);
}
