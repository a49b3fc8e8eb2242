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
-- status `c` (claimed: tail = the entity state it was scored against, its numbers as the
-- entity key holds them, then one `1` or `0` per declared member field: seen before or
-- not), `s` (scored: tail = its
-- pending record, what a label needs) or `l` (learned: tail = the label's source, `\n`, the
-- pending record's prediction part). A pending record starts with the length of its
-- prediction part (one byte), then that part (from which the published prediction is made
-- again), then the features: learning an event keeps the first part only.
--
-- An entity key holds its state in binary (one read and one write, no JSON to parse or
-- write in a script): the tag of its layout (4 bytes: an entity written under another
-- declaration's statistics starts over), then float64s: its count, its last time seen
-- (NaN: none), and n, mean and variance of each exponentially weighted statistic (the
-- declared fields', then its labels'; n = 0: none yet); then, per member field the use
-- case declares (merchants, countries), one byte counting the values kept and the 4-byte
-- hashes of the values it was seen with most recently, newest first, at most `kept`.
-- Which statistics and members there are comes from the use case's declared features
-- (stream/features.py, whose EntityState makes the same updates offline). A label whose event is not scored yet is
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
-- instead of thousands of keys. The items (events, labels) follow as arguments of their
-- own, a fixed number per item: nothing to parse, nor to unescape.
local prefix = KEYS[1]
local command = ARGV[1]
local p = cjson.decode(ARGV[2])

-- The item `i`'s arguments (1-based), `width` per item.
local function item(i, width)
  local at = 2 + (i - 1) * width
  return unpack(ARGV, at + 1, at + width)
end
local function items(width)
  return (#ARGV - 2) / width
end

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

-- An entity's numbers: count, last time seen, then n, mean, var of each of p.stats
-- statistics (the last one: its labels').
local STATS = p.stats or 0
local NUMBERS = 2 + 3 * STATS
local FORMAT = '<' .. string.rep('d', NUMBERS)
local TAG = struct.pack('<I4', p.entity_tag or 0)
local WIDTH = 4 + 8 * NUMBERS

-- Folds `value` into the exponentially weighted statistic `j` (1-based) of the entity state
-- `state`. features.fold in Python.
local function add_stat(state, j, value, decay)
  local at = 3 * j
  local n = state[at]
  if n == 0 then
    state[at], state[at + 1], state[at + 2] = 1, value, 0
  else
    local mean, d = state[at + 1], value - state[at + 1]
    state[at], state[at + 1], state[at + 2] = n + 1, mean + decay * d, (1 - decay) * (state[at + 2] + decay * d * d)
  end
end

-- An entity's state (its numbers, a table), the bytes of its members, and the bytes of its
-- numbers as stored: a new one (or one of another layout) has none.
local function get_entity(entity_key)
  local raw = redis.call('GET', entity_key)
  if raw and sub(raw, 1, 4) == TAG then
    local state = {struct.unpack(FORMAT, raw, 5)}
    state[NUMBERS + 1] = nil -- the position after them
    return state, sub(raw, WIDTH + 1), sub(raw, 5, WIDTH)
  end
  local state = {0, 0 / 0}
  for i = 3, NUMBERS do
    state[i] = 0
  end
  return state, '', struct.pack(FORMAT, unpack(state))
end

local function set_entity(entity_key, state, members, ttl)
  redis.call('SET', entity_key, TAG .. struct.pack(FORMAT, unpack(state)) .. members, 'EX', ttl)
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

local JOURNAL_MAX = tostring(p.journal_max)
local function journal(fields)
  redis.call('XADD', JOURNAL, 'MAXLEN', '~', JOURNAL_MAX, '*', unpack(fields))
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
-- stats, entity_tag, decay, entity_ttl, journal_max). An event scored more than label_ttl ago has
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
  local state, members = get_entity(entity_key)
  add_stat(state, STATS, y, p.decay)
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
  -- lives. p: event_ttl. Per event: event id, entity bucket, source. Replies per event:
  -- '' (the id is this message's) or the source of the message that claimed it first.
  for i = 1, items(3) do
    local event_id, bucket, source = item(i, 3)
    local route_key, route = key('route', event_id), bucket .. '|' .. source
    local first = redis.call('GET', route_key)
    if not first then
      redis.call('SET', route_key, route, 'EX', p.event_ttl)
      first = route
    end
    out[#out + 1] = first == route and '' or sub(first, find(first, '|', 1, true) + 1)
  end

elseif command == 'observe' then
  -- p: event_ttl, entity_ttl, decay, stats, entity_tag, members (how many fields), kept.
  -- Per event: event id, entity id, source, ts, the 4-byte hashes of its member values (one
  -- per field), its value of each declared statistic but the labels' ('' when missing).
  -- Replies per event: its record, as this call made it (claimed) or as it was.
  -- The entity is read first, its event claimed (`SET NX GET`: one command, which also
  -- says whether the id was claimed before), then the entity written if the claim is new.
  local fields, kept, decay, width = p.members, p.kept, p.decay, 4 + STATS
  local event_ttl, entity_ttl = tostring(p.event_ttl), tostring(p.entity_ttl)
  for i = 1, items(width) do
    local event = {item(i, width)}
    local entity_key = key('entity', event[2])
    local state, members, prior = get_entity(entity_key)
    local seen, hashes = {}, split_members(members, fields)
    local values = event[5]
    for j = 1, fields do
      local known
      known, hashes[j] = remember(hashes[j], sub(values, 4 * j - 3, 4 * j), kept)
      seen[j] = known and '1' or '0'
      hashes[j] = char(#hashes[j] / 4) .. hashes[j]
    end
    local record = 'c' .. event[3] .. '\n' .. event[2] .. '\n' .. prior .. table.concat(seen)
    local claimed = redis.call('SET', key('event', event[1]), record, 'NX', 'GET', 'EX', event_ttl)
    if claimed then
      record = claimed
    else
      state[1] = state[1] + 1
      local ts, last = tonumber(event[4]), state[2]
      if last ~= last or ts > last then -- NaN: no time yet
        state[2] = ts
      end
      for j = 1, STATS - 1 do
        local value = event[5 + j]
        if value ~= '' then
          add_stat(state, j, tonumber(value), decay)
        end
      end
      set_entity(entity_key, state, table.concat(hashes), entity_ttl)
    end
    out[i] = record
  end

elseif command == 'record' then
  -- p: event_ttl, journal_max, matures_at (under an implicit label policy: when the events
  -- mature, else null). Per event: its id, source, entity, pending record. Replies per
  -- event: '' when this call recorded it, else its record (two scorings of one claim raced:
  -- a redelivery, or a repeated API request). The record is written over its claim
  -- (`SET XX GET`: one command), and what was there put back in the rare case it was not a
  -- claim.
  local event_ttl = tostring(p.event_ttl)
  for i = 1, items(4) do
    local event_id, source, entity, pending = item(i, 4)
    local event_key = key('event', event_id)
    local scored = 's' .. source .. '\n' .. entity .. '\n' .. pending
    local record = redis.call('SET', event_key, scored, 'XX', 'GET', 'EX', event_ttl)
    if record and byte(record, 1) == 99 then -- 'c'
      if p.matures_at ~= cjson.null then
        redis.call('ZADD', MATURING, p.matures_at, event_id)
      end
      journal({'e', entity, 'p', pending})
      out[i] = ''
    else
      if record then
        redis.call('SET', event_key, record, 'KEEPTTL')
      end
      out[i] = record or ''
    end
  end

elseif command == 'settle' then
  -- In the events' bucket. p: deadline, what `learn` needs. Per label: event id, label
  -- source, parked record, target, park ('1' when the id's bucket is this one: an unscored
  -- event's label parks here). Replies per label: outcome ('unscored': to park in its id's
  -- bucket), when its event was scored (learned) or ''.
  for i = 1, items(5) do
    local event_id, source, parked, y, here = item(i, 5)
    local outcome, scored_at = join(event_id, source, tonumber(y))
    if outcome == 'unscored' and here == '1' then
      outcome = park(event_id, source, parked, p.deadline)
    end
    append(out, {outcome, scored_at})
  end

elseif command == 'route' then
  -- With several buckets, in the ids' bucket, before `settle`: where each label's event is,
  -- or, for an event id never seen, the label parked. p: deadline. Per label: event id,
  -- label source, parked record. Replies per label: 'routed' and the event's bucket, or the
  -- outcome of parking it and ''.
  for i = 1, items(3) do
    local event_id, source, parked = item(i, 3)
    local route = redis.call('GET', key('route', event_id))
    if route then
      append(out, {'routed', sub(route, 1, find(route, '|', 1, true) - 1)})
    else
      append(out, {park(event_id, source, parked, p.deadline), ''})
    end
  end

elseif command == 'park' then
  -- In the ids' bucket. p: deadline. Per label: event id, label source, parked record.
  -- Replies per label: parked, redelivered or duplicate_label.
  for i = 1, items(3) do
    local event_id, source, parked = item(i, 3)
    out[i] = park(event_id, source, parked, p.deadline)
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
  -- In the events' bucket. p: what `learn` needs. Per label: event id, label source,
  -- target. Replies per label: outcome ('unscored' when the event is not scored yet), when
  -- its event was scored (learned) or ''.
  for i = 1, items(3) do
    local event_id, source, y = item(i, 3)
    append(out, {join(event_id, source, tonumber(y))})
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
  -- p: stats, entity_tag, decay, entity_ttl, entities, values (one per entity): each value
  -- folded into its entity's label statistic.
  for i, value in ipairs(p.values) do
    local entity_key = key('entity', p.entities[i])
    local state, members = get_entity(entity_key)
    add_stat(state, STATS, value, p.decay)
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
