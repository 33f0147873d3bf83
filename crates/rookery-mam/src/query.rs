//! XEP-0313 §4 queries and §5 metadata, for any archive: the request
//! (data form filters, XEP-0059 `<set/>`, `<flip-page/>`), the `<result/>`
//! messages and the `<fin/>`, the §4.1.5 form. The caller checks who may
//! read the archive and sends what [`run`] returns.

use rookery_core::{Jid, StanzaError, new_id};
use rookery_xml::{Element, Limits, Parser, ns};
use tracing::warn;

use crate::{
    ArchiveFilter, ArchivePage, ArchiveStore, ArchivedMessage, DATA, DELAY, FORWARD, NS, Page,
    QueryError, RSM, format_micros, parse_datetime,
};

/// A §4 query request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The form's filters (§4.1).
    pub filter: ArchiveFilter,
    /// The XEP-0059 page.
    pub page: Page,
    /// The XEP-0059 `<max/>` asked for.
    pub max: Option<usize>,
    /// §4.3.3 `<flip-page/>`: results in reverse order.
    pub flip: bool,
    /// §4.2 `queryid`, echoed on every `<result/>`.
    pub queryid: Option<String>,
}

impl Request {
    /// Reads the `<query/>` of an iq set; a bad form or `<set/>` is the
    /// error to answer.
    pub fn parse(p: &Element) -> Result<Request, StanzaError> {
        let filter = match p.child("x", DATA) {
            Some(x) => parse_form(x)?,
            None => ArchiveFilter::default(),
        };
        let (page, max) = parse_rsm(p.child("set", RSM))?;
        Ok(Request {
            filter,
            page,
            max,
            flip: p.child("flip-page", NS).is_some(),
            queryid: p.attr("queryid").map(str::to_owned),
        })
    }
}

/// What a query answers: the `<result/>` messages, in sending order, then
/// the `<fin/>` of the iq result (§4.3: every result precedes it).
#[derive(Debug)]
pub struct Answer {
    /// The messages to send to the requester, in order.
    pub results: Vec<Element>,
    /// The payload of the iq result.
    pub fin: Element,
}

/// Runs `req` on `owner`'s archive for `to`, at most `cap` results. The
/// result messages come `from` the archive (a room's JID, §6.1.2; none for
/// a user's own archive); `edit` may change each archived stanza before it
/// is forwarded (a room hides real JIDs from some requesters).
pub async fn run(
    store: &dyn ArchiveStore,
    owner: &Jid,
    req: &Request,
    cap: usize,
    to: &Jid,
    from: Option<&Jid>,
    edit: impl Fn(&mut Element),
) -> Result<Answer, StanzaError> {
    let cap = cap.max(1);
    let limit = req.max.unwrap_or(cap).min(cap);
    let page = store
        .query(owner, &req.filter, &req.page, limit)
        .await
        .map_err(query_error)?;
    let mut order: Vec<&ArchivedMessage> = page.items.iter().collect();
    if req.flip {
        order.reverse();
    }
    let mut results = Vec::with_capacity(order.len());
    for item in order {
        let mut original = parse_stored(&item.stanza)?;
        edit(&mut original);
        let mut r = Element::new_static("result", NS).with_attr("id", item.id.as_str());
        if let Some(q) = &req.queryid {
            r.set_attr("queryid", q.as_str());
        }
        r.push_child(
            Element::new_static("forwarded", FORWARD)
                .with_child(
                    Element::new_static("delay", DELAY).with_attr("stamp", format_micros(item.ts)),
                )
                .with_child(original),
        );
        let mut m = Element::new_static("message", ns::CLIENT);
        if let Some(f) = from {
            m.set_attr("from", f.as_str());
        }
        m.set_attr("to", to.as_str());
        m.set_attr("id", new_id());
        m.push_child(r);
        results.push(m);
    }
    Ok(Answer {
        results,
        fin: fin(&page),
    })
}

/// Parses stored XML (an archived or offline stanza) back into an element;
/// stored XML that does not parse is `internal-server-error`.
pub fn parse_stored(xml: &str) -> Result<Element, StanzaError> {
    let limits = Limits {
        max_stanza_bytes: Limits::default().max_stanza_bytes.max(xml.len() + 1),
        ..Limits::default()
    };
    Parser::parse_fragment(xml.as_bytes(), limits).map_err(|e| {
        warn!(error = %e, "stored XML does not parse");
        StanzaError::internal_server_error()
    })
}

/// A store failure: logged, `internal-server-error` to the client.
pub fn unavailable(e: impl std::fmt::Display) -> StanzaError {
    warn!(error = %e, "message archive unavailable");
    StanzaError::internal_server_error()
}

