//! The state of one room and its pure rules: affiliations and roles
//! (XEP-0045 §5), the configuration and its data form (§10.2, §15.5.3),
//! the extended presence (`muc#user`), the discussion history (§7.2.15).

use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;

use rookery_core::{Element, Jid};
use rookery_xml::ns;
use serde::{Deserialize, Serialize};

use crate::{NS_MUC_USER, NS_ROOMCONFIG};

/// §5.2: long-lived affiliations, ordered from lowest to highest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Affiliation {
    /// Banned (§9.1).
    Outcast,
    /// No affiliation.
    None,
    /// A member (§9.3).
    Member,
    /// An admin (§10.6).
    Admin,
    /// An owner (§10.3).
    Owner,
}

impl Affiliation {
    /// Attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }
    /// From an attribute value.
    pub fn parse(s: &str) -> Option<Affiliation> {
        Some(match s {
            "outcast" => Affiliation::Outcast,
            "none" => Affiliation::None,
            "member" => Affiliation::Member,
            "admin" => Affiliation::Admin,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }
}

/// §5.1: roles within one visit, ordered from lowest to highest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Not (or no longer) an occupant.
    None,
    /// May not speak in a moderated room.
    Visitor,
    /// May speak.
    Participant,
    /// May kick and grant voice.
    Moderator,
}

impl Role {
    /// Attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }
    /// From an attribute value.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "none" => Role::None,
            "visitor" => Role::Visitor,
            "participant" => Role::Participant,
            "moderator" => Role::Moderator,
            _ => return None,
        })
    }
}

/// `muc#roomconfig_whois`: who may see occupants' real JIDs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Whois {
    /// Semi-anonymous (the default, as in Prosody and ejabberd).
    #[default]
    Moderators,
    /// Non-anonymous.
    Anyone,
}

/// The configuration of a room (§10.2, the `muc#roomconfig` form).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomConfig {
    /// `muc#roomconfig_roomname`
    pub name: String,
    /// `muc#roomconfig_roomdesc`
    pub description: String,
    /// `muc#roomconfig_persistentroom`
    pub persistent: bool,
    /// `muc#roomconfig_publicroom`
    pub public: bool,
    /// `muc#roomconfig_membersonly`
    pub members_only: bool,
    /// `muc#roomconfig_moderatedroom`
    pub moderated: bool,
    /// `muc#roomconfig_roomsecret` when `passwordprotectedroom` is on.
    pub password: Option<String>,
    /// `muc#roomconfig_whois`
    pub whois: Whois,
    /// `muc#roomconfig_maxusers` (capped by the service's limit).
    pub max_users: usize,
    /// `muc#roomconfig_changesubject`: participants may change the subject.
    pub change_subject: bool,
    /// `muc#roomconfig_allowinvites`: participants may invite.
    pub allow_invites: bool,
    /// `muc#roomconfig_enablearchiving`: XEP-0313 archive of the room's
    /// messages; `None` until the owner chooses (the service default).
    pub archiving: Option<bool>,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            name: String::new(),
            description: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            moderated: false,
            password: None,
            whois: Whois::Moderators,
            max_users: 0,
            change_subject: false,
            allow_invites: false,
            archiving: None,
        }
    }
}

fn field(var: &str, kind: &str, label: &str, values: &[&str]) -> Element {
    let mut f = Element::new_static("field", ns::DATA_FORMS)
        .with_attr("var", var)
        .with_attr("type", kind)
        .with_attr("label", label);
    for v in values {
        f.push_child(Element::new_static("value", ns::DATA_FORMS).with_text(*v));
    }
    f
}

