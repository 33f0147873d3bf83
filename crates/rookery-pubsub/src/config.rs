//! Node configuration (XEP-0060 §8.2, the `pubsub#node_config` form of
//! §16.4.4) and the publish-options preconditions of XEP-0223 (§7.1.5 of
//! XEP-0060).

use rookery_core::StanzaError;
use rookery_xml::{Element, ns};
use serde::{Deserialize, Serialize};

use crate::{NS_ERRORS, NS_NODE_CONFIG, NS_PUBLISH_OPTIONS};

/// `pubsub#access_model` (XEP-0060 §4.5). `authorize` is not offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessModel {
    /// Anyone may subscribe and retrieve items.
    Open,
    /// Entities subscribed to the owner's presence (PEP's default,
    /// XEP-0163 §4.2).
    Presence,
    /// Entities in the allowed roster groups of the owner.
    Roster,
    /// Only entities with an affiliation (owner, publisher, member).
    Whitelist,
}

impl AccessModel {
    fn as_str(self) -> &'static str {
        match self {
            AccessModel::Open => "open",
            AccessModel::Presence => "presence",
            AccessModel::Roster => "roster",
            AccessModel::Whitelist => "whitelist",
        }
    }
    fn parse(s: &str) -> Option<AccessModel> {
        Some(match s {
            "open" => AccessModel::Open,
            "presence" => AccessModel::Presence,
            "roster" => AccessModel::Roster,
            "whitelist" => AccessModel::Whitelist,
            _ => return None,
        })
    }
}

/// `pubsub#publish_model`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishModel {
    /// Owners and publishers.
    Publishers,
    /// Also subscribers.
    Subscribers,
    /// Anyone who may access the node.
    Open,
}

impl PublishModel {
    fn as_str(self) -> &'static str {
        match self {
            PublishModel::Publishers => "publishers",
            PublishModel::Subscribers => "subscribers",
            PublishModel::Open => "open",
        }
    }
    fn parse(s: &str) -> Option<PublishModel> {
        Some(match s {
            "publishers" => PublishModel::Publishers,
            "subscribers" => PublishModel::Subscribers,
            "open" => PublishModel::Open,
            _ => return None,
        })
    }
}

/// `pubsub#send_last_published_item`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendLast {
    /// Never.
    Never,
    /// When an entity subscribes.
    OnSub,
    /// When an entity subscribes, and on its available presence
    /// (XEP-0163 §4.3.1; PEP's default).
    OnSubAndPresence,
}

impl SendLast {
    fn as_str(self) -> &'static str {
        match self {
            SendLast::Never => "never",
            SendLast::OnSub => "on_sub",
            SendLast::OnSubAndPresence => "on_sub_and_presence",
        }
    }
    fn parse(s: &str) -> Option<SendLast> {
        Some(match s {
            "never" => SendLast::Never,
            "on_sub" => SendLast::OnSub,
            "on_sub_and_presence" => SendLast::OnSubAndPresence,
            _ => return None,
        })
    }
}

/// `pubsub#max_items`: a number, or `max` (XEP-0060 §16.4.4: as many as
/// the service allows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaxItems {
    /// The service's limit (`[pubsub] max_items_per_node`).
    Max,
    /// At most this many.
    Count(u64),
}

impl MaxItems {
    fn render(self) -> String {
        match self {
            MaxItems::Max => "max".into(),
            MaxItems::Count(n) => n.to_string(),
        }
    }
    fn parse(s: &str) -> Option<MaxItems> {
        match s.trim() {
            "max" => Some(MaxItems::Max),
            n => n.parse().ok().map(MaxItems::Count),
        }
    }
}

