-- wrk script: GET /api/me with a malformed token from a random client
-- address (X-Forwarded-For) on every request: a garbage flood from a
-- botnet, for a server started with --trusted-proxy 127.0.0.1/32.
local chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

function setup(thread)
  thread:set("seed", math.random(1, 2 ^ 30))
end

function init(args)
  math.randomseed(seed or os.time())
end

function request()
  local ip = string.format("%d.%d.%d.%d", math.random(1, 223), math.random(0, 255),
    math.random(0, 255), math.random(1, 254))
  local t = {}
  for i = 1, 24 do
    local n = math.random(1, #chars)
    t[i] = chars:sub(n, n)
  end
  return wrk.format("GET", "/api/me", {
    ["Authorization"] = "Bearer st_" .. table.concat(t),
    ["X-Forwarded-For"] = ip,
  })
end
