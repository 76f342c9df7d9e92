-- A page of a channel's clients in public-token order, from the channel's index
-- (a sorted set whose members all score 0, so ZRANGEBYLEX orders them byte by
-- byte): the page costs its own size, not the channel's. When the index and the
-- registrations differ in size (registrations made before the index existed),
-- the index is rebuilt from them first: one full read, then none.
--
-- KEYS[1] registrations of the channel   KEYS[2] open-stream counts of the channel
-- KEYS[3] the channel's index of public tokens
-- ARGV[1] where the page starts: '-' (the first client) or '(' .. a public token (after it)
-- ARGV[2] most clients
-- Returns {public token, registration (JSON), open streams, ...}.
if redis.call('ZCARD', KEYS[3]) ~= redis.call('HLEN', KEYS[1]) then
  redis.call('DEL', KEYS[3])
  for _, public in ipairs(redis.call('HKEYS', KEYS[1])) do
    redis.call('ZADD', KEYS[3], 0, public)
  end
end
local page = {}
for _, public in ipairs(redis.call('ZRANGEBYLEX', KEYS[3], ARGV[1], '+', 'LIMIT', 0, ARGV[2])) do
  local json = redis.call('HGET', KEYS[1], public)
  if json then
    page[#page + 1] = public
    page[#page + 1] = json
    page[#page + 1] = redis.call('HGET', KEYS[2], public) or '0'
  end
end
return page