/// One node's configuration (stored as JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeConfig {
    /// `pubsub#title`
    pub title: String,
    /// `pubsub#type`: the payload namespace, if declared.
    pub payload_type: String,
    /// `pubsub#access_model`
    pub access_model: AccessModel,
    /// `pubsub#roster_groups_allowed` (access model `roster`).
    pub roster_groups_allowed: Vec<String>,
    /// `pubsub#publish_model`
    pub publish_model: PublishModel,
    /// `pubsub#persist_items`: items are kept and can be retrieved. A
    /// non-persistent node keeps only its last item, for
    /// `send_last_published_item` (decision 0019).
    pub persist_items: bool,
    /// `pubsub#max_items`
    pub max_items: MaxItems,
    /// `pubsub#deliver_notifications`
    pub deliver_notifications: bool,
    /// `pubsub#deliver_payloads`
    pub deliver_payloads: bool,
    /// `pubsub#notify_retract`
    pub notify_retract: bool,
    /// `pubsub#notify_delete`
    pub notify_delete: bool,
    /// `pubsub#notify_config`
    pub notify_config: bool,
    /// `pubsub#send_last_published_item`
    pub send_last_published_item: SendLast,
    /// `pubsub#notification_type`: `headline` or `normal`.
    pub notification_type: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig::pep()
    }
}

impl NodeConfig {
    /// The defaults of a PEP node (XEP-0163 §4.2 and §4.3: presence access,
    /// last item on presence). `max_items` is 1, as most PEP nodes hold one
    /// current item (avatar metadata, device lists, tunes); clients that
    /// want more say so with publish-options.
    pub fn pep() -> NodeConfig {
        NodeConfig {
            title: String::new(),
            payload_type: String::new(),
            access_model: AccessModel::Presence,
            roster_groups_allowed: Vec::new(),
            publish_model: PublishModel::Publishers,
            persist_items: true,
            max_items: MaxItems::Count(1),
            deliver_notifications: true,
            deliver_payloads: true,
            notify_retract: true,
            notify_delete: true,
            notify_config: false,
            send_last_published_item: SendLast::OnSubAndPresence,
            notification_type: "headline".into(),
        }
    }

    /// The defaults of a node of the pubsub service: open access, ten items.
    pub fn service() -> NodeConfig {
        NodeConfig {
            access_model: AccessModel::Open,
            max_items: MaxItems::Count(10),
            send_last_published_item: SendLast::OnSub,
            ..NodeConfig::pep()
        }
    }

    /// How many items the node keeps given the service's limit.
    pub fn keep(&self, limit: usize) -> usize {
        if !self.persist_items {
            return 1;
        }
        match self.max_items {
            MaxItems::Max => limit,
            MaxItems::Count(n) => (n as usize).min(limit),
        }
    }

    /// The value of a field as the form carries it (`None`: not a field
    /// of this form).
    fn value_of(&self, var: &str) -> Option<Vec<String>> {
        let b = |v: bool| vec![if v { "1" } else { "0" }.to_owned()];
        Some(match var {
            "pubsub#title" => vec![self.title.clone()],
            "pubsub#type" => vec![self.payload_type.clone()],
            "pubsub#access_model" => vec![self.access_model.as_str().into()],
            "pubsub#roster_groups_allowed" => self.roster_groups_allowed.clone(),
            "pubsub#publish_model" => vec![self.publish_model.as_str().into()],
            "pubsub#persist_items" => b(self.persist_items),
            "pubsub#max_items" => vec![self.max_items.render()],
            "pubsub#deliver_notifications" => b(self.deliver_notifications),
            "pubsub#deliver_payloads" => b(self.deliver_payloads),
            "pubsub#notify_retract" => b(self.notify_retract),
            "pubsub#notify_delete" => b(self.notify_delete),
            "pubsub#notify_config" => b(self.notify_config),
            "pubsub#send_last_published_item" => {
                vec![self.send_last_published_item.as_str().into()]
            }
            "pubsub#notification_type" => vec![self.notification_type.clone()],
            _ => return None,
        })
    }

