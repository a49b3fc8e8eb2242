-- Per-event and per-entity state, changed atomically: one script, one command per call
-- (ARGV[1]). Each call handles a whole batch's share of one bucket, one item after the
-- other, in one round trip.
--
-- A bucket (stream/runtime/keys.py) is a key prefix, KEYS[1]: every key a call touches
-- starts with it. On a single Redis a use case has one bucket; on a Redis Cluster the
-- prefix holds a hash tag, so that a call touches one slot. An entity's keys live in its
-- bucket: its state, the records of its events, the maturing set and the journal they are
-- appended to. An event id's keys live in the id's bucket: its route (with several
-- buckets: which bucket holds its event, and which message claimed the id first) and the
-- labels parked for it.
--
-- An event's record (`event:<id>`, one string, written with its TTL) is all Redis keeps of
-- it (stream/runtime/pending.py reads and writes it):
--
--   <status><source>\n<entity>\n<tail>
--
-- status `c` (claimed: tail = the entity state it was scored against, its JSON, `\n`, one
-- `1` or `0` per declared member field: seen before or not), `s` (scored: tail = its
-- pending record, what a label needs) or `l` (learned: tail = the label's source, `\n`, the
-- pending record's prediction part). A pending record starts with the length of its
-- prediction part (one byte), then that part (from which the published prediction is made
-- again), then the features: learning an event keeps the first part only.
--
-- An entity key holds `<JSON>\n<members>`: its count, last time seen and exponentially
-- weighted statistics as one JSON document (`{"n": 3, "last_ts": "<%.17g>", "stats":
-- {"<field>": [n, mean, var]}}`), then, per member field the use case declares (merchants,
-- countries), one byte counting the values kept and the 4-byte hashes of the values it was
-- seen with most recently, newest first, at most `kept`. Which statistics and members
-- there are comes from the use case's declared features (stream/features.py, whose
-- EntityState makes the same updates offline). A label whose event is not scored yet is
-- parked (hash of labels, sorted set of deadlines) until it is. Under an implicit label
-- policy, a scored event also waits in a sorted set of maturity times: one that no label
-- reached by then is learned with the implicit target.
--
-- Ids arrive encoded (stream/runtime/keys.py): an encoded id never holds ':' nor '\n', and
-- an entity joins its encoded ids with ':' (as many as its use case declares), so a key is
-- one kind followed by one event id or one entity, and the kinds (event, route, entity)
-- are distinct prefixes: no id can name another id's key, or another kind.
--
-- The journal (a stream, `<prefix>journal`) is what the learner reads, in its order: one
-- entry per scored event (e=entity, p=pending record) and one per label joined to its
-- event (the same, y=target, s=label source), written in the same atomic step as the state
-- change, so the learner sees each scored event and each label exactly once. With several
-- buckets there is a journal per bucket, which the learner merges (stream/runtime/state.py).

-- ARGV[2] holds the parameters as one JSON document: a few arguments to pack and send
-- instead of thousands of keys. Binary records (pending records, member hashes) follow as
-- arguments of their own, one per item.
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

local format, find, sub, byte, char = string.format, string.find, string.sub, string.byte, string.char

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

-- An entity's stored value: its state's JSON (`{}` when unknown) and its members' bytes.
local function get_entity(entity_key)
  local raw = redis.call('GET', entity_key)
  if not raw then
    return '{}', ''
  end
  local nl = find(raw, '\n', 1, true)
  return sub(raw, 1, nl - 1), sub(raw, nl + 1)
end

local function set_entity(entity_key, state, members, ttl)
  redis.call('SET', entity_key, cjson.encode(state) .. '\n' .. members, 'EX', ttl)
end

-- The 4-byte hashes `h` of an entity's members, one string per field, from their bytes.
local function split_members(members, fields)
  local out, at = {}, 1
  for j = 1, fields do
    local count = byte(members, at) or 0
    out[j] = sub(members, at + 1, at + 4 * count)
    at = at + 1 + 4 * count
  end
  return out
end