fn boolean(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

fn hidden(var: &str, value: &str) -> Element {
    Element::new_static("field", ns::DATA_FORMS)
        .with_attr("var", var)
        .with_attr("type", "hidden")
        .with_child(Element::new_static("value", ns::DATA_FORMS).with_text(value))
}

impl RoomConfig {
    /// §10.2: the configuration form with the current values; `archiving`
    /// is whether the room archives now, `None` when the service keeps no
    /// room archives (no field then).
    pub fn to_form(&self, service_max: usize, archiving: Option<bool>) -> Element {
        let max = self.max_users.to_string();
        let mut whois = field(
            "muc#roomconfig_whois",
            "list-single",
            "Who May Discover Real JIDs?",
            &[match self.whois {
                Whois::Moderators => "moderators",
                Whois::Anyone => "anyone",
            }],
        );
        for (label, v) in [("Moderators Only", "moderators"), ("Anyone", "anyone")] {
            whois.push_child(
                Element::new_static("option", ns::DATA_FORMS)
                    .with_attr("label", label)
                    .with_child(Element::new_static("value", ns::DATA_FORMS).with_text(v)),
            );
        }
        let form = Element::new_static("x", ns::DATA_FORMS)
            .with_attr("type", "form")
            .with_child(
                Element::new_static("title", ns::DATA_FORMS).with_text("Room configuration"),
            )
            .with_child(hidden("FORM_TYPE", NS_ROOMCONFIG))
            .with_child(field(
                "muc#roomconfig_roomname",
                "text-single",
                "Natural-Language Room Name",
                &[&self.name],
            ))
            .with_child(field(
                "muc#roomconfig_roomdesc",
                "text-single",
                "Short Description of Room",
                &[&self.description],
            ))
            .with_child(field(
                "muc#roomconfig_persistentroom",
                "boolean",
                "Make Room Persistent?",
                &[boolean(self.persistent)],
            ))
            .with_child(field(
                "muc#roomconfig_publicroom",
                "boolean",
                "Make Room Publicly Searchable?",
                &[boolean(self.public)],
            ))
            .with_child(field(
                "muc#roomconfig_membersonly",
                "boolean",
                "Make Room Members-Only?",
                &[boolean(self.members_only)],
            ))
            .with_child(field(
                "muc#roomconfig_moderatedroom",
                "boolean",
                "Make Room Moderated?",
                &[boolean(self.moderated)],
            ))
            .with_child(field(
                "muc#roomconfig_passwordprotectedroom",
                "boolean",
                "Password Required to Enter?",
                &[boolean(self.password.is_some())],
            ))
            .with_child(field(
                "muc#roomconfig_roomsecret",
                "text-private",
                "Password",
                &[self.password.as_deref().unwrap_or("")],
            ))
            .with_child(whois)
            .with_child(field(
                "muc#roomconfig_maxusers",
                "text-single",
                &format!("Maximum Number of Occupants (at most {service_max})"),
                &[&max],
            ))
            .with_child(field(
                "muc#roomconfig_changesubject",
                "boolean",
                "Allow Occupants to Change Subject?",
                &[boolean(self.change_subject)],
            ))
            .with_child(field(
                "muc#roomconfig_allowinvites",
                "boolean",
                "Allow Occupants to Invite Others?",
                &[boolean(self.allow_invites)],
            ));
        match archiving {
            Some(on) => form.with_child(field(
                "muc#roomconfig_enablearchiving",
                "boolean",
                "Archive Messages (XEP-0313)?",
                &[boolean(on)],
            )),
            None => form,
        }
    }

    /// §10.2: applies a submitted form; fields left out keep their value.
    /// An unknown value is `Err` with the field's name.
    pub fn apply_form(&self, form: &Element, service_max: usize) -> Result<RoomConfig, String> {
        let mut c = self.clone();
        let mut protect: Option<bool> = None;
        let mut secret: Option<String> = None;
        for f in form.children().filter(|f| f.is("field", ns::DATA_FORMS)) {
            let Some(var) = f.attr("var") else { continue };
            let value = f
                .child("value", ns::DATA_FORMS)
                .map(|v| v.text())
                .unwrap_or_default();
            let flag = || match value.trim() {
                "1" | "true" => Ok(true),
                "0" | "false" | "" => Ok(false),
                _ => Err(var.to_owned()),
            };
            match var {
                "muc#roomconfig_roomname" => c.name = value,
                "muc#roomconfig_roomdesc" => c.description = value,
                "muc#roomconfig_persistentroom" => c.persistent = flag()?,
                "muc#roomconfig_publicroom" => c.public = flag()?,
                "muc#roomconfig_membersonly" => c.members_only = flag()?,
                "muc#roomconfig_moderatedroom" => c.moderated = flag()?,
                "muc#roomconfig_passwordprotectedroom" => protect = Some(flag()?),
                "muc#roomconfig_roomsecret" => secret = Some(value),
                "muc#roomconfig_whois" => {
                    c.whois = match value.trim() {
                        "moderators" => Whois::Moderators,
                        "anyone" => Whois::Anyone,
                        _ => return Err(var.to_owned()),
                    }
                }
                "muc#roomconfig_maxusers" => {
                    let v = value.trim();
                    c.max_users = if v.is_empty() || v == "none" {
                        0
                    } else {
                        v.parse::<usize>().map_err(|_| var.to_owned())?
                    };
                    if c.max_users > service_max {
                        c.max_users = service_max;
                    }
                }
                "muc#roomconfig_changesubject" => c.change_subject = flag()?,
                "muc#roomconfig_allowinvites" => c.allow_invites = flag()?,
                "muc#roomconfig_enablearchiving" => c.archiving = Some(flag()?),
                _ => {}
            }
        }
        if let Some(s) = secret {
            c.password = (!s.is_empty()).then_some(s);
        }
        if protect == Some(false) {
            c.password = None;
        }
        if protect == Some(true) && c.password.is_none() {
            return Err("muc#roomconfig_roomsecret".to_owned());
        }
        Ok(c)
    }

    /// §6.4: the `muc_*` features of the room's disco#info.
    pub fn features(&self) -> [&'static str; 6] {
        [
            if self.persistent {
                "muc_persistent"
            } else {
                "muc_temporary"
            },
            if self.members_only {
                "muc_membersonly"
            } else {
                "muc_open"
            },
            if self.password.is_some() {
                "muc_passwordprotected"
            } else {
                "muc_unsecured"
            },
            if self.public {
                "muc_public"
            } else {
                "muc_hidden"
            },
            if self.moderated {
                "muc_moderated"
            } else {
                "muc_unmoderated"
            },
            match self.whois {
                Whois::Moderators => "muc_semianonymous",
                Whois::Anyone => "muc_nonanonymous",
            },
        ]
    }
}

/// One occupant (§7.2): a real full JID under a nick.
#[derive(Clone, Debug)]
pub struct Occupant {
    /// The room nick (resourcepart of the occupant JID).
    pub nick: String,
    /// The user's full JID.
    pub real: Jid,
    /// The role for this visit.
    pub role: Role,
    /// The payload of the occupant's last presence (show, status, …)
    /// without the MUC elements, reflected to the others.
    pub payload: Vec<Element>,
}

/// A message kept for the discussion history (§7.2.15).
#[derive(Clone, Debug)]
pub struct HistoryItem {
    /// The message as broadcast, without `to`.
    pub el: Element,
    /// When it was sent.
    pub at: SystemTime,
    /// The XEP-0082 timestamp of `at`.
    pub stamp: String,
    /// Its size in characters, for `maxchars`.
    pub chars: usize,
}

/// The `<history/>` limits a joining user asked for (§7.2.15).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryRequest {
    /// `maxstanzas`
    pub max_stanzas: Option<usize>,
    /// `maxchars`
    pub max_chars: Option<usize>,
    /// `seconds`
    pub seconds: Option<u64>,
    /// `since`
    pub since: Option<SystemTime>,
}

