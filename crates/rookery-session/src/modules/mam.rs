//! XEP-0313: Message Archive Management — the iqs on a user's archive:
//! §4 queries (data form filters, XEP-0059 paging, flipped pages), §4.1.5
//! form discovery, §5 metadata, and XEP-0441 preferences.

use std::sync::Arc;

use rookery_core::{Jid, Stanza, StanzaError, new_id};
use rookery_xml::{Element, ns};
use tracing::warn;

use super::{IqContext, IqResult, Module, Spec, Target, parse_stored};
use crate::carbons::FORWARD;
use crate::mam::{
    ArchiveFilter, ArchivePage, ArchivePrefs, DATA, DefaultMode, NS, NS_EXTENDED, Page, QueryError,
    RSM, SID, format_micros, parse_datetime,
};
use crate::offline::DELAY;

#[derive(Debug)]
pub(crate) struct Mam;

fn unavailable(e: impl std::fmt::Display) -> StanzaError {
    warn!(error = %e, "message archive unavailable");
    StanzaError::internal_server_error()
}

fn query_error(e: QueryError) -> StanzaError {
    match e {
        QueryError::ItemNotFound => StanzaError::item_not_found(),
        QueryError::Store(e) => unavailable(e),
    }
}

#[async_trait::async_trait]
impl Module for Mam {
    fn specs(&self) -> &'static [Spec] {
        &[
            Spec {
                id: "XEP-0313",
                version: "1.1.3",
                name: "Message Archive Management",
            },
            Spec {
                id: "XEP-0059",
                version: "1.0",
                name: "Result Set Management",
            },
            Spec {
                id: "XEP-0359",
                version: "0.7.0",
                name: "Unique and Stable Stanza IDs",
            },
            Spec {
                id: "XEP-0441",
                version: "0.2.0",
                name: "Message Archive Management Preferences",
            },
        ]
    }
    fn features(&self) -> &'static [&'static str] {
        &[NS, NS_EXTENDED, SID]
    }
    async fn handle_iq(
        &self,
        ctx: &IqContext<'_>,
        stanza: &Stanza,
        p: &Element,
    ) -> Option<IqResult> {
        if p.ns() != NS {
            return None;
        }
        let user = match ctx.target(stanza) {
            Target::Own(me) => me,
            // Only the account itself reads or configures its archive.
            Target::Other(_) => return Some(Err(StanzaError::forbidden())),
            // The server's own JID hosts no archive.
            Target::Server => return Some(Err(StanzaError::service_unavailable())),
        };
        Some(match (stanza.stanza_type(), p.name()) {
            (Some("get"), "query") => Ok(Some(query_form())),
            (Some("set"), "query") => run_query(ctx, &user, p).await,
            (Some("get"), "metadata") => metadata(ctx, &user).await,
            (Some("get"), "prefs") => match ctx.sessions.stores().archive.prefs(&user).await {
                Ok(prefs) => Ok(Some(prefs_element(&prefs))),
                Err(e) => Err(unavailable(e)),
            },
            (Some("set"), "prefs") => {
                let prefs = match parse_prefs(p) {
                    Ok(prefs) => prefs,
                    Err(e) => return Some(Err(e)),
                };
                if let Err(e) = ctx.sessions.stores().archive.set_prefs(&user, &prefs).await {
                    return Some(Err(unavailable(e)));
                }
                ctx.sessions.archive_prefs_changed(&user);
                Ok(Some(prefs_element(&prefs)))
            }
            _ => Err(StanzaError::feature_not_implemented()),
        })
    }
}

