//! XEP-0202: Entity Time. The server reports UTC (`tzo` `+00:00`).

use rookery_core::{Stanza, StanzaError};
use rookery_xml::{Element, ns};
use time::OffsetDateTime;
use time::macros::format_description;

use super::{IqContext, IqResult, Module, Spec};

#[derive(Debug)]
pub(crate) struct EntityTime;

/// XEP-0082 DateTime profile, UTC with milliseconds.
pub(crate) fn xep0082_now() -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::now_utc().format(fmt).unwrap_or_default()
}

#[async_trait::async_trait]
impl Module for EntityTime {
    fn serves_remote(&self) -> bool {
        true
    }
    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            id: "XEP-0202",
            version: "2.0",
            name: "Entity Time",
        }]
    }
    fn features(&self) -> &'static [&'static str] {
        &[ns::TIME]
    }
    async fn handle_iq(
        &self,
        ctx: &IqContext<'_>,
        stanza: &Stanza,
        p: &Element,
    ) -> Option<IqResult> {
        if !p.is("time", ns::TIME) {
            return None;
        }
        if ctx.account.is_some() {
            return Some(Err(StanzaError::service_unavailable()));
        }
        if stanza.stanza_type() != Some("get") {
            return Some(Err(StanzaError::bad_request("time is a get")));
        }
        Some(Ok(Some(
            Element::new_static("time", ns::TIME)
                .with_child(Element::new_static("tzo", ns::TIME).with_text("+00:00"))
                .with_child(Element::new_static("utc", ns::TIME).with_text(xep0082_now())),
        )))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn xep0082_format() {
        let s = super::xep0082_now();
        assert_eq!(s.len(), "2006-12-19T17:58:35.000Z".len(), "{s}");
        assert!(s.ends_with('Z') && s.as_bytes()[10] == b'T');
    }
}
