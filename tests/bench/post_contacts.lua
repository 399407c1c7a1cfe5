-- wrk: POST /v1/contacts, a new phone number every request.
-- Numbers: +1, BENCH_PREFIX (3 digits), the thread (1 digit), a counter (7 digits).
local prefix = tonumber(os.getenv("BENCH_PREFIX") or "777")
local threads = 0
local counter = 0

wrk.method = "POST"
wrk.headers["x-api-key"] = os.getenv("BENCH_KEY") or ""
wrk.headers["content-type"] = "application/json"

function setup(thread)
	thread:set("tid", threads)
	threads = threads + 1
end

function request()
	counter = counter + 1
	local phone = string.format("+1%03d%d%07d", prefix, tid or 0, counter)
	return wrk.format(nil, "/v1/contacts", nil,
		'{"phoneNumber":"' .. phone .. '","name":"Bench contact","metadata":{"source":"wrk"}}')
end
