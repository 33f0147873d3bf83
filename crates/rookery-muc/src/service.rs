//! The rooms' task: every stanza for the service domain, handled in order.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use rookery_core::{ComponentRouter, Element, ErrorType, Jid, Stanza, StanzaError, StanzaKind};
use rookery_xml::ns;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::archive;
use crate::room::{Affiliation, HistoryRequest, Occupant, Role, Room, RoomConfig, Whois};
use crate::store::{RoomStore, StoredRoom};
use crate::{
    Job, MucConfig, NS_DELAY, NS_MUC, NS_MUC_ADMIN, NS_MUC_OWNER, NS_MUC_USER, NS_ROOMINFO,
    NS_SELF_PING_OPTIMIZATION, RoomArchive,
};

fn registration_required() -> StanzaError {
    StanzaError {
        error_type: ErrorType::Auth,
        condition: "registration-required",
        text: None,
        app: None,
    }
}

fn err(out: &mut Vec<Element>, st: &Stanza, e: StanzaError) {
    if let Some(r) = st.error_reply(&e) {
        out.push(r);
    }
}

fn status_message(room: &Jid, to: &Jid, codes: &[u16]) -> Element {
    let mut x = Element::new_static("x", NS_MUC_USER);
    for c in codes {
        x.push_child(Element::new_static("status", NS_MUC_USER).with_attr("code", c.to_string()));
    }
    Element::new_static("message", ns::CLIENT)
        .with_attr("from", room.as_str())
        .with_attr("to", to.as_str())
        .with_attr("type", "groupchat")
        .with_child(x)
}

/// `<actor nick/>` and `<reason/>` of an admin change.
fn actor_reason(actor: Option<&str>, reason: Option<&str>) -> Vec<Element> {
    let mut v = Vec::new();
    if let Some(a) = actor {
        v.push(Element::new_static("actor", NS_MUC_USER).with_attr("nick", a));
    }
    if let Some(r) = reason {
        v.push(Element::new_static("reason", NS_MUC_USER).with_text(r));
    }
    v
}

pub(crate) struct Service {
    domain: String,
    config: MucConfig,
    store: Arc<dyn RoomStore>,
    archive: RoomArchive,
    router: Weak<dyn ComponentRouter>,
    rooms: HashMap<Jid, Room>,
    /// Who created each live room, for `max_rooms_per_user`.
    creators: HashMap<Jid, Jid>,
    /// Stanzas to send once the current one is handled.
    out: Vec<Element>,
}

impl Service {
    pub(crate) fn new(
        domain: &str,
        config: MucConfig,
        store: Arc<dyn RoomStore>,
        archive: RoomArchive,
        router: Weak<dyn ComponentRouter>,
    ) -> Service {
        Service {
            domain: domain.to_owned(),
            config,
            store,
            archive,
            router,
            rooms: HashMap::new(),
            creators: HashMap::new(),
            out: Vec::new(),
        }
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        info!(domain = %self.domain, "MUC service started");
        while let Some(job) = rx.recv().await {
            match job {
                Job::Stanza(st) => {
                    self.handle(st).await;
                    self.flush().await;
                }
                Job::Release(owns, done) => {
                    self.release(&*owns);
                    self.flush().await;
                    let _ = done.send(());
                }
            }
        }
        debug!(domain = %self.domain, "MUC service stopped");
    }

    /// A persistent room as stored (configuration, affiliations, subject).
    fn from_stored(jid: Jid, s: &StoredRoom) -> Room {
        let config: RoomConfig = serde_json::from_str(&s.config).unwrap_or_default();
        let mut room = Room::new(jid, config);
        for (j, a) in &s.affiliations {
            if let (Ok(j), Some(a)) = (Jid::parse(j), Affiliation::parse(a)) {
                room.set_affiliation(&j, a);
            }
        }
        if !s.subject.is_empty() {
            room.subject = Some((s.subject_by.clone(), s.subject.clone()));
        }
        room
    }

    /// Loads a persistent room that is not in memory yet: rooms are loaded
    /// when a stanza first reaches them, so that in a cluster the node
    /// that takes a room's shard over reads it as its last owner left it.
    /// `false` when the store could not say: the stanza is then refused
    /// rather than taken for one to a room that does not exist (which
    /// could create a new room over a stored one and clear its archive).
    async fn load(&mut self, jid: &Jid) -> bool {
        if self.rooms.contains_key(jid) {
            return true;
        }
        match self.store.room(&self.domain, jid.as_str()).await {
            Ok(Some(s)) => {
                let room = Self::from_stored(jid.clone(), &s);
                self.rooms.insert(jid.clone(), room);
                debug!(room = %jid, "persistent room loaded");
                true
            }
            Ok(None) => true,
            Err(e) => {
                warn!(error = %e, room = %jid, "a persistent room could not be loaded");
                false
            }
        }
    }

    /// Cluster: the rooms whose shard moved to another node are given up.
    /// Their occupants leave with status 332 (XEP-0045 §15.6, "removed
    /// from the room because the MUC service is being shut down") and
    /// join again on the room's new node; persistent rooms are already
    /// stored as they are.
    fn release(&mut self, owns: &(dyn Fn(&Jid) -> bool + Send + Sync)) {
        let gone: Vec<Jid> = self.rooms.keys().filter(|j| !owns(j)).cloned().collect();
        for jid in &gone {
            let Some(mut room) = self.rooms.remove(jid) else {
                continue;
            };
            self.creators.remove(jid);
            for o in &mut room.occupants {
                o.role = Role::None;
            }
            for o in &room.occupants {
                self.out
                    .push(room.presence_of(o, o, Some("unavailable"), &[332], &[], None));
            }
        }
        if !gone.is_empty() {
            info!(domain = %self.domain, rooms = gone.len(), "rooms handed over to their new node");
        }
    }

