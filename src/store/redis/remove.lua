-- Removes a client and tells every node, so its open streams end.
--
-- KEYS[1] registrations of the channel   KEYS[2] secrets of the channel
-- KEYS[3] open-stream counts of the channel   KEYS[4] idle deadlines
-- KEYS[5] the channel's index of public tokens (see list.lua)
-- ARGV[1] public token   ARGV[2] member in the idle set
-- ARGV[3] the pub/sub channel of notifications   ARGV[4] channel name
-- Returns {registration, open streams}, or false when there is no such client.
local json = redis.call('HGET', KEYS[1], ARGV[1])
if not json then return false end
local streams = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], cjson.decode(json)['private_token'])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('PUBLISH', ARGV[3], 'r\n' .. ARGV[4] .. '\n' .. ARGV[1])
return {json, streams}
