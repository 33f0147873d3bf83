//! The Redis key layout (see docs/decisions/0011-redis-cluster-state.md).
//!
//! Keys touched together by one Lua script share a hash tag, hence a Redis Cluster slot:
//! all membership keys are under `{P}`, all keys of virtual shard N under `{P:sN}`.

/// Builds the keys of one cluster (one prefix).
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// `{P}:epoch`: the global epoch counter (INCR on join).
    pub(crate) fn epoch(&self) -> String {
        format!("{{{}}}:epoch", self.prefix)
    }

    /// `{P}:shards`: the cluster's number of virtual shards, set by the first join.
    pub(crate) fn shards(&self) -> String {
        format!("{{{}}}:shards", self.prefix)
    }

    /// `{P}:members`: ZSET node → lease deadline (Redis server time, ms).
    pub(crate) fn members(&self) -> String {
        format!("{{{}}}:members", self.prefix)
    }

    /// `{P}:incarnations`: HASH node → newest epoch issued to that node name.
    pub(crate) fn incarnations(&self) -> String {
        format!("{{{}}}:incarnations", self.prefix)
    }

    /// `{P}:member:` — prefix of the member records.
    pub(crate) fn member_prefix(&self) -> String {
        format!("{{{}}}:member:", self.prefix)
    }

    /// `{P}:member:<node>`: JSON [`crate::Member`] of the node's current incarnation.
    pub(crate) fn member(&self, node: &str) -> String {
        format!("{}{node}", self.member_prefix())
    }

    fn shard_tag(&self, shard: u16) -> String {
        format!("{{{}:s{shard}}}", self.prefix)
    }

    /// `{P:sN}:claim`: string `"<epoch> <node>"` of the shard's current claimant.
    pub(crate) fn claim(&self, shard: u16) -> String {
        format!("{}:claim", self.shard_tag(shard))
    }

    /// `{P:sN}:users`: SET of the bare JIDs of the shard that have at least one route.
    pub(crate) fn users(&self, shard: u16) -> String {
        format!("{}:users", self.shard_tag(shard))
    }

    /// `{P:sN}:r:<bare>`: HASH resource → JSON [`crate::RouteEntry`].
    pub(crate) fn routes(&self, shard: u16, bare: &str) -> String {
        format!("{}:r:{bare}", self.shard_tag(shard))
    }

    /// `{P:sN}:c:<bare>`: HASH resource → `"<cm_epoch> <conn_id> <cm>"`, the part of each
    /// route that the scripts compare (Lua's JSON numbers are doubles and would lose
    /// 64-bit connection ids).
    pub(crate) fn conns(&self, shard: u16, bare: &str) -> String {
        format!("{}:c:{bare}", self.shard_tag(shard))
    }

    /// `{P:cm:<node>:<epoch>}:routes`: SET of `"<conn_id> <full JID>"` routed through that
    /// connection-manager incarnation (index for [`crate::Routes::purge_cm`]).
    pub(crate) fn cm_index(&self, cm: &str, cm_epoch: u64) -> String {
        format!("{{{}:cm:{cm}:{cm_epoch}}}:routes", self.prefix)
    }
}

/// The claim value of an incarnation: `"<epoch> <node>"`.
pub(crate) fn claim_value(node: &str, epoch: u64) -> String {
    format!("{epoch} {node}")
}

/// The compared part of a route: `"<cm_epoch> <conn_id> <cm>"`.
pub(crate) fn conn_tag(cm: &str, cm_epoch: u64, conn_id: u64) -> String {
    format!("{cm_epoch} {conn_id} {cm}")
}

/// Parses [`conn_tag`] back into `(cm, cm_epoch, conn_id)`.
pub(crate) fn parse_conn_tag(tag: &str) -> Option<(&str, u64, u64)> {
    let mut it = tag.splitn(3, ' ');
    let cm_epoch = it.next()?.parse().ok()?;
    let conn_id = it.next()?.parse().ok()?;
    let cm = it.next()?;
    Some((cm, cm_epoch, conn_id))
}

/// The member of a cm index set: `"<conn_id> <full JID>"`.
pub(crate) fn cm_index_member(conn_id: u64, full: &str) -> String {
    format!("{conn_id} {full}")
}

/// Parses [`cm_index_member`] back into `(conn_id, full JID)`.
pub(crate) fn parse_cm_index_member(m: &str) -> Option<(u64, &str)> {
    let (id, full) = m.split_once(' ')?;
    Some((id.parse().ok()?, full))
}