    async fn flush(&mut self) {
        let out = std::mem::take(&mut self.out);
        archive::send_all(&self.router, out).await;
    }

    /// Stores a persistent room as it is now (or forgets a room that no
    /// longer is persistent).
    async fn persist(&self, jid: &Jid) {
        let Some(room) = self.rooms.get(jid) else {
            return;
        };
        let r = if room.config.persistent {
            let stored = StoredRoom {
                jid: jid.as_str().to_owned(),
                config: serde_json::to_string(&room.config).unwrap_or_default(),
                affiliations: room
                    .affiliations
                    .iter()
                    .map(|(j, a)| (j.as_str().to_owned(), a.as_str().to_owned()))
                    .collect::<BTreeMap<_, _>>(),
                subject: room
                    .subject
                    .as_ref()
                    .map(|s| s.1.clone())
                    .unwrap_or_default(),
                subject_by: room
                    .subject
                    .as_ref()
                    .map(|s| s.0.clone())
                    .unwrap_or_default(),
            };
            self.store.save_room(&self.domain, &stored).await
        } else {
            self.store.delete_room(&self.domain, jid.as_str()).await
        };
        if let Err(e) = r {
            warn!(error = %e, room = %jid, "room not stored");
        }
    }

    /// Drops a room from memory (and the store, with its archive).
    async fn remove_room(&mut self, jid: &Jid) {
        self.rooms.remove(jid);
        self.creators.remove(jid);
        if let Err(e) = self.store.delete_room(&self.domain, jid.as_str()).await {
            warn!(error = %e, room = %jid, "room not deleted from the store");
        }
        self.forget_archive(jid).await;
        debug!(room = %jid, "room removed");
    }

    /// Deletes the XEP-0313 archive of a room that is destroyed, or that
    /// is created anew (a temporary room of the same name that vanished in
    /// a crash left its archive).
    async fn forget_archive(&self, jid: &Jid) {
        if let Err(e) = self.archive.store.delete_user(jid).await {
            warn!(error = %e, room = %jid, "room archive not deleted");
        }
    }

    /// A temporary room goes when its last occupant leaves (§10.1.2).
    async fn maybe_vanish(&mut self, jid: &Jid) {
        if self
            .rooms
            .get(jid)
            .is_some_and(|r| r.occupants.is_empty() && (!r.config.persistent || r.locked))
        {
            self.remove_room(jid).await;
        }
    }

    async fn handle(&mut self, st: Stanza) {
        let (Some(from), Some(to)) = (st.from().cloned(), st.to().cloned()) else {
            return;
        };
        if to.node().is_none() {
            return self.service_stanza(&st).await;
        }
        let room = to.to_bare();
        if !self.load(&room).await {
            // RFC 6120 §8.3.3.6: the store behind the room is unavailable;
            // the stream stays up and the client may try again.
            let e = StanzaError::resource_constraint()
                .with_text("the room's store is unavailable, try again later");
            return err(&mut self.out, &st, e);
        }
        let nick = to.resource().map(str::to_owned);
        match st.kind() {
            StanzaKind::Presence => self.presence(&from, &room, nick, &st).await,
            StanzaKind::Message => self.message(&from, &room, nick, &st).await,
            StanzaKind::Iq => self.iq(&from, &room, nick, &st).await,
        }
    }

    /// §6.1–§6.3: the service itself.
    async fn service_stanza(&mut self, st: &Stanza) {
        if !st.is_iq_request() {
            return;
        }
        let q = st.element().first_child();
        match (st.stanza_type(), q.map(|q| (q.name(), q.ns()))) {
            (Some("get"), Some(("query", ns::DISCO_INFO)))
                if q.and_then(|q| q.attr("node")).is_none() =>
            {
                let query = Element::new_static("query", ns::DISCO_INFO)
                    .with_child(
                        Element::new_static("identity", ns::DISCO_INFO)
                            .with_attr("category", "conference")
                            .with_attr("type", "text")
                            .with_attr("name", "Chatrooms"),
                    )
                    .with_child(feature(ns::DISCO_INFO))
                    .with_child(feature(ns::DISCO_ITEMS))
                    .with_child(feature(NS_MUC));
                self.out.push(st.iq_result(Some(query)));
            }
            (Some("get"), Some(("query", ns::DISCO_ITEMS)))
                if q.and_then(|q| q.attr("node")).is_none() =>
            {
                // Public rooms in memory, and the stored ones that are not
                // (in a cluster, those another node serves, as last stored).
                let mut public: BTreeMap<String, String> = self
                    .rooms
                    .values()
                    .filter(|r| r.config.public && !r.locked)
                    .map(|r| (r.jid.as_str().to_owned(), r.config.name.clone()))
                    .collect();
                match self.store.rooms(&self.domain).await {
                    Ok(stored) => {
                        for s in stored {
                            if public.contains_key(&s.jid) {
                                continue;
                            }
                            let Ok(jid) = Jid::parse(&s.jid) else {
                                continue;
                            };
                            if self.rooms.contains_key(&jid) {
                                continue;
                            }
                            let r = Self::from_stored(jid, &s);
                            if r.config.public {
                                public.insert(s.jid, r.config.name);
                            }
                        }
                    }
                    Err(e) => warn!(error = %e, "stored rooms not listed"),
                }
                let mut query = Element::new_static("query", ns::DISCO_ITEMS);
                for (jid, name) in public {
                    let mut item =
                        Element::new_static("item", ns::DISCO_ITEMS).with_attr("jid", jid);
                    if !name.is_empty() {
                        item.set_attr("name", name);
                    }
                    query.push_child(item);
                }
                self.out.push(st.iq_result(Some(query)));
            }
            _ => err(&mut self.out, st, StanzaError::service_unavailable()),
        }
    }

