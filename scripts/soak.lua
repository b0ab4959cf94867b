-- soak.lua - wrk script of scripts/soak.sh: every wrk process sends one kind of request
-- (SOAK_KIND) and checks every answer against the one answer that kind must get; at the end it
-- prints one JSON line: {"kind", "ok", "bad", "samples" (a few bad answers), socket errors}.
--
--   SOAK_KIND=ka wrk -t1 -c32 -d1h -s scripts/soak.lua http://127.0.0.1:PORT
--
-- kinds (the app is hardening_lib.py's nginx; limits are soak.py's listener):
--   ka        GET /ka, keep-alive                       200 "ka\n"
--   close     GET /close, Connection: close             200 "close\n" (a new connection each)
--   chunked   POST /chunked, chunked body (3 chunks)    200 "chunked\n"
--   notfound  GET /missing/x (the app's 404)            404 "app-404\n"
--   dead      GET /dead/x (cluster on a dead port)      502 x-outrider-error: upstream_connect
--   toolarge  POST /ka, 2 KiB body over 1 KiB limit     413 x-outrider-error: body_too_large
--   bighead   GET /ka, 9 KB header over 8 KiB limit     431 x-outrider-error: headers_too_large

local kind = os.getenv("SOAK_KIND") or "ka"
local chunk = string.rep("c", 200)
local chunks = ""
for i = 1, 3 do chunks = chunks .. string.format("%x\r\n%s\r\n", #chunk, chunk) end
chunks = chunks .. "0\r\n\r\n"

local specs = {
  ka       = { status = 200, body = "ka\n" },
  close    = { status = 200, body = "close\n" },
  chunked  = { status = 200, body = "chunked\n" },
  notfound = { status = 404, body = "app-404\n" },
  dead     = { status = 502, err = "upstream_connect" },
  toolarge = { status = 413, err = "body_too_large" },
  bighead  = { status = 431, err = "headers_too_large" },
}
local spec = specs[kind]
if spec == nil then error("SOAK_KIND: unknown kind " .. kind) end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok, bad, samples = 0, 0, {}
  if kind == "ka" then
    req = wrk.format("GET", "/ka")
  elseif kind == "close" then
    req = wrk.format("GET", "/close", { ["Connection"] = "close" })
  elseif kind == "chunked" then
    req = "POST /chunked HTTP/1.1\r\nHost: " .. wrk.host .. "\r\nTransfer-Encoding: chunked\r\n\r\n" .. chunks
  elseif kind == "notfound" then
    req = wrk.format("GET", "/missing/x")
  elseif kind == "dead" then
    req = wrk.format("GET", "/dead/x")
  elseif kind == "toolarge" then
    req = wrk.format("POST", "/ka", nil, string.rep("x", 2048))
  elseif kind == "bighead" then
    req = wrk.format("GET", "/ka", { ["X-Big"] = string.rep("b", 9000) })
  end
end

function request()
  return req
end

function response(status, headers, body)
  local good = (status == spec.status)
  if good and spec.body then good = (body == spec.body) end
  if good and spec.err then
    local v = nil
    for k, val in pairs(headers) do
      if string.lower(k) == "x-outrider-error" then v = val end
    end
    good = (v == spec.err)
  end
  if good then
    ok = ok + 1
  else
    bad = bad + 1
    if #samples < 5 then
      local b = string.sub(body or "", 1, 60):gsub("[^%w%p ]", "."):gsub('[\\"]', ".")
      table.insert(samples, tostring(status) .. " " .. b)
    end
  end
end

function done(summary, latency, requests)
  local tok, tbad, smp = 0, 0, {}
  for _, t in ipairs(threads) do
    tok = tok + t:get("ok")
    tbad = tbad + t:get("bad")
    for _, s in ipairs(t:get("samples")) do table.insert(smp, '"' .. s .. '"') end
  end
  local e = summary.errors
  io.write(string.format(
    '{"kind":"%s","ok":%d,"bad":%d,"responses":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,"samples":[%s]}\n',
    kind, tok, tbad, summary.requests, e.connect, e.read, e.write, e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max, table.concat(smp, ",")))
end
