-- The model registry's changes, each atomic: learner lease, publish, hold, canary, conclude,
-- bootstrap, checkpoint, rollback.
-- ARGV[1] is the command, ARGV[2] its parameters as JSON; blobs follow as ARGV[3..].
--
-- KEYS (every command gets all of them): 1 lease, 2 live version, 3 version sequence,
-- 4 version records (hash), 5 versions by sequence (sorted set), 6 checkpoint (hash),
-- 7 history (list), 8 canary version, 9 audit records not delivered yet (hash, by id),
-- 10 when each may be delivered by others than its actor (sorted set, by id), and
-- ARGV-given snapshot keys under the prefix p.snapshots.
local command = ARGV[1]
local p = cjson.decode(ARGV[2])
local lease, live, seq, records, order, checkpoint, history, canary, undelivered, overdue =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]

-- Fencing: only the holder of the lease may publish or checkpoint, so a learner that
-- stalled past its lease cannot overwrite the work of the one that replaced it.
local function holds_lease()
  return redis.call('GET', lease) == p.token
end

local function live_version()
  return redis.call('GET', live) or ''
end

local function canary_version()
  return redis.call('GET', canary) or ''
end

local function keep_checkpoint(state, version, canary_of)
  redis.call('HSET', checkpoint, 'state', state, 'version', version, 'canary', canary_of, 'at', p.at)
end

local function log_history(entry)
  redis.call('LPUSH', history, cjson.encode(entry))
  redis.call('LTRIM', history, 0, 999)
end

-- The audit record of what this call did (p.audit, if given), kept with it in the same atomic
-- step until delivered: by its actor, or by the learner from p.audit_due on. `before` and
-- `after` are the live versions before and after the call, which only the call knows for sure.
local function keep_audit(before, after)
  local record = p.audit
  if record then
    record.before = before ~= '' and before or cjson.null
    record.after = after
    if redis.call('HSETNX', undelivered, record.id, cjson.encode(record)) == 1 then -- else: a replay's
      redis.call('ZADD', overdue, p.audit_due, record.id)
    end
  end
end

-- A new version: its snapshot and record; p.as says what it is: 'live' (with the learner
-- checkpoint that goes with it), 'canary' (serving a fraction of entities beside the live
-- version, with the checkpoint) or 'held' (a candidate the gate held, kept for the record).
local function add_version()
  local n = redis.call('INCR', seq) - 1
  if n < p.first then  -- a bootstrap: .0 names the untrained champion workers start with
    redis.call('SET', seq, p.first + 1)
    n = p.first
  end
  local version = p.model .. '.' .. n
  local record = p.record
  record.version, record.seq, record.parent, record.created_at = version, n, p.parent, p.at
  redis.call('SET', p.snapshots .. version, ARGV[3])
  redis.call('HSET', records, version, cjson.encode(record))
  redis.call('ZADD', order, n, version)
  if p.as == 'live' then
    redis.call('SET', live, version)
    keep_checkpoint(ARGV[4], version, '')
  elseif p.as == 'canary' then
    redis.call('SET', canary, version)
    keep_checkpoint(ARGV[4], live_version(), version)
  end
  -- Keep the newest p.keep versions, and always the live one and the canary.
  local current, trying = live_version(), canary_version()
  while redis.call('ZCARD', order) > p.keep do
    local oldest = redis.call('ZRANGE', order, 0, 2)
    local drop = oldest[1]
    for _, name in ipairs(oldest) do
      if name ~= current and name ~= trying then
        drop = name
        break
      end
    end
    redis.call('ZREM', order, drop)
    redis.call('HDEL', records, drop)
    redis.call('DEL', p.snapshots .. drop)
  end
  return version
end

if command == 'lease' then
  -- p: token, ttl_ms. Acquire or renew.
  if holds_lease() then
    redis.call('PEXPIRE', lease, p.ttl_ms)
    return 1
  end
  if redis.call('SET', lease, p.token, 'NX', 'PX', p.ttl_ms) then
    return 1
  end
  return 0

