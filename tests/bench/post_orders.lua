-- post_orders.lua: the wrk script of `make bench` stage B, POST /orders through the gateway.
--   wrk -t2 -c64 -d15s -s tests/bench/post_orders.lua http://127.0.0.1:18393/orders -- KEYPREFIX [PRODUCTS]
-- Every request carries its own Idempotency-Key (KEYPREFIX-t<thread>-<counter>), so none is a
-- replay, and a valid body of 1 to 3 lines over SKU-BENCH-001..PRODUCTS (default 50), products the
-- bench has stocked so deep that every order should be CONFIRMED (201).
-- done() prints "wrk <name> <value>" lines that tests/bench/bench.sh reads; latency in microseconds.

local threads = {}
local next_thread = 0

function setup(thread)
   next_thread = next_thread + 1
   thread:set("thread_id", next_thread)
   table.insert(threads, thread)
end

-- Per thread (each has its own Lua state): thread_id was set by setup() before init runs.
local counter = 0
local prefix = "h"
local products = 50
local headers = { ["Content-Type"] = "application/json" }

function init(args)
   prefix = args[1] or prefix
   products = tonumber(args[2] or products)
   math.randomseed(1000003 * (thread_id or 0) + 17)
end

function request()
   counter = counter + 1
   headers["Idempotency-Key"] = string.format("%s-t%d-%d", prefix, thread_id or 0, counter)
   local lines = {}
   for i = 1, math.random(1, 3) do
      lines[i] = string.format('{"product_id":"SKU-BENCH-%03d","quantity":%d}',
                               math.random(1, products), math.random(1, 3))
   end
   local body = string.format('{"customer_id":"cust-%03d","items":[%s]}',
                              math.random(0, 999), table.concat(lines, ","))
   return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, requests)
   local e = summary.errors
   local out = {
      { "requests", summary.requests },
      { "duration_us", summary.duration },
      { "requests_per_s", summary.requests / (summary.duration / 1e6) },
      { "p50_us", latency:percentile(50) },
      { "p90_us", latency:percentile(90) },
      { "p99_us", latency:percentile(99) },
      { "p99.9_us", latency:percentile(99.9) },
      { "max_us", latency.max },
      { "mean_us", latency.mean },
      { "errors_connect", e.connect },
      { "errors_read", e.read },
      { "errors_write", e.write },
      { "errors_timeout", e.timeout },
      { "non_2xx_3xx", e.status },
   }
   for _, kv in ipairs(out) do
      io.write(string.format("wrk %s %s\n", kv[1], type(kv[2]) == "number" and string.format("%.3f", kv[2]) or tostring(kv[2])))
   end
end