    /// Sets one field from a submitted form; `Err` names what is wrong.
    fn set(&mut self, var: &str, values: &[String], limit: usize) -> Result<bool, String> {
        let one = values.first().map(|s| s.trim()).unwrap_or("");
        let boolean = || match one.to_ascii_lowercase().as_str() {
            "1" | "true" => Ok(true),
            "0" | "false" => Ok(false),
            _ => Err(format!("{var} is a boolean")),
        };
        match var {
            "pubsub#title" => self.title = one.to_owned(),
            "pubsub#type" => self.payload_type = one.to_owned(),
            "pubsub#access_model" => {
                self.access_model = AccessModel::parse(one)
                    .ok_or_else(|| format!("access model {one:?} is not supported"))?
            }
            "pubsub#roster_groups_allowed" => self.roster_groups_allowed = values.to_vec(),
            "pubsub#publish_model" => {
                self.publish_model = PublishModel::parse(one)
                    .ok_or_else(|| format!("publish model {one:?} is not supported"))?
            }
            "pubsub#persist_items" => self.persist_items = boolean()?,
            "pubsub#max_items" => {
                let m = MaxItems::parse(one).ok_or("pubsub#max_items is a number or max")?;
                if let MaxItems::Count(n) = m
                    && (n == 0 || n as usize > limit)
                {
                    return Err(format!(
                        "pubsub#max_items must be from 1 to {limit}, or max"
                    ));
                }
                self.max_items = m;
            }
            "pubsub#deliver_notifications" => self.deliver_notifications = boolean()?,
            "pubsub#deliver_payloads" => self.deliver_payloads = boolean()?,
            "pubsub#notify_retract" => self.notify_retract = boolean()?,
            "pubsub#notify_delete" => self.notify_delete = boolean()?,
            "pubsub#notify_config" => self.notify_config = boolean()?,
            "pubsub#send_last_published_item" => {
                self.send_last_published_item = SendLast::parse(one)
                    .ok_or_else(|| format!("{one:?} is not a send_last_published_item value"))?
            }
            "pubsub#notification_type" => match one {
                "headline" | "normal" => self.notification_type = one.to_owned(),
                _ => return Err("pubsub#notification_type is headline or normal".into()),
            },
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Applies a submitted `pubsub#node_config` form (XEP-0060 §8.2.4).
    /// Fields this service does not know are ignored (§8.2.4 lets a
    /// service support a subset); a bad value is `not-acceptable`.
    pub fn apply_form(&mut self, form: &Element, limit: usize) -> Result<(), StanzaError> {
        let mut next = self.clone();
        for (var, values) in fields(form) {
            if var == "FORM_TYPE" {
                continue;
            }
            next.set(&var, &values, limit)
                .map_err(|e| StanzaError::not_acceptable().with_text(e))?;
        }
        *self = next;
        Ok(())
    }

    /// XEP-0223 / XEP-0060 §7.1.5: every precondition of a publish-options
    /// form must match this configuration. Unknown fields are not met.
    pub fn check_preconditions(&self, form: &Element) -> Result<(), StanzaError> {
        for (var, values) in fields(form) {
            if var == "FORM_TYPE" {
                continue;
            }
            let met = match self.value_of(&var) {
                Some(have) => same(&var, &have, &values),
                None => false,
            };
            if !met {
                return Err(precondition_not_met(&var));
            }
        }
        Ok(())
    }

    /// The configuration of a node auto-created by a publish with
    /// preconditions (XEP-0060 §7.1.5 case 3): the defaults except the
    /// preconditions. A precondition that cannot be a configuration is
    /// not met.
    pub fn with_preconditions(&self, form: &Element, limit: usize) -> Result<Self, StanzaError> {
        let mut c = self.clone();
        for (var, values) in fields(form) {
            if var == "FORM_TYPE" {
                continue;
            }
            match c.set(&var, &values, limit) {
                Ok(true) => {}
                Ok(false) | Err(_) => return Err(precondition_not_met(&var)),
            }
        }
        Ok(c)
    }

    /// The `pubsub#node_config` form (§8.2.1, example 125), of type `form`.
    pub fn to_form(&self) -> Element {
        let mut x = Element::new_static("x", ns::DATA_FORMS).with_attr("type", "form");
        x.push_child(field("FORM_TYPE", "hidden", &[NS_NODE_CONFIG.into()], None));
        let opts = |o: &[&str]| Some(o.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let spec: &[(&str, &str, Option<Vec<String>>)] = &[
            ("pubsub#title", "text-single", None),
            ("pubsub#type", "text-single", None),
            (
                "pubsub#access_model",
                "list-single",
                opts(&["open", "presence", "roster", "whitelist"]),
            ),
            ("pubsub#roster_groups_allowed", "text-multi", None),
            (
                "pubsub#publish_model",
                "list-single",
                opts(&["publishers", "subscribers", "open"]),
            ),
            ("pubsub#persist_items", "boolean", None),
            ("pubsub#max_items", "text-single", None),
            ("pubsub#deliver_notifications", "boolean", None),
            ("pubsub#deliver_payloads", "boolean", None),
            ("pubsub#notify_retract", "boolean", None),
            ("pubsub#notify_delete", "boolean", None),
            ("pubsub#notify_config", "boolean", None),
            (
                "pubsub#send_last_published_item",
                "list-single",
                opts(&["never", "on_sub", "on_sub_and_presence"]),
            ),
            (
                "pubsub#notification_type",
                "list-single",
                opts(&["headline", "normal"]),
            ),
        ];
        for (var, kind, options) in spec {
            let values = self.value_of(var).unwrap_or_default();
            x.push_child(field(var, kind, &values, options.as_deref()));
        }
        x
    }
}

fn precondition_not_met(var: &str) -> StanzaError {
    StanzaError::conflict()
        .with_app("precondition-not-met", NS_ERRORS)
        .with_text(format!("{var} does not match the node's configuration"))
}

/// Whether a precondition's values match a configured value.
fn same(var: &str, have: &[String], want: &[String]) -> bool {
    // Booleans as "1"/"0" whatever the client wrote ("true", "True").
    let norm = |v: &str| match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => "1".to_owned(),
        "false" | "0" => "0".to_owned(),
        _ => v.trim().to_owned(),
    };
    if var == "pubsub#roster_groups_allowed" {
        let mut a: Vec<String> = have.to_vec();
        let mut b: Vec<String> = want.to_vec();
        a.sort();
        b.sort();
        return a == b;
    }
    let a = have.first().map(|s| norm(s)).unwrap_or_default();
    let b = want.first().map(|s| norm(s)).unwrap_or_default();
    a == b
}

fn field(var: &str, kind: &str, values: &[String], options: Option<&[String]>) -> Element {
    let mut f = Element::new_static("field", ns::DATA_FORMS)
        .with_attr("var", var)
        .with_attr("type", kind);
    for o in options.unwrap_or(&[]) {
        f.push_child(
            Element::new_static("option", ns::DATA_FORMS)
                .with_child(Element::new_static("value", ns::DATA_FORMS).with_text(o.clone())),
        );
    }
    for v in values {
        f.push_child(Element::new_static("value", ns::DATA_FORMS).with_text(v.clone()));
    }
    f
}

/// The (var, values) of a data form's fields.
pub fn fields(form: &Element) -> Vec<(String, Vec<String>)> {
    form.children()
        .filter(|f| f.is("field", ns::DATA_FORMS))
        .filter_map(|f| {
            let var = f.attr("var")?.to_owned();
            let values = f
                .children()
                .filter(|v| v.is("value", ns::DATA_FORMS))
                .map(|v| v.text())
                .collect();
            Some((var, values))
        })
        .collect()
}

/// The data form inside `parent` with the given FORM_TYPE, if any; a form
/// with another FORM_TYPE is `bad-request`.
pub fn form_in<'a>(
    parent: Option<&'a Element>,
    form_type: &str,
) -> Result<Option<&'a Element>, StanzaError> {
    let Some(x) = parent.and_then(|p| p.child("x", ns::DATA_FORMS)) else {
        return Ok(None);
    };
    if matches!(x.attr("type"), Some("cancel")) {
        return Ok(None);
    }
    let ft = fields(x)
        .into_iter()
        .find(|(v, _)| v == "FORM_TYPE")
        .and_then(|(_, v)| v.into_iter().next());
    match ft {
        Some(t) if t == form_type => Ok(Some(x)),
        // XEP-0223 §5 requires the FORM_TYPE; configuration forms without
        // one are read as the node_config form, as clients send them.
        None if form_type == NS_NODE_CONFIG => Ok(Some(x)),
        _ => Err(StanzaError::bad_request(
            "the data form has the wrong FORM_TYPE",
        )),
    }
}

