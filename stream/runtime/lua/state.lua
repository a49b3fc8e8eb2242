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
--   <status><entity>\n<source><tail>
--
-- status `S` (scored: tail = its pending record, what a label needs) or `L` (learned: tail
-- = the label's source, `\n`, the pending record's prediction part). The source is where
-- the event was read (stream/runtime/state.py, Sources): from the use case's event topic,
-- two varints (its partition + 1, its offset); otherwise a zero byte, its text and `\n`. A
-- pending record starts with the length of its prediction part (one byte, or 255 then two),
-- then that part (its first 8 bytes: when the event was scored; from the part the published
-- prediction is made again), then the features: learning an event keeps the first part only.
-- The statuses were `s` and `l` before the header was packed: a record of that layout is
-- never read as one of this one (its label finds no scored event; its event read again
-- fails with the record's status).
--

-- An entity key holds its state in binary: the tag of its layout (4 bytes: an entity written
-- under another declaration's statistics starts over), then float64s: its count, its last
-- time seen (NaN: none), and n, mean and variance of each exponentially weighted statistic
-- (the declared fields', then its labels'; n = 0: none yet); then, per member field the use
-- case declares (merchants, countries), one byte counting the values kept and the 4-byte
-- hashes of the values it was seen with most recently, newest first. The worker reads it,
-- applies its events to it and scores them (stream.features.EntityState: the one
-- implementation of an event's update, the offline replay's too), then `score` records each
-- event and writes the state in one step if the entity is still as read. The script itself
-- only folds labels into the label statistic. A label whose event is not scored yet is
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
-- entry per scored event (r=its record as scored: entity and pending record in one string,
-- the very bytes of `event:<id>`) and one per label joined to its event (the same, y=target,
-- s=label source), written in the same atomic step as the state change, so the learner sees
-- each scored event and each label exactly once. With several buckets there is a journal
-- per bucket, which the learner merges (stream/runtime/state.py).

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

-- The kinds of key named by an id (`<kind>:<id>`), each with the bucket's prefix.
local EVENT, ENTITY, ROUTE = prefix .. 'event:', prefix .. 'entity:', prefix .. 'route:'
local JOURNAL = prefix .. 'journal'
local PARKED = prefix .. 'parked:labels'
local DUE = prefix .. 'parked:due'
local MATURING = prefix .. 'maturing'

local format, find, sub, byte = string.format, string.find, string.sub, string.byte

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

-- An entity's state (its numbers, a table) and the bytes of its members: a new one (or one
-- of another layout) has none.
local function get_entity(entity_key)
  local raw = redis.call('GET', entity_key)
  if raw and sub(raw, 1, 4) == TAG then
    local state = {struct.unpack(FORMAT, raw, 5)}
    state[NUMBERS + 1] = nil -- the position after them
    return state, sub(raw, WIDTH + 1)
  end
  local state = {0, 0 / 0}
  for i = 3, NUMBERS do
    state[i] = 0
  end
  return state, ''
end

local function set_entity(entity_key, state, members, ttl)
  redis.call('SET', entity_key, TAG .. struct.pack(FORMAT, unpack(state)) .. members, 'EX', ttl)
end

local JOURNAL_MAX = tostring(p.journal_max)
local function journal(fields)
  redis.call('XADD', JOURNAL, 'MAXLEN', '~', JOURNAL_MAX, '*', unpack(fields))
end

-- A record's parts: its status, where its header ends (the source's last byte) and the
-- entity.
local function parts(record)
  local s1 = find(record, '\n', 2, true)
  local at = s1 + 1 -- the source
  if byte(record, at) == 0 then
    at = find(record, '\n', at + 1, true)
  else
    for _ = 1, 2 do -- two varints
      while byte(record, at) > 127 do
        at = at + 1
      end
      at = at + 1
    end
    at = at - 1
  end
  return sub(record, 1, 1), at, sub(record, 2, s1 - 1)
end

-- A label for an event already learned: the same message again, or a dead letter.
local function already_learned(record, s2, source)
  local learned_from = sub(record, s2 + 1, find(record, '\n', s2 + 1, true) - 1)
  if learned_from == source then
    return 'redelivered'
  end
  return learned_from == 'implicit' and 'matured_event' or 'duplicate_label'
end

-- The one way an event is learned: scored -> learned, handing its record and target `y`
-- to the journal and `y` to its entity's label statistic (p: label_ttl, now,
-- stats, entity_tag, decay, entity_ttl, journal_max). An event scored more than label_ttl ago has
-- expired. Returns the outcome and when the event was scored.
local function learn(event_key, record, s2, entity, label_source, y)
  local size, start = byte(record, s2 + 1), s2 + 2 -- the pending record's header
  if size == 255 then
    size, start = byte(record, s2 + 2) + 256 * byte(record, s2 + 3), s2 + 4
  end
  local scored_at = struct.unpack('<d', record, start)
  if scored_at + p.label_ttl < p.now then
    return 'expired_event', ''
  end
  local kept = sub(record, s2 + 1, start + size - 1)
  redis.call('SET', event_key, 'L' .. sub(record, 2, s2) .. label_source .. '\n' .. kept, 'KEEPTTL')
  journal({'r', record, 'y', fmt(y), 's', label_source})
  local entity_key = ENTITY .. entity
  local state, members = get_entity(entity_key)
  add_stat(state, STATS, y, p.decay)
  set_entity(entity_key, state, members, p.entity_ttl)
  return 'learn', fmt(scored_at)