-- Whether the hash `h` is among `hashes` (4 bytes each), and `hashes` with `h` first, at
-- most `kept` of them.
local function remember(hashes, h, kept)
  local at = find(hashes, h, 1, true)
  while at and (at - 1) % 4 ~= 0 do -- a match across two hashes: look further
    at = find(hashes, h, at + 1, true)
  end
  if at then
    return true, h .. sub(hashes, 1, at - 1) .. sub(hashes, at + 4)
  end
  return false, h .. sub(hashes, 1, 4 * (kept - 1))
end

local function journal(fields)
  redis.call('XADD', JOURNAL, 'MAXLEN', '~', p.journal_max, '*', unpack(fields))
end

-- A record's parts: its status, where its header ends (the newline after the entity) and
-- the entity.
local function parts(record)
  local s1 = find(record, '\n', 2, true)
  local s2 = find(record, '\n', s1 + 1, true)
  return sub(record, 1, 1), s1, s2, sub(record, s1 + 1, s2 - 1)
end

-- A label for an event already learned: the same message again, or a dead letter.
local function already_learned(record, s2, source)
  local learned_from = sub(record, s2 + 1, find(record, '\n', s2 + 1, true) - 1)
  if learned_from == source then
    return 'redelivered'
  end
  return learned_from == 'implicit' and 'matured_event' or 'duplicate_label'
end

-- The one way an event is learned: scored -> learned, handing its pending record and
-- target `y` to the journal and `y` to its entity's label statistic (p: label_ttl, now,
-- label, decay, entity_ttl, journal_max). An event scored more than label_ttl ago has
-- expired. Returns the outcome and when the event was scored.
local function learn(event_key, record, s2, entity, label_source, y)
  local pending = sub(record, s2 + 1)
  local scored_at = struct.unpack('<d', pending, 3)
  if scored_at + p.label_ttl < p.now then
    return 'expired_event', ''
  end
  local kept = sub(pending, 1, 2 + byte(pending, 1) + 256 * byte(pending, 2))
  redis.call('SET', event_key, 'l' .. sub(record, 2, s2) .. label_source .. '\n' .. kept, 'KEEPTTL')
  journal({'e', entity, 'p', pending, 'y', fmt(y), 's', label_source})
  local entity_key = key('entity', entity)
  local json, members = get_entity(entity_key)
  local state = cjson.decode(json)
  add_stat(state, p.label, y, p.decay)
  set_entity(entity_key, state, members, p.entity_ttl)
  return 'learn', fmt(scored_at)
end