/// The publish-options form of a `<publish-options/>`, if any.
pub fn publish_options(pubsub: &Element) -> Result<Option<&Element>, StanzaError> {
    form_in(
        pubsub.child("publish-options", crate::NS_PUBSUB),
        NS_PUBLISH_OPTIONS,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn form(fields: &[(&str, &str)]) -> Element {
        let mut x = Element::new_static("x", ns::DATA_FORMS).with_attr("type", "submit");
        for (var, v) in fields {
            x.push_child(
                Element::new_static("field", ns::DATA_FORMS)
                    .with_attr("var", *var)
                    .with_child(Element::new_static("value", ns::DATA_FORMS).with_text(*v)),
            );
        }
        x
    }

    #[test]
    fn preconditions_match_normalized_values() {
        let mut c = NodeConfig::pep();
        c.max_items = MaxItems::Max;
        c.access_model = AccessModel::Whitelist;
        let f = form(&[
            ("FORM_TYPE", NS_PUBLISH_OPTIONS),
            ("pubsub#persist_items", "true"),
            ("pubsub#max_items", "max"),
            ("pubsub#access_model", "whitelist"),
        ]);
        c.check_preconditions(&f).unwrap();
        let e = NodeConfig::pep().check_preconditions(&f).unwrap_err();
        assert_eq!(e.condition, "conflict");
        assert_eq!(e.app, Some(("precondition-not-met", NS_ERRORS)));
        // Unknown fields are never met.
        let e = c
            .check_preconditions(&form(&[("pubsub#frobnicate", "1")]))
            .unwrap_err();
        assert_eq!(e.condition, "conflict");
    }

    #[test]
    fn auto_create_takes_the_preconditions() {
        let f = form(&[
            ("FORM_TYPE", NS_PUBLISH_OPTIONS),
            ("pubsub#max_items", "max"),
            ("pubsub#access_model", "open"),
        ]);
        let c = NodeConfig::pep().with_preconditions(&f, 256).unwrap();
        assert_eq!(c.max_items, MaxItems::Max);
        assert_eq!(c.access_model, AccessModel::Open);
        assert_eq!(c.keep(256), 256);
        assert!(
            NodeConfig::pep()
                .with_preconditions(&form(&[("pubsub#max_items", "100000")]), 256)
                .is_err()
        );
    }

    #[test]
    fn the_form_round_trips() {
        let mut c = NodeConfig::pep();
        c.title = "Tunes".into();
        c.max_items = MaxItems::Count(5);
        let mut f = c.to_form();
        f.set_attr("type", "submit");
        let mut d = NodeConfig::service();
        d.apply_form(&f, 10).unwrap();
        assert_eq!(d, c);
        assert_eq!(
            d.apply_form(&form(&[("pubsub#access_model", "authorize")]), 10)
                .unwrap_err()
                .condition,
            "not-acceptable"
        );
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<NodeConfig>(&json).unwrap(), c);
    }
}
