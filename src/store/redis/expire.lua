-- Claims one client whose idle deadline has passed: removed here, so exactly one
-- node (the one whose call removes the idle member) announces it.
--
-- KEYS[1] idle deadlines   KEYS[2] registrations of the channel
-- KEYS[3] secrets of the channel   KEYS[4] open-stream counts of the channel
-- KEYS[5] the channel's index of public tokens (see list.lua)
-- ARGV[1] member in the idle set   ARGV[2] public token   ARGV[3] now (ms)
-- Returns the registration (JSON), or false when it is not due or another node claimed it.
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not deadline or tonumber(deadline) > tonumber(ARGV[3]) then return false end
redis.call('ZREM', KEYS[1], ARGV[1])
local json = redis.call('HGET', KEYS[2], ARGV[2])
if not json then return false end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], cjson.decode(json)['private_token'])
redis.call('HDEL', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[2])
return json
