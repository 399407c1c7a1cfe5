#!/usr/bin/env python3
"""The fault suite's checker: compares Postgres with the carrier simulator's
own log of the calls it created (GET /_sim/calls) for a set of campaigns.

Figures (all must be zero):
  lost             attempts with no final state (status <> 'ENDED'), calls not
                   COMPLETED/FAILED/SKIPPED
  duplicated       an attempt that reached the carrier more than once: carrier
                   calls are mapped to attempts by CallSid, the rest by To and
                   time; a carrier call with no attempt left to explain it, or
                   one explained only by an attempt Dialer released as "never
                   dialed" (its contact then dialed again), counts
  unexpected       a carrier call no attempt explains (no attempt to that number
                   around that time, or a number outside the campaigns)
  over_attempts    contacts with more than 1 + maxRetries attempts (counted in
                   Postgres, or dialed by the carrier)
  over_pace        carrier creates of a campaign beyond callsPerMinute within a
                   sliding minute (clock.minute_ms) less jitter_ms: the delay
                   from a dial's slot to the carrier that is forgiven (the
                   scheduler's guard absorbs ~1.2 s of it at a real minute,
                   50 ms of a two-second one); 0 = a whole minute, strictly
  over_concurrency moments the carrier had more live calls of a campaign than
                   maxConcurrentCalls (live = created .. ended; the end is the
                   simulator's schedule: ring + duration, which is never later
                   than the real end, so never a false alarm)
completed=yes when every campaign is COMPLETED and its counters add up to its
total and agree with its calls. Not on the line but failing too:
  wrong_outcome    an attempt whose outcome is not what the carrier did with
                   its call (e.g. an answered call recorded as a timeout)

Standalone: check.py --db URL --sim URL --minute-ms N CAMPAIGN_ID...
"""
import argparse
import bisect
import json
import subprocess
import sys
import urllib.request
from datetime import datetime, timezone

FINAL_CALL = ("COMPLETED", "FAILED", "SKIPPED")
TERMINAL_SIM = ("completed", "busy", "no-answer", "failed", "canceled")


def psql_json(db_url, query, timeout=60):
    """Rows of query as a list of dicts (psql, JSON aggregated server-side)."""
    wrapped = "SELECT coalesce(json_agg(t), '[]'::json) FROM (%s) t" % query
    out = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", db_url, "-c", wrapped],
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError("psql: %s" % out.stderr.strip())
    return json.loads(out.stdout)


def sim_calls(sim_url, timeout=30):
    with urllib.request.urlopen(sim_url + "/_sim/calls", timeout=timeout) as r:
        return json.loads(r.read())["calls"]


def parse_ms(iso):
    """ISO 8601 UTC with milliseconds ('2026-03-10T09:00:00.123Z') to epoch ms."""
    if iso is None:
        return None
    s = iso.replace("Z", "+00:00")
    return int(datetime.fromisoformat(s).timestamp() * 1000)


def quote_list(ids):
    return ",".join("'" + i.replace("'", "''") + "'" for i in ids)


def sim_end_ms(c, minute_ms, ring_s, now_ms):
    """When the carrier ended call c, by the simulator's schedule (scaled
    seconds): answered calls ring, then last `duration`; no-answer rings out;
    busy and failure end after a second. A call still live ends 'now'."""
    sec = minute_ms / 60.0
    st = c["status"]
    created = c["_t"]
    if st not in TERMINAL_SIM:
        return now_ms
    if st == "completed":
        return created + (ring_s + (c.get("duration") or 0)) * sec
    if st == "no-answer":
        return created + min(ring_s, 30) * sec
    if st in ("busy", "failed"):
        return created + min(1, ring_s) * sec
    return created  # canceled (hung up): its end is unknown, count nothing


def carrier_outcome(c):
    """Dialer's outcome for a call the carrier ended (as the scheduler maps it)."""
    st = c["status"]
    if st == "completed":
        if (c.get("answeredBy") or "").startswith("machine"):
            return "voicemail"
        if c.get("answeredBy") or (c.get("duration") or 0) > 0:
            return "answered"
        return "no-answer"
    return st   # busy, no-answer, failed


