//! Stable hashing: bare JID → virtual shard, and (node, shard) → rendezvous weight.
//!
//! Both hashes are SHA-256 based so that they give the same answer in every process, on
//! every machine and in every version of Rookery: changing them would move every user
//! of a running cluster at once, so they are pinned by tests with hard-coded values.

use sha2::{Digest, Sha256};

use crate::Member;

/// The number of virtual shards a cluster is created with unless configured otherwise.
pub const DEFAULT_SHARDS: u16 = 1024;

fn first_u64(digest: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

/// The virtual shard of a bare JID: the first 8 bytes of `SHA-256(bare_jid as UTF-8)`
/// read as a big-endian `u64`, modulo `shards`.
///
/// The JID must already be normalized (stringprep/PRECIS applied, lower-cased domain):
/// this function hashes bytes. `shards == 0` is treated as 1 (everything is shard 0).
pub fn shard_of(bare_jid: &str, shards: u16) -> u16 {
    let h = first_u64(&Sha256::digest(bare_jid.as_bytes()));
    let n = u64::from(shards.max(1));
    // The remainder is < shards <= u16::MAX, so the conversion cannot fail.
    u16::try_from(h % n).unwrap_or(0)
}

/// The rendezvous weight of `node` for `shard`: the first 8 bytes of
/// `SHA-256(node as UTF-8 ‖ 0x00 ‖ shard as 2 bytes big-endian)` read as a big-endian
/// `u64`. It depends on the node *name* only, not on its epoch, so that a restarted
/// node gets its shards back.
pub fn rendezvous_weight(node: &str, shard: u16) -> u64 {
    let mut h = Sha256::new();
    h.update(node.as_bytes());
    h.update([0u8]);
    h.update(shard.to_be_bytes());
    first_u64(&h.finalize())
}

/// Highest-random-weight choice: the candidate with the greatest
/// [`rendezvous_weight`] for `shard` (ties, which need a 64-bit collision, go to the
/// greater node name). `None` when there is no candidate.
///
/// Removing a candidate moves only the shards it had; adding one moves to it only the
/// shards it now wins (about `1/n` of them).
pub fn rendezvous<'a>(
    shard: u16,
    candidates: impl IntoIterator<Item = &'a Member>,
) -> Option<&'a Member> {
    candidates
        .into_iter()
        .map(|m| (rendezvous_weight(&m.node, shard), m))
        .max_by(|(wa, a), (wb, b)| wa.cmp(wb).then_with(|| a.node.cmp(&b.node)))
        .map(|(_, m)| m)
}
