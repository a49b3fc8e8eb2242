-- Per-event and per-entity state, changed atomically: one script, one command per call
-- (ARGV[1]). Each call handles a whole batch's share of one bucket, one item after the
-- other, in one round trip.
--
-- A bucket (stream/runtime/keys.py) is a key prefix, KEYS[1]: every key a call touches
-- starts with it. On a single Redis a use case has one bucket; on a Redis Cluster the
-- prefix holds a hash tag, so that a call touches one slot. An entity's keys live in its
-- bucket: its state, the event hashes and pending records of its events, the maturing
-- set and the journal they are appended to. An event id's keys live in the id's bucket:
-- its route (with several buckets: which bucket holds its event, and which message
-- claimed the id first) and the labels parked for it.
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
-- followed by one event id or one entity, and the kinds (event, pending, route, entity,
-- seen:<member>) are distinct prefixes: no id can name another id's key, or another kind.
--
-- The journal (a stream, `<prefix>journal`) is what the learner reads, in its order: one
-- entry per scored event (k=s, p=pending) and one per label joined to its event (k=l,
-- p=pending, y=target, s=label source), written in the same atomic step as the state
-- change, so the learner sees each scored event and each label exactly once. With several
-- buckets there is a journal per bucket, which the learner merges (stream/runtime/state.py).

