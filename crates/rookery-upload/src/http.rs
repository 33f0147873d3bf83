//! The HTTP side of XEP-0363 (§7): `PUT` and `GET` of slot URLs, as routes
//! the `[web]` listener serves (docs/decisions/0020-http-upload.md).
//!
//! A PUT is checked against its signed URL alone ([`Signer::verify`]),
//! then against its headers before a byte of the body is read, then its
//! body streams into the [`FileStore`], which keeps nothing unless exactly
//! the announced bytes arrived. A GET is answered with headers that keep a
//! browser from running what it gets (XEP-0363 §9.1).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::TryStreamExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tracing::{debug, info, warn};

use crate::service::{media_type, type_allowed};
use crate::slot::{FileId, PATH_PREFIX, Signer, SlotError};
use crate::store::{FileMeta, FileStore, PutError};

/// XEP-0363 §9.1: nothing from the upload origin runs, nothing embeds it;
/// `sandbox` also gives a document opened directly a unique origin.
const CSP: &str = "default-src 'none'; frame-ancestors 'none'; sandbox";

/// RFC 8187 `attr-char`: what stays unencoded in `filename*`.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// The upload routes of the web listener.
#[derive(Clone, Debug)]
pub struct UploadHttp {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn FileStore>,
    signer: Signer,
    allowed_content_types: Vec<String>,
    /// 0: files are kept for ever.
    file_ttl_secs: u64,
    cors_allow_origin: Option<HeaderValue>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl UploadHttp {
    /// The routes over `store`, checking slots with `signer`; CORS answers
    /// carry `cors_allow_origin` (the `[web]` setting).
    pub fn new(
        config: &crate::UploadConfig,
        store: Arc<dyn FileStore>,
        signer: Signer,
        cors_allow_origin: &str,
    ) -> UploadHttp {
        UploadHttp {
            inner: Arc::new(Inner {
                store,
                signer,
                allowed_content_types: config.allowed_content_types.clone(),
                file_ttl_secs: config.file_ttl_secs,
                cors_allow_origin: HeaderValue::from_str(cors_allow_origin).ok(),
            }),
        }
    }

    /// `/upload/{id}/{name}`: GET (and HEAD), PUT, OPTIONS.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                &format!("{PATH_PREFIX}/{{id}}/{{name}}"),
                get(get_file).put(put_file).options(preflight),
            )
            .with_state(self.clone())
    }

    /// XEP-0363 §8: the CORS headers of every answer, so that web clients
    /// on other origins can PUT and GET.
    fn cors(&self, mut r: Response) -> Response {
        let h = r.headers_mut();
        if let Some(origin) = &self.inner.cors_allow_origin {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, PUT, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
        r
    }
}

fn status(code: StatusCode, why: &'static str) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        why,
    )
        .into_response()
}

async fn preflight(State(up): State<UploadHttp>) -> Response {
    up.cors(StatusCode::NO_CONTENT.into_response())
}

