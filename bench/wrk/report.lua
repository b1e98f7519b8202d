-- Shared wrk hooks for Croupier benchmarks (load it first with dofile from a request script).
--
-- Gives every wrk thread a `thread_id` global (1, 2, ...) before its init() runs, counts the
-- answers of each thread by HTTP status, keeps the first non-2xx body (cut to 300 bytes) so a
-- failing run shows why, and at the end prints ONE line "WRK_JSON {...}" that bench/common.py
-- parses: totals, status counts, socket errors and latency percentiles in microseconds.
-- Defining response() makes wrk parse every body; that costs the same in every compared run.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

statuses = {}
first_error = nil

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if (status < 200 or status > 299) and first_error == nil then
    first_error = string.format("%d %s", status, string.sub(body or "", 1, 300))
  end
end

local function json_string(s)
  if s == nil then
    return "null"
  end
  local escaped = string.gsub(s, '[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end)
  return '"' .. escaped .. '"'
end

function done(summary, latency, requests)
  local counts, first = {}, nil
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
    first = first or thread:get("first_error")
  end
  local parts = {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%d": %d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"duration_us": %d, "requests": %d, "bytes": %d, "statuses": {%s}, '
      .. '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, '
      .. '"latency_us": {"mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d}, '
      .. '"first_error": %s}\n',
    summary.duration, summary.requests, summary.bytes, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), json_string(first)))
end