impl HistoryRequest {
    /// Reads `<history/>`; unparsable attributes are ignored.
    pub fn parse(el: Option<&Element>) -> HistoryRequest {
        let Some(el) = el else {
            return HistoryRequest::default();
        };
        HistoryRequest {
            max_stanzas: el.attr("maxstanzas").and_then(|v| v.parse().ok()),
            max_chars: el.attr("maxchars").and_then(|v| v.parse().ok()),
            seconds: el.attr("seconds").and_then(|v| v.parse().ok()),
            since: el.attr("since").and_then(parse_stamp),
        }
    }

    /// The items of `history` to send, oldest first.
    pub fn select<'a>(
        &self,
        history: &'a VecDeque<HistoryItem>,
        now: SystemTime,
    ) -> Vec<&'a HistoryItem> {
        let mut out = Vec::new();
        let mut chars = 0usize;
        for item in history.iter().rev() {
            if self.max_stanzas.is_some_and(|m| out.len() >= m) {
                break;
            }
            if let Some(s) = self.seconds
                && now
                    .duration_since(item.at)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
                    > s
            {
                break;
            }
            if self.since.is_some_and(|since| item.at < since) {
                break;
            }
            if let Some(m) = self.max_chars {
                if chars + item.chars > m {
                    break;
                }
                chars += item.chars;
            }
            out.push(item);
        }
        out.reverse();
        out
    }
}

/// XEP-0082 date-time, e.g. `2026-11-26T10:00:00Z`.
pub fn parse_stamp(s: &str) -> Option<SystemTime> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(SystemTime::from(t))
}

/// The XEP-0082 date-time of `t`, in UTC with seconds.
pub fn format_stamp(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(&f).unwrap_or_default()
}

