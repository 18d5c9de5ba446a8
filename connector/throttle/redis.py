"""Token buckets in Redis (CONNECTOR_REDIS_URL), shared by every replica: one script per acquire.

Each script runs atomically on the server and reads the time with TIME, so every replica
refills from one clock (Redis 5+ replicates a script's effects, which allows TIME before a
write). A bucket's key expires once it would have refilled: an idle bucket is a full one, and
no key at all says the same thing.
"""

from __future__ import annotations

from typing import Any, Final

import redis.asyncio
from redis.exceptions import RedisError

from connector.errors import StoreUnavailable

PREFIX: Final = "connector:throttle:"
PAUSED_KEY: Final = "connector:throttle-paused"  # a sorted set: account by end of its pause

# Times are stored with %.17g, which gives back the very double: Lua's tostring keeps 14 digits,
# which for seconds since 1970 is the nearest 100 µs, and every write then moved the bucket's
# clock by up to 50 µs either way: a random walk that admitted tokens no time had refilled.
_CLOCK: Final = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local function exact(x) return string.format('%.17g', x) end
"""
# KEYS[1] the bucket (hash: tokens, at, paused); ARGV rate, capacity, cost.
# Returns {wait, paused}: wait "0" when the tokens were taken. Numbers travel as strings
# because Redis truncates a Lua number reply to an integer.
_TAKE: Final = _CLOCK + """
local rate, capacity, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at', 'paused')
local paused = tonumber(state[3]) or 0
if paused > now then
  return {tostring(paused - now), 1}
end
local tokens, at = capacity, now
if state[1] then
  at = math.max(now, tonumber(state[2]))
  tokens = math.min(capacity, tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * rate)
end
if tokens < cost then
  return {tostring((cost - tokens) / rate), 0}
end
tokens = tokens - cost
redis.call('HSET', KEYS[1], 'tokens', exact(tokens), 'at', exact(at))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
return {'0', 0}
"""
# KEYS[1] the bucket, KEYS[2] the paused set; ARGV account, seconds. A pause only lengthens.
_PAUSE: Final = _CLOCK + """
local seconds = tonumber(ARGV[2])
local ends = now + seconds
if ends <= (tonumber(redis.call('HGET', KEYS[1], 'paused')) or 0) then
  return 0
end
redis.call('HSET', KEYS[1], 'paused', exact(ends))
redis.call('ZADD', KEYS[2], ends, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
-- both keys exist now (PEXPIRE ignores a missing one); each lives at least as long as the pause
local keep = math.ceil(seconds * 1000) + 1000
for _, key in ipairs(KEYS) do
  if redis.call('PTTL', key) < keep then
    redis.call('PEXPIRE', key, keep)
  end
end
return 1
"""
# KEYS[1] the paused set. Returns account, seconds left, account, seconds left, ...
_PAUSED: Final = _CLOCK + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local found = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #found, 2 do
  out[#out + 1] = found[i]
  out[#out + 1] = tostring(tonumber(found[i + 1]) - now)
end
return out
"""


def client_for(url: str, timeout: float = 1.0, **options: Any) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(url, socket_timeout=timeout,
                                        socket_connect_timeout=timeout, **options)


class RedisBuckets:
    shared = True

    def __init__(self, client: redis.asyncio.Redis | str) -> None:
        self.client = client_for(client) if isinstance(client, str) else client
        # EVALSHA with the digest computed here; the script text is sent once per server
        # (again only if the server forgot it, after a restart).
        self._take = self.client.register_script(_TAKE)
        self._pause = self.client.register_script(_PAUSE)
        self._paused = self.client.register_script(_PAUSED)

    def __repr__(self) -> str:
        return "RedisBuckets()"  # the URL may hold a password

    async def take(self, account: str, rate: float, capacity: float,
                   cost: float) -> tuple[float, bool]:
        try:
            wait, paused = await self._take([PREFIX + account], [rate, capacity, cost])
        except RedisError as exc:
            raise _unavailable(exc) from exc
        return float(wait), bool(paused)

    async def pause(self, account: str, seconds: float) -> None:
        try:
            await self._pause([PREFIX + account, PAUSED_KEY], [account, seconds])
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def paused(self) -> dict[str, float]:
        try:
            found = await self._paused([PAUSED_KEY])
        except RedisError as exc:
            raise _unavailable(exc) from exc
        return {found[i].decode(): float(found[i + 1]) for i in range(0, len(found), 2)}

    async def close(self) -> None:
        await self.client.aclose()


def _unavailable(exc: RedisError) -> StoreUnavailable:
    return StoreUnavailable(f"redis unavailable: {type(exc).__name__}")
