-- Counts one stream fewer; after its last one, the client's idle clock starts.
--
-- KEYS[1] registrations of the channel   KEYS[2] open-stream counts of the channel
-- KEYS[3] idle deadlines
-- ARGV[1] public token   ARGV[2] member in the idle set   ARGV[3] idle deadline (ms)
-- Returns 1 when that was its last stream, else 0.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
if n > 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], 0)
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
return 1
