-- wrk script for bench/profile: each wrk thread stops after $LIMIT responses, so a profile
-- covers a known amount of work (the exact count is read back from tally). With $WRK_WORKLOAD
-- set, the ids are drawn as workload.lua draws them.
if os.getenv("WRK_WORKLOAD") then
  dofile(os.getenv("WRK_LIB") .. "/workload.lua")
end
local limit = tonumber(os.getenv("LIMIT") or "1000")
local seen = 0
response = function()
  seen = seen + 1
  if seen >= limit then
    wrk.thread:stop()
  end
end
