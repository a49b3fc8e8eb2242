-- Per-event and per-entity state, changed atomically: one script, six commands (ARGV[1]).
-- Each call handles a whole batch, one item after the other, in one round trip.
--
-- An event hash remembers an event id: where it was read from, the entity state it was
-- scored against, its status (claimed -> scored -> learned) and the prediction published
-- for it. A pending key holds the features and prediction a label needs. An entity key
-- holds its count, last time seen and exponentially weighted statistics as one JSON
-- document (`{"n": 3, "last_ts": "<%.17g>", "stats": {"<field>": [n, mean, var]}}`: one
-- read and one write, cheaper in a script than a hash's fields); entity sets remember the
-- values seen of the fields the use case declares (merchants, countries). Which
-- statistics and sets there are comes from the use case's declared features
-- (stream/features.py, whose EntityState makes the same updates offline). A label whose
-- event is not scored yet is parked (hash of labels, sorted set of deadlines) until it is.
-- Under an implicit label policy, a scored event also waits in a sorted set of maturity
-- times: one that no label reached by then is learned with the implicit target.
--
-- Ids arrive encoded (stream/runtime/keys.py): an encoded id never holds ':', and an entity
-- joins its encoded ids with ':' (as many as its use case declares), so a key is one kind
-- followed by one event id or one entity, and the kinds (event, pending, entity,
-- seen:<member>) are distinct prefixes: no id can name another id's key, or another kind.
--
-- The journal (a stream, `<prefix>journal`) is what the learner reads,
-- in its order: one entry per scored event (k=s, p=pending) and one per label joined to
-- its event (k=l, p=pending, y=target, s=label source), written in the same atomic step
-- as the state change, so the learner sees each scored event and each label exactly once.

-- ARGV[1] is the command, ARGV[2] the use case's key prefix, ARGV[3] the parameters as one
-- JSON document: a few arguments to pack and send instead of thousands of keys. Large
-- records (record's predictions and pending records) follow as arguments of their own,
-- so that no JSON has to be unescaped for them. The script builds its keys from the
-- prefix, so it needs a single Redis, not a cluster.
local command = ARGV[1]
local prefix = ARGV[2]
local p = cjson.decode(ARGV[3])

local function key(kind, id)
  return prefix .. kind .. ':' .. id
end
local JOURNAL = prefix .. 'journal'
local PARKED = prefix .. 'parked:labels'
local DUE = prefix .. 'parked:due'
local MATURING = prefix .. 'maturing'

local format = string.format

local function fmt(x)
  return format('%.17g', x)
end

local function append(out, values)
  local k = #out
  for i = 1, #values do
    out[k + i] = values[i]
  end
end

-- Folds `value` into the exponentially weighted statistic `name` ({n, mean, var}) of the
-- entity state `state`; a missing value (JSON null) changes nothing. features.fold in Python.
local function add_stat(state, name, value, decay)
  if value == cjson.null then
    return
  end
  local stats = state.stats
  if not stats then
    stats = {}
    state.stats = stats
  end
  local stat = stats[name]
  if stat then
    local d = value - stat[2]
    stat[1], stat[2], stat[3] = stat[1] + 1, stat[2] + decay * d, (1 - decay) * (stat[3] + decay * d * d)
  else
    stats[name] = {1, value, 0}
  end
end

-- An entity's state and its JSON (`{}` when unknown).
local function get_entity(entity_key)
  local raw = redis.call('GET', entity_key) or '{}'
  return cjson.decode(raw), raw
end

local function set_entity(entity_key, state, ttl)
  redis.call('SET', entity_key, cjson.encode(state), 'EX', ttl)
end

local function journal(fields)
  redis.call('XADD', JOURNAL, 'MAXLEN', '~', p.journal_max, '*', unpack(fields))
end

-- A label for an event already learned: the same message again, or a dead letter.
local function already_learned(source, learned_from)
  if learned_from == source then
    return 'redelivered'
  end
  return learned_from == 'implicit' and 'matured_event' or 'duplicate_label'
end

-- The one way an event is learned: scored -> learned, handing its pending record and
-- target `y` to the journal.
local function learn(event_key, pending_key, label_source, y)
  local pending = redis.call('GET', pending_key)
  if not pending then
    return {'expired_event', '', ''}
  end
  redis.call('HSET', event_key, 'status', 'learned', 'label_source', label_source)
  redis.call('DEL', pending_key)
  journal({'k', 'l', 'p', pending, 'y', fmt(y), 's', label_source})
  return {'learn', pending, ''}
end

local out = {}

if command == 'observe' then
  -- p: event_ttl, entity_ttl, decay, stats (names), members (names), events: [event id,
  -- entity id, source, ts, {stat values}, {member values}].
  -- Replies per event: source, prior, status, prediction.
  local names, member_names = p.stats, p.members
  for _, event in ipairs(p.events) do
    local event_key, entity_key = key('event', event[1]), key('entity', event[2])
    local source, ts, values, members = event[3], event[4], event[5], event[6]
    local known = redis.call('HMGET', event_key, 'source', 'prior', 'status', 'prediction')
    if known[1] then
      append(out, {known[1], known[2], known[3], known[4] or ''})
    else
      local seen = {}
      for j, member in ipairs(member_names) do
        local set_key = key('seen:' .. member, event[2])
        seen[j] = redis.call('SADD', set_key, members[j]) == 0
        redis.call('EXPIRE', set_key, p.entity_ttl)
      end
      local state, raw = get_entity(entity_key)
      local prior = '{"state":' .. raw .. ',"seen":' .. cjson.encode(seen) .. '}'
      state.n = (state.n or 0) + 1
      local last = tonumber(state.last_ts)
      if not last or ts > last then
        state.last_ts = fmt(ts)  -- a string: cjson writes numbers with 14 digits only
      end
      for j, name in ipairs(names) do
        add_stat(state, name, values[j], p.decay)
      end
      set_entity(entity_key, state, p.entity_ttl)
      redis.call('HSET', event_key, 'source', source, 'prior', prior, 'status', 'claimed')
      redis.call('EXPIRE', event_key, p.event_ttl)
      append(out, {source, prior, 'claimed', ''})
    end
  end

elseif command == 'record' then
  -- p: label_ttl, journal_max, matures_at (under an implicit label policy: when the events
  -- mature, else null), event_ids. ARGV[4 + 2i], ARGV[5 + 2i]: the prediction and pending
  -- record of event i (0-based), as they are: no JSON to unescape.
  -- Replies, for each event this call did not record (two scorings of one claim raced: a
  -- redelivery, or a repeated API request), its index i and the prediction recorded first.
  for i, event_id in ipairs(p.event_ids) do
    local event_key = key('event', event_id)
    if redis.call('HGET', event_key, 'status') == 'claimed' then
      local pending = ARGV[3 + 2 * i]
      redis.call('HSET', event_key, 'status', 'scored', 'prediction', ARGV[2 + 2 * i])
      redis.call('SET', key('pending', event_id), pending, 'EX', p.label_ttl)
      if p.matures_at ~= cjson.null then
        redis.call('ZADD', MATURING, p.matures_at, event_id)
      end
      journal({'k', 's', 'p', pending})
    else
      append(out, {i, redis.call('HGET', event_key, 'prediction') or ''})
    end
  end

elseif command == 'settle' then
  -- p: deadline, journal_max, labels: [event id, label source, parked record, target].
  -- Replies per label: outcome, pending, parked.
  for _, label in ipairs(p.labels) do
    local event_id, source = label[1], label[2]
    local event_key = key('event', event_id)
    local e = redis.call('HMGET', event_key, 'status', 'label_source')
    if e[1] == 'learned' then
      append(out, {already_learned(source, e[2]), '', ''})
    elseif e[1] == 'scored' then
      append(out, learn(event_key, key('pending', event_id), source, label[4]))
    else
      -- Its event is not scored yet: the label waits (once) until the deadline.
      local parked = redis.call('HGET', PARKED, event_id)
      if parked then
        append(out, {cjson.decode(parked).source == source and 'redelivered' or 'duplicate_label', '', ''})
      else
        redis.call('HSET', PARKED, event_id, label[3])
        redis.call('ZADD', DUE, p.deadline, event_id)
        append(out, {'parked', '', ''})
      end
    end
  end

elseif command == 'unpark' then
  -- p: now, journal_max, event_ids. Replies per event id: outcome, pending, parked.
  local now = p.now
  for _, event_id in ipairs(p.event_ids) do
    local event_key = key('event', event_id)
    local parked = redis.call('HGET', PARKED, event_id)
    local deadline = tonumber(redis.call('ZSCORE', DUE, event_id))
    local e = redis.call('HMGET', event_key, 'status', 'label_source')
    local scored = e[1] == 'scored'
    if parked and not scored and e[1] ~= 'learned' and deadline and deadline > now then
      append(out, {'waiting', '', ''})
    else
      redis.call('HDEL', PARKED, event_id)
      redis.call('ZREM', DUE, event_id)
      if not parked then
        append(out, {'gone', '', ''})
      elseif e[1] == 'learned' then
        append(out, {already_learned(cjson.decode(parked).source, e[2]), '', parked})
      elseif not scored then
        append(out, {'unknown_event', '', parked})
      else
        local label = cjson.decode(parked)
        local reply = learn(event_key, key('pending', event_id), label.source, label.y)
        reply[3] = parked
        append(out, reply)
      end
    end
  end

elseif command == 'mature' then
  -- p: journal_max, target, event_ids (due to mature). Replies per event id: outcome, pending,
  -- '' ('learn' when it is learned with the implicit target now, 'gone' when a label came first).
  for _, event_id in ipairs(p.event_ids) do
    local event_key = key('event', event_id)
    redis.call('ZREM', MATURING, event_id)
    if redis.call('HGET', event_key, 'status') == 'scored' then
      -- 'implicit' is the label source of stream.usecases.IMPLICIT_SOURCE.
      append(out, learn(event_key, key('pending', event_id), 'implicit', p.target))
    else
      append(out, {'gone', '', ''})
    end
  end

elseif command == 'update' then
  -- p: stat (name), decay, entity_ttl, entities, values (one per entity).
  for i, value in ipairs(p.values) do
    local entity_key = key('entity', p.entities[i])
    local state = get_entity(entity_key)
    add_stat(state, p.stat, value, p.decay)
    set_entity(entity_key, state, p.entity_ttl)
  end

else
  return redis.error_reply('unknown command ' .. tostring(command))
end
return out