    async fn presence(&mut self, from: &Jid, jid: &Jid, nick: Option<String>, st: &Stanza) {
        match st.stanza_type() {
            None => {}
            Some("unavailable") | Some("error") => return self.leave(from, jid, st).await,
            _ => return,
        }
        // §7.2.1: an occupant JID needs a nick, itself a JID resourcepart.
        let Some(nick) = nick else {
            return err(
                &mut self.out,
                st,
                StanzaError::jid_malformed("no room nickname"),
            );
        };
        if rookery_jid::prep_resourcepart(&nick)
            .map(|n| n != nick.as_str())
            .unwrap_or(true)
        {
            return err(
                &mut self.out,
                st,
                StanzaError::jid_malformed("bad room nickname"),
            );
        }
        let current = self
            .rooms
            .get(jid)
            .and_then(|r| r.by_real(from))
            .map(|o| o.nick.clone());
        match current {
            Some(old) if old == nick => self.presence_update(from, jid, st),
            Some(_) => self.nick_change(from, jid, &nick, st),
            None => self.join(from, jid, &nick, st).await,
        }
    }

    /// The presence payload reflected to the room: all but the MUC elements.
    fn payload(st: &Stanza) -> Vec<Element> {
        st.element()
            .children()
            .filter(|c| c.ns() != NS_MUC && c.ns() != NS_MUC_USER)
            .cloned()
            .collect()
    }

    /// §7.2: entering a room (and creating it, §10.1).
    async fn join(&mut self, from: &Jid, jid: &Jid, nick: &str, st: &Stanza) {
        let x = st.element().child("x", NS_MUC);
        let mut created = false;
        if !self.rooms.contains_key(jid) {
            let creator = from.to_bare();
            let limit = self.config.max_rooms_per_user;
            if limit > 0 && self.creators.values().filter(|c| **c == creator).count() >= limit {
                return err(
                    &mut self.out,
                    st,
                    StanzaError::not_allowed().with_text("too many rooms created"),
                );
            }
            let mut room = Room::new(jid.clone(), RoomConfig::default());
            room.set_affiliation(&creator, Affiliation::Owner);
            // §10.1.2: a MUC client gets a locked room until it configures
            // it; a groupchat 1.0 client an instant room.
            room.locked = x.is_some();
            self.forget_archive(jid).await;
            self.rooms.insert(jid.clone(), room);
            self.creators.insert(jid.clone(), creator);
            created = true;
            debug!(room = %jid, "room created");
        }
        let service_max = self.config.max_occupants_per_room;
        let Some(room) = self.rooms.get_mut(jid) else {
            return;
        };
        let aff = room.affiliation(from);
        if room.locked && aff != Affiliation::Owner {
            return err(&mut self.out, st, StanzaError::item_not_found());
        }
        if aff == Affiliation::Outcast {
            return err(&mut self.out, st, StanzaError::forbidden());
        }
        if room.config.members_only && aff < Affiliation::Member {
            return err(&mut self.out, st, registration_required());
        }
        if let Some(pw) = &room.config.password {
            let given = x
                .and_then(|x| x.child("password", NS_MUC))
                .map(|p| p.text());
            if given.as_deref() != Some(pw.as_str()) {
                return err(&mut self.out, st, StanzaError::not_authorized());
            }
        }
        if room.by_nick(nick).is_some() {
            return err(&mut self.out, st, StanzaError::conflict());
        }
        let max = match room.config.max_users {
            0 => service_max,
            n => n.min(service_max),
        };
        if room.occupants.len() >= max && aff < Affiliation::Admin {
            let mut e = StanzaError::service_unavailable();
            e.error_type = ErrorType::Wait;
            return err(&mut self.out, st, e);
        }
        let me = Occupant {
            nick: nick.to_owned(),
            real: from.clone(),
            role: room.default_role(aff),
            payload: Self::payload(st),
        };
        // §7.2.2: the others first, then the newcomer to the others, then
        // to itself (status 110).
        for o in &room.occupants {
            self.out
                .push(room.presence_of(o, &me, None, &[], &[], None));
        }
        for o in &room.occupants {
            self.out
                .push(room.presence_of(&me, o, None, &[], &[], None));
        }
        let mut codes = Vec::new();
        if room.config.whois == Whois::Anyone {
            codes.push(100);
        }
        if created {
            codes.push(201);
        }
        let mut own = room.presence_of(&me, &me, None, &codes, &[], None);
        if let Some(id) = st.id() {
            own.set_attr("id", id);
        }
        self.out.push(own);
        // §7.2.15: the history, then §7.2.16: the subject.
        let req = HistoryRequest::parse(x.and_then(|x| x.child("history", NS_MUC)));
        let now = SystemTime::now();
        for h in req.select(&room.history, now) {
            let mut m = h.el.clone();
            m.set_attr("to", from.as_str());
            m.push_child(
                Element::new_static("delay", NS_DELAY)
                    .with_attr("from", jid.as_str())
                    .with_attr("stamp", h.stamp.as_str()),
            );
            self.out.push(m);
        }
        let (subject_from, subject) = match &room.subject {
            Some((by, text)) if !by.is_empty() => (room.occupant_jid(by), text.clone()),
            Some((_, text)) => (jid.clone(), text.clone()),
            None => (jid.clone(), String::new()),
        };
        let mut subj = Element::new_static("subject", ns::CLIENT);
        if !subject.is_empty() {
            subj.push_text(subject);
        }
        self.out.push(
            Element::new_static("message", ns::CLIENT)
                .with_attr("from", subject_from.as_str())
                .with_attr("to", from.as_str())
                .with_attr("type", "groupchat")
                .with_child(subj),
        );
        room.occupants.push(me);
    }

