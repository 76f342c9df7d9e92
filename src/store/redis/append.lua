-- Appends one message to a channel: its position, the entry, the count cap, a
-- few expired entries dropped from the front, and the notification to every node.
--
-- KEYS[1] head counter of the channel   KEYS[2] the channel's log (a stream)
-- KEYS[3] the epoch
-- ARGV[1] this node's epoch (hex)       ARGV[2] channel name
-- ARGV[3] most entries kept             ARGV[4] time (ms)
-- ARGV[5] recipient or ''               ARGV[6] the envelope after its id
-- ARGV[7] cutoff time (ms)              ARGV[8] the pub/sub channel of notifications
-- Returns the new position, or the error SSEHUB_EPOCH when Redis has another epoch (or none).
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return redis.error_reply('SSEHUB_EPOCH the epoch changed') end
local seq = redis.call('INCR', KEYS[1])
local envelope = '{"id":"' .. ARGV[1] .. '-' .. seq .. '",' .. ARGV[6]
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], seq .. '-0', 't', ARGV[4], 'to', ARGV[5], 'e', envelope)
local front = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 8)
for _, entry in ipairs(front) do
  if tonumber(entry[2][2]) < tonumber(ARGV[7]) then redis.call('XDEL', KEYS[2], entry[1]) else break end
end
redis.call('PUBLISH', ARGV[8], 'm\n' .. ARGV[2] .. '\n' .. ARGV[1] .. '\n' .. seq .. '\n' .. ARGV[4] .. '\n' .. ARGV[5] .. '\n' .. envelope)
return seq
