-- wrk script of bench/serving.py: posts the benchmark's own pre-encoded requests, byte for byte the
-- ones bench/serving/loadgen.py sends (request line, headers and body of one LFW photo each), cycling
-- through them; each wrk thread starts at its own offset. Then prints one parseable result line.
--
--   wrk -t1 -c16 -d12s --latency -s wrk_post.lua http://127.0.0.1:PORT -- REQUESTS_FILE
--
-- REQUESTS_FILE (written by bench/serving.py): the byte lengths of the requests, space-separated, on
-- the first line, then the requests themselves back to back.
-- Output: 'RESULT {json}' with requests (answers received), non_2xx (answers with another status),
-- errors (connect + read + write + timeout + non_2xx), duration_us and latency percentiles in µs.

local threads = 0
local offset = 0
local requests = {}
local position = 0

function setup(thread)
  thread:set("thread_index", threads)
  threads = threads + 1
end

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local data = f:read("*a")
  f:close()
  local newline = assert(data:find("\n", 1, true), "no index line in " .. args[1])
  local pos = newline + 1
  for len in data:sub(1, newline - 1):gmatch("%d+") do
    local n = tonumber(len)
    requests[#requests + 1] = data:sub(pos, pos + n - 1)
    pos = pos + n
  end
  assert(#requests > 0 and pos == #data + 1, "malformed requests file " .. args[1])
  position = ((thread_index or 0) * 7919) % #requests
end

function request()
  position = position % #requests + 1
  return requests[position]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    '\nRESULT {"requests":%d,"non_2xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"errors":%d,' ..
    '"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, e.status, e.connect, e.read, e.write, e.timeout,
    e.connect + e.read + e.write + e.timeout + e.status, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
