//! XEP-0363 HTTP File Upload, black-box: slot requests over XMPP (the
//! spec's examples as exact XML), PUT and GET of slot URLs with curl (a real
//! HTTP client), the bad inputs each with its error, path traversal that
//! touches no file, and an upload by slixmpp's xep_0363 plugin (aiohttp)
//! downloaded again by curl (docs/decisions/0020-http-upload.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rookery::config::Config;
use rookery_e2e::{RawClient, TestServer, WAIT, eventually, web};
use rookery_upload::{FileId, Signer, Slot};
use rookery_xml::Element;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NS: &str = "urn:xmpp:http:upload:0";

async fn server(f: impl FnOnce(&mut Config)) -> TestServer {
    let s = TestServer::start_with(|c| {
        c.upload.enabled = true;
        f(c)
    })
    .await;
    s.add_user("alice", "pw").await;
    s
}

fn upload_dir(s: &TestServer) -> PathBuf {
    s.dir.path().join("data").join("upload")
}

/// The names in the upload directory.
fn stored(s: &TestServer) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(upload_dir(s))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// A slot request (XEP-0363 §4) from `c`; the answer.
async fn request(c: &mut RawClient, id: &str, attrs: &str) -> Element {
    c.iq(&format!(
        "<iq id='{id}' to='upload.localhost' type='get'><request xmlns='{NS}' {attrs}/></iq>"
    ))
    .await
}

/// The PUT and GET URLs of a slot answer.
fn urls(r: &Element) -> (String, String) {
    let slot = r
        .child("slot", NS)
        .unwrap_or_else(|| panic!("no slot: {r:?}"));
    let put = slot
        .child("put", NS)
        .unwrap()
        .attr("url")
        .unwrap()
        .to_owned();
    let get = slot
        .child("get", NS)
        .unwrap()
        .attr("url")
        .unwrap()
        .to_owned();
    (put, get)
}

