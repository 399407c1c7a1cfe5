-- wrk: GET with the bench organization's API key (BENCH_KEY), and one more
-- header when BENCH_HEADER is set ("Name: value"; e.g. "Cache-Control:
-- no-cache" measures the database path past the API's read cache).
wrk.headers["x-api-key"] = os.getenv("BENCH_KEY") or ""
local extra = os.getenv("BENCH_HEADER")
if extra and extra ~= "" then
	local name, value = extra:match("^([^:]+):%s*(.*)$")
	if name then
		wrk.headers[name] = value
	end
end
