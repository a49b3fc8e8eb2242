-- Per-event and per-entity state, changed atomically: one script, five commands (ARGV[1]).
--
-- An event hash (KEYS[1] for observe/record/settle) remembers an event id: where it was
-- read from, the entity state it was scored against, its status (claimed -> scored ->
-- learned) and the prediction published for it. A pending key holds the features and
-- prediction a label needs. An entity hash holds counts and exponentially weighted
-- statistics; entity sets remember values seen (merchants, countries). A label whose
-- event is not scored yet is parked (hash of labels, sorted set of deadlines) until it is.

local command = ARGV[1]

local function fmt(x)
  return string.format('%.17g', x)
end

-- Exponentially weighted mean and variance of one statistic of an entity.
local function update_stat(entity_key, name, value, alpha)
  local s = redis.call('HMGET', entity_key, name .. ':n', name .. ':mean', name .. ':var')
  local n = tonumber(s[1]) or 0
  local mean, var = value, 0
  if n > 0 then
    local d = value - tonumber(s[2])
    mean = tonumber(s[2]) + alpha * d
    var = (1 - alpha) * (tonumber(s[3]) + alpha * d * d)
  end
  redis.call('HSET', entity_key, name .. ':n', n + 1, name .. ':mean', fmt(mean), name .. ':var', fmt(var))
end

-- The one way an event is learned: scored -> learned, handing over its pending record.
local function learn(event_key, pending_key, label_source)
  local pending = redis.call('GET', pending_key)
  if not pending then
    return {'expired_event', ''}
  end
  redis.call('HSET', event_key, 'status', 'learned', 'label_source', label_source)
  redis.call('DEL', pending_key)
  return {'learn', pending}
end

if command == 'observe' then
  -- KEYS: event, entity, member sets...; ARGV: cmd, source, ts, event_ttl, entity_ttl, alpha,
  --       k, k stat names, k stat values, then one member value per member-set key.
  local event_key, entity_key = KEYS[1], KEYS[2]
  local known = redis.call('HMGET', event_key, 'source', 'prior', 'status', 'prediction')
  if known[1] then
    return {0, known[1], known[2], known[3], known[4] or ''}
  end
  local source, ts = ARGV[2], tonumber(ARGV[3])
  local event_ttl, entity_ttl, alpha = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  local k = tonumber(ARGV[7])
  local seen = {}
  for i = 3, #KEYS do
    seen[i - 2] = redis.call('SADD', KEYS[i], ARGV[7 + 2 * k + i - 2]) == 0
    redis.call('EXPIRE', KEYS[i], entity_ttl)
  end
  local prior = cjson.encode({state = redis.call('HGETALL', entity_key), seen = seen})
  redis.call('HINCRBY', entity_key, 'n', 1)
  local last = tonumber(redis.call('HGET', entity_key, 'last_ts'))
  if not last or ts > last then
    redis.call('HSET', entity_key, 'last_ts', fmt(ts))
  end
  for i = 1, k do
    update_stat(entity_key, ARGV[7 + i], tonumber(ARGV[7 + k + i]), alpha)
  end
  redis.call('EXPIRE', entity_key, entity_ttl)
  redis.call('HSET', event_key, 'source', source, 'prior', prior, 'status', 'claimed')
  redis.call('EXPIRE', event_key, event_ttl)
  return {1, source, prior, 'claimed', ''}

elseif command == 'record' then
  -- KEYS: event, pending; ARGV: cmd, prediction, pending, label_ttl
  if redis.call('HGET', KEYS[1], 'status') ~= 'claimed' then
    return 0
  end
  redis.call('HSET', KEYS[1], 'status', 'scored', 'prediction', ARGV[2])
  redis.call('SET', KEYS[2], ARGV[3], 'EX', tonumber(ARGV[4]))
  return 1

elseif command == 'settle' then
  -- KEYS: event, pending, parked, due; ARGV: cmd, event id, label source, parked label, deadline
  local e = redis.call('HMGET', KEYS[1], 'status', 'label_source')
  if e[1] == 'learned' then
    return {e[2] == ARGV[3] and 'redelivered' or 'duplicate_label'}
  elseif e[1] == 'scored' then
    return learn(KEYS[1], KEYS[2], ARGV[3])
  end
  -- Its event is not scored yet: the label waits (once) until the deadline.
  local parked = redis.call('HGET', KEYS[3], ARGV[2])
  if parked then
    return {cjson.decode(parked).source == ARGV[3] and 'redelivered' or 'duplicate_label'}
  end
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[2])
  return {'parked'}

elseif command == 'unpark' then
  -- KEYS: event, pending, parked, due; ARGV: cmd, event id, now
  local parked = redis.call('HGET', KEYS[3], ARGV[2])
  local deadline = tonumber(redis.call('ZSCORE', KEYS[4], ARGV[2]))
  local scored = redis.call('HGET', KEYS[1], 'status') == 'scored'
  if parked and not scored and deadline and deadline > tonumber(ARGV[3]) then
    return {'waiting'}
  end
  redis.call('HDEL', KEYS[3], ARGV[2])
  redis.call('ZREM', KEYS[4], ARGV[2])
  if not parked then
    return {'gone'}
  elseif not scored then
    return {'unknown_event', '', parked}
  end
  local outcome = learn(KEYS[1], KEYS[2], cjson.decode(parked).source)
  outcome[3] = parked
  return outcome

elseif command == 'update' then
  -- KEYS: entity; ARGV: cmd, stat name, value, alpha, entity_ttl
  update_stat(KEYS[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
  return 1
end
return redis.error_reply('unknown command ' .. tostring(command))