/// The XMPP error of a failed query.
pub fn query_error(e: QueryError) -> StanzaError {
    match e {
        QueryError::ItemNotFound => StanzaError::item_not_found(),
        QueryError::Store(e) => unavailable(e),
    }
}

/// §4.1.5: the fields a query form may carry.
pub fn query_form() -> Element {
    let field = |var: &str, ty: &str| {
        Element::new_static("field", DATA)
            .with_attr("type", ty)
            .with_attr("var", var)
    };
    let x = Element::new_static("x", DATA)
        .with_attr("type", "form")
        .with_child(
            field("FORM_TYPE", "hidden")
                .with_child(Element::new_static("value", DATA).with_text(NS)),
        )
        .with_child(field("with", "jid-single"))
        .with_child(field("start", "text-single"))
        .with_child(field("end", "text-single"))
        .with_child(field("before-id", "text-single"))
        .with_child(field("after-id", "text-single"))
        .with_child(
            field("ids", "list-multi").with_child(
                Element::new_static("validate", "http://jabber.org/protocol/xdata-validate")
                    .with_attr("datatype", "xs:string")
                    .with_child(Element::new_static(
                        "open",
                        "http://jabber.org/protocol/xdata-validate",
                    )),
            ),
        );
    Element::new_static("query", NS).with_child(x)
}

/// The at most one value of a single-valued field.
fn single(var: &str, values: &[String]) -> Result<Option<String>, StanzaError> {
    match values {
        [] => Ok(None),
        [v] if v.is_empty() => Ok(None),
        [v] => Ok(Some(v.clone())),
        _ => Err(StanzaError::bad_request(&format!(
            "field '{var}' takes one value"
        ))),
    }
}

/// §4.1: the data form filters.
fn parse_form(x: &Element) -> Result<ArchiveFilter, StanzaError> {
    if x.attr("type").is_some_and(|t| t != "submit") {
        return Err(StanzaError::bad_request("the query form must be a submit"));
    }
    let mut f = ArchiveFilter::default();
    for field in x.children().filter(|c| c.is("field", DATA)) {
        let Some(var) = field.attr("var") else {
            return Err(StanzaError::bad_request("form field without 'var'"));
        };
        let values: Vec<String> = field
            .children()
            .filter(|c| c.is("value", DATA))
            .map(|v| v.text().trim().to_owned())
            .collect();
        match var {
            "FORM_TYPE" => {
                if values.as_slice() != [NS] {
                    return Err(StanzaError::bad_request("FORM_TYPE must be urn:xmpp:mam:2"));
                }
            }
            "with" => {
                if let Some(v) = single(var, &values)? {
                    f.with = Some(
                        Jid::parse(&v)
                            .map_err(|_| StanzaError::bad_request("'with' is not a JID"))?,
                    );
                }
            }
            "start" | "end" => {
                if let Some(v) = single(var, &values)? {
                    let t = parse_datetime(&v).ok_or_else(|| {
                        StanzaError::bad_request(&format!("'{var}' is not a XEP-0082 DateTime"))
                    })?;
                    if var == "start" {
                        f.start = Some(t);
                    } else {
                        f.end = Some(t);
                    }
                }
            }
            "after-id" => f.after_id = single(var, &values)?,
            "before-id" => f.before_id = single(var, &values)?,
            "ids" => f.ids = values.into_iter().filter(|v| !v.is_empty()).collect(),
            // §4.1.5: fields the server does not know.
            _ => return Err(StanzaError::feature_not_implemented()),
        }
    }
    Ok(f)
}

/// XEP-0059 `<set/>` of a request: the page and the requested maximum.
fn parse_rsm(set: Option<&Element>) -> Result<(Page, Option<usize>), StanzaError> {
    let Some(set) = set else {
        return Ok((Page::Forward(None), None));
    };
    let max = match set.child("max", RSM) {
        Some(m) => Some(
            m.text()
                .trim()
                .parse::<usize>()
                .map_err(|_| StanzaError::bad_request("RSM <max/> is not a number"))?,
        ),
        None => None,
    };
    if set.child("index", RSM).is_some() {
        // XEP-0059 §2.4: paging by index is optional.
        return Err(StanzaError::feature_not_implemented());
    }
    let page = match (set.child("after", RSM), set.child("before", RSM)) {
        (Some(_), Some(_)) => {
            // XEP-0313 §4.3.2: undefined; before-id/after-id do this.
            return Err(StanzaError::bad_request(
                "RSM <after/> and <before/> together",
            ));
        }
        (Some(a), None) => {
            let id = a.text().trim().to_owned();
            if id.is_empty() {
                return Err(StanzaError::bad_request("empty RSM <after/>"));
            }
            Page::Forward(Some(id))
        }
        (None, Some(b)) => {
            let id = b.text().trim().to_owned();
            Page::Backward((!id.is_empty()).then_some(id))
        }
        (None, None) => Page::Forward(None),
    };
    Ok((page, max))
}

