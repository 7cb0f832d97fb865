"""The figures of one provider's batch run for bench/batch.sh: `provider key value` lines."""
import json
import math
import sys

name = sys.argv[1]
plan, s, meta = (json.load(open(p)) for p in sys.argv[2:5])
t0, t1, latency_ms, per_job = float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
b, es = s["batch"], meta["embedding_stats"]
wall = t1 - t0


def out(key, value):
    print(name, key, value)


out("plan_texts_total", plan["texts_total"])
out("plan_texts_to_embed", plan["texts_to_embed"])
out("plan_batch_jobs", plan["batch_jobs"])
out("plan_requests_interactive", plan["requests"])
out("plan_tokens_estimate", plan["tokens_estimate"])
out("plan_cost_usd_interactive", f'{plan["cost_usd"]["interactive"]:.6f}')
out("plan_cost_usd_batch", f'{plan["cost_usd"]["batch"]:.6f}')
out("plan_seconds_estimate", plan["seconds_estimate"])
out("run_interactive_requests", s["requests"])
out("run_interactive_texts", s["texts"])
out("run_batch_jobs", b["jobs"])
out("run_expected_jobs_ceil_texts_over_per_job", math.ceil(b["texts"] / per_job))
out("run_batch_texts", b["texts"])
out("run_batch_duplicate_texts", b["duplicate_texts"])
out("run_batch_polls", b["polls"])
out("run_batch_uploads", b["uploads"])
out("run_batch_downloads", b["downloads"])
out("run_texts_by_job", ",".join(str(n) for n in b["texts_by_job"]))
out("run_cost_usd_estimate", f'{es["batch"]["cost_usd_estimate"]:.6f}')
out("plan_texts_equal_run_texts", plan["texts_to_embed"] == b["texts"])
out("job_latency_seconds", latency_ms / 1000)
out("wall_seconds", f"{wall:.2f}")
out("wall_over_job_latency", f"{wall / (latency_ms / 1000):.2f}")
