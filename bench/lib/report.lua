-- wrk script for bench/run: no per-request Lua (it would slow wrk down); at the end, writes one
-- JSON object with the totals and latency percentiles to the file named by $WRK_JSON.
-- wrk counts a response with a status > 399 in errors.status (still in requests), so
-- 2xx/3xx responses = requests - errors.status.
done = function(summary, latency, requests)
  local out = assert(io.open(os.getenv("WRK_JSON"), "w"))
  local e = summary.errors
  out:write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
  out:close()
end