async fn put_file(
    State(up): State<UploadHttp>,
    Path((id, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = put_inner(&up, &id, &name, query.as_deref(), &headers, body).await;
    up.cors(r)
}

async fn put_inner(
    up: &UploadHttp,
    id: &str,
    name: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let Some(id) = FileId::parse(id) else {
        return status(StatusCode::NOT_FOUND, "no such slot\n");
    };
    let slot = match up
        .inner
        .signer
        .verify(id, name, query.unwrap_or_default(), unix_now())
    {
        Ok(s) => s,
        Err(SlotError::Expired) => return status(StatusCode::FORBIDDEN, "slot expired\n"),
        Err(e) => {
            debug!(error = %e, "PUT refused");
            return status(StatusCode::FORBIDDEN, "not a valid slot\n");
        }
    };
    // §7: the Content-Length must be the size of the slot. Checked before
    // the body is read: a larger body is refused without a byte written.
    let length = match headers.get(header::CONTENT_LENGTH) {
        None => return status(StatusCode::LENGTH_REQUIRED, "Content-Length required\n"),
        Some(v) => match v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(n) => n,
            None => return status(StatusCode::BAD_REQUEST, "bad Content-Length\n"),
        },
    };
    if length > slot.size {
        return status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than the slot's size\n",
        );
    }
    if length < slot.size {
        return status(StatusCode::BAD_REQUEST, "not the slot's size\n");
    }
    // §7: the Content-Type, if the slot named one, must be it.
    let sent = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty());
    let content_type = if slot.content_type.is_empty() {
        match sent {
            None => "application/octet-stream".to_owned(),
            Some(t) if media_type(t).is_some() => t.trim().to_owned(),
            Some(_) => {
                return status(StatusCode::UNSUPPORTED_MEDIA_TYPE, "bad Content-Type\n");
            }
        }
    } else {
        match sent.and_then(media_type) {
            Some(m) if media_type(&slot.content_type).as_deref() == Some(m.as_str()) => {
                slot.content_type.clone()
            }
            _ => {
                return status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "not the slot's Content-Type\n",
                );
            }
        }
    };
    let media = media_type(&content_type).unwrap_or_default();
    if !type_allowed(&up.inner.allowed_content_types, &media) {
        return status(StatusCode::UNSUPPORTED_MEDIA_TYPE, "type not allowed\n");
    }
    let meta = FileMeta {
        filename: slot.filename.clone(),
        content_type,
        size: slot.size,
        uploaded: unix_now(),
    };
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    match up.inner.store.put(&slot.id, &meta, Box::pin(stream)).await {
        Ok(()) => {
            info!(id = %slot.id, size = slot.size, "file uploaded");
            status(StatusCode::CREATED, "created\n")
        }
        Err(PutError::Exists) => status(StatusCode::CONFLICT, "already uploaded\n"),
        Err(PutError::TooLong(_)) => status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than the slot's size\n",
        ),
        Err(PutError::Incomplete(e)) => {
            debug!(id = %slot.id, error = %e, "upload incomplete");
            status(
                StatusCode::BAD_REQUEST,
                "body shorter than Content-Length\n",
            )
        }
        Err(e) => {
            warn!(id = %slot.id, error = %e, "cannot store an upload");
            status(StatusCode::INTERNAL_SERVER_ERROR, "cannot store the file\n")
        }
    }
}

async fn get_file(
    State(up): State<UploadHttp>,
    Path((id, name)): Path<(String, String)>,
) -> Response {
    let r = get_inner(&up, &id, &name).await;
    up.cors(r)
}

async fn get_inner(up: &UploadHttp, id: &str, name: &str) -> Response {
    let not_found = || status(StatusCode::NOT_FOUND, "not found\n");
    let Some(id) = FileId::parse(id) else {
        return not_found();
    };
    let (meta, stream) = match up.inner.store.get(&id).await {
        Ok(Some(f)) => f,
        Ok(None) => return not_found(),
        Err(e) => {
            warn!(%id, error = %e, "cannot read an upload");
            return status(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n");
        }
    };
    // The id alone finds the file; the name must be the one it was
    // uploaded under, as in the URL handed out.
    if meta.filename != name {
        return not_found();
    }
    let ttl = up.inner.file_ttl_secs;
    if ttl > 0 && meta.uploaded.saturating_add(ttl) <= unix_now() {
        // Expired, not yet collected by the cleanup task.
        return not_found();
    }
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    let media = media_type(&meta.content_type).unwrap_or_default();
    let content_type = HeaderValue::from_str(&meta.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
    if let Ok(v) = HeaderValue::from_str(&disposition(&media, &meta.filename)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// `inline` only for media a browser displays without running anything
/// (images other than SVG, audio, video); everything else is a download.
/// The name as RFC 6266 §4.3 wants it: an ASCII fallback and `filename*`.
fn disposition(media: &str, filename: &str) -> String {
    let top = media.split('/').next().unwrap_or_default();
    let inline = matches!(top, "image" | "audio" | "video") && !media.contains("svg");
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{}; filename=\"{ascii}\"; filename*=UTF-8''{}",
        if inline { "inline" } else { "attachment" },
        utf8_percent_encode(filename, ATTR_CHAR)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions() {
        assert_eq!(
            disposition("image/jpeg", "très cool.jpg"),
            "inline; filename=\"tr_s cool.jpg\"; filename*=UTF-8''tr%C3%A8s%20cool.jpg"
        );
        assert!(disposition("image/svg+xml", "a.svg").starts_with("attachment;"));
        assert!(disposition("text/html", "a.html").starts_with("attachment;"));
        assert!(disposition("application/pdf", "a.pdf").starts_with("attachment;"));
        assert!(disposition("video/mp4", "a.mp4").starts_with("inline;"));
        assert!(disposition("audio/ogg", "a.ogg").starts_with("inline;"));
        assert_eq!(
            disposition("text/plain", "a\"b\\c.txt"),
            "attachment; filename=\"a_b_c.txt\"; filename*=UTF-8''a%22b%5Cc.txt"
        );
    }
}