    /// §7.7: a presence change of an occupant, broadcast to the room.
    fn presence_update(&mut self, from: &Jid, jid: &Jid, st: &Stanza) {
        let Some(room) = self.rooms.get_mut(jid) else {
            return;
        };
        let Some(i) = room.occupants.iter().position(|o| o.real == *from) else {
            return;
        };
        room.occupants[i].payload = Self::payload(st);
        let me = room.occupants[i].clone();
        for o in &room.occupants {
            self.out
                .push(room.presence_of(&me, o, None, &[], &[], None));
        }
    }

    /// §7.6: a new nick: unavailable with 303 from the old, available from the new.
    fn nick_change(&mut self, from: &Jid, jid: &Jid, new: &str, st: &Stanza) {
        let Some(room) = self.rooms.get_mut(jid) else {
            return;
        };
        if room.by_nick(new).is_some() {
            return err(&mut self.out, st, StanzaError::conflict());
        }
        let Some(i) = room.occupants.iter().position(|o| o.real == *from) else {
            return;
        };
        let before = room.occupants[i].clone();
        for o in &room.occupants {
            self.out.push(room.presence_of(
                &before,
                o,
                Some("unavailable"),
                &[303],
                &[],
                Some(new),
            ));
        }
        room.occupants[i].nick = new.to_owned();
        room.occupants[i].payload = Self::payload(st);
        let after = room.occupants[i].clone();
        for o in &room.occupants {
            self.out
                .push(room.presence_of(&after, o, None, &[], &[], None));
        }
    }

    /// §7.14: an occupant leaves (or its client bounced an error).
    async fn leave(&mut self, from: &Jid, jid: &Jid, st: &Stanza) {
        let Some(room) = self.rooms.get_mut(jid) else {
            return;
        };
        let Some(i) = room.occupants.iter().position(|o| o.real == *from) else {
            return;
        };
        let mut me = room.occupants[i].clone();
        me.role = Role::None;
        if st.stanza_type() == Some("unavailable") {
            me.payload = Self::payload(st);
        } else {
            me.payload.clear();
        }
        for o in &room.occupants {
            self.out
                .push(room.presence_of(&me, o, Some("unavailable"), &[], &[], None));
        }
        room.occupants.remove(i);
        self.maybe_vanish(jid).await;
    }

    async fn message(&mut self, from: &Jid, jid: &Jid, nick: Option<String>, st: &Stanza) {
        if st.is_error() {
            return;
        }
        let history_max = self.config.history_max_stanzas;
        let Some(room) = self
            .rooms
            .get_mut(jid)
            .filter(|r| !r.locked || r.by_real(from).is_some())
        else {
            return err(&mut self.out, st, StanzaError::item_not_found());
        };
        let Some(me) = room.by_real(from).cloned() else {
            return err(&mut self.out, st, StanzaError::not_acceptable());
        };
        let el = st.element();
        if let Some(nick) = nick {
            // §7.5: a private message.
            if st.stanza_type() == Some("groupchat") {
                return err(
                    &mut self.out,
                    st,
                    StanzaError::bad_request("groupchat to an occupant"),
                );
            }
            let Some(target) = room.by_nick(&nick) else {
                return err(&mut self.out, st, StanzaError::item_not_found());
            };
            let mut m = el.clone();
            m.set_attr("from", room.occupant_jid(&me.nick).as_str());
            m.set_attr("to", target.real.as_str());
            m.push_child(Element::new_static("x", NS_MUC_USER));
            self.out.push(m);
            return;
        }
        if st.stanza_type() != Some("groupchat") {
            return self.invite(from, jid, &me, st);
        }
        // §8.3: visitors have no voice in a moderated room.
        if me.role < Role::Participant {
            return err(&mut self.out, st, StanzaError::forbidden());
        }
        let subject = el.child("subject", ns::CLIENT);
        let body = el.child("body", ns::CLIENT);
        let mut changed_subject = false;
        if let Some(s) = subject.filter(|_| body.is_none()) {
            // §8.1: moderators, or participants if the room allows it.
            if me.role != Role::Moderator && !room.config.change_subject {
                return err(&mut self.out, st, StanzaError::forbidden());
            }
            room.subject = Some((me.nick.clone(), s.text()));
            changed_subject = true;
        }
        let mut m = el.clone();
        m.remove_attr("to");
        m.set_attr("from", room.occupant_jid(&me.nick).as_str());
        archive::sanitize(&mut m, jid);
        // XEP-0313 §6.1.2: archived once, before the copies go out, each
        // carrying the archive's stanza-id (XEP-0359, by the room).
        if archive::enabled(&self.config, room) && archive::archivable(&m) {
            let item = archive::stamp(&mut m, jid, &me);
            if let Err(e) = self.archive.store.append(jid, &item).await {
                warn!(error = %e, room = %jid, "room message not archived");
            }
        }
        for o in &room.occupants {
            let mut c = m.clone();
            c.set_attr("to", o.real.as_str());
            self.out.push(c);
        }
        if body.is_some() {
            room.remember(m, history_max, SystemTime::now());
        }
        if changed_subject && room.config.persistent {
            self.persist(jid).await;
        }
    }