/// One room.
#[derive(Debug)]
pub struct Room {
    /// Its bare JID.
    pub jid: Jid,
    /// Its configuration.
    pub config: RoomConfig,
    /// Affiliations other than `none`, by bare JID.
    pub affiliations: HashMap<Jid, Affiliation>,
    /// The occupants, in the order they entered.
    pub occupants: Vec<Occupant>,
    /// The subject and the nick that set it (§8.1).
    pub subject: Option<(String, String)>,
    /// The discussion history, oldest first.
    pub history: VecDeque<HistoryItem>,
    /// §10.1.2: created and not yet configured; only the owner may enter.
    pub locked: bool,
}

impl Room {
    /// A new room with default configuration.
    pub fn new(jid: Jid, config: RoomConfig) -> Room {
        Room {
            jid,
            config,
            affiliations: HashMap::new(),
            occupants: Vec::new(),
            subject: None,
            history: VecDeque::new(),
            locked: false,
        }
    }

    /// The affiliation of a (bare or full) JID.
    pub fn affiliation(&self, jid: &Jid) -> Affiliation {
        self.affiliations
            .get(&jid.to_bare())
            .copied()
            .unwrap_or(Affiliation::None)
    }

    /// Sets an affiliation (`None` removes it).
    pub fn set_affiliation(&mut self, jid: &Jid, a: Affiliation) {
        if a == Affiliation::None {
            self.affiliations.remove(&jid.to_bare());
        } else {
            self.affiliations.insert(jid.to_bare(), a);
        }
    }