def max_in_window(ts, width):
    """The most of the sorted times ts within any half-open span of width."""
    top = a = 0
    for b in range(len(ts)):
        while ts[b] - ts[a] >= width:
            a += 1
        top = max(top, b - a + 1)
    return top


def check(db_url, sim_url, campaign_ids, minute_ms, ring_s=5, sim_log=None, foreign_prefixes=(), jitter_ms=0):
    """Returns (figures dict, details list of strings)."""
    ids = quote_list(campaign_ids)
    camps = psql_json(db_url, "SELECT id, status, total, pending, queued, in_progress, completed, failed, skipped,"
                      " calls_per_minute, max_concurrent_calls, max_retries, call_timeout_minutes FROM campaigns WHERE id IN (%s)" % ids)
    calls = psql_json(db_url, "SELECT id, campaign_id, phone_number, status, outcome, attempts FROM calls"
                      " WHERE campaign_id IN (%s)" % ids)
    atts = psql_json(db_url, "SELECT id, call_id, campaign_id, attempt_no, status, outcome, call_sid, to_number,"
                     " (extract(epoch FROM dialed_at) * 1000)::bigint AS dialed_ms,"
                     " (extract(epoch FROM created_at) * 1000)::bigint AS created_ms"
                     " FROM call_attempts WHERE campaign_id IN (%s)" % ids)
    log = sim_log if sim_log is not None else sim_calls(sim_url)
    now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
    return evaluate(camps, calls, atts, log, campaign_ids, minute_ms, ring_s, now_ms, foreign_prefixes, jitter_ms)