-- ARGV[2] holds the parameters as one JSON document: a few arguments to pack and send
-- instead of thousands of keys. Large records (record's predictions and pending records)
-- follow as arguments of their own, so that no JSON has to be unescaped for them.
local prefix = KEYS[1]
local command = ARGV[1]
local p = cjson.decode(ARGV[2])

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
-- target `y` to the journal. Returns the outcome and the pending record.
local function learn(event_key, pending_key, label_source, y)
  local pending = redis.call('GET', pending_key)
  if not pending then
    return 'expired_event', ''
  end
  redis.call('HSET', event_key, 'status', 'learned', 'label_source', label_source)
  redis.call('DEL', pending_key)
  journal({'k', 'l', 'p', pending, 'y', fmt(y), 's', label_source})
  return 'learn', pending
end

-- A label joined to its event if the event is scored (in the event's bucket): its outcome
-- ('unscored' when the event is not scored yet) and the pending record it learned.
local function join(event_id, source, y)
  local event_key = key('event', event_id)
  local e = redis.call('HMGET', event_key, 'status', 'label_source')
  if e[1] == 'learned' then
    return already_learned(source, e[2]), ''
  elseif e[1] == 'scored' then
    return learn(event_key, key('pending', event_id), source, y)
  end
  return 'unscored', ''
end

-- A label whose event is not scored yet waits (once, in its id's bucket) until the deadline.
local function park(event_id, source, record, deadline)
  local parked = redis.call('HGET', PARKED, event_id)
  if parked then
    return cjson.decode(parked).source == source and 'redelivered' or 'duplicate_label'
  end
  redis.call('HSET', PARKED, event_id, record)
  redis.call('ZADD', DUE, deadline, event_id)
  return 'parked'
end

local out = {}

if command == 'claim' then
  -- With several buckets, in the ids' bucket, before `observe`: the first message that
  -- claims an event id routes it to its entity's bucket, for as long as the event hash
  -- lives. p: event_ttl, events: [event id, entity bucket, source]. Replies per event:
  -- '' (the id is this message's) or the source of the message that claimed it first.
  for _, event in ipairs(p.events) do
    local route_key, route = key('route', event[1]), event[2] .. '|' .. event[3]
    local first = redis.call('GET', route_key)
    if not first then
      redis.call('SET', route_key, route, 'EX', p.event_ttl)
      first = route
    end
    out[#out + 1] = first == route and '' or string.sub(first, string.find(first, '|', 1, true) + 1)
  end

elseif command == 'observe' then
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
  -- mature, else null), event_ids. ARGV[1 + 2i], ARGV[2 + 2i]: the prediction and pending
  -- record of event i (1-based), as they are: no JSON to unescape.
  -- Replies per event: '' when this call recorded it, else the prediction recorded first
  -- (two scorings of one claim raced: a redelivery, or a repeated API request).
  for i, event_id in ipairs(p.event_ids) do
    local event_key = key('event', event_id)
    if redis.call('HGET', event_key, 'status') == 'claimed' then
      local pending = ARGV[2 + 2 * i]
      redis.call('HSET', event_key, 'status', 'scored', 'prediction', ARGV[1 + 2 * i])
      redis.call('SET', key('pending', event_id), pending, 'EX', p.label_ttl)
      if p.matures_at ~= cjson.null then
        redis.call('ZADD', MATURING, p.matures_at, event_id)
      end
      journal({'k', 's', 'p', pending})
      append(out, {''})
    else
      append(out, {redis.call('HGET', event_key, 'prediction') or ''})
    end
  end

elseif command == 'settle' then
  -- In the events' bucket. p: deadline, journal_max, labels: [event id, label source, parked
  -- record, target, park (the id's bucket is this one: an unscored event's label parks here)].
  -- Replies per label: outcome ('unscored': to park in its id's bucket), pending.
  for _, label in ipairs(p.labels) do
    local outcome, pending = join(label[1], label[2], label[4])
    if outcome == 'unscored' and label[5] then
      outcome = park(label[1], label[2], label[3], p.deadline)
    end
    append(out, {outcome, pending})
  end

elseif command == 'route' then
  -- With several buckets, in the ids' bucket, before `settle`: where each label's event is,
  -- or, for an event id never seen, the label parked. p: deadline, labels: [event id, label
  -- source, parked record]. Replies per label: 'routed' and the event's bucket, or the
  -- outcome of parking it and ''.
  for _, label in ipairs(p.labels) do
    local route = redis.call('GET', key('route', label[1]))
    if route then
      append(out, {'routed', string.sub(route, 1, string.find(route, '|', 1, true) - 1)})
    else
      append(out, {park(label[1], label[2], label[3], p.deadline), ''})
    end
  end

elseif command == 'park' then
  -- In the ids' bucket. p: deadline, labels: [event id, label source, parked record].
  -- Replies per label: parked, redelivered or duplicate_label.
  for _, label in ipairs(p.labels) do
    out[#out + 1] = park(label[1], label[2], label[3], p.deadline)
  end

elseif command == 'due' then
  -- In the ids' bucket, the first of three steps that settle parked labels (due, join,
  -- unpark). p: limit. Replies per parked label, soonest deadline first: event id, parked
  -- record ('' if gone meanwhile), the event's bucket from its route ('' without one).
  for _, event_id in ipairs(redis.call('ZRANGE', DUE, 0, p.limit - 1)) do
    local route = redis.call('GET', key('route', event_id))
    local bucket = route and string.sub(route, 1, string.find(route, '|', 1, true) - 1) or ''
    append(out, {event_id, redis.call('HGET', PARKED, event_id) or '', bucket})
  end

elseif command == 'join' then
  -- In the events' bucket. p: journal_max, labels: [event id, label source, target].
  -- Replies per label: outcome ('unscored' when the event is not scored yet), pending.
  for _, label in ipairs(p.labels) do
    append(out, {join(label[1], label[2], label[3])})
  end

elseif command == 'unpark' then
  -- In the ids' bucket, after `join`. p: now, labels: [event id, outcome of its join
  -- ('unscored' too for an event id never seen)]. A label whose event is still unscored
  -- waits until its deadline; any other is taken off the parked labels, by one worker:
  -- the one that learned it says 'learn', the one that takes it off says its outcome
  -- ('unknown_event' for an event never scored), any other 'gone'. Replies per label.
  for _, label in ipairs(p.labels) do
    local event_id, outcome = label[1], label[2]
    local deadline = tonumber(redis.call('ZSCORE', DUE, event_id))
    if outcome == 'unscored' and deadline and deadline > p.now and redis.call('HEXISTS', PARKED, event_id) == 1 then
      out[#out + 1] = 'waiting'
    else
      redis.call('ZREM', DUE, event_id)
      local removed = redis.call('HDEL', PARKED, event_id) == 1
      if outcome == 'learn' then
        out[#out + 1] = 'learn'
      elseif not removed then
        out[#out + 1] = 'gone'
      else
        out[#out + 1] = outcome == 'unscored' and 'unknown_event' or outcome
      end
    end
  end

elseif command == 'mature' then
  -- p: journal_max, target, now, limit. Replies per event due to mature by now: outcome,
  -- pending ('learn' when it is learned with the implicit target now, 'gone' when a label
  -- came first).
  for _, event_id in ipairs(redis.call('ZRANGEBYSCORE', MATURING, '-inf', p.now, 'LIMIT', 0, p.limit)) do
    local event_key = key('event', event_id)
    redis.call('ZREM', MATURING, event_id)
    if redis.call('HGET', event_key, 'status') == 'scored' then
      -- 'implicit' is the label source of stream.usecases.IMPLICIT_SOURCE.
      append(out, {learn(event_key, key('pending', event_id), 'implicit', p.target)})
    else
      append(out, {'gone', ''})
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

elseif command == 'read' then
  -- With several buckets, the learner's read of this bucket's journal. p: after, count.
  -- Replies: this node's clock (ms) when it read, then up to `count` entries after
  -- `after`. Every entry written later is stamped later than that clock (a stream id is
  -- its node's time), which is what lets the learner merge the buckets' journals in one
  -- order that a later read never changes.
  local now = redis.call('TIME')
  out[1] = now[1] .. format('%03d', math.floor(now[2] / 1000))
  out[2] = redis.call('XRANGE', JOURNAL, '(' .. p.after, '+', 'COUNT', p.count)

else
  return redis.error_reply('unknown command ' .. tostring(command))
end
return out