    /// §5.1.2: the role an entering user gets.
    pub fn default_role(&self, a: Affiliation) -> Role {
        match a {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if self.config.moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }

    /// The occupant with this nick.
    pub fn by_nick(&self, nick: &str) -> Option<&Occupant> {
        self.occupants.iter().find(|o| o.nick == nick)
    }

    /// The occupant with this real full JID.
    pub fn by_real(&self, real: &Jid) -> Option<&Occupant> {
        self.occupants.iter().find(|o| o.real == *real)
    }

    /// The occupant JID of a nick.
    pub fn occupant_jid(&self, nick: &str) -> Jid {
        self.jid
            .with_resource(nick)
            .unwrap_or_else(|_| self.jid.clone())
    }

    /// The presence of occupant `o` as `to` sees it (§7.2.3, §7.2.4):
    /// `type` (None for available), the status codes, and extra children
    /// of the `<x/>` (actor, reason, destroy).
    pub fn presence_of(
        &self,
        o: &Occupant,
        to: &Occupant,
        kind: Option<&str>,
        codes: &[u16],
        item_extra: &[Element],
        nick_change: Option<&str>,
    ) -> Element {
        let mut p = Element::new_static("presence", ns::CLIENT)
            .with_attr("from", self.occupant_jid(&o.nick).as_str())
            .with_attr("to", to.real.as_str());
        if let Some(k) = kind {
            p.set_attr("type", k);
        }
        for c in &o.payload {
            p.push_child(c.clone());
        }
        let show_jid = self.config.whois == Whois::Anyone || to.role == Role::Moderator;
        let mut item = Element::new_static("item", NS_MUC_USER)
            .with_attr("affiliation", self.affiliation(&o.real).as_str());
        if show_jid {
            item.set_attr("jid", o.real.as_str());
        }
        if let Some(n) = nick_change {
            item.set_attr("nick", n);
        }
        item.set_attr("role", o.role.as_str());
        for e in item_extra {
            item.push_child(e.clone());
        }
        let mut x = Element::new_static("x", NS_MUC_USER).with_child(item);
        let mut codes = codes.to_vec();
        if o.real == to.real {
            codes.push(110);
        }
        codes.sort_unstable();
        codes.dedup();
        for c in codes {
            x.push_child(
                Element::new_static("status", NS_MUC_USER).with_attr("code", c.to_string()),
            );
        }
        p.push_child(x);
        p
    }

    /// Adds a groupchat message to the history, keeping at most `max`.
    pub fn remember(&mut self, el: Element, max: usize, now: SystemTime) {
        if max == 0 {
            return;
        }
        let chars = el.to_xml_string().chars().count();
        self.history.push_back(HistoryItem {
            el,
            at: now,
            stamp: format_stamp(now),
            chars,
        });
        while self.history.len() > max {
            self.history.pop_front();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn form_round_trip() {
        let c = RoomConfig::default();
        let form = c.to_form(100, None);
        let same = c.apply_form(&form, 100).unwrap();
        assert_eq!(same, c);
        // The archiving field, once submitted, is the owner's choice.
        let form = c.to_form(100, Some(true));
        assert_eq!(c.apply_form(&form, 100).unwrap().archiving, Some(true));
        let submit = Element::parse(
            "<x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
             <field var='muc#roomconfig_roomname'><value>Coven</value></field>\
             <field var='muc#roomconfig_persistentroom'><value>1</value></field>\
             <field var='muc#roomconfig_passwordprotectedroom'><value>1</value></field>\
             <field var='muc#roomconfig_roomsecret'><value>cauldron</value></field>\
             <field var='muc#roomconfig_whois'><value>anyone</value></field>\
             <field var='muc#roomconfig_maxusers'><value>500</value></field>\
             <field var='muc#roomconfig_enablearchiving'><value>0</value></field></x>",
        )
        .unwrap();
        let n = c.apply_form(&submit, 100).unwrap();
        assert_eq!(n.name, "Coven");
        assert!(n.persistent);
        assert_eq!(n.password.as_deref(), Some("cauldron"));
        assert_eq!(n.whois, Whois::Anyone);
        assert_eq!(n.max_users, 100, "capped by the service");
        assert_eq!(n.archiving, Some(false));
        assert_eq!(
            n.features(),
            [
                "muc_persistent",
                "muc_open",
                "muc_passwordprotected",
                "muc_public",
                "muc_unmoderated",
                "muc_nonanonymous"
            ]
        );
        let bad = Element::parse(
            "<x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_whois'><value>nobody</value></field></x>",
        )
        .unwrap();
        assert_eq!(c.apply_form(&bad, 10).unwrap_err(), "muc#roomconfig_whois");
        let nopw = Element::parse(
            "<x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_passwordprotectedroom'><value>1</value></field></x>",
        )
        .unwrap();
        assert!(c.apply_form(&nopw, 10).is_err());
        // Stored as JSON and read back.
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(serde_json::from_str::<RoomConfig>(&json).unwrap(), n);
    }

    #[test]
    fn history_limits() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut r = Room::new(Jid::parse("r@muc.example").unwrap(), RoomConfig::default());
        for i in 0..5u64 {
            let el = Element::new_static("message", ns::CLIENT).with_attr("id", i.to_string());
            r.remember(el, 4, t0 + Duration::from_secs(i * 10));
        }
        assert_eq!(r.history.len(), 4);
        let ids = |v: Vec<&HistoryItem>| -> Vec<String> {
            v.iter()
                .map(|h| h.el.attr("id").unwrap().to_owned())
                .collect()
        };
        let now = t0 + Duration::from_secs(45);
        assert_eq!(
            ids(HistoryRequest::default().select(&r.history, now)),
            ["1", "2", "3", "4"]
        );
        let req = |x: &str| HistoryRequest::parse(Some(&Element::parse(x).unwrap()));
        assert_eq!(
            ids(req("<history xmlns='m' maxstanzas='2'/>").select(&r.history, now)),
            ["3", "4"]
        );
        assert!(
            req("<history xmlns='m' maxstanzas='0'/>")
                .select(&r.history, now)
                .is_empty()
        );
        assert_eq!(
            ids(req("<history xmlns='m' seconds='10'/>").select(&r.history, now)),
            ["4"]
        );
        let chars = r.history[0].chars;
        assert_eq!(
            ids(
                req(&format!("<history xmlns='m' maxchars='{}'/>", chars * 2))
                    .select(&r.history, now)
            ),
            ["3", "4"]
        );
        let since = format_stamp(t0 + Duration::from_secs(20));
        assert_eq!(
            ids(req(&format!("<history xmlns='m' since='{since}'/>")).select(&r.history, now)),
            ["2", "3", "4"]
        );
        assert_eq!(format_stamp(t0), "1970-01-12T13:46:40Z");
        assert_eq!(parse_stamp("1970-01-12T13:46:40Z"), Some(t0));
    }

    #[test]
    fn roles_follow_affiliations() {
        let mut r = Room::new(Jid::parse("r@muc.example").unwrap(), RoomConfig::default());
        assert_eq!(r.default_role(Affiliation::None), Role::Participant);
        r.config.moderated = true;
        assert_eq!(r.default_role(Affiliation::None), Role::Visitor);
        assert_eq!(r.default_role(Affiliation::Member), Role::Participant);
        assert_eq!(r.default_role(Affiliation::Admin), Role::Moderator);
        let u = Jid::parse("u@example/res").unwrap();
        r.set_affiliation(&u, Affiliation::Member);
        assert_eq!(r.affiliation(&u.to_bare()), Affiliation::Member);
        r.set_affiliation(&u, Affiliation::None);
        assert!(r.affiliations.is_empty());
        assert!(
            Affiliation::Owner > Affiliation::Admin && Affiliation::Outcast < Affiliation::None
        );
    }
}
