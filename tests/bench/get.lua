-- wrk: GET with the bench organization's API key (BENCH_KEY).
wrk.headers["x-api-key"] = os.getenv("BENCH_KEY") or ""