    /// §7.8.2: a mediated invitation.
    fn invite(&mut self, from: &Jid, jid: &Jid, me: &Occupant, st: &Stanza) {
        let Some(room) = self.rooms.get(jid) else {
            return;
        };
        let Some(inv) = st
            .element()
            .child("x", NS_MUC_USER)
            .and_then(|x| x.child("invite", NS_MUC_USER))
        else {
            return err(
                &mut self.out,
                st,
                StanzaError::bad_request("only groupchat messages and invitations"),
            );
        };
        let Some(to) = inv.attr("to").and_then(|t| Jid::parse(t).ok()) else {
            return err(&mut self.out, st, StanzaError::jid_malformed("invitee"));
        };
        let may = me.role == Role::Moderator
            || room.config.allow_invites
            || room.affiliation(from) >= Affiliation::Admin;
        if !may {
            return err(&mut self.out, st, StanzaError::forbidden());
        }
        let mut invite =
            Element::new_static("invite", NS_MUC_USER).with_attr("from", from.to_bare().as_str());
        if let Some(r) = inv.child("reason", NS_MUC_USER) {
            invite.push_child(r.clone());
        }
        let mut x = Element::new_static("x", NS_MUC_USER).with_child(invite);
        if let Some(pw) = &room.config.password {
            x.push_child(Element::new_static("password", NS_MUC_USER).with_text(pw.as_str()));
        }
        self.out.push(
            Element::new_static("message", ns::CLIENT)
                .with_attr("from", jid.as_str())
                .with_attr("to", to.as_str())
                .with_child(x),
        );
    }

    async fn iq(&mut self, from: &Jid, jid: &Jid, nick: Option<String>, st: &Stanza) {
        if !st.is_iq_request() {
            return;
        }
        if let Some(nick) = nick {
            return self.occupant_iq(from, jid, &nick, st);
        }
        let Some(q) = st.element().first_child() else {
            return;
        };
        let visible = self
            .rooms
            .get(jid)
            .is_some_and(|r| !r.locked || r.affiliation(from) == Affiliation::Owner);
        if !visible {
            return err(&mut self.out, st, StanzaError::item_not_found());
        }
        let get = st.stanza_type() == Some("get");
        if archive::is_archive_iq(q) {
            return self.archive_iq(from, jid, q, get, st);
        }
        match (get, q.name(), q.ns()) {
            (true, "query", ns::DISCO_INFO) => self.room_info(jid, st),
            (true, "query", ns::DISCO_ITEMS) => self
                .out
                .push(st.iq_result(Some(Element::new_static("query", ns::DISCO_ITEMS)))),
            (true, "query", NS_MUC_OWNER) => {
                let service_max = self.config.max_occupants_per_room;
                let Some(room) = self.rooms.get(jid) else {
                    return;
                };
                if room.affiliation(from) != Affiliation::Owner {
                    return err(&mut self.out, st, StanzaError::forbidden());
                }
                let archiving = self
                    .config
                    .archive
                    .then(|| archive::enabled(&self.config, room));
                let q = Element::new_static("query", NS_MUC_OWNER)
                    .with_child(room.config.to_form(service_max, archiving));
                self.out.push(st.iq_result(Some(q)));
            }
            (false, "query", NS_MUC_OWNER) => self.owner_set(from, jid, q.clone(), st).await,
            (true, "query", NS_MUC_ADMIN) => self.admin_get(from, jid, q, st),
            (false, "query", NS_MUC_ADMIN) => self.admin_set(from, jid, q.clone(), st).await,
            _ => err(&mut self.out, st, StanzaError::service_unavailable()),
        }
    }

    /// XEP-0313 on the room's JID (§3.3.2): the §4.1.5 form, §4 queries
    /// and §5 metadata, for those who may read the archive (§6.1.2).
    fn archive_iq(&mut self, from: &Jid, jid: &Jid, q: &Element, get: bool, st: &Stanza) {
        let Some(room) = self.rooms.get(jid) else {
            return;
        };
        if !archive::enabled(&self.config, room) {
            return err(&mut self.out, st, StanzaError::service_unavailable());
        }
        if let Err(e) = archive::may_read(room, from) {
            return err(&mut self.out, st, e);
        }
        match (get, q.name()) {
            (true, "query") => self
                .out
                .push(st.iq_result(Some(rookery_mam::query::query_form()))),
            (false, "query") | (true, "metadata") => {
                let router = self.router.clone();
                if let Err(e) = archive::answer(&self.archive, router, room, q, st) {
                    err(&mut self.out, st, e);
                }
            }
            _ => err(&mut self.out, st, StanzaError::feature_not_implemented()),
        }
    }

