//! The slot service's task: every stanza for `upload.<domain>`, in order.

use std::collections::{HashMap, VecDeque};
use std::sync::Weak;
use std::time::{SystemTime, UNIX_EPOCH};

use rookery_core::{ComponentRouter, Element, Stanza, StanzaError, StanzaKind};
use rookery_xml::{Node, ns};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::slot::{FileId, Signer, Slot};
use crate::{NS_UPLOAD, UploadConfig};

/// The longest file name taken, bytes (XEP-0363 1.1.0 counts it in bytes;
/// 255 is what file systems keep).
const MAX_FILENAME_BYTES: usize = 255;

/// The media type of a `Content-Type` value, lowercased, without
/// parameters: `Some("image/jpeg")` for `Image/JPEG; q=1`; `None` unless
/// it is `type/subtype` of RFC 9110 token characters.
pub(crate) fn media_type(value: &str) -> Option<String> {
    let essence = value.split(';').next()?.trim();
    let (t, s) = essence.split_once('/')?;
    let token = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    (token(t) && token(s)).then(|| essence.to_ascii_lowercase())
}

/// Whether `media` (a [`media_type`]) is in `allowed` (`type/subtype` or
/// `type/*`; empty allows all).
pub(crate) fn type_allowed(allowed: &[String], media: &str) -> bool {
    allowed.is_empty()
        || allowed.iter().any(|a| {
            let a = a.trim().to_ascii_lowercase();
            match a.strip_suffix("/*") {
                Some(top) => media.split('/').next() == Some(top),
                None => media_type(&a).as_deref() == Some(media),
            }
        })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// XEP-0082 DateTime (UTC) of a unix time.
fn stamp(unix: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

/// Why a slot is refused: the stanza error and its application-specific
/// element (XEP-0363 §6).
type Refusal = Box<(StanzaError, Option<Element>)>;

pub(crate) struct Service {
    config: UploadConfig,
    server_domain: String,
    base_url: String,
    signer: Signer,
    router: Weak<dyn ComponentRouter>,
    /// Slots granted per account (bare JID) within the quota window:
    /// (unix time, bytes), oldest first.
    granted: HashMap<String, VecDeque<(u64, u64)>>,
}

impl Service {
    pub(crate) fn new(
        config: &UploadConfig,
        server_domain: &str,
        base_url: &str,
        signer: Signer,
        router: Weak<dyn ComponentRouter>,
    ) -> Service {
        Service {
            config: config.clone(),
            server_domain: server_domain.to_owned(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            signer,
            router,
            granted: HashMap::new(),
        }
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Stanza>) {
        info!(domain = %self.config.domain, base_url = %self.base_url, "upload service started");
        while let Some(st) = rx.recv().await {
            let Some(reply) = self.handle(&st, unix_now()) else {
                continue;
            };
            let Some(router) = self.router.upgrade() else {
                return;
            };
            match Stanza::parse(reply) {
                Ok(r) => router.route_from_component(r).await,
                Err((_, e)) => warn!(error = %e, "the upload service built a bad stanza"),
            }
        }
    }

    /// The answer to one stanza, if any.
    fn handle(&mut self, st: &Stanza, now: u64) -> Option<Element> {
        match st.kind() {
            StanzaKind::Iq if st.is_iq_request() => {}
            // Nothing to say to presence; messages get an error (RFC 6120
            // §8.3) unless they are errors themselves.
            StanzaKind::Message => return st.error_reply(&StanzaError::service_unavailable()),
            _ => return None,
        }
        let q = st.element().first_child();
        let to_service = st
            .to()
            .is_some_and(|t| t.node().is_none() && t.resource().is_none());
        match (st.stanza_type(), q.map(|q| (q.name(), q.ns()))) {
            (Some("get"), Some(("query", ns::DISCO_INFO)))
                if to_service && q.and_then(|q| q.attr("node")).is_none() =>
            {
                Some(st.iq_result(Some(self.disco_info())))
            }
            (Some("get"), Some(("query", ns::DISCO_ITEMS)))
                if to_service && q.and_then(|q| q.attr("node")).is_none() =>
            {
                Some(st.iq_result(Some(Element::new_static("query", ns::DISCO_ITEMS))))
            }
            (Some("get"), Some(("request", NS_UPLOAD))) if to_service => {
                let req = q.cloned()?;
                Some(match self.request(st, &req, now) {
                    Ok(slot) => st.iq_result(Some(slot)),
                    Err(refusal) => {
                        let (e, app) = *refusal;
                        error_reply(st, &e, app)?
                    }
                })
            }
            _ => st.error_reply(&StanzaError::service_unavailable()),
        }
    }

    /// §3: the identity, the feature and the `max-file-size` form (XEP-0128).
    fn disco_info(&self) -> Element {
        let field = |var: &str, ty: Option<&str>, value: String| {
            let mut f = Element::new_static("field", ns::DATA_FORMS).with_attr("var", var);
            if let Some(ty) = ty {
                f.set_attr("type", ty);
            }
            f.with_child(Element::new_static("value", ns::DATA_FORMS).with_text(value))
        };
        Element::new_static("query", ns::DISCO_INFO)
            .with_child(
                Element::new_static("identity", ns::DISCO_INFO)
                    .with_attr("category", "store")
                    .with_attr("type", "file")
                    .with_attr("name", "HTTP File Upload"),
            )
            .with_child(feature(ns::DISCO_INFO))
            .with_child(feature(NS_UPLOAD))
            .with_child(
                Element::new_static("x", ns::DATA_FORMS)
                    .with_attr("type", "result")
                    .with_child(field("FORM_TYPE", Some("hidden"), NS_UPLOAD.to_owned()))
                    .with_child(field(
                        "max-file-size",
                        None,
                        self.config.max_file_size.to_string(),
                    )),
            )
    }

    /// §4 and §6: a slot, or why not.
    fn request(&mut self, st: &Stanza, req: &Element, now: u64) -> Result<Element, Refusal> {
        let from = st
            .from()
            .ok_or_else(|| Box::new((StanzaError::bad_request("no sender"), None)))?;
        // §6 Example 13: who may not upload gets <forbidden/>.
        if from.node().is_none()
            || (from.domain() != self.server_domain
                && !self
                    .config
                    .allowed_domains
                    .iter()
                    .any(|d| d == from.domain()))
        {
            return Err(Box::new((
                StanzaError::forbidden().with_text("Only local users may upload files"),
                None,
            )));
        }
        let filename = req.attr("filename").unwrap_or_default();
        if filename.is_empty()
            || filename.len() > MAX_FILENAME_BYTES
            || filename
                .chars()
                .any(|c| c == '/' || c == '\\' || c.is_control())
        {
            return Err(Box::new((
                StanzaError::bad_request("Invalid file name"),
                None,
            )));
        }
        let size = req
            .attr("size")
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|s| *s > 0)
            .ok_or_else(|| Box::new((StanzaError::bad_request("Invalid file size"), None)))?;
        let content_type = match req.attr("content-type").filter(|t| !t.is_empty()) {
            Some(t) => {
                let media = media_type(t).ok_or_else(|| {
                    Box::new((StanzaError::bad_request("Invalid content type"), None))
                })?;
                // What the PUT must repeat; parameters (`charset=…`) are
                // kept only if they are plain visible ASCII.
                let kept = if t.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                    t.trim().to_owned()
                } else {
                    media.clone()
                };
                Some((media, kept))
            }
            None => None,
        };
        // §6 Example 11.
        let max = self.config.max_file_size;
        if size > max {
            return Err(Box::new((
                StanzaError::not_acceptable().with_text(format!(
                    "File too large. The maximum file size is {max} bytes"
                )),
                Some(Element::new_static("file-too-large", NS_UPLOAD).with_child(
                    Element::new_static("max-file-size", NS_UPLOAD).with_text(max.to_string()),
                )),
            )));
        }
        let media = content_type
            .as_ref()
            .map_or("application/octet-stream", |(m, _)| m.as_str());
        if !type_allowed(&self.config.allowed_content_types, media) {
            return Err(Box::new((
                StanzaError::not_acceptable()
                    .with_text(format!("Files of type {media} are not allowed")),
                None,
            )));
        }
        // §6 Example 12: the quota, with when to retry.
        let account = from.to_bare().as_str().to_owned();
        if let Some(retry) = self.over_quota(&account, size, now) {
            let quota = self.config.quota_bytes_per_user;
            let window = self.config.quota_window_secs;
            return Err(Box::new((
                StanzaError::resource_constraint().with_text(format!(
                    "Quota reached. You can only upload {quota} bytes in {window} seconds"
                )),
                Some(Element::new_static("retry", NS_UPLOAD).with_attr("stamp", stamp(retry))),
            )));
        }
        let slot = Slot {
            id: FileId::random(),
            filename: filename.to_owned(),
            size,
            content_type: content_type.map(|(_, kept)| kept).unwrap_or_default(),
            expires: now + self.config.slot_ttl_secs,
        };
        if self.config.quota_bytes_per_user > 0 {
            self.granted
                .entry(account)
                .or_default()
                .push_back((now, size));
        }
        debug!(from = %from, id = %slot.id, size, "upload slot granted");
        let base = &self.base_url;
        Ok(Element::new_static("slot", NS_UPLOAD)
            .with_child(
                Element::new_static("put", NS_UPLOAD)
                    .with_attr("url", format!("{base}{}", self.signer.put_path(&slot))),
            )
            .with_child(
                Element::new_static("get", NS_UPLOAD)
                    .with_attr("url", format!("{base}{}", Signer::get_path(&slot))),
            ))
    }

    /// `Some(when the request would fit)` if granting `size` more bytes to
    /// `account` now would exceed its quota. Forgets grants older than the
    /// window.
    fn over_quota(&mut self, account: &str, size: u64, now: u64) -> Option<u64> {
        let quota = self.config.quota_bytes_per_user;
        if quota == 0 {
            return None;
        }
        let window = self.config.quota_window_secs;
        let start = now.saturating_sub(window);
        // Forget every account's old grants now and then, not only this one's.
        if self.granted.len() > 1024 {
            self.granted
                .retain(|_, g| g.back().is_some_and(|(t, _)| *t > start));
        }
        let grants = self.granted.entry(account.to_owned()).or_default();
        while grants.front().is_some_and(|(t, _)| *t <= start) {
            grants.pop_front();
        }
        let used: u64 = grants.iter().map(|(_, b)| b).sum();
        if used.saturating_add(size) <= quota {
            return None;
        }
        if size > quota {
            // Never fits: retry after the whole window, when nothing counts.
            return Some(now + window);
        }
        // The oldest grants leave the window one by one.
        let mut left = used;
        for (t, b) in grants.iter() {
            left -= b;
            if left + size <= quota {
                return Some(t + window);
            }
        }
        Some(now + window)
    }
}

fn feature(var: &str) -> Element {
    Element::new_static("feature", ns::DISCO_INFO).with_attr("var", var)
}

/// The error reply to `st` (which it contains, as in §6's examples), with
/// the application-specific element `app` in `<error/>`.
fn error_reply(st: &Stanza, e: &StanzaError, app: Option<Element>) -> Option<Element> {
    let mut reply = st.error_reply(e)?;
    if let Some(app) = app
        && let Some(Node::Element(error)) = reply
            .nodes_mut()
            .iter_mut()
            .rev()
            .find(|n| matches!(n, Node::Element(e) if e.name() == "error"))
    {
        error.push_child(app);
    }
    Some(reply)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn media_types() {
        assert_eq!(media_type("image/jpeg").as_deref(), Some("image/jpeg"));
        assert_eq!(
            media_type("Text/Plain; charset=utf-8").as_deref(),
            Some("text/plain")
        );
        for bad in [
            "",
            "image",
            "/jpeg",
            "image/",
            "ima ge/jpeg",
            "a/b\r\nX: y",
            "é/x",
        ] {
            assert_eq!(media_type(bad), None, "{bad:?}");
        }
        let allowed = vec!["image/*".to_owned(), "application/pdf".to_owned()];
        assert!(type_allowed(&allowed, "image/png"));
        assert!(type_allowed(&allowed, "application/pdf"));
        assert!(!type_allowed(&allowed, "application/octet-stream"));
        assert!(!type_allowed(&allowed, "imagex/png"));
        assert!(type_allowed(&[], "text/html"));
    }

    #[test]
    fn stamps_are_xep_0082() {
        assert_eq!(stamp(1_512_344_525), "2017-12-03T23:42:05Z");
    }

    fn service(quota: u64) -> Service {
        let mut config = UploadConfig {
            quota_bytes_per_user: quota,
            quota_window_secs: 100,
            ..Default::default()
        };
        config.check("localhost").unwrap();
        let router: Weak<dyn ComponentRouter> = Weak::<NoRouter>::new();
        Service::new(
            &config,
            "localhost",
            "https://localhost:5443",
            Signer::new(b"0123456789abcdef"),
            router,
        )
    }

    #[derive(Debug)]
    struct NoRouter;
    #[async_trait::async_trait]
    impl ComponentRouter for NoRouter {
        async fn route_from_component(&self, _: Stanza) {}
    }

    #[test]
    fn quota_over_a_window() {
        let mut s = service(100);
        assert_eq!(s.over_quota("a@localhost", 60, 1000), None);
        s.granted
            .entry("a@localhost".into())
            .or_default()
            .push_back((1000, 60));
        assert_eq!(s.over_quota("a@localhost", 40, 1010), None);
        s.granted
            .entry("a@localhost".into())
            .or_default()
            .push_back((1010, 40));
        // Full: 60 bytes come free when the first grant leaves the window.
        assert_eq!(s.over_quota("a@localhost", 1, 1020), Some(1100));
        assert_eq!(s.over_quota("a@localhost", 61, 1020), Some(1110));
        assert_eq!(s.over_quota("a@localhost", 101, 1020), Some(1120));
        assert_eq!(s.over_quota("b@localhost", 100, 1020), None);
        // The window moved on.
        assert_eq!(s.over_quota("a@localhost", 60, 1100), None);
        let mut none = service(0);
        assert_eq!(none.over_quota("a@localhost", u64::MAX, 0), None);
    }

    #[test]
    fn bad_requests() {
        let mut s = service(0);
        let ask = |s: &mut Service, from: &str, req: &str| {
            let el = Element::parse(&format!(
                "<iq xmlns='jabber:client' type='get' id='1' from='{from}' to='upload.localhost'>{req}</iq>"
            ))
            .unwrap();
            let st = Stanza::parse(el).unwrap();
            let reply = s.handle(&st, 1000).unwrap();
            let err = reply
                .child("error", ns::CLIENT)
                .map(|e| e.first_child().unwrap().name().to_owned());
            err.unwrap_or_else(|| "result".into())
        };
        let a = "a@localhost/r";
        for (req, want) in [
            (
                "<request xmlns='urn:xmpp:http:upload:0' filename='a.txt' size='5'/>",
                "result",
            ),
            (
                "<request xmlns='urn:xmpp:http:upload:0' filename='' size='5'/>",
                "bad-request",
            ),
            (
                "<request xmlns='urn:xmpp:http:upload:0' size='5'/>",
                "bad-request",
            ),
            (
                "<request xmlns='urn:xmpp:http:upload:0' filename='a/b' size='5'/>",
                "bad-request",
            ),
            (
                "<request xmlns='urn:xmpp:http:upload:0' filename='a.txt' size='0'/>",
                "bad-request",
            ),
            (
                "<request xmlns='urn:xmpp:http:upload:0' filename='a.txt' size='-5'/>",
                "bad-request",
            ),
            (
                "<request xmlns='urn:xmpp:http:upload:0' filename='a.txt' size='1e3'/>",
                "bad-request",
            ),
            (
                "<request xmlns='urn:xmpp:http:upload:0' filename='a.txt'/>",
                "bad-request",
            ),
            (
                "<request xmlns='urn:xmpp:http:upload:0' filename='a.txt' size='5' content-type='text'/>",
                "bad-request",
            ),
            (
                "<request xmlns='urn:xmpp:http:upload:0' filename='a.txt' size='99999999999'/>",
                "not-acceptable",
            ),
            ("<query xmlns='jabber:iq:version'/>", "service-unavailable"),
        ] {
            assert_eq!(ask(&mut s, a, req), want, "{req}");
        }
        let ok = "<request xmlns='urn:xmpp:http:upload:0' filename='a.txt' size='5'/>";
        assert_eq!(ask(&mut s, "a@remote.example/r", ok), "forbidden");
        assert_eq!(ask(&mut s, "localhost", ok), "forbidden");
        s.config.allowed_domains = vec!["remote.example".into()];
        assert_eq!(ask(&mut s, "a@remote.example/r", ok), "result");
    }
}
