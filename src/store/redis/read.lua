-- Reads a channel: the epoch, the head, the oldest retained position (dropping
-- expired entries from the front first), and up to ARGV[3] entries from ARGV[2].
--
-- KEYS[1] the epoch   KEYS[2] head counter of the channel   KEYS[3] the channel's log
-- ARGV[1] cutoff time (ms)   ARGV[2] first entry id wanted   ARGV[3] most entries (0: none)
-- Returns {epoch, head, first retained entry id or false, entries}.
local epoch = redis.call('GET', KEYS[1])
local head = redis.call('GET', KEYS[2])
local first = false
repeat
  local front = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 64)
  local more = #front == 64
  for _, entry in ipairs(front) do
    if tonumber(entry[2][2]) < tonumber(ARGV[1]) then
      redis.call('XDEL', KEYS[3], entry[1])
    else
      first = entry[1]
      more = false
      break
    end
  end
until not more
local entries = {}
if tonumber(ARGV[3]) > 0 then entries = redis.call('XRANGE', KEYS[3], ARGV[2], '+', 'COUNT', ARGV[3]) end
return {epoch, head, first, entries}
