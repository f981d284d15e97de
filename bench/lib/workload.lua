-- wrk script for bench/run's many-id workloads: each request increments an id drawn at random,
-- and at the end the totals go to $WRK_JSON as report.lua writes them.
--   $WRK_WORKLOAD  uniform: ids 1..1,000,000, equally likely
--                  zipf:    ids 1..1,000,000 with P(rank k) ~ k^-0.9 (inverse of the continuous
--                           distribution): the 10,000 hottest ids (1 %) take 50.7 % of the
--                           requests, the hottest one 2.4 %
--   $WRK_PATH      the path before the id, e.g. "/u-" or "/INCR/webdis:u-"
-- The per-request Lua costs wrk CPU, which bench/run reports in its own column.
dofile(os.getenv("WRK_LIB") .. "/report.lua")

local IDS = 1000000
local S = 0.9
local path = os.getenv("WRK_PATH")
local zipf = os.getenv("WRK_WORKLOAD") == "zipf"
local span = IDS ^ (1 - S) - 1
local inv = 1 / (1 - S)
local floor, random = math.floor, math.random

local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("seed", threads)
end

init = function()
  -- Each thread its own sequence; the same ones in every run, so runs are comparable.
  math.randomseed(seed * 7919)
end

request = function()
  local id
  if zipf then
    id = floor((span * random() + 1) ^ inv)
    if id > IDS then id = IDS end
  else
    id = random(IDS)
  end
  return wrk.format(nil, path .. id)
end