-- A label joined to its event if the event is scored (in the event's bucket): its outcome
-- ('unscored' when the event is not scored yet) and, learned, when its event was scored.
local function join(event_id, source, y)
  local event_key = key('event', event_id)
  local record = redis.call('GET', event_key)
  if record then
    local status, _, s2, entity = parts(record)
    if status == 'l' then
      return already_learned(record, s2, source), ''
    elseif status == 's' then
      return learn(event_key, record, s2, entity, source, y)
    end
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
  -- claims an event id routes it to its entity's bucket, for as long as the event's record
  -- lives. p: event_ttl, events: [event id, entity bucket, source]. Replies per event:
  -- '' (the id is this message's) or the source of the message that claimed it first.
  for _, event in ipairs(p.events) do
    local route_key, route = key('route', event[1]), event[2] .. '|' .. event[3]
    local first = redis.call('GET', route_key)
    if not first then
      redis.call('SET', route_key, route, 'EX', p.event_ttl)
      first = route
    end
    out[#out + 1] = first == route and '' or sub(first, find(first, '|', 1, true) + 1)
  end

elseif command == 'observe' then
  -- p: event_ttl, entity_ttl, decay, stats (names), members (how many fields), kept,
  -- events: [event id, entity id, source, ts, {stat values}]. ARGV[2 + i]: the 4-byte
  -- hashes of event i's member values, one per field. Replies per event: its record, as
  -- this call made it (claimed) or as it was.
  local names, fields, kept = p.stats, p.members, p.kept
  for i, event in ipairs(p.events) do
    local event_key = key('event', event[1])
    local record = redis.call('GET', event_key)
    if not record then
      local entity_key = key('entity', event[2])
      local json, members = get_entity(entity_key)
      local seen, hashes = {}, split_members(members, fields)
      local values = ARGV[2 + i]
      for j = 1, fields do
        local known
        known, hashes[j] = remember(hashes[j], sub(values, 4 * j - 3, 4 * j), kept)
        seen[j] = known and '1' or '0'
        hashes[j] = char(#hashes[j] / 4) .. hashes[j]
      end
      local state = cjson.decode(json)
      state.n = (state.n or 0) + 1
      local ts, last = event[4], tonumber(state.last_ts)
      if not last or ts > last then
        state.last_ts = fmt(ts)  -- a string: cjson writes numbers with 14 digits only
      end
      for j, name in ipairs(names) do
        add_stat(state, name, event[5][j], p.decay)
      end
      set_entity(entity_key, state, table.concat(hashes), p.entity_ttl)
      record = 'c' .. event[3] .. '\n' .. event[2] .. '\n' .. json .. '\n' .. table.concat(seen)
      redis.call('SET', event_key, record, 'EX', p.event_ttl)
    end
    out[i] = record
  end

elseif command == 'record' then
  -- p: event_ttl, journal_max, matures_at (under an implicit label policy: when the events
  -- mature, else null), event_ids. ARGV[2 + i]: the pending record of event i (1-based),
  -- as it is: no JSON to unescape. Replies per event: '' when this call recorded it, else
  -- its record (two scorings of one claim raced: a redelivery, or a repeated API request).
  for i, event_id in ipairs(p.event_ids) do
    local event_key = key('event', event_id)
    local record = redis.call('GET', event_key)
    if record and byte(record, 1) == 99 then -- 'c'
      local _, s1, s2, entity = parts(record)
      local pending = ARGV[2 + i]
      redis.call('SET', event_key, 's' .. sub(record, 2, s2) .. pending, 'EX', p.event_ttl)
      if p.matures_at ~= cjson.null then
        redis.call('ZADD', MATURING, p.matures_at, event_id)
      end
      journal({'e', entity, 'p', pending})
      out[i] = ''
    else
      out[i] = record or ''
    end
  end

elseif command == 'settle' then
  -- In the events' bucket. p: deadline, what `learn` needs, labels: [event id, label
  -- source, parked record, target, park (the id's bucket is this one: an unscored event's
  -- label parks here)]. Replies per label: outcome ('unscored': to park in its id's
  -- bucket), when its event was scored (learned) or ''.
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
      append(out, {'routed', sub(route, 1, find(route, '|', 1, true) - 1)})
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
    local bucket = route and sub(route, 1, find(route, '|', 1, true) - 1) or ''
    append(out, {event_id, redis.call('HGET', PARKED, event_id) or '', bucket})
  end

elseif command == 'join' then
  -- In the events' bucket. p: what `learn` needs, labels: [event id, label source, target].
  -- Replies per label: outcome ('unscored' when the event is not scored yet), when its
  -- event was scored (learned) or ''.
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
  -- p: what `learn` needs, target, limit. Replies per event due to mature by now: outcome
  -- ('learn' when it is learned with the implicit target now, 'gone' when a label came
  -- first), when it was scored (learned) or ''.
  for _, event_id in ipairs(redis.call('ZRANGEBYSCORE', MATURING, '-inf', p.now, 'LIMIT', 0, p.limit)) do
    local event_key = key('event', event_id)
    redis.call('ZREM', MATURING, event_id)
    local record = redis.call('GET', event_key)
    local status, _, s2, entity = 'gone'
    if record then
      status, _, s2, entity = parts(record)
    end
    if status == 's' then
      -- 'implicit' is the label source of stream.usecases.IMPLICIT_SOURCE.
      append(out, {learn(event_key, record, s2, entity, 'implicit', p.target)})
    else
      append(out, {'gone', ''})
    end
  end

elseif command == 'update' then
  -- p: stat (name), decay, entity_ttl, entities, values (one per entity).
  for i, value in ipairs(p.values) do
    local entity_key = key('entity', p.entities[i])
    local json, members = get_entity(entity_key)
    local state = cjson.decode(json)
    add_stat(state, p.stat, value, p.decay)
    set_entity(entity_key, state, members, p.entity_ttl)
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
