//! Which members an orchestrator reports as ready (Kubernetes, decision 0014).

use std::collections::BTreeSet;

use crate::{Member, Role};

/// The members that may appear in the [`crate::View`], by role: a membership joined with
/// [`crate::Membership::join_with_readiness`] keeps a live Redis member only if this
/// filter admits it.
///
/// For each role, `None` means the role is not filtered; `Some(names)` admits only the
/// nodes of that role named in the set (an empty set admits none of them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadyFilter {
    /// Ready session nodes, by node name; `None`: session nodes are not filtered.
    pub session: Option<BTreeSet<String>>,
    /// Ready connection managers, by node name; `None`: cms are not filtered.
    pub cm: Option<BTreeSet<String>>,
}

impl ReadyFilter {
    /// A filter that admits nobody of the filtered roles yet (what is known before the
    /// first complete list from the orchestrator).
    pub fn nobody(session: bool, cm: bool) -> ReadyFilter {
        ReadyFilter {
            session: session.then(BTreeSet::new),
            cm: cm.then(BTreeSet::new),
        }
    }

    /// The set of ready names for `role`, or `None` when that role is not filtered.
    pub fn for_role(&self, role: Role) -> Option<&BTreeSet<String>> {
        match role {
            Role::Session => self.session.as_ref(),
            Role::Cm => self.cm.as_ref(),
            // s2s nodes are members through their Redis lease alone.
            Role::S2s => None,
        }
    }

    /// Whether `member` may be in the view: it is ready for at least one of its roles (a
    /// member that is both cm and session needs to be ready behind one of the two
    /// Services). A member without roles is admitted (nothing to filter it by).
    pub fn admits(&self, member: &Member) -> bool {
        member.roles.is_empty()
            || member.roles.iter().any(|&r| {
                self.for_role(r)
                    .is_none_or(|ready| ready.contains(&member.node))
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn member(node: &str, roles: &[Role]) -> Member {
        Member {
            node: node.into(),
            epoch: 1,
            roles: roles.to_vec(),
            grpc: "x:1".into(),
        }
    }

    #[test]
    fn admits_by_role() {
        let all = ReadyFilter::default();
        assert!(all.admits(&member("a", &[Role::Session])));
        let none = ReadyFilter::nobody(true, false);
        assert!(!none.admits(&member("a", &[Role::Session])));
        assert!(none.admits(&member("c", &[Role::Cm])));
        let f = ReadyFilter {
            session: Some(["s1".to_owned()].into()),
            cm: Some(["c1".to_owned()].into()),
        };
        assert!(f.admits(&member("s1", &[Role::Session])));
        assert!(!f.admits(&member("s2", &[Role::Session])));
        // A session node is not admitted by being ready behind the cm Service.
        assert!(!f.admits(&member("c1", &[Role::Session])));
        assert!(f.admits(&member("c1", &[Role::Cm])));
        // Both roles: ready behind either Service.
        assert!(f.admits(&member("c1", &[Role::Cm, Role::Session])));
        assert!(!f.admits(&member("x", &[Role::Cm, Role::Session])));
        assert!(f.admits(&member("x", &[])));
    }
}