/// §4.3: `<fin/>` with the XEP-0059 `<set/>` of the page.
pub fn fin(page: &ArchivePage) -> Element {
    let mut set = Element::new_static("set", RSM);
    if let (Some(first), Some(last)) = (page.items.first(), page.items.last()) {
        let mut f = Element::new_static("first", RSM).with_text(first.id.as_str());
        if let Some(i) = page.first_index {
            f.set_attr("index", i.to_string());
        }
        set.push_child(f);
        set.push_child(Element::new_static("last", RSM).with_text(last.id.as_str()));
    }
    set.push_child(Element::new_static("count", RSM).with_text(page.count.to_string()));
    Element::new_static("fin", NS)
        .with_attr("complete", if page.complete { "true" } else { "false" })
        .with_child(set)
}

/// §5: the first and last messages of the archive.
pub async fn metadata(store: &dyn ArchiveStore, user: &Jid) -> Result<Element, StanzaError> {
    let all = ArchiveFilter::default();
    let first = store
        .query(user, &all, &Page::Forward(None), 1)
        .await
        .map_err(query_error)?;
    let last = store
        .query(user, &all, &Page::Backward(None), 1)
        .await
        .map_err(query_error)?;
    let mut m = Element::new_static("metadata", NS);
    if let (Some(s), Some(e)) = (first.items.first(), last.items.first()) {
        for (name, item) in [("start", s), ("end", e)] {
            m.push_child(
                Element::new_static(name, NS)
                    .with_attr("id", item.id.as_str())
                    .with_attr("timestamp", format_micros(item.ts)),
            );
        }
    }
    Ok(m)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn el(x: &str) -> Element {
        Element::parse(x).unwrap()
    }

    #[test]
    fn forms() {
        let x = el(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field><field var='with'><value>a@b</value></field><field var='start'><value>1970-01-01T00:00:01Z</value></field><field var='ids'><value>1</value><value>2</value></field></x>",
        );
        let f = parse_form(&x).unwrap();
        assert_eq!(f.with, Some(Jid::parse("a@b").unwrap()));
        assert_eq!(f.start, Some(1_000_000));
        assert_eq!(f.ids, ["1", "2"]);
        for bad in [
            "<x xmlns='jabber:x:data'><field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field></x>",
            "<x xmlns='jabber:x:data'><field var='start'><value>yesterday</value></field></x>",
            "<x xmlns='jabber:x:data'><field var='with'><value>@@</value></field></x>",
            "<x xmlns='jabber:x:data'><field var='with'><value>a@b</value><value>c@d</value></field></x>",
            "<x xmlns='jabber:x:data' type='cancel'/>",
            "<x xmlns='jabber:x:data'><field/></x>",
        ] {
            assert_eq!(
                parse_form(&el(bad)).unwrap_err().condition,
                "bad-request",
                "{bad}"
            );
        }
        assert_eq!(
            parse_form(&el(
                "<x xmlns='jabber:x:data'><field var='{urn:x}search'><value>x</value></field></x>"
            ))
            .unwrap_err()
            .condition,
            "feature-not-implemented"
        );
    }

    #[test]
    fn rsm_requests() {
        let set = |x: &str| el(&format!("<set xmlns='{RSM}'>{x}</set>"));
        assert_eq!(parse_rsm(None).unwrap(), (Page::Forward(None), None));
        assert_eq!(
            parse_rsm(Some(&set("<max>10</max><after>x</after>"))).unwrap(),
            (Page::Forward(Some("x".into())), Some(10))
        );
        assert_eq!(
            parse_rsm(Some(&set("<max>5</max><before/>"))).unwrap(),
            (Page::Backward(None), Some(5))
        );
        assert_eq!(
            parse_rsm(Some(&set("<before>y</before>"))).unwrap(),
            (Page::Backward(Some("y".into())), None)
        );
        for bad in [
            "<max>-1</max>",
            "<max>x</max>",
            "<after/>",
            "<after>a</after><before>b</before>",
        ] {
            assert!(parse_rsm(Some(&set(bad))).is_err(), "{bad}");
        }
    }
}
