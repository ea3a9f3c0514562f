-- wrk script of `make bench`: the request comes from the environment, the summary goes to stdout
-- as one JSON line, so bench/run.py never scrapes wrk's human-readable table.
--
--   BENCH_METHOD   GET or POST (default GET)
--   BENCH_BODY     the request body (POST)
--   BENCH_HEADERS  "Name: value" lines separated by newlines
--   BENCH_IDEMPOTENCY_PREFIX  when set, a fresh Idempotency-Key per request
--
-- No response() hook: it would make wrk parse every body in Lua and slow the client down.
-- Non-2xx answers are counted by wrk itself (summary.errors.status) and reported.

wrk.method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
if body ~= nil and #body > 0 then
  wrk.body = body
end
for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name ~= nil then
    wrk.headers[name] = value
  end
end

-- BENCH_IDEMPOTENCY_PREFIX: send `Idempotency-Key: <prefix><n>`, a new key on every request.
local prefix = os.getenv("BENCH_IDEMPOTENCY_PREFIX")
if prefix ~= nil and #prefix > 0 then
  local counter = 0
  request = function()
    counter = counter + 1
    wrk.headers["Idempotency-Key"] = prefix .. counter
    return wrk.format()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,'
      .. '"timeouts":%d,"mean_us":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max
  ))
end
