"""Compare-and-set for Redis caches that a status change must be able to invalidate.

Every cached item has a generation key. Invalidating bumps the generation and deletes the item
in one transaction; a writer reads the generation *before* it reads the database and writes
through :data:`PUT_UNCHANGED`, which stores the item only if the generation has not moved. An
item computed from state older than an invalidation can therefore never be stored after it.
Used by the OCSP answer cache (``pki.ocsp``) and the trust decisions (``pki.trust``).
"""

# KEYS[1] generation key, KEYS[2] item key; ARGV[1] generation read, ARGV[2] value, ARGV[3] TTL.
PUT_UNCHANGED = """
if (redis.call('GET', KEYS[1]) or '0') == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', tonumber(ARGV[3]))
  return 1
end
return 0
"""