end

-- A label joined to its event if the event is scored (in the event's bucket): its outcome
-- ('unscored' when the event is not scored yet) and, learned, when its event was scored.
local function join(event_id, source, y)
  local event_key = EVENT .. event_id
  local record = redis.call('GET', event_key)
  if record then
    local status, s2, entity = parts(record)
    if status == 'L' then
      return already_learned(record, s2, source), ''
    elseif status == 'S' then
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
  -- With several buckets, in the ids' bucket, before the entities are read: the first
  -- message that claims an event id routes it to its entity's bucket, for as long as the
  -- event's record lives. p: event_ttl. Per event: event id, entity bucket, source. Replies
  -- per event: '' (the id is this message's) or the route of the message that claimed it
  -- first (`<bucket>|<source>`).
  for i = 1, items(3) do
    local event_id, bucket, source = item(i, 3)
    local route = bucket .. '|' .. source
    local first = redis.call('SET', ROUTE .. event_id, route, 'NX', 'GET', 'EX', p.event_ttl)
    out[#out + 1] = (not first or first == route) and '' or first
  end

elseif command == 'score' then
  -- Events the worker scored from the entity states it read: each recorded, its entity's
  -- state written and journaled if the entity is still as read. p: event_ttl, entity_ttl,
  -- journal_max, matures_at (under an implicit label policy: when the events mature, else
  -- null). Per event: its id, entity, the entity's state as read ('' for none), its state
  -- with the event applied, its record as scored (`S`, entity, source, pending record: made
  -- by the worker, stored and journaled as it comes). Replies per event: '' (recorded by
  -- this call), the record made first (`SET NX GET`: one command creates the record or says
  -- whose it is), or 'changed' (nothing done: read it and score it again). The common case
  -- takes three commands: the record, the state (`SET GET`: written, and what it replaced
  -- compared with what was read; put back if they differ) and the journal. A state key that
  -- is not a string (a stray write) fails the call with Redis's error and leaves nothing of
  -- that event; the events before it in the call stay recorded, and a retry finds them.
  local event_ttl, entity_ttl = tostring(p.event_ttl), tostring(p.entity_ttl)
  local written, stale = {}, {}
  local journaled = false
  for i = 1, items(5) do
    local event_id, entity, read, state, scored = item(i, 5)
    local event_key = EVENT .. event_id
    local record = redis.call('SET', event_key, scored, 'NX', 'GET', 'EX', event_ttl)
    if record then
      -- Recorded before, so counted in its entity's state: the entity's later events in
      -- this call were scored from a state that counts it twice.
      stale[entity] = true
      out[i] = record
    else
      local entity_key = ENTITY .. entity
      local current = not stale[entity]
      if current and written[entity] then
        current = written[entity] == read
        if current then
          redis.call('SET', entity_key, state, 'EX', entity_ttl)
        end
      elseif current then
        local before = redis.pcall('SET', entity_key, state, 'GET', 'EX', entity_ttl)
        if type(before) == 'table' and before.err then -- not a string: nothing of the event stays
          redis.call('DEL', event_key)
          return redis.error_reply(before.err)
        end
        current = (before or '') == read
        if not current then
          if before then
            redis.call('SET', entity_key, before, 'EX', entity_ttl)
          else
            redis.call('DEL', entity_key)
          end
        end
      end
      if current then
        written[entity] = state
        if p.matures_at ~= cjson.null then
          redis.call('ZADD', MATURING, p.matures_at, event_id)
        end
        redis.call('XADD', JOURNAL, '*', 'r', scored)
        journaled = true
        out[i] = ''
      else
        redis.call('DEL', event_key)
        stale[entity] = true
        out[i] = 'changed'
      end
    end
  end
  if journaled then
    redis.call('XTRIM', JOURNAL, 'MAXLEN', '~', tostring(p.journal_max))
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
    local route = redis.call('GET', ROUTE .. event_id)
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
    local route = redis.call('GET', ROUTE .. event_id)
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
    local event_key = EVENT .. event_id
    redis.call('ZREM', MATURING, event_id)
    local record = redis.call('GET', event_key)
    local status, s2, entity = 'gone'
    if record then
      status, s2, entity = parts(record)
    end
    if status == 'S' then
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
    local entity_key = ENTITY .. p.entities[i]
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