    /// An iq to an occupant JID. XEP-0410 §3.1: a client pinging its own
    /// occupant JID learns whether it is still joined, answered here
    /// (`muc#self-ping-optimization`) instead of by the client itself; a
    /// sender that is not an occupant gets `not-acceptable`. Other iqs to
    /// occupants are not forwarded (`service-unavailable`).
    fn occupant_iq(&mut self, from: &Jid, jid: &Jid, nick: &str, st: &Stanza) {
        let me = self
            .rooms
            .get(jid)
            .and_then(|r| r.by_real(from))
            .map(|o| o.nick.clone());
        let Some(me) = me else {
            // XEP-0410 Example 2.
            let not_joined = StanzaError {
                error_type: ErrorType::Cancel,
                ..StanzaError::not_acceptable()
            };
            return err(&mut self.out, st, not_joined);
        };
        let ping =
            st.stanza_type() == Some("get") && st.element().child("ping", ns::PING).is_some();
        if ping && me == nick {
            self.out.push(st.iq_result(None));
            return;
        }
        err(&mut self.out, st, StanzaError::service_unavailable());
    }

    /// §6.4: the room's disco#info with the muc#roominfo form.
    fn room_info(&mut self, jid: &Jid, st: &Stanza) {
        let Some(room) = self.rooms.get(jid) else {
            return;
        };
        let name = if room.config.name.is_empty() {
            jid.node().unwrap_or_default().to_owned()
        } else {
            room.config.name.clone()
        };
        let mut q = Element::new_static("query", ns::DISCO_INFO).with_child(
            Element::new_static("identity", ns::DISCO_INFO)
                .with_attr("category", "conference")
                .with_attr("type", "text")
                .with_attr("name", name),
        );
        q.push_child(feature(ns::DISCO_INFO));
        q.push_child(feature(NS_MUC));
        // XEP-0410 §3.2: self-pings are answered by the service.
        q.push_child(feature(NS_SELF_PING_OPTIMIZATION));
        for f in room.config.features() {
            q.push_child(feature(f));
        }
        if archive::enabled(&self.config, room) {
            for f in archive::FEATURES {
                q.push_child(feature(f));
            }
        }
        let field = |var: &str, label: &str, v: &str| {
            let mut value = Element::new_static("value", ns::DATA_FORMS);
            if !v.is_empty() {
                value.push_text(v);
            }
            Element::new_static("field", ns::DATA_FORMS)
                .with_attr("var", var)
                .with_attr("label", label)
                .with_child(value)
        };
        let form = Element::new_static("x", ns::DATA_FORMS)
            .with_attr("type", "result")
            .with_child(
                Element::new_static("field", ns::DATA_FORMS)
                    .with_attr("var", "FORM_TYPE")
                    .with_attr("type", "hidden")
                    .with_child(
                        Element::new_static("value", ns::DATA_FORMS).with_text(NS_ROOMINFO),
                    ),
            )
            .with_child(field(
                "muc#roominfo_description",
                "Description",
                &room.config.description,
            ))
            .with_child(field(
                "muc#roominfo_occupants",
                "Number of occupants",
                &room.occupants.len().to_string(),
            ))
            .with_child(field(
                "muc#roominfo_subject",
                "Current Subject",
                room.subject.as_ref().map(|s| s.1.as_str()).unwrap_or(""),
            ));
        q.push_child(form);
        self.out.push(st.iq_result(Some(q)));
    }