elseif command == 'release' then
  if holds_lease() then
    redis.call('DEL', lease)
  end
  return 1

elseif command == 'publish' or command == 'hold' or command == 'canary' then
  -- p: token, model, parent ('' for the first version), record (JSON object), keep,
  -- snapshots (key prefix), at, as (see add_version). ARGV[3]: snapshot, ARGV[4]: checkpoint
  -- (not for a hold: a held candidate leaves the live version and the checkpoint alone).
  -- Compare-and-set on the live version: a rollback since the learner's last publish
  -- makes this fail, and the learner reloads the live version instead. One canary at a time.
  if not holds_lease() then
    return {'lost_lease', live_version()}
  end
  if live_version() ~= p.parent or (p.as == 'canary' and canary_version() ~= '') then
    return {'conflict', live_version()}
  end
  local outcome = {live = 'published', canary = 'canary', held = 'held'}
  return {outcome[p.as], add_version()}

elseif command == 'conclude' then
  -- p: token, parent (the live version), version (the canary), promote, at, entry (JSON
  -- object for the history). ARGV[3]: checkpoint. The canary ends: live (promoted) or gone.
  if not holds_lease() then
    return {'lost_lease', live_version()}
  end
  if live_version() ~= p.parent or canary_version() ~= p.version then
    return {'conflict', live_version()}
  end
  redis.call('DEL', canary)
  local now_live = p.parent
  if p.promote then
    redis.call('SET', live, p.version)
    now_live = p.version
  end
  local entry = p.entry  -- by, reason
  entry.action, entry.version, entry.previous, entry.at = 'canary', p.version, p.parent, p.at
  entry.outcome = p.promote and 'promoted' or 'rolled_back'
  log_history(entry)
  keep_checkpoint(ARGV[3], now_live, '')
  keep_audit(p.parent, now_live)
  return {entry.outcome, now_live}

elseif command == 'bootstrap' then
  -- p: as publish, without token; labels_learned_max: the most labels the live version's
  -- lineage may have learned (-1: any, a forced new lineage). ARGV[3]: snapshot, ARGV[4]:
  -- checkpoint. No lease: the learner that holds it finds the live version moved, restores
  -- this checkpoint and goes on learning from it.
  if live_version() ~= p.parent then
    return {'conflict', live_version()}
  end
  if p.parent ~= '' and p.labels_learned_max >= 0 then
    local live_record = cjson.decode(redis.call('HGET', records, p.parent) or '{}')
    if (live_record.learner_labels or 0) > p.labels_learned_max then
      return {'learned', p.parent}
    end
  end
  redis.call('DEL', canary)  -- a new lineage: the canary of the old one has no future
  local version = add_version()
  keep_audit(p.parent, version)
  return {'published', version}

elseif command == 'checkpoint' then
  -- p: token, version (the learner's live version), at. ARGV[3]: checkpoint.
  if not holds_lease() then
    return {'lost_lease', live_version()}
  end
  if live_version() ~= p.version then
    return {'conflict', live_version()}
  end
  redis.call('HSET', checkpoint, 'state', ARGV[3], 'version', p.version, 'at', p.at)  -- canary kept
  return {'checkpointed', p.version}

elseif command == 'rollback' then
  -- p: version, snapshots, at, entry (JSON object for the history).
  if redis.call('EXISTS', p.snapshots .. p.version) == 0 then
    return {'unknown_version', live_version()}
  end
  local previous = live_version()
  redis.call('SET', live, p.version)
  redis.call('DEL', canary)  -- the learner restores and adopts the live version: no canary left
  local entry = p.entry  -- by, reason
  entry.action, entry.version, entry.previous, entry.at = 'rollback', p.version, previous, p.at
  log_history(entry)
  keep_audit(previous, p.version)
  return {'rolled_back', previous}
end
return redis.error_reply('unknown command ' .. tostring(command))