def evaluate(camps, calls, atts, log, campaign_ids, minute_ms, ring_s, now_ms, foreign_prefixes=(), jitter_ms=0):
    """The figures from rows of campaigns, calls, call_attempts (dialed_ms as
    epoch ms) and the simulator's log."""
    details = []
    fig = dict(lost=0, duplicated=0, unexpected=0, over_attempts=0, over_pace=0, over_concurrency=0,
               wrong_outcome=0)

    camp_by_id = {c["id"]: c for c in camps}
    call_by_id = {c["id"]: c for c in calls}
    phone_camp = {c["phone_number"]: c["campaign_id"] for c in calls}

    # lost
    for a in atts:
        if a["status"] != "ENDED":
            fig["lost"] += 1
            details.append("lost: attempt %s of call %s is %s" % (a["id"], a["call_id"], a["status"]))
    for c in calls:
        if c["status"] not in FINAL_CALL:
            fig["lost"] += 1
            details.append("lost: call %s (%s) is %s" % (c["id"], c["phone_number"], c["status"]))

    # map the carrier's calls to attempts
    by_sid = {a["call_sid"]: a for a in atts if a["call_sid"]}
    mine = []
    for c in log:
        c["_t"] = parse_ms(c["createdAt"])
        if c["to"] in phone_camp:
            mine.append(c)
        elif c["sid"] in by_sid:
            mine.append(c)
        elif not any(c["to"].startswith(p) for p in foreign_prefixes):
            fig["unexpected"] += 1
            details.append("unexpected: carrier call %s to %s at %s: not a number of these campaigns"
                           % (c["sid"], c["to"], c["createdAt"]))
    hits = {}      # attempt id -> carrier calls mapped to it
    orphans = []
    for c in mine:
        a = by_sid.get(c["sid"])
        if a is not None:
            hits.setdefault(a["id"], []).append(c)
            c["_att"] = a
        else:
            orphans.append(c)
    # orphans: by To and time, to an attempt without a sid (or to the attempt
    # whose fence came last before the create)
    atts_by_phone = {}
    for a in atts:
        atts_by_phone.setdefault(a["to_number"] or call_by_id.get(a["call_id"], {}).get("phone_number"), []).append(a)
    for c in sorted(orphans, key=lambda x: x["_t"]):
        cands = [a for a in atts_by_phone.get(c["to"], [])
                 if a["dialed_ms"] is not None and a["dialed_ms"] <= c["_t"] + 1000 and c["_t"] - a["dialed_ms"] <= 120000]
        free = [a for a in cands if not a["call_sid"] and a["id"] not in hits]
        if free:
            a = max(free, key=lambda x: x["dialed_ms"])
            hits.setdefault(a["id"], []).append(c)
            c["_att"] = a
            if a["outcome"] == "released":
                fig["duplicated"] += 1
                details.append("duplicated: carrier call %s to %s at %s belongs to attempt %s, which Dialer released"
                               " as never dialed (the contact was dialed again)" % (c["sid"], c["to"], c["createdAt"], a["id"]))
            elif a["status"] == "ENDED":
                # Dialer recorded a refusal (or the like) for a call that was made
                fig["wrong_outcome"] += 1
                details.append("wrong_outcome: carrier call %s to %s at %s belongs to attempt %s, which Dialer ended"
                               " %s without a CallSid" % (c["sid"], c["to"], c["createdAt"], a["id"], a["outcome"]))
        elif cands:
            # every attempt that could have made it already has its call
            a = max(cands, key=lambda x: x["dialed_ms"])
            hits.setdefault(a["id"], []).append(c)
            c["_att"] = a
            fig["duplicated"] += 1
            details.append("duplicated: carrier call %s to %s at %s: a second call of attempt %s (%s)"
                           % (c["sid"], c["to"], c["createdAt"], a["id"], a["call_sid"]))
        else:
            fig["unexpected"] += 1
            details.append("unexpected: carrier call %s to %s at %s: no attempt to that number fenced before it"
                           % (c["sid"], c["to"], c["createdAt"]))
    per_phone = {}
    for c in mine:
        per_phone.setdefault(c["to"], []).append(c)

    # attempts per contact
    att_count = {}
    for a in atts:
        if a["outcome"] != "released":
            att_count[a["call_id"]] = att_count.get(a["call_id"], 0) + 1
    for c in calls:
        limit = 1 + camp_by_id[c["campaign_id"]]["max_retries"]
        n_db = att_count.get(c["id"], 0)
        n_carrier = len(per_phone.get(c["phone_number"], []))
        if n_db > limit or n_carrier > limit or c["attempts"] > limit:
            fig["over_attempts"] += 1
            details.append("over_attempts: %s has %d attempts in Postgres (calls.attempts %d), %d carrier calls;"
                           " at most %d" % (c["phone_number"], n_db, c["attempts"], n_carrier, limit))

    # pace and concurrency, per campaign, from the carrier's log
    for cid, camp in camp_by_id.items():
        cs = [c for c in mine if phone_camp.get(c["to"]) == cid or c.get("_att", {}).get("campaign_id") == cid]
        ts = sorted(c["_t"] for c in cs)
        cpm = camp["calls_per_minute"]
        # strict: a whole minute; the figure: a minute less the jitter allowed
        # between the scheduler's slot and the carrier
        strict = max_in_window(ts, minute_ms)
        window = max(minute_ms - jitter_ms, 1)
        worst = max_in_window(ts, window)
        a = 0
        for b in range(len(ts)):
            while ts[b] - ts[a] >= window:
                a += 1
            if b - a + 1 > cpm:
                fig["over_pace"] += 1
        details.append("info: campaign %s: at most %d creates in a sliding minute, %d in %d ms (callsPerMinute %d)"
                       % (cid, strict, worst, window, cpm))
        if worst > cpm:
            details.append("over_pace: campaign %s had %d creates within %d ms (a minute is %d ms, %d ms allowed"
                           " for jitter); callsPerMinute %d" % (cid, worst, window, minute_ms, jitter_ms, cpm))
        ev = []
        for c in cs:
            end = sim_end_ms(c, minute_ms, ring_s, now_ms)
            if end > c["_t"]:
                ev.append((c["_t"], 1))
                ev.append((end, -1))
        ev.sort(key=lambda e: (e[0], e[1]))   # an end before a start at the same instant
        live = peak = 0
        cap = camp["max_concurrent_calls"]
        for t, d in ev:
            live += d
            if d > 0 and live > cap:
                fig["over_concurrency"] += 1
            peak = max(peak, live)
        if peak > cap:
            details.append("over_concurrency: campaign %s had %d calls live at the carrier at once; cap %d"
                           % (cid, peak, cap))
        details.append("info: campaign %s: %d carrier calls, peak live %d (cap %d)" % (cid, len(cs), peak, cap))

    # each attempt's outcome is what the carrier did with its call
    for a in atts:
        c = next((c for c in hits.get(a["id"], []) if c["sid"] == a["call_sid"]), None)
        if c is None or a["status"] != "ENDED" or c["status"] not in TERMINAL_SIM or c["status"] == "canceled":
            continue
        want = carrier_outcome(c)
        limit = camp_by_id[a["campaign_id"]].get("call_timeout_minutes", 0) * minute_ms
        if a["outcome"] == "timeout" and sim_end_ms(c, minute_ms, ring_s, now_ms) >= c["_t"] + limit:
            continue   # hung up when it ran past callTimeoutMinutes: right
        if a["outcome"] != want:
            fig["wrong_outcome"] += 1
            details.append("wrong_outcome: attempt %s to %s ended %s, but the carrier's call %s ended %s"
                           " (duration %s, answeredBy %s)" % (a["id"], c["to"], a["outcome"], c["sid"], c["status"],
                                                             c.get("duration"), c.get("answeredBy")))

    # completion and counters
    ok = len(camps) == len(campaign_ids)
    for cid, camp in camp_by_id.items():
        mycalls = [c for c in calls if c["campaign_id"] == cid]
        by = {}
        for c in mycalls:
            by[c["status"]] = by.get(c["status"], 0) + 1
        want = dict(pending=by.get("PENDING", 0), queued=by.get("QUEUED", 0), in_progress=by.get("IN_PROGRESS", 0),
                    completed=by.get("COMPLETED", 0), failed=by.get("FAILED", 0), skipped=by.get("SKIPPED", 0))
        s = sum(camp[k] for k in want)
        if camp["status"] != "COMPLETED":
            ok = False
            details.append("completed: campaign %s is %s" % (cid, camp["status"]))
        if s != camp["total"] or camp["total"] != len(mycalls) or any(camp[k] != v for k, v in want.items()):
            ok = False
            details.append("completed: campaign %s counters %s (total %d) but calls %s (%d rows)"
                           % (cid, {k: camp[k] for k in want}, camp["total"], want, len(mycalls)))
    fig["completed"] = "yes" if ok else "no"
    return fig, details