    /// §10.1.3, §10.2, §10.9: configuration and destruction.
    async fn owner_set(&mut self, from: &Jid, jid: &Jid, q: Element, st: &Stanza) {
        let service_max = self.config.max_occupants_per_room;
        let Some(room) = self.rooms.get_mut(jid) else {
            return;
        };
        if room.affiliation(from) != Affiliation::Owner {
            return err(&mut self.out, st, StanzaError::forbidden());
        }
        if let Some(d) = q.child("destroy", NS_MUC_OWNER) {
            let mut destroy = Element::new_static("destroy", NS_MUC_USER);
            if let Some(alt) = d.attr("jid") {
                destroy.set_attr("jid", alt);
            }
            if let Some(r) = d.child("reason", NS_MUC_OWNER) {
                destroy.push_child(Element::new_static("reason", NS_MUC_USER).with_text(r.text()));
            }
            for o in &room.occupants {
                let mut x = Element::new_static("x", NS_MUC_USER).with_child(
                    Element::new_static("item", NS_MUC_USER)
                        .with_attr("affiliation", "none")
                        .with_attr("role", "none"),
                );
                x.push_child(destroy.clone());
                self.out.push(
                    Element::new_static("presence", ns::CLIENT)
                        .with_attr("from", room.occupant_jid(&o.nick).as_str())
                        .with_attr("to", o.real.as_str())
                        .with_attr("type", "unavailable")
                        .with_child(x),
                );
            }
            self.out.push(st.iq_result(None));
            self.remove_room(jid).await;
            return;
        }
        let Some(form) = q.child("x", ns::DATA_FORMS) else {
            return err(
                &mut self.out,
                st,
                StanzaError::bad_request("expected a data form or destroy"),
            );
        };
        if form.attr("type") == Some("cancel") {
            self.out.push(st.iq_result(None));
            // §10.1.3: cancelling the initial configuration destroys the room.
            if room.locked {
                let owner = room
                    .occupants
                    .iter()
                    .map(|o| (o.nick.clone(), o.real.clone()))
                    .collect::<Vec<_>>();
                for (nick, real) in owner {
                    let mut p = Element::new_static("presence", ns::CLIENT)
                        .with_attr("from", room.occupant_jid(&nick).as_str())
                        .with_attr("to", real.as_str())
                        .with_attr("type", "unavailable");
                    p.push_child(
                        Element::new_static("x", NS_MUC_USER)
                            .with_child(
                                Element::new_static("item", NS_MUC_USER)
                                    .with_attr("affiliation", "none")
                                    .with_attr("role", "none"),
                            )
                            .with_child(Element::new_static("destroy", NS_MUC_USER)),
                    );
                    self.out.push(p);
                }
                self.remove_room(jid).await;
            }
            return;
        }
        if form.attr("type") != Some("submit") {
            return err(
                &mut self.out,
                st,
                StanzaError::bad_request("form type must be submit or cancel"),
            );
        }
        let new = match room.config.apply_form(form, service_max) {
            Ok(c) => c,
            Err(field) => {
                return err(
                    &mut self.out,
                    st,
                    StanzaError::not_acceptable().with_text(format!("bad value for {field}")),
                );
            }
        };
        let was_locked = room.locked;
        let old = std::mem::replace(&mut room.config, new);
        room.locked = false;
        self.out.push(st.iq_result(None));
        // §10.2.1: tell the occupants what changed.
        let mut codes = vec![104];
        if old.whois != room.config.whois {
            codes.push(if room.config.whois == Whois::Anyone {
                172
            } else {
                173
            });
        }
        if !was_locked {
            for o in &room.occupants {
                self.out.push(status_message(jid, &o.real, &codes));
            }
        }
        // §9.? A room made members-only loses its non-members (status 322).
        if room.config.members_only && !old.members_only {
            let gone: Vec<Occupant> = room
                .occupants
                .iter()
                .filter(|o| room.affiliation(&o.real) < Affiliation::Member)
                .cloned()
                .collect();
            for g in &gone {
                let mut g2 = g.clone();
                g2.role = Role::None;
                for o in &room.occupants {
                    self.out
                        .push(room.presence_of(&g2, o, Some("unavailable"), &[322], &[], None));
                }
            }
            room.occupants
                .retain(|o| !gone.iter().any(|g| g.real == o.real));
        }
        if room.config.persistent || old.persistent {
            self.persist(jid).await;
        }
        self.maybe_vanish(jid).await;
    }

    /// §9.5, §9.8, §10.5, §10.8: lists by affiliation or by role.
    fn admin_get(&mut self, from: &Jid, jid: &Jid, q: &Element, st: &Stanza) {
        let Some(room) = self.rooms.get(jid) else {
            return;
        };
        let Some(item) = q.child("item", NS_MUC_ADMIN) else {
            return err(
                &mut self.out,
                st,
                StanzaError::bad_request("expected an item"),
            );
        };
        let my_aff = room.affiliation(from);
        let my_role = room.by_real(from).map(|o| o.role).unwrap_or(Role::None);
        let mut query = Element::new_static("query", NS_MUC_ADMIN);
        if let Some(a) = item.attr("affiliation") {
            let Some(a) = Affiliation::parse(a).filter(|a| *a != Affiliation::None) else {
                return err(
                    &mut self.out,
                    st,
                    StanzaError::bad_request("unknown affiliation"),
                );
            };
            if my_aff < Affiliation::Admin {
                return err(&mut self.out, st, StanzaError::forbidden());
            }
            let mut jids: Vec<&Jid> = room
                .affiliations
                .iter()
                .filter(|(_, x)| **x == a)
                .map(|(j, _)| j)
                .collect();
            jids.sort_by(|x, y| x.as_str().cmp(y.as_str()));
            for j in jids {
                query.push_child(
                    Element::new_static("item", NS_MUC_ADMIN)
                        .with_attr("affiliation", a.as_str())
                        .with_attr("jid", j.as_str()),
                );
            }
        } else if let Some(r) = item.attr("role") {
            let Some(r) = Role::parse(r).filter(|r| *r != Role::None) else {
                return err(&mut self.out, st, StanzaError::bad_request("unknown role"));
            };
            if my_role != Role::Moderator {
                return err(&mut self.out, st, StanzaError::forbidden());
            }
            for o in room.occupants.iter().filter(|o| o.role == r) {
                query.push_child(
                    Element::new_static("item", NS_MUC_ADMIN)
                        .with_attr("affiliation", room.affiliation(&o.real).as_str())
                        .with_attr("jid", o.real.as_str())
                        .with_attr("nick", o.nick.as_str())
                        .with_attr("role", r.as_str()),
                );
            }
        } else {
            return err(
                &mut self.out,
                st,
                StanzaError::bad_request("item needs an affiliation or a role"),
            );
        }
        self.out.push(st.iq_result(Some(query)));
    }

