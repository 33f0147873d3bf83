//! A snapshot of the live members and the shard map derived from it.

use crate::{Member, Role, rendezvous, shard_of};

/// The live members of the cluster at one point, and the shard map they imply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// Increases by one each time the member set changes (as seen by this node).
    pub version: u64,
    /// Number of virtual shards of the cluster.
    pub shards: u16,
    /// Live members (lease not expired), sorted by node name.
    pub members: Vec<Member>,
}

impl View {
    /// The members that have the session role (the candidates for shard ownership).
    pub fn session_nodes(&self) -> impl Iterator<Item = &Member> {
        self.members
            .iter()
            .filter(|m| m.roles.contains(&Role::Session))
    }

    /// The owner of `shard`: rendezvous hashing over the session nodes. `None` when no
    /// session node is live.
    pub fn shard_owner(&self, shard: u16) -> Option<&Member> {
        rendezvous(shard, self.session_nodes())
    }

    /// The owner of the shard of `bare_jid` (normalized bare JID).
    pub fn owner_of(&self, bare_jid: &str) -> Option<&Member> {
        self.shard_owner(shard_of(bare_jid, self.shards))
    }

    /// The s2s node that keeps the streams to the remote `domain`:
    /// rendezvous hashing of the domain over the members with the s2s role,
    /// so that each remote domain has one stream pair in the cluster.
    pub fn s2s_node_for(&self, domain: &str) -> Option<&Member> {
        rendezvous(
            shard_of(domain, self.shards),
            self.members.iter().filter(|m| m.roles.contains(&Role::S2s)),
        )
    }

    /// The live member named `node`, if any.
    pub fn member(&self, node: &str) -> Option<&Member> {
        self.members
            .binary_search_by(|m| m.node.as_str().cmp(node))
            .ok()
            .and_then(|i| self.members.get(i))
            .or_else(|| self.members.iter().find(|m| m.node == node))
    }

    /// Whether the incarnation `(node, epoch)` is a live member of this view.
    pub fn is_live(&self, node: &str, epoch: u64) -> bool {
        self.member(node).is_some_and(|m| m.epoch == epoch)
    }

    /// The shards that `node` owns in this view, ascending (empty if it is not a live
    /// session node).
    pub fn owned_shards(&self, node: &str) -> Vec<u16> {
        if !self.session_nodes().any(|m| m.node == node) {
            return Vec::new();
        }
        (0..self.shards)
            .filter(|&s| self.shard_owner(s).is_some_and(|m| m.node == node))
            .collect()
    }
}
