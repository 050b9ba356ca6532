-- The http suite's wrk script (bench/_http_load.py runs it): one operation per wrk run.
--
-- Arguments after "--": mode (get | post | patch), path (with {id} for get and patch),
-- task ids (comma-separated; get and patch cycle through them), token ("-" for none),
-- body (JSON, for post and patch).
--
-- patch sends If-Match with the version it last saw for that task (1 at first), never
-- two PATCHes of one task at once, and learns the new version from each answer: the
-- ETag of a 200, or "current_version" of a 409 (whose "instance" names the task).
--
-- done() prints one line "WRK_JSON {...}": requests, errors, latency in microseconds.

local mode, path, token, body
local ids = {}
local versions = {}
local pending = {}
local next_index = 1
local base_headers = {}

function init(args)
  mode, path, token, body = args[1], args[2], args[4], args[5]
  for id in string.gmatch(args[3] or "", "%d+") do
    ids[#ids + 1] = id
    versions[id] = "1"
  end
  if token ~= "-" then
    base_headers["Authorization"] = "Bearer " .. token
  end
  if mode ~= "get" then
    base_headers["Content-Type"] = "application/json"
  end
end

local function headers(extra)
  local all = {}
  for name, value in pairs(base_headers) do
    all[name] = value
  end
  for name, value in pairs(extra or {}) do
    all[name] = value
  end
  return all
end

function request()
  if mode == "post" then
    return wrk.format("POST", path, headers(), body)
  end
  for _ = 1, #ids do
    local id = ids[next_index]
    next_index = next_index % #ids + 1
    if not pending[id] then
      local target = string.gsub(path, "{id}", id)
      if mode == "get" then
        return wrk.format("GET", target, headers())
      end
      pending[id] = true
      return wrk.format("PATCH", target, headers({["If-Match"] = '"' .. versions[id] .. '"'}), body)
    end
  end
  error("every task has a PATCH in flight: give more task ids than connections")
end

function response(status, response_headers, response_body)
  if mode ~= "patch" then
    return
  end
  local id, version
  if status == 200 then
    id = string.match(response_body, '[{,]%s*"id"%s*:%s*(%d+)')
    version = string.match(response_headers["etag"] or response_headers["ETag"] or "", "(%d+)")
  else
    id = string.match(response_body, '"instance"%s*:%s*"[^"]-/(%d+)"')
    version = string.match(response_body, '"current_version"%s*:%s*(%d+)')
  end
  if id then
    pending[id] = nil
    if version then
      versions[id] = version
    end
  end
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "non_2xx_3xx": %d, "socket_errors": %d, '
      .. '"timeouts": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, errors.status,
    errors.connect + errors.read + errors.write, errors.timeout,
    latency:percentile(50), latency:percentile(99)
  ))
end