    /// §8.2–§8.5, §9.1–§9.7, §10.3–§10.7: role and affiliation changes,
    /// checked all first and then applied.
    async fn admin_set(&mut self, from: &Jid, jid: &Jid, q: Element, st: &Stanza) {
        let Some(room) = self.rooms.get_mut(jid) else {
            return;
        };
        let my_aff = room.affiliation(from);
        let me = room.by_real(from).cloned();
        let my_role = me.as_ref().map(|o| o.role).unwrap_or(Role::None);
        let my_nick = me.as_ref().map(|o| o.nick.clone());
        enum Change {
            Role(String, Role, Option<String>),
            Aff(Jid, Affiliation, Option<String>),
        }
        let mut changes = Vec::new();
        for item in q.children().filter(|c| c.is("item", NS_MUC_ADMIN)) {
            let reason = item.child("reason", NS_MUC_ADMIN).map(|r| r.text());
            if let Some(a) = item.attr("affiliation") {
                let Some(a) = Affiliation::parse(a) else {
                    return err(
                        &mut self.out,
                        st,
                        StanzaError::bad_request("unknown affiliation"),
                    );
                };
                let target = match (item.attr("jid"), item.attr("nick")) {
                    (Some(j), _) => Jid::parse(j).ok().map(|j| j.to_bare()),
                    (None, Some(n)) => room.by_nick(n).map(|o| o.real.to_bare()),
                    _ => None,
                };
                let Some(target) = target else {
                    return err(
                        &mut self.out,
                        st,
                        StanzaError::bad_request("item needs a jid"),
                    );
                };
                let current = room.affiliation(&target);
                let needed = if a >= Affiliation::Admin || current >= Affiliation::Admin {
                    Affiliation::Owner
                } else {
                    Affiliation::Admin
                };
                if my_aff < needed {
                    return err(&mut self.out, st, StanzaError::forbidden());
                }
                // §10.5: the last owner stays.
                if current == Affiliation::Owner
                    && a != Affiliation::Owner
                    && room
                        .affiliations
                        .values()
                        .filter(|x| **x == Affiliation::Owner)
                        .count()
                        == 1
                {
                    return err(
                        &mut self.out,
                        st,
                        StanzaError::conflict().with_text("the last owner"),
                    );
                }
                changes.push(Change::Aff(target, a, reason));
            } else if let Some(r) = item.attr("role") {
                let Some(r) = Role::parse(r) else {
                    return err(&mut self.out, st, StanzaError::bad_request("unknown role"));
                };
                let Some(target) = item.attr("nick").and_then(|n| room.by_nick(n)) else {
                    return err(&mut self.out, st, StanzaError::item_not_found());
                };
                let needed = if r == Role::Moderator || target.role == Role::Moderator {
                    Affiliation::Admin
                } else {
                    Affiliation::None
                };
                if my_role != Role::Moderator || my_aff < needed {
                    return err(&mut self.out, st, StanzaError::forbidden());
                }
                // §8.2: nobody may kick or silence an admin or owner.
                if r < Role::Moderator && room.affiliation(&target.real) >= Affiliation::Admin {
                    return err(&mut self.out, st, StanzaError::not_allowed());
                }
                changes.push(Change::Role(target.nick.clone(), r, reason));
            } else {
                return err(
                    &mut self.out,
                    st,
                    StanzaError::bad_request("item needs an affiliation or a role"),
                );
            }
        }
        let mut affs_changed = false;
        let actor = my_nick.as_deref();
        for c in changes {
            match c {
                Change::Role(nick, r, reason) => {
                    let Some(i) = room.occupants.iter().position(|o| o.nick == nick) else {
                        continue;
                    };
                    room.occupants[i].role = r;
                    let target = room.occupants[i].clone();
                    let extra = actor_reason(actor, reason.as_deref());
                    if r == Role::None {
                        // §8.2: kicked, status 307.
                        for o in &room.occupants {
                            self.out.push(room.presence_of(
                                &target,
                                o,
                                Some("unavailable"),
                                &[307],
                                &extra,
                                None,
                            ));
                        }
                        room.occupants.remove(i);
                    } else {
                        for o in &room.occupants {
                            self.out
                                .push(room.presence_of(&target, o, None, &[], &[], None));
                        }
                    }
                }
                Change::Aff(target, a, reason) => {
                    room.set_affiliation(&target, a);
                    affs_changed = true;
                    let present: Vec<usize> = room
                        .occupants
                        .iter()
                        .enumerate()
                        .filter(|(_, o)| o.real.to_bare() == target)
                        .map(|(i, _)| i)
                        .collect();
                    let evicted = a == Affiliation::Outcast
                        || (room.config.members_only && a < Affiliation::Member);
                    let extra = actor_reason(actor, reason.as_deref());
                    for &i in &present {
                        if evicted {
                            room.occupants[i].role = Role::None;
                        } else if a >= Affiliation::Admin {
                            room.occupants[i].role = Role::Moderator;
                        } else if room.occupants[i].role != Role::Moderator
                            || a < Affiliation::Admin
                        {
                            room.occupants[i].role = room.default_role(a);
                        }
                        let t = room.occupants[i].clone();
                        // §9.1: banned, 301; §9.4: removed from a members-only room, 321.
                        let (kind, codes): (Option<&str>, &[u16]) = match (evicted, a) {
                            (true, Affiliation::Outcast) => (Some("unavailable"), &[301]),
                            (true, _) => (Some("unavailable"), &[321]),
                            _ => (None, &[]),
                        };
                        for o in &room.occupants {
                            let extra = if evicted { extra.as_slice() } else { &[] };
                            self.out
                                .push(room.presence_of(&t, o, kind, codes, extra, None));
                        }
                    }
                    if evicted {
                        room.occupants.retain(|o| o.real.to_bare() != target);
                    }
                }
            }
        }
        self.out.push(st.iq_result(None));
        if affs_changed {
            self.persist(jid).await;
        }
    }
}

fn feature(var: &str) -> Element {
    Element::new_static("feature", ns::DISCO_INFO).with_attr("var", var)
}
