-- taskapi.run.drive: the one drive step of a libcurl multi handle, shared by every place that
-- runs transfers on one (the blocking drive of taskapi.run.backend, the plain scheduler, the
-- OpenResty driver): run libcurl without blocking, hand each finished transfer that has a
-- record to `finished`, then each record whose transfer moved bytes since it was last told
-- to `moved`. A record is the caller's table; `progress` (truthy: it wants progress) and
-- `last` (the byte count last told) are the only fields read here.
local M = {}

--- records: transfer -> record; a finished transfer's record is removed before
--- finished(t, rec). moved(t, rec, done, total) (optional) is called when done differs from
--- rec.last, and sets rec.last itself when it has told the record's owner. wants: how many
--- records want progress (0 skips the scan; nil scans). Returns the number of transfers
--- that finished and the number moved was called for.
function M.step(multi, records, finished, moved, wants)
  multi:perform()
  local list = multi:completed()
  local n = 0
  for i = 1, #list do
    local t = list[i]
    local rec = records[t]
    if rec then
      records[t] = nil
      n = n + 1
      finished(t, rec)
    end
  end
  local m = 0
  if moved and wants ~= 0 then
    for t, rec in pairs(records) do
      if rec.progress then
        local done, total = t:progress()
        if done ~= rec.last then
          m = m + 1
          moved(t, rec, done, total)
        end
      end
    end
  end
  return n, m
end

return M
