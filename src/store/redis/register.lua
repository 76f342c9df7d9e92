-- Registers a client unless its public or private token is taken; its idle clock starts.
--
-- KEYS[1] registrations of the channel   KEYS[2] secrets of the channel
-- KEYS[3] open-stream counts of the channel   KEYS[4] idle deadlines
-- KEYS[5] the channel's index of public tokens (see list.lua)
-- ARGV[1] public token   ARGV[2] private token   ARGV[3] registration (JSON)
-- ARGV[4] member in the idle set   ARGV[5] idle deadline (ms)
-- Returns 1 when registered, 0 when a token is taken.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], 0)
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[4])
redis.call('ZADD', KEYS[5], 0, ARGV[1])
return 1