def passed(fig):
    return fig["completed"] == "yes" and all(fig.get(k, 0) == 0 for k in
                                              ("lost", "duplicated", "unexpected", "over_attempts", "over_pace",
                                               "over_concurrency", "wrong_outcome"))


def line(name, fig):
    return ("fault: %s lost=%d duplicated=%d unexpected=%d over_attempts=%d over_pace=%d over_concurrency=%d"
            " completed=%s %s" % (name, fig["lost"], fig["duplicated"], fig["unexpected"], fig["over_attempts"],
                                  fig["over_pace"], fig["over_concurrency"], fig["completed"],
                                  "PASS" if passed(fig) else "FAIL"))


def self_test():
    """The checker on made-up rows: each figure must see what it is for."""
    t0 = 1_700_000_000_000
    minute = 2000

    def iso(ms):
        return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ms % 1000)

    def world(n=10):
        camps = [dict(id="c1", status="COMPLETED", total=n, pending=0, queued=0, in_progress=0, completed=n,
                      failed=0, skipped=0, calls_per_minute=6, max_concurrent_calls=3, max_retries=1,
                      call_timeout_minutes=5)]
        calls, atts, log = [], [], []
        for i in range(n):
            ph = "+1555000%04d" % i
            calls.append(dict(id=i, campaign_id="c1", phone_number=ph, status="COMPLETED", outcome="answered",
                              attempts=1))
            t = t0 + i * 400    # 5 a minute, one live at a time (a call lasts 200 ms)
            sid = "CA%032x" % i
            atts.append(dict(id="a%d" % i, call_id=i, campaign_id="c1", attempt_no=1, status="ENDED",
                             outcome="answered", call_sid=sid, to_number=ph, dialed_ms=t - 5, created_ms=t - 50))
            log.append(dict(sid=sid, to=ph, createdAt=iso(t), status="completed", duration=1, answeredBy="human"))
        return camps, calls, atts, log

    def run(camps, calls, atts, log, ids=("c1",)):
        return evaluate(camps, calls, atts, log, list(ids), minute, 5, t0 + 10 ** 6)

    def expect(name, fig, **want):
        for k in ("lost", "duplicated", "unexpected", "over_attempts", "over_pace", "over_concurrency",
                  "wrong_outcome"):
            got = fig.get(k, 0)
            if (k in want and not (got >= 1 if want[k] == "some" else got == want[k])) or \
                    (k not in want and got != 0):
                raise AssertionError("self-test %s: %s=%s (want %s) in %s" % (name, k, got, want.get(k, 0), fig))
        if fig["completed"] != want.get("completed", "yes"):
            raise AssertionError("self-test %s: completed=%s" % (name, fig["completed"]))

    w = world()
    expect("clean", run(*w)[0])
    w[0][0]["max_concurrent_calls"] = 1
    expect("clean at a cap of one", run(*w)[0])
    camps, calls, atts, log = world()
    atts[2]["status"] = "ACCEPTED"
    expect("lost attempt", run(camps, calls, atts, log)[0], lost=1)
    camps, calls, atts, log = world()
    calls[3]["status"] = "IN_PROGRESS"
    expect("lost call", run(camps, calls, atts, log)[0], lost=1, completed="no")
    camps, calls, atts, log = world()
    log.append(dict(log[4], sid="CA" + "f" * 32, createdAt=iso(t0 + 4 * 400 + 20)))
    expect("redial", run(camps, calls, atts, log)[0], duplicated=1)
    camps, calls, atts, log = world()
    atts[5].update(call_sid=None, outcome="released")
    expect("released but dialed", run(camps, calls, atts, log)[0], duplicated=1)
    camps, calls, atts, log = world()
    atts[5].update(call_sid=None, outcome="failed")
    expect("made but recorded as refused", run(camps, calls, atts, log)[0], wrong_outcome=1)
    camps, calls, atts, log = world()
    camps[0]["call_timeout_minutes"] = 1
    atts[2]["outcome"] = "timeout"
    expect("timeout", run(camps, calls, atts, log)[0], wrong_outcome=1)
    log[2]["duration"] = 60
    expect("timeout, right", run(camps, calls, atts, log)[0])
    camps, calls, atts, log = world()
    log.append(dict(log[0], sid="CA" + "e" * 32, to="+15559999999"))
    expect("unknown number", run(camps, calls, atts, log)[0], unexpected=1)
    camps, calls, atts, log = world()
    atts[6].update(dialed_ms=t0 + 10 ** 6, call_sid=None, outcome="released")
    log[6]["sid"] = "CA" + "d" * 32
    expect("no attempt then", run(camps, calls, atts, log)[0], unexpected=1)
    camps, calls, atts, log = world()
    calls[1]["attempts"] = 3
    expect("too many attempts", run(camps, calls, atts, log)[0], over_attempts=1)
    camps, calls, atts, log = world()
    for i, c in enumerate(log):
        c["createdAt"] = iso(t0 + i * 50)      # 10 within half a second, pace 6 a minute
    expect("burst", run(camps, calls, atts, log)[0], over_pace="some", over_concurrency="some")
    camps, calls, atts, log = world()
    log[7].update(status="busy")
    expect("outcome", run(camps, calls, atts, log)[0], wrong_outcome=1)
    camps, calls, atts, log = world()
    camps[0]["completed"] = 9
    expect("counters", run(camps, calls, atts, log)[0], completed="no")
    camps, calls, atts, log = world()
    log[8].update(status="in-progress", duration=None)
    camps[0]["max_concurrent_calls"] = 1
    expect("still live", run(camps, calls, atts, log)[0], over_concurrency="some")
    print("check.py self-test: ok")


def main():
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True, help="Postgres URL of the dialer database")
    ap.add_argument("--sim", required=True, help="base URL of telephony-sim")
    ap.add_argument("--minute-ms", type=int, required=True)
    ap.add_argument("--ring-seconds", type=int, default=5)
    ap.add_argument("--jitter-ms", type=int, default=0)
    ap.add_argument("--name", default="manual")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("campaigns", nargs="+")
    a = ap.parse_args()
    fig, details = check(a.db, a.sim, a.campaigns, a.minute_ms, a.ring_seconds, jitter_ms=a.jitter_ms)
    print(line(a.name, fig))
    for d in details:
        if a.verbose or not d.startswith(("info:", "note:")):
            print("  " + d)
    sys.exit(0 if passed(fig) else 1)


if __name__ == "__main__":
    main()
