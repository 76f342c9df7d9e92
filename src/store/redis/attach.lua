-- Counts one more open stream of a client; its idle clock stops.
--
-- KEYS[1] registrations of the channel   KEYS[2] open-stream counts of the channel
-- KEYS[3] idle deadlines
-- ARGV[1] public token   ARGV[2] member in the idle set   ARGV[3] now (ms)
-- Returns -1 when the client is gone or idled out, else its open streams.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
local deadline = redis.call('ZSCORE', KEYS[3], ARGV[2])
if deadline and tonumber(deadline) <= tonumber(ARGV[3]) then return -1 end
local n = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
if n == 1 then redis.call('ZREM', KEYS[3], ARGV[2]) end
return n