/// A slot for `filename` (already XML-escaped), `size`, `content_type`.
async fn slot(c: &mut RawClient, filename: &str, size: usize, ct: &str) -> (String, String) {
    let r = request(
        c,
        "s",
        &format!("filename='{filename}' size='{size}' content-type='{ct}'"),
    )
    .await;
    urls(&r)
}

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Runs curl (a real HTTP client) with `args` plus the URL.
async fn curl(args: &[&str], url: &str) -> Answer {
    let dir = tempfile::tempdir().unwrap();
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-k", "--path-as-is", "--max-time", "10", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .stdin(Stdio::null());
    let out = tokio::time::timeout(
        WAIT + Duration::from_secs(5),
        tokio::task::spawn_blocking(move || cmd.output()),
    )
    .await
    .expect("curl did not finish")
    .unwrap()
    .expect("curl not found: apt-get install -y curl");
    let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let status = code
        .parse()
        .unwrap_or_else(|_| panic!("curl: {code} {}", String::from_utf8_lossy(&out.stderr)));
    if status == 0 {
        eprintln!("curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // The last response's head (a 100 Continue may come first).
    let head = std::fs::read_to_string(&head).unwrap_or_default();
    let head = head
        .split("\r\n\r\n")
        .filter(|h| !h.trim().is_empty())
        .last()
        .unwrap_or_default()
        .to_owned();
    Answer {
        status,
        head,
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

/// PUTs `data` from a file with `content_type`.
async fn curl_put(url: &str, data: &[u8], content_type: &str) -> Answer {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    std::fs::write(&file, data).unwrap();
    let ct = format!("Content-Type: {content_type}");
    let at = format!("@{}", file.display());
    // Over 1 MiB curl asks `Expect: 100-continue`, as HTTP clients do for
    // large bodies: a refusal then comes before the body is sent.
    curl(&["-X", "PUT", "-H", &ct, "--data-binary", &at], url).await
}

/// The path and query of a URL of the test server.
fn path_of(url: &str) -> &str {
    let rest = url.strip_prefix("https://localhost:").unwrap();
    &rest[rest.find('/').unwrap()..]
}

/// One raw HTTPS request (exact bytes, for what curl would not send); when
/// `half_close`, the client stops sending after `body` (TLS close_notify).
async fn raw(addr: SocketAddr, head: &str, body: &[u8], half_close: bool) -> Answer {
    let mut s = web::tls(addr).await;
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    if half_close {
        s.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    // The server may close without close_notify: keep what came.
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("no answer");
    let text = String::from_utf8_lossy(&out).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Answer {
            status: 0,
            head: text,
            body: Vec::new(),
        };
    };
    Answer {
        status: head.split(' ').nth(1).unwrap().parse().unwrap(),
        head: head.to_owned(),
        body: body.as_bytes().to_vec(),
    }
}

fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand::random::<u8>()).collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The signer of the test server (its installation secret).
fn signer(s: &TestServer) -> Signer {
    let secret = std::fs::read(s.dir.path().join("data").join("secret")).unwrap();
    s.config.upload.signer(&secret)
}

/// §3: the server lists the service; its disco#info is Example 4 with our
/// limit.
#[tokio::test]
async fn discovery() {
    let s = server(|c| c.upload.max_file_size = 5_242_880).await;
    let mut c = s.login("alice", "pw", "garden").await;
    let r = c
        .iq("<iq id='step_01' to='localhost' type='get'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        .await;
    assert_eq!(
        r.to_xml_string(),
        "<iq xmlns='jabber:client' type='result' id='step_01' to='alice@localhost/garden' from='localhost'><query xmlns='http://jabber.org/protocol/disco#items'><item jid='conference.localhost'/><item jid='pubsub.localhost'/><item jid='upload.localhost'/></query></iq>"
    );
    let r = c
        .iq("<iq id='step_02' to='upload.localhost' type='get'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    assert_eq!(
        r.to_xml_string(),
        "<iq xmlns='jabber:client' type='result' id='step_02' to='alice@localhost/garden' from='upload.localhost'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='store' type='file' name='HTTP File Upload'/><feature var='http://jabber.org/protocol/disco#info'/><feature var='urn:xmpp:http:upload:0'/><x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:http:upload:0</value></field><field var='max-file-size'><value>5242880</value></field></x></query></iq>"
    );
}

/// §4 Example 5 and 6, then the PUT (201) and the GET of the same bytes
/// with the headers that keep a browser safe; a second PUT is refused.
#[tokio::test]
async fn slot_put_get() {
    let s = server(|c| c.web.cors_allow_origin = "https://app.example".into()).await;
    let port = s.web_tls_addr().port();
    let mut c = s.login("alice", "pw", "garden").await;
    let r = request(
        &mut c,
        "step_03",
        "filename='très cool.jpg' size='23456' content-type='image/jpeg'",
    )
    .await;
    let (put, get) = urls(&r);
    // https://localhost:<port>/upload/<32 hex>/tr%C3%A8s%20cool.jpg
    let prefix = format!("https://localhost:{port}/upload/");
    let rest = get.strip_prefix(&prefix).unwrap_or_else(|| panic!("{get}"));
    let (id, name) = rest.split_once('/').unwrap();
    assert!(FileId::parse(id).is_some(), "{get}");
    assert_eq!(name, "tr%C3%A8s%20cool.jpg");
    let query = put
        .strip_prefix(&format!("{get}?"))
        .unwrap_or_else(|| panic!("{put}"));
    let expires: u64 = query
        .strip_prefix("expires=")
        .and_then(|q| q.split('&').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(expires > now() && expires <= now() + 300, "{put}");
    let sig = query
        .strip_prefix(&format!(
            "expires={expires}&size=23456&type=image%2Fjpeg&sig="
        ))
        .unwrap_or_else(|| panic!("{put}"));
    assert_eq!(sig.len(), 43, "{put}");
    assert_eq!(
        r.to_xml_string(),
        format!(
            "<iq xmlns='jabber:client' type='result' id='step_03' to='alice@localhost/garden' from='upload.localhost'><slot xmlns='urn:xmpp:http:upload:0'><put url='{}'/><get url='{}'/></slot></iq>",
            put.replace('&', "&amp;"),
            get
        )
    );

    // Nothing to GET before the upload.
    assert_eq!(curl(&[], &get).await.status, 404);
    let data = bytes(23456);
    let a = curl_put(&put, &data, "image/jpeg").await;
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(
        a.header("Access-Control-Allow-Origin"),
        Some("https://app.example")
    );
    assert_eq!(stored(&s), vec![id.to_owned(), format!("{id}.meta")]);
    assert_eq!(std::fs::read(upload_dir(&s).join(id)).unwrap(), data);

    let a = curl(&[], &get).await;
    assert_eq!(a.status, 200);
    assert!(a.body == data, "the GET returned other bytes");
    assert_eq!(a.header("Content-Type"), Some("image/jpeg"));
    assert_eq!(a.header("Content-Length"), Some("23456"));
    assert_eq!(
        a.header("Content-Disposition"),
        Some("inline; filename=\"tr_s cool.jpg\"; filename*=UTF-8''tr%C3%A8s%20cool.jpg")
    );
    assert_eq!(a.header("X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(
        a.header("Content-Security-Policy"),
        Some("default-src 'none'; frame-ancestors 'none'; sandbox")
    );
    assert_eq!(
        a.header("Access-Control-Allow-Origin"),
        Some("https://app.example")
    );
    // HEAD: the headers without the body.
    let a = raw(
        s.web_tls_addr(),
        &format!(
            "HEAD {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            path_of(&get)
        ),
        b"",
        false,
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("Content-Length"), Some("23456"));
    assert_eq!(a.header("Content-Type"), Some("image/jpeg"));
    assert!(a.body.is_empty());

    // A slot is good for one upload.
    let a = curl_put(&put, &bytes(23456), "image/jpeg").await;
    assert_eq!(a.status, 409);
    assert_eq!(std::fs::read(upload_dir(&s).join(id)).unwrap(), data);
    // Another name for the same id finds nothing.
    assert_eq!(
        curl(&[], &format!("{prefix}{id}/other.jpg")).await.status,
        404
    );
}

/// An HTML file is served as a download that cannot run.
#[tokio::test]
async fn html_is_never_inline() {
    let s = server(|_| {}).await;
    let mut c = s.login("alice", "pw", "a").await;
    let page = b"<html><script>alert(document.cookie)</script></html>";
    for (name, ct) in [("x.html", "text/html"), ("x.svg", "image/svg+xml")] {
        let (put, get) = slot(&mut c, name, page.len(), ct).await;
        assert_eq!(curl_put(&put, page, ct).await.status, 201);
        let a = curl(&[], &get).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("Content-Type"), Some(ct));
        assert!(
            a.header("Content-Disposition")
                .unwrap()
                .starts_with("attachment;"),
            "{a:?}"
        );
        assert_eq!(a.header("X-Content-Type-Options"), Some("nosniff"));
        assert!(
            a.header("Content-Security-Policy")
                .unwrap()
                .contains("sandbox")
        );
    }
}

/// §6 Example 11 (with the spec's limit of 20000 bytes), and a 100 MB file
/// against the default 10 MiB.
#[tokio::test]
async fn file_too_large() {
    let s = server(|c| c.upload.max_file_size = 20000).await;
    let mut c = s.login("alice", "pw", "garden").await;
    let r = request(
        &mut c,
        "step_03",
        "filename='très cool.jpg' size='23456' content-type='image/jpeg'",
    )
    .await;
    assert_eq!(
        r.to_xml_string(),
        "<iq xmlns='jabber:client' id='step_03' type='error' to='alice@localhost/garden' from='upload.localhost'><request xmlns='urn:xmpp:http:upload:0' filename='très cool.jpg' size='23456' content-type='image/jpeg'/><error type='modify'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>File too large. The maximum file size is 20000 bytes</text><file-too-large xmlns='urn:xmpp:http:upload:0'><max-file-size>20000</max-file-size></file-too-large></error></iq>"
    );

    let s = server(|_| {}).await;
    let mut c = s.login("alice", "pw", "garden").await;
    let r = request(&mut c, "big", "filename='big.bin' size='100000000'").await;
    let e = r.child("error", "jabber:client").unwrap();
    assert_eq!(r.attr("type"), Some("error"));
    let max = e.child("file-too-large", NS).unwrap();
    assert_eq!(max.child("max-file-size", NS).unwrap().text(), "10485760");
    assert!(stored(&s).is_empty());
}

/// §6 Example 12: past the quota, resource-constraint with a retry stamp.
#[tokio::test]
async fn quota() {
    let s = server(|c| {
        c.upload.quota_bytes_per_user = 30000;
        c.upload.quota_window_secs = 3600;
    })
    .await;
    let mut c = s.login("alice", "pw", "garden").await;
    let first = now();
    let r = request(
        &mut c,
        "q1",
        "filename='a.jpg' size='20000' content-type='image/jpeg'",
    )
    .await;
    urls(&r);
    let r = request(
        &mut c,
        "step_03",
        "filename='très cool.jpg' size='23456' content-type='image/jpeg'",
    )
    .await;
    let retry = r
        .child("error", "jabber:client")
        .and_then(|e| e.child("retry", NS))
        .unwrap_or_else(|| panic!("{r:?}"))
        .attr("stamp")
        .unwrap()
        .to_owned();
    // XEP-0082 UTC, an hour after the first grant.
    let at = time::OffsetDateTime::parse(&retry, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp() as u64;
    assert!(retry.ends_with('Z') && retry.len() == 20, "{retry}");
    assert!((first + 3600..=now() + 3600).contains(&at), "{retry}");
    assert_eq!(
        r.to_xml_string(),
        format!(
            "<iq xmlns='jabber:client' id='step_03' type='error' to='alice@localhost/garden' from='upload.localhost'><request xmlns='urn:xmpp:http:upload:0' filename='très cool.jpg' size='23456' content-type='image/jpeg'/><error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>Quota reached. You can only upload 30000 bytes in 3600 seconds</text><retry xmlns='urn:xmpp:http:upload:0' stamp='{retry}'/></error></iq>"
        )
    );
    // What still fits is granted; another account has its own quota.
    let r = request(&mut c, "q3", "filename='b.jpg' size='10000'").await;
    urls(&r);
    s.add_user("bob", "pw").await;
    let mut b = s.login("bob", "pw", "b").await;
    let r = request(&mut b, "q4", "filename='c.jpg' size='30000'").await;
    urls(&r);
}

/// Bad requests each get their error; the service answers nothing else.
#[tokio::test]
async fn bad_requests() {
    let s = server(|c| c.upload.allowed_content_types = vec!["image/*".into()]).await;
    let mut c = s.login("alice", "pw", "a").await;
    let cond = |r: &Element| {
        let e = r
            .child("error", "jabber:client")
            .unwrap_or_else(|| panic!("{r:?}"));
        format!(
            "{} {}",
            e.attr("type").unwrap(),
            e.children().next().unwrap().name()
        )
    };
    for (attrs, want) in [
        ("size='5'", "modify bad-request"),
        ("filename='' size='5'", "modify bad-request"),
        ("filename='a/b.jpg' size='5'", "modify bad-request"),
        ("filename='a\\b.jpg' size='5'", "modify bad-request"),
        ("filename='a.jpg'", "modify bad-request"),
        ("filename='a.jpg' size='0'", "modify bad-request"),
        ("filename='a.jpg' size='-1'", "modify bad-request"),
        ("filename='a.jpg' size='ten'", "modify bad-request"),
        (
            "filename='a.jpg' size='5' content-type='jpeg'",
            "modify bad-request",
        ),
        (
            "filename='a.html' size='5' content-type='text/html'",
            "modify not-acceptable",
        ),
        ("filename='a.bin' size='5'", "modify not-acceptable"),
    ] {
        let r = request(&mut c, "b", attrs).await;
        assert_eq!(cond(&r), want, "{attrs}");
    }
    let r = c
        .iq("<iq id='set' to='upload.localhost' type='set'><request xmlns='urn:xmpp:http:upload:0' filename='a.jpg' size='5'/></iq>")
        .await;
    assert_eq!(cond(&r), "cancel service-unavailable");
    let r = c
        .iq("<iq id='v' to='upload.localhost' type='get'><query xmlns='jabber:iq:version'/></iq>")
        .await;
    assert_eq!(cond(&r), "cancel service-unavailable");
    assert!(stored(&s).is_empty());
}

/// §7: every PUT that does not match its slot is refused, and leaves no
/// file; the slot still works afterwards.
#[tokio::test]
async fn put_rejections() {
    let s = server(|_| {}).await;
    let addr = s.web_tls_addr();
    let mut c = s.login("alice", "pw", "a").await;
    let (put, get) = slot(&mut c, "a.txt", 100, "text/plain").await;
    let data = bytes(100);

    // Forged: another size, type or expiry in the URL, another signature,
    // none at all.
    for (from, to) in [
        ("size=100", "size=1000"),
        ("type=text%2Fplain", "type=text%2Fhtml"),
        ("expires=", "expires=9"),
        ("&sig=", "&sig=AAAA"),
    ] {
        let forged = put.replacen(from, to, 1);
        let a = curl_put(&forged, &data, "text/plain").await;
        assert_eq!(a.status, 403, "{forged}");
    }
    assert_eq!(curl_put(&get, &data, "text/plain").await.status, 403);
    // Expired: a slot signed with the server's key, whose time is over.
    let expired = Slot {
        id: FileId::random(),
        filename: "a.txt".into(),
        size: 100,
        content_type: "text/plain".into(),
        expires: now() - 1,
    };
    let url = format!(
        "https://localhost:{}{}",
        addr.port(),
        signer(&s).put_path(&expired)
    );
    let a = curl_put(&url, &data, "text/plain").await;
    assert_eq!(a.status, 403);
    assert_eq!(String::from_utf8_lossy(&a.body), "slot expired\n");
    // ... and the same slot in time is taken, so the key is the server's.
    let fresh = Slot {
        expires: now() + 60,
        ..expired
    };
    let url = format!(
        "https://localhost:{}{}",
        addr.port(),
        signer(&s).put_path(&fresh)
    );
    assert_eq!(curl_put(&url, &data, "text/plain").await.status, 201);
    std::fs::remove_file(upload_dir(&s).join(fresh.id.as_str())).unwrap();
    std::fs::remove_file(upload_dir(&s).join(format!("{}.meta", fresh.id))).unwrap();

    // Another Content-Type.
    assert_eq!(curl_put(&put, &data, "text/html").await.status, 415);
    // More bytes than the slot: 413 before anything is written.
    assert_eq!(curl_put(&put, &bytes(101), "text/plain").await.status, 413);
    let big = bytes(20 * 1024 * 1024);
    assert_eq!(curl_put(&put, &big, "text/plain").await.status, 413);
    // Fewer.
    assert_eq!(curl_put(&put, &bytes(99), "text/plain").await.status, 400);
    // No Content-Length (chunked).
    let p = path_of(&put);
    let a = raw(
        addr,
        &format!("PUT {p} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"),
        b"64\r\n",
        false,
    )
    .await;
    assert_eq!(a.status, 411);
    // A body that ends before its Content-Length: the partial file goes.
    let a = raw(
        addr,
        &format!("PUT {p} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 100\r\nConnection: close\r\n\r\n"),
        &data[..60],
        true,
    )
    .await;
    assert!(matches!(a.status, 0 | 400), "{a:?}");
    eventually(|| stored(&s).is_empty()).await;

    // Nothing of all that was kept, and the slot still works once.
    assert_eq!(curl(&[], &get).await.status, 404);
    assert_eq!(curl_put(&put, &data, "text/plain").await.status, 201);
    assert_eq!(curl(&[], &get).await.body, data);
    assert_eq!(stored(&s).len(), 2);
}

/// A slot requested without a content type takes the PUT's type.
#[tokio::test]
async fn slot_without_content_type() {
    let s = server(|_| {}).await;
    let mut c = s.login("alice", "pw", "a").await;
    let r = request(&mut c, "n", "filename='notes.pdf' size='10'").await;
    let (put, get) = urls(&r);
    assert!(put.contains("&type=&sig="), "{put}");
    assert_eq!(
        curl_put(&put, b"0123456789", "application/pdf")
            .await
            .status,
        201
    );
    let a = curl(&[], &get).await;
    assert_eq!(a.header("Content-Type"), Some("application/pdf"));
    assert!(
        a.header("Content-Disposition")
            .unwrap()
            .starts_with("attachment;")
    );
}

/// Path traversal in slot URLs (raw `..`, encoded, backslashes, absolute
/// paths) is 400/403/404 and touches no file outside (or inside) the
/// upload directory.
#[tokio::test]
async fn path_traversal() {
    let s = server(|_| {}).await;
    let addr = s.web_tls_addr();
    let data_dir = s.dir.path().join("data");
    let canary = data_dir.join("canary.txt");
    std::fs::write(&canary, b"do not touch").unwrap();
    let mut c = s.login("alice", "pw", "a").await;
    // A real file in the directory, to aim at.
    let (put, get) = slot(&mut c, "a.txt", 5, "text/plain").await;
    assert_eq!(curl_put(&put, b"hello", "text/plain").await.status, 201);
    let id = path_of(&get).split('/').nth(2).unwrap().to_owned();
    let query = put.split_once('?').unwrap().1.to_owned();
    let before = stored(&s);
    let secret = std::fs::read(data_dir.join("secret")).unwrap();

    let paths = [
        "/upload/../canary.txt".to_owned(),
        "/upload/../../data/canary.txt".to_owned(),
        "/upload/%2e%2e/canary.txt".to_owned(),
        "/upload/%2E%2E/%2E%2E/canary.txt".to_owned(),
        "/upload/..%2f..%2fcanary.txt/x".to_owned(),
        "/upload/..%5ccanary.txt/x".to_owned(),
        "/upload/..\\canary.txt/x".to_owned(),
        "/upload/%2Fetc%2Fpasswd/x".to_owned(),
        "/upload//etc/passwd".to_owned(),
        format!("/upload/{id}/../../canary.txt"),
        format!("/upload/{id}/..%2F..%2Fcanary.txt"),
        format!("/upload/{id}%2F..%2F..%2Fcanary.txt/a.txt"),
        format!("/upload/{id}.meta/a.txt"),
        format!("/upload/{}/a.txt", id.to_uppercase()),
        "/upload/secret/x".to_owned(),
        "/upload/../secret".to_owned(),
    ];
    for p in &paths {
        for method in ["GET", "PUT"] {
            let q = if method == "PUT" {
                format!("?{query}")
            } else {
                String::new()
            };
            let a = raw(
                addr,
                &format!("{method} {p}{q} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"),
                b"pwned",
                false,
            )
            .await;
            assert!(matches!(a.status, 400 | 403 | 404), "{method} {p}: {a:?}");
            assert!(
                !a.body.windows(12).any(|w| w == b"do not touch"),
                "{method} {p}"
            );
        }
        // curl too (it sends the path as it is with --path-as-is; it
        // refuses a backslash in a URL itself).
        if p.contains('\\') {
            continue;
        }
        let url = format!("https://localhost:{}{p}", addr.port());
        let a = curl(&[], &url).await;
        assert!(matches!(a.status, 400 | 403 | 404), "GET {p}: {a:?}");
    }
    assert_eq!(std::fs::read(&canary).unwrap(), b"do not touch");
    assert_eq!(std::fs::read(data_dir.join("secret")).unwrap(), secret);
    assert_eq!(stored(&s), before);
    assert_eq!(curl(&[], &get).await.body, b"hello");
}

/// §8: CORS preflight for a browser PUT.
#[tokio::test]
async fn cors_preflight() {
    let s = server(|c| c.web.cors_allow_origin = "https://app.example".into()).await;
    let mut c = s.login("alice", "pw", "a").await;
    let (put, get) = slot(&mut c, "a.txt", 5, "text/plain").await;
    let a = curl(
        &[
            "-X",
            "OPTIONS",
            "-H",
            "Origin: https://app.example",
            "-H",
            "Access-Control-Request-Method: PUT",
            "-H",
            "Access-Control-Request-Headers: content-type",
        ],
        &put,
    )
    .await;
    assert_eq!(a.status, 204);
    assert_eq!(
        a.header("Access-Control-Allow-Origin"),
        Some("https://app.example")
    );
    assert_eq!(
        a.header("Access-Control-Allow-Methods"),
        Some("GET, HEAD, PUT, OPTIONS")
    );
    assert_eq!(
        a.header("Access-Control-Allow-Headers"),
        Some("Content-Type")
    );
    let a = curl(&["-H", "Origin: https://app.example"], &get).await;
    assert_eq!(a.status, 404);
    assert_eq!(
        a.header("Access-Control-Allow-Origin"),
        Some("https://app.example")
    );
}

/// Files go after `file_ttl_secs` (the cleanup task), and their URL with
/// them.
#[tokio::test]
async fn expired_files_are_deleted() {
    let s = server(|c| {
        c.upload.slot_ttl_secs = 1;
        c.upload.file_ttl_secs = 2;
    })
    .await;
    let mut c = s.login("alice", "pw", "a").await;
    let (put, get) = slot(&mut c, "a.txt", 5, "text/plain").await;
    assert_eq!(curl_put(&put, b"hello", "text/plain").await.status, 201);
    assert_eq!(stored(&s).len(), 2);
    // The cleanup runs every second; the file is older than 2 s within 4.
    let dir = upload_dir(&s);
    let start = std::time::Instant::now();
    eventually(|| std::fs::read_dir(&dir).unwrap().next().is_none()).await;
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert_eq!(curl(&[], &get).await.status, 404);
}

/// Only accounts of the server (and `allowed_domains`) get slots; with
/// upload off there is no service.
#[tokio::test]
async fn upload_disabled() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw").await;
    let mut c = s.login("alice", "pw", "a").await;
    let r = request(&mut c, "off", "filename='a.txt' size='5'").await;
    assert_eq!(r.attr("type"), Some("error"), "{r:?}");
    assert!(!Path::new(&s.dir.path().join("data").join("upload")).exists());
}

const PYTHON: &str = "/usr/bin/python3";

/// Interop: slixmpp's xep_0363 plugin (with aiohttp) finds the service,
/// asks for a slot and PUTs a file; curl downloads it again, byte for byte.
#[tokio::test]
async fn slixmpp_http_upload() {
    let s = server(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("photo of us.png");
    let data = bytes(300_000);
    std::fs::write(&file, &data).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/slixmpp_upload.py");
    let mut cmd = Command::new(PYTHON);
    cmd.arg(script)
        .args(["--port", &s.addr().port().to_string(), "--password", "pw"])
        .arg("--file")
        .arg(&file)
        .stdin(Stdio::null());
    let out = tokio::time::timeout(
        Duration::from_secs(45),
        tokio::task::spawn_blocking(move || cmd.output()),
    )
    .await
    .expect("the slixmpp script did not finish")
    .unwrap()
    .expect("cannot run /usr/bin/python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "slixmpp_upload.py failed ({})\n--- stdout\n{stdout}--- stderr\n{stderr}",
        out.status
    );
    let url = stdout
        .lines()
        .find_map(|l| l.strip_prefix("[slixmpp_upload] GET URL "))
        .unwrap_or_else(|| panic!("no URL in\n{stdout}"));
    assert!(url.ends_with("/photo%20of%20us.png"), "{url}");
    let a = curl(&[], url).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("Content-Type"), Some("image/png"));
    assert!(
        a.body == data,
        "downloaded bytes differ from the uploaded file"
    );
}
