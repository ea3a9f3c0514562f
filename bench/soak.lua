-- wrk script of bench/soak.py: a mix of requests taken in turn, statuses counted, one JSON line.
--
--   SOAK_REQUESTS  requests separated by "\30" (record separator); each one is
--                  METHOD "\31" PATH "\31" HEADERS "\31" BODY, HEADERS being "Name: value" lines.
--                  "{rand}" in a header or the body becomes a fresh random number per request.

local mix = {}
for item in (os.getenv("SOAK_REQUESTS") or ""):gmatch("[^\30]+") do
  local method, path, headers, body = item:match("^([^\31]*)\31([^\31]*)\31([^\31]*)\31(.*)$")
  local parsed = {}
  for line in headers:gmatch("[^\n]+") do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    if name ~= nil then
      parsed[name] = value
    end
  end
  mix[#mix + 1] = { method = method, path = path, headers = parsed, body = body }
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
  counter = 0
  statuses = {}
end

local function fresh(text)
  return (text:gsub("{rand}", function()
    return string.format("%d%09d", math.random(0, 999999999), math.random(0, 999999999))
  end))
end

request = function()
  counter = counter + 1
  local item = mix[(counter - 1) % #mix + 1]
  local headers = {}
  for name, value in pairs(item.headers) do
    headers[name] = fresh(value)
  end
  local body = nil
  if #item.body > 0 then
    body = fresh(item.body)
  end
  return wrk.format(item.method, item.path, headers, body)
end

response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      merged[status] = (merged[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(merged) do
    parts[#parts + 1] = string.format('"%d":%d', status, n)
  end
  local e = summary.errors
  io.write(string.format(
    'SOAK_RESULT {"requests":%d,"duration_us":%d,"socket_errors":%d,"p99_us":%d,'
      .. '"statuses":{%s}}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    latency:percentile(99), table.concat(parts, ",")
  ))
end