/// §4.1.5: the fields a query form may carry.
fn query_form() -> Element {
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

/// §4: sends the matching messages, then answers `<fin/>`.
async fn run_query(ctx: &IqContext<'_>, user: &Jid, p: &Element) -> IqResult {
    let filter = match p.child("x", DATA) {
        Some(x) => parse_form(x)?,
        None => ArchiveFilter::default(),
    };
    let (page, max) = parse_rsm(p.child("set", RSM))?;
    let cap = ctx.sessions.config.mam_max_page.max(1);
    let limit = max.unwrap_or(cap).min(cap);
    let result = ctx
        .sessions
        .stores()
        .archive
        .query(user, &filter, &page, limit)
        .await
        .map_err(query_error)?;
    let flip = p.child("flip-page", NS).is_some();
    let queryid = p.attr("queryid");
    let mut order: Vec<_> = result.items.iter().collect();
    if flip {
        order.reverse();
    }
    for item in order {
        let original = parse_stored(&item.stanza)?;
        let mut r = Element::new_static("result", NS).with_attr("id", item.id.as_str());
        if let Some(q) = queryid {
            r.set_attr("queryid", q);
        }
        r.push_child(
            Element::new_static("forwarded", FORWARD)
                .with_child(
                    Element::new_static("delay", DELAY).with_attr("stamp", format_micros(item.ts)),
                )
                .with_child(original),
        );
        let m = Element::new_static("message", ns::CLIENT)
            .with_attr("to", ctx.from.as_str())
            .with_attr("id", new_id())
            .with_child(r);
        // §4: every result precedes the iq result in the same queue.
        if ctx.sessions.deliver_to_full(ctx.from, Arc::new(m)).is_err() {
            break;
        }
    }
    Ok(Some(fin(&result)))
}

/// §4.3: `<fin/>` with the XEP-0059 `<set/>` of the page.
fn fin(page: &ArchivePage) -> Element {
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
async fn metadata(ctx: &IqContext<'_>, user: &Jid) -> IqResult {
    let store = &ctx.sessions.stores().archive;
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
    Ok(Some(m))
}

/// XEP-0441 §2: the preferences element (both lists always present).
fn prefs_element(p: &ArchivePrefs) -> Element {
    let list = |name: &str, jids: &[Jid]| {
        let mut l = Element::new_static(name, NS);
        for j in jids {
            l.push_child(Element::new_static("jid", NS).with_text(j.as_str()));
        }
        l
    };
    Element::new_static("prefs", NS)
        .with_attr("default", p.default.as_str())
        .with_child(list("always", &p.always))
        .with_child(list("never", &p.never))
}

fn parse_prefs(p: &Element) -> Result<ArchivePrefs, StanzaError> {
    let default = p
        .attr("default")
        .and_then(DefaultMode::parse)
        .ok_or_else(|| StanzaError::bad_request("'default' must be always, roster or never"))?;
    let list = |name: &str| -> Result<Vec<Jid>, StanzaError> {
        let mut out: Vec<Jid> = Vec::new();
        if let Some(l) = p.child(name, NS) {
            for j in l.children().filter(|c| c.is("jid", NS)) {
                let jid = Jid::parse(j.text().trim())
                    .map_err(|e| StanzaError::jid_malformed(&e.to_string()))?;
                if !out.contains(&jid) {
                    out.push(jid);
                }
            }
        }
        Ok(out)
    };
    Ok(ArchivePrefs {
        default,
        always: list("always")?,
        never: list("never")?,
    })
}

#[cfg(test)]
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

    #[test]
    fn prefs_roundtrip() {
        let p = el(
            "<prefs xmlns='urn:xmpp:mam:2' default='roster'><always><jid>a@b</jid></always><never><jid>c@d/r</jid></never></prefs>",
        );
        let prefs = parse_prefs(&p).unwrap();
        assert_eq!(prefs_element(&prefs).to_xml_string(), p.to_xml_string());
        assert!(parse_prefs(&el("<prefs xmlns='urn:xmpp:mam:2' default='sometimes'/>")).is_err());
        assert_eq!(
            prefs_element(&ArchivePrefs::default()).to_xml_string(),
            "<prefs xmlns='urn:xmpp:mam:2' default='always'><always/><never/></prefs>"
        );
    }
}
