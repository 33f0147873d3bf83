//! The Lua scripts. Each touches only keys of one hash tag (one Redis Cluster slot):
//! the membership scripts `{P}`, the route scripts `{P:sN}`.

use std::sync::LazyLock;

use redis::Script;

/// Join, step 1. KEYS: epoch, shards, incarnations. ARGV: shards, node.
/// Stores the shard count if none is stored; refuses a different one (returns
/// `{0, stored}`); else takes a new epoch, records it as the node's newest incarnation
/// and returns `{1, epoch}`. A missing counter (new cluster, or Redis lost its data) is
/// first seeded with the server time in ms, so epochs keep increasing across data loss.
pub(crate) static JOIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local stored = redis.call('GET', KEYS[2])
if stored and tonumber(stored) ~= tonumber(ARGV[1]) then
  return {0, tonumber(stored)}
end
if not stored then redis.call('SET', KEYS[2], ARGV[1]) end
if redis.call('EXISTS', KEYS[1]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[1], string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)))
end
local e = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[3], ARGV[2], string.format('%d', e))
return {1, e}
"#,
    )
});

/// Heartbeat and view load. KEYS: members, epoch, shards, incarnations, member:<node>.
/// ARGV: node, epoch, ttl_ms, member JSON, refresh (1/0), shards, member key prefix.
///
/// With refresh=1: if a newer incarnation of the node name exists, returns status -1
/// (fenced) without writing; else (re)writes the member record, renews the lease to
/// `now + ttl` (server time) and, after a Redis restart without persistence, restores
/// the epoch counter, the incarnation and the shard count (status 1). With refresh=0
/// only reads (status 0).
///
/// Then removes up to 100 expired members (ZSET entry and record) and returns
/// `{status, now_ms, {records of live members}}`.
pub(crate) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = tonumber(ARGV[2])
local status = 0
if ARGV[5] == '1' then
  local newest = tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0')
  if newest > epoch then
    status = -1
  else
    status = 1
    if newest < epoch then redis.call('HSET', KEYS[4], ARGV[1], ARGV[2]) end
    local counter = tonumber(redis.call('GET', KEYS[2]) or '0')
    if counter < epoch then redis.call('SET', KEYS[2], ARGV[2]) end
    redis.call('SET', KEYS[3], ARGV[6], 'NX')
    redis.call('SET', KEYS[5], ARGV[4])
    redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[3])), ARGV[1])
  end
end
local nowstr = string.format('%d', now)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', nowstr, 'LIMIT', 0, 100)
for _, n in ipairs(dead) do
  redis.call('ZREM', KEYS[1], n)
  redis.call('DEL', ARGV[7] .. n)
end
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. nowstr, '+inf')
local recs = {}
for _, n in ipairs(live) do
  local r = redis.call('GET', ARGV[7] .. n)
  if r then recs[#recs + 1] = r end
end
return {status, now, recs}
"#,
    )
});

/// Graceful leave. KEYS: members, member:<node>, incarnations. ARGV: node, epoch.
/// Deletes the member record and lease unless a newer incarnation exists; returns 1 if
/// deleted.
pub(crate) static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local newest = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if newest > tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"#,
    )
});

/// Claim a shard. KEYS: claim. ARGV: node, epoch. Refuses (0) only when the current
/// claim is a newer incarnation of the same node name; else sets the claim (1).
pub(crate) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local e, n = string.match(cur, '^(%d+) (.*)$')
  if n == ARGV[1] and tonumber(e) > tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2] .. ' ' .. ARGV[1])
return 1
"#,
    )
});

/// Release a shard claim if it is still `ARGV[1]` (`"<epoch> <node>"`). KEYS: claim.
/// Returns 1 if it was released.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#,
    )
});

/// Put a route. KEYS: claim, users, r:<bare>, c:<bare>.
/// ARGV: claim value, bare, resource, entry JSON, conn tag.
/// Returns `{0, ''}` when the claim is not ARGV[1] (fenced), else `{1, previous conn tag
/// or ''}`.
pub(crate) static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0, ''} end
local old = redis.call('HGET', KEYS[4], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[4], ARGV[3], ARGV[5])
redis.call('SADD', KEYS[2], ARGV[2])
return {1, old or ''}
"#,
    )
});

/// Remove a route. KEYS: claim, users, r:<bare>, c:<bare>.
/// ARGV: claim value, bare, resource, conn_id.
/// Returns `{-1, ''}` when fenced, `{0, ''}` when there is no route with that conn_id,
/// `{1, removed conn tag}` when removed.
pub(crate) static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1, ''} end
local tag = redis.call('HGET', KEYS[4], ARGV[3])
if not tag then return {0, ''} end
if string.match(tag, '^%d+ (%d+) ') ~= ARGV[4] then return {0, ''} end
redis.call('HDEL', KEYS[3], ARGV[3])
redis.call('HDEL', KEYS[4], ARGV[3])
if redis.call('HLEN', KEYS[3]) == 0 then
  redis.call('DEL', KEYS[3], KEYS[4])
  redis.call('SREM', KEYS[2], ARGV[2])
end
return {1, tag}
"#,
    )
});

/// Purge one route of a dead connection manager. KEYS: users, r:<bare>, c:<bare>.
/// ARGV: bare, resource, expected conn tag. Deletes the route only if its conn tag is
/// exactly the expected one (so a route since re-bound elsewhere survives); returns 1
/// if deleted.
pub(crate) static PURGE_ONE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[3], ARGV[2]) ~= ARGV[3] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
if redis.call('HLEN', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('SREM', KEYS[1], ARGV[1])
end
return 1
"#,
    )
});
