//! XEP-0313 §6.1.2: room archives. Which messages a room archives and how
//! (one copy per room, under the XEP-0359 `<stanza-id by=room/>` every
//! occupant's copy carries), who may read the archive, and what a reader
//! sees of the senders' real JIDs. The store and the query protocol are
//! `rookery-mam`'s, shared with user archives
//! (docs/decisions/0022-muc-archives.md).

use std::sync::{Arc, Weak};

use rookery_core::{ComponentRouter, Element, Jid, Stanza, StanzaError, new_id};
use rookery_mam::{ArchiveStore, ArchivedMessage, query};
use rookery_xml::ns;
use tracing::warn;

use crate::room::{Affiliation, Occupant, Role, Room, Whois};
use crate::{MucConfig, NS_MUC_USER, RoomArchive};

/// Whether `room` archives its messages now.
pub(crate) fn enabled(config: &MucConfig, room: &Room) -> bool {
    config.archive && room.config.archiving.unwrap_or(config.archive_by_default)
}

/// XEP-0359 §5 and XEP-0313 §6.1.2: a groupchat message as the room
/// broadcasts it loses any `<stanza-id/>` claiming to be the room's and any
/// `<x/>` of `muc#user` the sender put in (only the room adds those).
pub(crate) fn sanitize(m: &mut Element, room: &Jid) {
    rookery_mam::strip_stanza_ids(m, room);
    m.retain_children(|c| !c.is("x", NS_MUC_USER));
}

/// Archives `m` (as broadcast, without `to`) sent by `sender`: adds the
/// `<stanza-id/>` all occupants' copies carry and returns the item to
/// append. The stored copy also names the sender's real JID in a
/// `muc#user` `<item/>`, shown only to readers allowed to see it.
pub(crate) fn stamp(m: &mut Element, room: &Jid, sender: &Occupant) -> ArchivedMessage {
    let id = new_id();
    rookery_mam::add_stanza_id(m, room, &id);
    let mut stored = m.clone();
    stored.push_child(Element::new_static("x", NS_MUC_USER).with_child(
        Element::new_static("item", NS_MUC_USER).with_attr("jid", sender.real.as_str()),
    ));
    ArchivedMessage {
        id,
        ts: rookery_mam::now_micros(),
        with: m
            .attr("from")
            .and_then(|f| Jid::parse(f).ok())
            .unwrap_or_else(|| room.clone()),
        stanza: stored.to_xml_string(),
    }
}

/// §6.1.2: who may read the archive, the rules of entering the room (the
/// password aside for members): occupants; owners, admins and members of
/// any room; anyone but outcasts in a public, open room without a password
/// (as Prosody). Others are `forbidden`.
pub(crate) fn may_read(room: &Room, who: &Jid) -> Result<(), StanzaError> {
    let aff = room.affiliation(who);
    if aff == Affiliation::Outcast {
        return Err(StanzaError::forbidden());
    }
    let open = room.config.public && !room.config.members_only && room.config.password.is_none();
    if aff >= Affiliation::Member || open || room.by_real(who).is_some() {
        Ok(())
    } else {
        Err(StanzaError::forbidden())
    }
}

/// §6.1.2: real JIDs go to readers of a non-anonymous room, to the room's
/// moderators, and to its owners and admins (moderators when present).
pub(crate) fn sees_real_jids(room: &Room, who: &Jid) -> bool {
    room.config.whois == Whois::Anyone
        || room.affiliation(who) >= Affiliation::Admin
        || room.by_real(who).is_some_and(|o| o.role == Role::Moderator)
}

/// Sends `out` in order through the router (if it is still there).
pub(crate) async fn send_all(router: &Weak<dyn ComponentRouter>, out: Vec<Element>) {
    let Some(router) = router.upgrade() else {
        return;
    };
    for el in out {
        match Stanza::parse(el) {
            Ok(st) => router.route_from_component(st).await,
            Err((_, e)) => warn!(error = %e, "the MUC service built a bad stanza"),
        }
    }
}

/// An iq on a room's archive, answered off the rooms' task (the store
/// query may take a while): a §4 query (`q` is `<query/>`), or §5
/// metadata. The caller has checked that `st.from` may read it; a bad
/// request is the error to answer at once.
pub(crate) fn answer(
    archive: &RoomArchive,
    router: Weak<dyn ComponentRouter>,
    room: &Room,
    q: &Element,
    st: &Stanza,
) -> Result<(), StanzaError> {
    let Some(reader) = st.from().cloned() else {
        return Ok(());
    };
    let request = match q.name() {
        "query" => Some(query::Request::parse(q)?),
        _ => None,
    };
    let hide = !sees_real_jids(room, &reader);
    let (store, cap, jid, st) = (
        Arc::clone(&archive.store),
        archive.max_page,
        room.jid.clone(),
        st.clone(),
    );
    tokio::spawn(async move {
        let out = match request {
            Some(req) => run(store.as_ref(), &jid, &req, cap, &reader, hide, &st).await,
            None => match query::metadata(store.as_ref(), &jid).await {
                Ok(m) => vec![st.iq_result(Some(m))],
                Err(e) => st.error_reply(&e).into_iter().collect(),
            },
        };
        send_all(&router, out).await;
    });
    Ok(())
}

/// §4 and §6.1.2: the results (from the room, the archived messages from
/// occupant JIDs without `to`) and then the iq result with `<fin/>`.
async fn run(
    store: &dyn ArchiveStore,
    room: &Jid,
    req: &query::Request,
    cap: usize,
    reader: &Jid,
    hide_real_jids: bool,
    st: &Stanza,
) -> Vec<Element> {
    let hide = |m: &mut Element| {
        m.remove_attr("to");
        if hide_real_jids {
            m.retain_children(|c| !c.is("x", NS_MUC_USER));
        }
    };
    match query::run(store, room, req, cap, reader, Some(room), hide).await {
        Ok(a) => {
            let mut out = a.results;
            out.push(st.iq_result(Some(a.fin)));
            out
        }
        Err(e) => st.error_reply(&e).into_iter().collect(),
    }
}

/// The disco#info features of a room that archives: §7 (the extended
/// query fields and metadata are the shared protocol's) and XEP-0359 §6,
/// which clients (Conversations) require before they trust the room's
/// stanza-ids.
pub(crate) const FEATURES: [&str; 3] =
    [rookery_mam::NS, rookery_mam::NS_EXTENDED, rookery_mam::SID];

/// Is `q` an iq payload of the archive protocol?
pub(crate) fn is_archive_iq(q: &Element) -> bool {
    q.ns() == rookery_mam::NS && matches!(q.name(), "query" | "metadata")
}

/// XEP-0334 namespace.
const HINTS: &str = "urn:xmpp:hints";

/// The groupchat messages a room archives (§6.1.2): those with a body,
/// unless the sender asked for no storage (XEP-0334 `no-store`,
/// `no-permanent-store`). Subject changes are not archived (a SHOULD of
/// §6.1.2 left out, as ejabberd does): the room sends its subject on every
/// join (XEP-0045 §7.2.16), and a subject among archived messages would be
/// applied again by clients catching up.
pub(crate) fn archivable(m: &Element) -> bool {
    m.child("body", ns::CLIENT).is_some()
        && m.child("no-store", HINTS).is_none()
        && m.child("no-permanent-store", HINTS).is_none()
}
