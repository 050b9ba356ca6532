"""Lua scripts run by the L2 cache and the lock; each is one atomic step on the server.

Registered per client with ``client.register_script`` (redis-py sends EVALSHA and falls
back to loading the script on NOSCRIPT). Scripts touch member keys read from tag sets,
which are not declared in KEYS: fine on a single Redis (or a primary with replicas), not
on Redis Cluster, where a workspace's keys would first need a common hash tag.
"""

from __future__ import annotations

from typing import Final

__all__ = ["INVALIDATE_TAGS", "LOCK_EXTEND", "LOCK_RELEASE", "SET_TAGGED"]

# KEYS: n entry keys, then the tag set keys.  ARGV: n, ttl_ms, then n values.
# Every entry is SET with PX ttl and added to every tag set; each tag set's TTL is raised
# to at least ttl (a set holding a longer-lived entry must outlive it, so never shortened;
# a set without any TTL is left without one).
# A busy tag's set is extended forever, so members whose entries expired would pile up:
# each write also samples 3 random members and drops those whose entry is gone. Dead
# members then stay a bounded fraction of the set instead of growing without limit.
#
# Optional generation check (ARGV after the n values: the expected generation of each tag
# set, in KEYS order): if any tag was invalidated since the caller read its generation,
# nothing is written and the script returns -1. A load that read the database before a
# commit on another instance thus cannot store its old value after that commit's
# invalidation has run, however late the backplane message reaches it.
SET_TAGGED: Final = """
local n = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
if #ARGV > n + 2 then
  for j = n + 1, #KEYS do
    local current = redis.call('GET', KEYS[j] .. '#gen') or '0'
    if current ~= ARGV[n + 2 + (j - n)] then
      return -1
    end
  end
end
for i = 1, n do
  redis.call('SET', KEYS[i], ARGV[i + 2], 'PX', ttl)
end
for j = n + 1, #KEYS do
  local tag = KEYS[j]
  local current = redis.call('PTTL', tag)
  for i = 1, n, 1000 do
    redis.call('SADD', tag, unpack(KEYS, i, math.min(i + 999, n)))
  end
  if current == -2 or (current >= 0 and current < ttl) then
    redis.call('PEXPIRE', tag, ttl)
  end
  local sample = redis.call('SRANDMEMBER', tag, 3)
  for s = 1, #sample do
    if redis.call('EXISTS', sample[s]) == 0 then
      redis.call('SREM', tag, sample[s])
    end
  end
end
return n
"""

# KEYS: tag set keys.  ARGV: generation ttl_ms.  Every member of every set is unlinked,
# then the set itself, and the tag's generation (``{tag}#gen``) moves to the server time
# in µs (or one past its value, if that is not smaller): strictly increasing, so a load
# which read the generation before this cannot store (see SET_TAGGED), and comparable
# with the server time a load read, so a load can tell the tag was invalidated after the
# moment its snapshot began. Returns how many entry keys existed and were removed.
# Members are unlinked in slices because Lua's unpack has a stack limit.
INVALIDATE_TAGS: Final = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local removed = 0
for i = 1, #KEYS do
  local members = redis.call('SMEMBERS', KEYS[i])
  for j = 1, #members, 1000 do
    removed = removed + redis.call('UNLINK', unpack(members, j, math.min(j + 999, #members)))
  end
  redis.call('UNLINK', KEYS[i])
  local gen = KEYS[i] .. '#gen'
  local old = tonumber(redis.call('GET', gen) or '0') or 0
  local new = now
  if new <= old then
    new = old + 1
  end
  redis.call('SET', gen, string.format('%.0f', new), 'PX', ARGV[1])
end
return removed
"""

# KEYS: lock key.  ARGV: token.  Deletes the key only while it still holds our token, so a
# holder whose lease expired cannot free the lock someone else has since taken.
LOCK_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: lock key.  ARGV: token, lease_ms.  Renews the lease only while we still hold it.
LOCK_EXTEND: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
