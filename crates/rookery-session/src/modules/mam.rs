//! XEP-0313: Message Archive Management — the iqs on a user's archive:
//! §4 queries (data form filters, XEP-0059 paging, flipped pages), §4.1.5
//! form discovery, §5 metadata, and XEP-0441 preferences.

use std::sync::Arc;

use rookery_core::{Jid, Stanza, StanzaError};
use rookery_xml::Element;

use super::{IqContext, IqResult, Module, Spec, Target};
use crate::mam::query::{self, unavailable};
use crate::mam::{ArchivePrefs, DefaultMode, NS, NS_EXTENDED, SID};

#[derive(Debug)]
pub(crate) struct Mam;

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
            (Some("get"), "query") => Ok(Some(query::query_form())),
            (Some("set"), "query") => run_query(ctx, &user, p).await,
            (Some("get"), "metadata") => {
                query::metadata(ctx.sessions.stores().archive.as_ref(), &user)
                    .await
                    .map(Some)
            }
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

/// §4: sends the matching messages, then answers `<fin/>`.
async fn run_query(ctx: &IqContext<'_>, user: &Jid, p: &Element) -> IqResult {
    let mut req = query::Request::parse(p)?;
    // A user archive keys messages by the contact's bare JID (§4.1.1: a
    // full JID matches that contact's messages).
    req.filter.with = req.filter.with.map(|w| w.to_bare());
    let archive = &ctx.sessions.stores().archive;
    let cap = ctx.sessions.config.mam_max_page;
    let answer = query::run(archive.as_ref(), user, &req, cap, ctx.from, None, |_| {}).await?;
    for m in answer.results {
        // §4: every result precedes the iq result in the same queue.
        if ctx.sessions.deliver_to_full(ctx.from, Arc::new(m)).is_err() {
            break;
        }
    }
    Ok(Some(answer.fin))
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
