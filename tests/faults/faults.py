#!/usr/bin/env python3
"""The fault suite's driver (make faults -> tests/faults/run.sh -> here).

For each scenario: restarts Dialer's services on the private stack of RUNDIR
with the scenario's settings (a two-second minute), makes an organization,
two campaigns with every outcome (one held by its pace, one by its
concurrency cap), starts them through the real API, injects the fault while
they run, waits (bounded) for both to be COMPLETED and runs the checker.
Prints one `fault: ...` line per scenario; details of a failure go to
RUNDIR/scenarios/<name>/ (check.txt, the services' logs, and on a failure
the carrier's log and the attempts as JSON). Exit status 1 on any failure.

  faults.py RUNDIR [SCENARIO...]     (default: all of SCENARIOS, in order;
                                      "baseline" runs the campaigns with no fault)
"""
import base64
import hashlib
import hmac
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STACK = os.path.join(ROOT, "deploy/local/stack.sh")
SERVICES = os.path.join(ROOT, "deploy/local/services.sh")
CTL = os.path.join(ROOT, "build/dialerctl")

MINUTE_MS = 2000
RING_S = 5
BASE_ENV = {
    "DIALER_CLOCK_MINUTE_MS": str(MINUTE_MS),
    "DIALER_SCHEDULER_TICK_MS": "10",
    "DIALER_SCHEDULER_LEASE_S": "3",
    "DIALER_SCHEDULER_RECONCILE_AFTER_S": "12",
    # audiences copied in chunks, so faults also land mid-snapshot
    "DIALER_SCHEDULER_SNAPSHOT_CHUNK": "25",
    "DIALER_API_RATE_PER_MIN": "1000000",
    "DIALER_API_BULK_RATE_PER_MIN": "1000000",
    "DIALER_LOG_LEVEL": "info",
    "DIALER_SIM_RING_SECONDS": str(RING_S),
    # a dial may start this late after its paced slot (see PACE_JITTER_MS);
    # FAULTS_DIAL_LATE_MS=0 turns the deadline off (held-back jobs then burst)
    "DIALER_SCHEDULER_DIAL_LATE_MS": os.environ.get("FAULTS_DIAL_LATE_MS", "500"),
}
# The pace is checked on the carrier's log over a minute less this: the
# delay from a dial's slot to the carrier that the check forgives. The
# scheduler's guard (a tick and 2% of a minute) absorbs about 1.2 s of it at a
# real minute but only 50 ms of the suite's two-second minute, less than a
# loaded 2-core machine's ordinary latency (up to ~0.6 s under these faults).
# Forgiving 1 s keeps the figure to bursts that would break the pace at a
# real minute too. FAULTS_PACE_JITTER_MS=0 checks a whole minute, strictly.
# DIALER_SCHEDULER_DIAL_LATE_MS (500) must stay below it: a job is dialed
# within that of its slot, or refused by the fence and re-paced.
PACE_JITTER_MS = int(os.environ.get("FAULTS_PACE_JITTER_MS", "1000"))
# How long a campaign pair may take to complete, fault included.
COMPLETE_TIMEOUT_S = 75
# Numbers: +1555 RR SS C NNN T (RR: this run, SS: scenario, C: campaign,
# NNN: contact, T: "1d" for outcome digit d, "00" for an invalid number).
RUN_TAG = "%02d" % random.randrange(100)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def load_env(path):
    env = {}
    with open(path) as f:
        for ln in f:
            ln = ln.strip()
            if ln.startswith("export "):
                k, _, v = ln[7:].partition("=")
                env[k] = shlex.split(v)[0] if v else ""
    return env


class Stack:
    def __init__(self, run):
        self.run = run
        self.infra = load_env(os.path.join(run, "infra.env"))
        self.env = {}
        self.svc_env = {}

    def base_environ(self, extra):
        e = {k: v for k, v in os.environ.items() if not k.startswith("DIALER_")}
        e.update(self.infra)
        e.update(BASE_ENV)
        e.update(extra)
        e["DIALER_STACK_FAST"] = "1"
        return e

    def stack(self, *args):
        r = subprocess.run(["bash", STACK, *args, self.run], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("stack.sh %s: %s" % (" ".join(args), (r.stderr or r.stdout).strip()[-400:]))

    def services(self, cmd):
        r = subprocess.run(["bash", SERVICES, cmd, self.run], capture_output=True, text=True,
                           env=self.svc_env, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("services.sh %s: %s" % (cmd, (r.stderr or r.stdout).strip()[-400:]))

    def restart_services(self, extra):
        """Stops every service (drained) and starts them with extra settings."""
        self.services_stop()
        self.svc_env = self.base_environ(extra)
        os.makedirs(os.path.join(self.run, "logs"), exist_ok=True)
        self.wait_ports_free()
        try:
            self.services("start")
        except RuntimeError as e:
            # once more, after whatever held on (a port, a slow drain) let go
            log("faults: retrying services.sh start after: %s" % e)
            self.services_stop()
            self.wait_ports_free()
            self.services("start")
        self.env = load_env(os.path.join(self.run, "env"))

    def wait_ports_free(self, timeout=10):
        """The services' ports (RUNDIR/ports) are free to listen on again."""
        path = os.path.join(self.run, "ports")
        if not os.path.exists(path):
            return
        with open(path) as f:
            ports = [int(ln.split("=", 1)[1]) for ln in f if "=" in ln]
        deadline = time.time() + timeout
        while time.time() < deadline:
            busy = []
            for p in ports:
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", p))
                except OSError:
                    busy.append(p)
                finally:
                    sock.close()
            if not busy:
                return
            time.sleep(0.2)
        log("faults: ports still busy: %s" % busy)

    def proc_env(self, role, extra):
        """The environment services.sh gives a service connecting as role."""
        e = dict(self.svc_env)
        e["DIALER_CARRIER_BASE_URL"] = self.env["DIALER_SIM_URL"]
        e["DIALER_API_PUBLIC_URL"] = self.env["DIALER_API_URL"]
        url = urllib.parse.urlsplit(self.infra["DIALER_DB_URL"])
        host = url.netloc.rpartition("@")[2]
        e["DIALER_DB_URL"] = urllib.parse.urlunsplit((url.scheme, "%s:%s@%s" % (role, role, host), url.path,
                                                      url.query, ""))
        e.update(extra)
        return e

    def start_proc(self, name, binary, role, extra):
        """Starts binary as service `name` (its pid file and log under RUNDIR,
        so services.sh stop ends it too); returns its pid."""
        env = self.proc_env(role, extra)
        if role == "dialer_worker":
            env["DIALER_WORKER_DB_URL"] = env["DIALER_DB_URL"]
        # started from a shell that exits at once, as services.sh does: not
        # our child, so no zombie of it lingers for kill -0 to find
        r = subprocess.run(["bash", "-c", '"$0" >>"$1" 2>&1 </dev/null & echo $!',
                            os.path.join(ROOT, "build", binary), os.path.join(self.run, "logs", name + ".log")],
                           env=env, capture_output=True, text=True, timeout=10)
        pid = int(r.stdout.strip())
        with open(os.path.join(self.run, "pids", name + ".pid"), "w") as f:
            f.write("%d\n" % pid)
        return pid

    def services_stop(self):
        subprocess.run(["bash", SERVICES, "stop", self.run], capture_output=True, text=True, timeout=120)

    def pid(self, name):
        with open(os.path.join(self.run, "pids", name + ".pid")) as f:
            return int(f.read().strip())


def http(method, url, body=None, headers=None, timeout=10, retries=20):
    """(status, parsed JSON or raw bytes). Retries connection errors and 5xx."""
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        else:
            data = body if isinstance(body, bytes) else body.encode()
    u = urllib.parse.urlsplit(url)
    if u.username:
        hdrs["Authorization"] = "Basic " + base64.b64encode(
            ("%s:%s" % (urllib.parse.unquote(u.username), urllib.parse.unquote(u.password or ""))).encode()).decode()
        url = urllib.parse.urlunsplit((u.scheme, u.hostname + (":%d" % u.port if u.port else ""), u.path, u.query, ""))
    last = None
    for i in range(retries + 1):
        req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        except (urllib.error.URLError, OSError) as e:
            last = e
            time.sleep(0.25)
            continue
        if status >= 500 and i < retries:
            last = "%d %s" % (status, raw[:200])
            time.sleep(0.25)
            continue
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw
    raise RuntimeError("%s %s: %s" % (method, url, last))


class Scenario:
    def __init__(self, stack, name, index):
        self.stack = stack
        self.name = name
        self.index = index
        self.problems = []     # failures beyond the checker's figures
        self.notes = []
        self.camps = []

    # -- plumbing
    @property
    def api(self):
        return self.stack.env["DIALER_API_URL"]

    @property
    def sim(self):
        return self.stack.env["DIALER_SIM_URL"]

    def call(self, method, path, body=None, expect=None):
        st, js = http(method, self.api + path, body, {"x-api-key": self.key})
        if expect is not None and st != expect:
            raise RuntimeError("%s %s: %d %s" % (method, path, st, js))
        return st, js

    def sim_calls(self):
        return check.sim_calls(self.sim)

    def carrier_count(self):
        try:
            return len(self.sim_calls())
        except Exception:
            return 0

    def wait_calls(self, n, timeout=30):
        """Waits until the carrier has seen n calls (the fault goes in mid-campaign)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.carrier_count() >= n:
                return True
            time.sleep(0.05)
        self.problems.append("the carrier never saw %d calls" % n)
        return False

    def db(self, query):
        return check.psql_json(self.stack.infra["DIALER_DB_URL"], query)

    def admin_sql(self, sql):
        r = subprocess.run(["psql", "-X", "-q", "-A", "-t", self.stack.infra["DIALER_DB_ADMIN_URL"], "-c", sql],
                           capture_output=True, text=True, timeout=30)
        return r.stdout.strip()

    def ctl(self, *args):
        env = dict(self.stack.svc_env)
        env["DIALER_DB_URL"] = self.stack.infra["DIALER_DB_URL"]
        r = subprocess.run([CTL, *args], capture_output=True, text=True, env=env, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("dialerctl %s: %s" % (" ".join(args), r.stderr.strip()))
        return json.loads(r.stdout)

    # -- campaigns
    def phone(self, camp, i, digit):
        tail = "00" if digit == "x" else "1" + digit
        return "+1555%s%02d%d%03d%s" % (RUN_TAG, self.index, camp, i, tail)

    def prefix(self):
        return "+1555%s%02d" % (RUN_TAG, self.index)

    def setup(self, specs):
        """specs: [(contacts, digit pattern, campaign settings)]; campaigns created, not started."""
        org = self.ctl("org", "create", "--name", "faults " + self.name, "--quota-minutes", "10000000")
        self.org, self.key = org["organizationId"], org["apiKey"]
        flow = self.ctl("flow", "create", "--org", self.org, "--name", "faults", "--voice-url", self.sim + "/voice.xml")
        contacts = []
        for k, (n, pattern, _) in enumerate(specs):
            contacts.append([{"phoneNumber": self.phone(k, i, pattern[i % len(pattern)]), "name": "F%d" % i}
                             for i in range(n)])
        _, js = self.call("POST", "/v1/contacts/bulk", {"contacts": [c for cs in contacts for c in cs]}, 200)
        ids = {d["phoneNumber"]: d["id"] for d in js["data"]}
        for k, (n, pattern, settings) in enumerate(specs):
            _, aud = self.call("POST", "/v1/audiences", {"name": "faults %d" % k}, 201)
            self.call("POST", "/v1/audiences/%s/contacts" % aud["id"],
                      {"contactIds": [ids[c["phoneNumber"]] for c in contacts[k]]}, 200)
            body = {"name": "%s %d" % (self.name, k), "flowId": flow["id"], "audienceId": aud["id"]}
            body.update(settings)
            _, camp = self.call("POST", "/v1/campaigns", body, 201)
            self.camps.append(camp["id"])

    def start(self):
        for c in self.camps:
            self.call("POST", "/v1/campaigns/%s/start" % c, None, 200)
        self.started = time.time()

    def progress(self, c):
        st, js = http("GET", self.api + "/v1/campaigns/%s/progress" % c, None, {"x-api-key": self.key}, retries=2)
        return js if st == 200 and isinstance(js, dict) else {}

    def wait_completed(self, timeout=COMPLETE_TIMEOUT_S):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if all(self.progress(c).get("status") == "COMPLETED" for c in self.camps):
                    return True
            except RuntimeError:
                pass
            time.sleep(0.2)
        self.problems.append("not COMPLETED within %d s: %s" % (
            timeout, "; ".join(json.dumps(self.progress(c)) for c in self.camps)))
        return False

    # -- faults
    def kill_service(self, name, sig):
        pid = self.stack.pid(name)
        os.kill(pid, sig)
        return pid

    def wait_gone(self, pid, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.05)
        return False

    def terminate_backends(self):
        n = self.admin_sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                           " WHERE usename IN ('dialer', 'dialer_api', 'dialer_scheduler', 'dialer_worker')"
                           " AND pid <> pg_backend_pid()")
        return int(n or 0)

    def mgmt(self, method, path, body=None):
        return http(method, self.stack.infra["DIALER_AMQP_MGMT_URL"] + path, body, retries=40)


# Two campaigns per scenario. Digits: 0-5 answered, 6 voicemail, 7 no-answer,
# 8 busy, 9 carrier failure, x invalid number (7-9 are retried).
PATTERN = "0123456789x"
PACED = (120, PATTERN, {"callsPerMinute": 30, "maxConcurrentCalls": 100, "maxRetries": 2,
                        "retryDelayMinutes": 1, "callTimeoutMinutes": 5})
CAPPED = (120, PATTERN, {"callsPerMinute": 600, "maxConcurrentCalls": 8, "maxRetries": 1,
                         "retryDelayMinutes": 0, "callTimeoutMinutes": 5})


# -- the scenarios: (name, services' settings, injection)
def inject_none(s):
    pass


def sim_faults(s, kind, at_least):
    """The simulator really injected the fault (else the scenario proves nothing)."""
    st, js = http("GET", s.sim + "/_sim/stats")
    n = (js or {}).get("faults", {}).get(kind, 0) if st == 200 else 0
    s.notes.append("simulator %s: %d" % (kind, n))
    if n < at_least:
        s.problems.append("the simulator injected %d %s, expected at least %d" % (n, kind, at_least))


def after_429(s):
    sim_faults(s, "rateLimited", 50)


def after_5xx(s):
    sim_faults(s, "serverErrors", 15)


def inject_broker_restart(s):
    s.wait_calls(40)
    s.stack.stack("restart-broker")


def inject_db_restart(s):
    s.wait_calls(40)
    s.stack.stack("restart-db")
    # and once more, down for a few seconds (a slow restart, a failover)
    s.wait_calls(120)
    s.stack.stack("stop-db")
    time.sleep(3)
    s.stack.stack("start-db")


def inject_db_terminate(s):
    s.wait_calls(20)
    for _ in range(5):
        s.terminate_backends()
        time.sleep(1.5)
    # and in quick succession, so some end in the middle of a commit
    s.wait_calls(100)
    for _ in range(20):
        s.terminate_backends()
        time.sleep(0.1)


def inject_worker_sigterm(s):
    s.wait_calls(40)
    pid = s.kill_service("dialer-worker", signal.SIGTERM)
    if not s.wait_gone(pid, 30):
        s.problems.append("the worker did not stop within 30 s of SIGTERM")
        os.kill(pid, signal.SIGKILL)
    with open(os.path.join(s.stack.run, "logs", "dialer-worker.log")) as f:
        if '"msg":"stopped"' not in f.read():
            s.problems.append("the worker did not log a clean stop after SIGTERM")
    s.stack.services("start")


def inject_worker_kill9(s):
    for n in (30, 120):
        s.wait_calls(n)
        pid = s.kill_service("dialer-worker", signal.SIGKILL)
        s.wait_gone(pid, 10)
        s.stack.services("start")


def inject_worker_crash_steps(s):
    """worker.crash_at: the worker dies as if SIGKILLed at each step of a
    dial in turn (after it took the job, after the fence, after the carrier
    created the call, before the ack), and is restarted each time."""
    ports = load_env_plain(os.path.join(s.stack.run, "ports"))
    for step, n in (("after-take", 20), ("after-fence", 50), ("after-create", 80), ("before-ack", 110)):
        s.wait_calls(n)
        pid = s.kill_service("dialer-worker", signal.SIGTERM)
        if not s.wait_gone(pid, 30):
            s.problems.append("the worker did not stop within 30 s of SIGTERM")
            os.kill(pid, signal.SIGKILL)
            s.wait_gone(pid, 10)
        log_path = os.path.join(s.stack.run, "logs", "dialer-worker.log")
        seen = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        pid = s.stack.start_proc("dialer-worker", "dialer-worker", "dialer_worker",
                                 {"DIALER_HEALTH_PORT": ports["WORKER_HEALTH"], "DIALER_WORKER_CRASH_AT": step})
        if not s.wait_gone(pid, 30):
            s.problems.append("the worker with crash_at=%s did not die within 30 s" % step)
            os.kill(pid, signal.SIGKILL)
            s.wait_gone(pid, 10)
        with open(log_path, errors="replace") as f:
            f.seek(seen)
            if '"step":"%s"' % step not in f.read():
                s.problems.append("the worker did not log its death at %s" % step)
        s.stack.services("start")


def load_env_plain(path):
    with open(path) as f:
        return dict(ln.strip().split("=", 1) for ln in f if "=" in ln)


def free_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def start_standby(s):
    """A second scheduler replica: it leads only once the first lets go."""
    s.stack.start_proc("dialer-scheduler-2", "dialer-scheduler", "dialer_scheduler",
                       {"DIALER_HEALTH_PORT": str(free_port())})


def leader(s):
    """(holder, pid) of the scheduler holding an unexpired lease, or None."""
    rows = s.db("SELECT holder FROM scheduler_lease WHERE expires_at > now()")
    if not rows:
        return None
    holder = rows[0]["holder"]
    return holder, int(holder.rpartition(":")[2])


def wait_new_leader(s, old_holder, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        cur = leader(s)
        if cur and cur[0] != old_holder:
            return cur
        time.sleep(0.1)
    s.problems.append("no other scheduler took the lease within %d s" % timeout)
    return None


def standby_and_leader(s):
    """Starts a standby scheduler, lets the campaigns run a while, and
    returns the lease holder (holder, pid), or None as a problem."""
    start_standby(s)
    s.wait_calls(40)
    cur = leader(s)
    if cur is None:
        s.problems.append("no scheduler holds the lease")
    return cur


def inject_leader_kill9(s):
    cur = standby_and_leader(s)
    if cur is None:
        return
    os.kill(cur[1], signal.SIGKILL)
    s.wait_gone(cur[1], 10)
    wait_new_leader(s, cur[0], 15)
    s.wait_calls(70)
    # the killed replica comes back, as a standby
    if cur[1] == s.stack.pid("dialer-scheduler"):
        s.stack.services("start")
    else:
        start_standby(s)


def inject_leader_freeze(s):
    """SIGSTOP of the leader past its lease (the standby takes over), then
    SIGCONT: the old leader must find it lost the lease and stand by."""
    cur = standby_and_leader(s)
    if cur is None:
        return
    os.kill(cur[1], signal.SIGSTOP)
    try:
        wait_new_leader(s, cur[0], 15)
        time.sleep(2.0)   # both would dial now, if the frozen one could
    finally:
        os.kill(cur[1], signal.SIGCONT)


def mq_ctl(s, *args):
    r = subprocess.run(["bash", STACK, "ctl", s.stack.run, *args], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        s.problems.append("rabbitmqctl %s: %s" % (" ".join(args), (r.stderr or r.stdout).strip()[-300:]))


def mq_alarms(s):
    st, js = s.mgmt("GET", "/api/nodes")
    return [n.get("mem_alarm") for n in js] if st == 200 and isinstance(js, list) else []


def inject_broker_blackhole(s):
    """RabbitMQ frozen (SIGSTOP of its beam) for more than two heartbeats
    (2 s here): every connection must notice, reconnect, and lose nothing."""
    with open(os.path.join(s.stack.run, "mq", "rabbitmq.pid")) as f:
        pid = int(f.read().split()[0])
    s.wait_calls(40)
    logs = os.path.join(s.stack.run, "logs")
    seen = {n: os.path.getsize(os.path.join(logs, n)) for n in os.listdir(logs)}
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(6.0)
    finally:
        os.kill(pid, signal.SIGCONT)
    # the services must have noticed (missed heartbeats), not merely waited
    felt = []
    for n, off in seen.items():
        with open(os.path.join(logs, n), errors="replace") as f:
            f.seek(off)
            if "amqp connection lost" in f.read():
                felt.append(n)
    s.notes.append("connections lost to the frozen broker: %s" % ", ".join(sorted(felt)))
    if not any(n.startswith("dialer-worker") for n in felt) or not any(n.startswith("dialer-scheduler") for n in felt):
        s.problems.append("the worker and the scheduler did not both notice the frozen broker: %s" % felt)


def inject_broker_memory_alarm(s):
    """A memory alarm: RabbitMQ blocks every publisher for a while."""
    s.wait_calls(40)
    mq_ctl(s, "set_vm_memory_high_watermark", "0.000001")
    deadline = time.time() + 10
    while time.time() < deadline and True not in mq_alarms(s):
        time.sleep(0.2)
    if True not in mq_alarms(s):
        s.problems.append("the memory alarm was never raised")
    time.sleep(4.0)
    mq_ctl(s, "set_vm_memory_high_watermark", "0.4")
    deadline = time.time() + 10
    while time.time() < deadline and True in mq_alarms(s):
        time.sleep(0.2)
    if True in mq_alarms(s):
        s.problems.append("the memory alarm was not cleared")


def dlq_peek(s):
    st, js = s.mgmt("POST", "/api/queues/%2F/dialer.dead-letters/get",
                    {"count": 1000, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 2000})
    return js if st == 200 and isinstance(js, list) else []


def inject_poison(s):
    s.wait_calls(30)
    tag = "poison-%s-%d" % (RUN_TAG, int(time.time() * 1000))
    bodies = ['{"type":"dial","attemptId":', '{"type":"dial","messageId":"x","attemptId":42}', "\x00\x01not json"]
    mids = []
    for i, b in enumerate(bodies):
        mid = "%s-%d" % (tag, i)
        st, js = s.mgmt("POST", "/api/exchanges/%2F/dialer.jobs/publish",
                        {"properties": {"delivery_mode": 2, "message_id": mid, "type": "dial"},
                         "routing_key": "dial", "payload": b, "payload_encoding": "string"})
        if st != 200 or not (isinstance(js, dict) and js.get("routed")):
            s.problems.append("poison job %s not routed: %s %s" % (mid, st, js))
        mids.append(mid)
    s.poison = mids


def after_poison(s):
    deadline = time.time() + 15
    missing = s.poison
    while time.time() < deadline and missing:
        seen = {m.get("properties", {}).get("message_id") for m in dlq_peek(s)}
        missing = [m for m in s.poison if m not in seen]
        if missing:
            time.sleep(0.5)
    if missing:
        s.problems.append("poison jobs not in dialer.dead-letters: %s" % ", ".join(missing))


def sign(token, url, params):
    data = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def post_callback(s, attempt, params, forge=False):
    url = "%s/v1/carrier/status?attemptId=%s" % (s.api, attempt)
    token = s.stack.svc_env.get("DIALER_CARRIER_AUTH_TOKEN", "dialer-local-auth-token")
    sig = sign(token, url, params)
    if forge:
        sig = sign(token + "x", url, params)
    body = urllib.parse.urlencode(params)
    st, _ = http("POST", url, body, {"Content-Type": "application/x-www-form-urlencoded",
                                     "X-Twilio-Signature": sig}, retries=5)
    return st


def callback_params(att, status, seq, duration=None, answered_by=None):
    p = {"CallSid": att["call_sid"], "AccountSid": "ACdialerlocal00000000000000000000", "From": "+15005550006",
         "To": att["to_number"], "CallStatus": status, "Direction": "outbound-api", "SequenceNumber": str(seq),
         "Timestamp": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
         "CallbackSource": "call-progress-events"}
    if duration is not None:
        p["CallDuration"] = str(duration)
    if answered_by:
        p["AnsweredBy"] = answered_by
    return p


def ended_attempts(s):
    return s.db("SELECT a.id, a.call_sid, a.to_number, a.last_sequence, a.outcome, a.duration, a.status,"
                " c.status AS call_status, c.outcome AS call_outcome, c.attempts FROM call_attempts a"
                " JOIN calls c ON c.id = a.call_id WHERE a.campaign_id IN (%s) AND a.status = 'ENDED'"
                " AND a.call_sid IS NOT NULL ORDER BY a.ended_at" % check.quote_list(s.camps))


def replay_round(s, atts, sim_by_sid):
    """For each ended attempt: its final callback again (twice), an older one
    after it, a contradicting newer one (terminal-state guard) and a forged
    one; returns what the callbacks answered that they should not have."""
    bad = []
    for a in atts:
        c = sim_by_sid.get(a["call_sid"])
        if c is None:
            continue
        seq = a["last_sequence"]
        final = callback_params(a, c["status"], seq, c.get("duration") or 0, c.get("answeredBy"))
        for p, forge, want in ((final, False, 204), (final, False, 204),
                               (callback_params(a, "ringing", max(seq - 1, 0)), False, 204),
                               (callback_params(a, "busy" if c["status"] == "completed" else "completed",
                                                seq + 1, 0 if c["status"] == "completed" else 30, "human"), False, 204),
                               (callback_params(a, "completed", seq + 2, 7, "human"), True, 403)):
            st = post_callback(s, a["id"], p, forge)
            if st != want:
                bad.append("callback for %s answered %d, want %d" % (a["id"], st, want))
    return bad


def live_forgeries(s):
    """Forged final callbacks for live attempts: 403, nothing changes."""
    live = s.db("SELECT id, call_sid, to_number FROM call_attempts WHERE campaign_id IN (%s)"
                " AND status = 'ACCEPTED' AND call_sid IS NOT NULL LIMIT 10" % check.quote_list(s.camps))
    bad = []
    for a in live:
        st = post_callback(s, a["id"], callback_params(a, "busy", 99), forge=True)
        if st != 403:
            bad.append("forged callback for live %s answered %d" % (a["id"], st))
        p = callback_params(a, "completed", 98, 5, "human")
        url = "%s/v1/carrier/status?attemptId=%s" % (s.api, a["id"])
        st, _ = http("POST", url, urllib.parse.urlencode(p),
                     {"Content-Type": "application/x-www-form-urlencoded"}, retries=5)
        if st != 403:
            bad.append("unsigned callback for live %s answered %d" % (a["id"], st))
    return bad


def inject_callbacks(s):
    s.wait_calls(60)
    sim_by_sid = {c["sid"]: c for c in s.sim_calls()}
    s.replayed = ended_attempts(s)[:40]
    s.problems += replay_round(s, s.replayed, sim_by_sid)
    s.problems += live_forgeries(s)


def after_callbacks(s):
    # Replay once more after completion (everything ended), then compare.
    time.sleep(0.5)
    before = {a["id"]: a for a in ended_attempts(s)}
    camps_before = s.db("SELECT id, status, total, pending, queued, in_progress, completed, failed, skipped"
                        " FROM campaigns WHERE id IN (%s) ORDER BY id" % check.quote_list(s.camps))
    sim_by_sid = {c["sid"]: c for c in s.sim_calls()}
    sample = list(before.values())[::3]
    s.problems += replay_round(s, sample, sim_by_sid)
    time.sleep(2.0)   # the callbacks go through the outbox, RabbitMQ and the scheduler
    after = {a["id"]: a for a in ended_attempts(s)}
    keys = ("outcome", "duration", "status", "call_status", "call_outcome", "attempts")
    for aid, a in list(before.items()):
        b = after.get(aid)
        if b is None or any(a[k] != b[k] for k in keys):
            s.problems.append("attempt %s changed by replayed callbacks: %s -> %s"
                              % (aid, {k: a[k] for k in keys}, b and {k: b[k] for k in keys}))
    for r in s.replayed:
        b = after.get(r["id"])
        if b is None or any(r[k] != b[k] for k in ("outcome", "duration", "status")):
            s.problems.append("attempt %s (replayed mid-campaign) changed: %s -> %s"
                              % (r["id"], {k: r[k] for k in ("outcome", "duration", "status")},
                                 b and {k: b[k] for k in ("outcome", "duration", "status")}))
    camps_after = s.db("SELECT id, status, total, pending, queued, in_progress, completed, failed, skipped"
                       " FROM campaigns WHERE id IN (%s) ORDER BY id" % check.quote_list(s.camps))
    if camps_before != camps_after:
        s.problems.append("campaign counters changed by replayed callbacks: %s -> %s" % (camps_before, camps_after))
    # the digit decides the outcome of every final call reached
    want = {d: "answered" for d in "012345"}
    want.update({"6": "voicemail", "7": "no-answer", "8": "busy", "9": "failed"})
    for c in s.db("SELECT phone_number, status, outcome FROM calls WHERE campaign_id IN (%s)"
                  % check.quote_list(s.camps)):
        ph = c["phone_number"]
        w = "invalid-number" if ph.endswith("00") else want[ph[-1]]
        if c["outcome"] != w:
            s.problems.append("call %s ended %s/%s, want %s" % (ph, c["status"], c["outcome"], w))


def outcome_notes(s):
    """Notes (not failures): calls whose outcome is not their number's, and
    attempts that ended without reaching the carrier, by outcome."""
    want = {d: "answered" for d in "012345"}
    want.update({"6": "voicemail", "7": "no-answer", "8": "busy", "9": "failed"})
    wrong = []
    for c in s.db("SELECT phone_number, status, outcome, attempts FROM calls WHERE campaign_id IN (%s)"
                  % check.quote_list(s.camps)):
        ph = c["phone_number"]
        w = "invalid-number" if ph.endswith("00") else want[ph[-1]]
        if c["outcome"] != w:
            wrong.append("%s %s/%s after %d" % (ph, c["status"], c["outcome"], c["attempts"]))
    s.notes.append("calls with another outcome than their number's: %d %s" % (len(wrong), "; ".join(wrong[:10])))
    rows = s.db("SELECT outcome, count(*) AS n FROM call_attempts WHERE campaign_id IN (%s) AND call_sid IS NULL"
                " GROUP BY outcome ORDER BY outcome" % check.quote_list(s.camps))
    s.notes.append("attempts without a CallSid: %s" % ", ".join("%s=%d" % (r["outcome"], r["n"]) for r in rows))


SCENARIOS = [
    ("carrier-429", {"DIALER_SIM_RATE_429_PCT": "40"}, inject_none, after_429),
    ("carrier-5xx-after-create", {"DIALER_SIM_RATE_5XX_PCT": "15"}, inject_none, after_5xx),
    ("broker-restart", {}, inject_broker_restart, None),
    ("broker-blackhole", {"DIALER_AMQP_HEARTBEAT_S": "2"}, inject_broker_blackhole, None),
    ("broker-memory-alarm", {}, inject_broker_memory_alarm, None),
    ("db-restart", {}, inject_db_restart, None),
    ("db-backends-terminated", {}, inject_db_terminate, None),
    ("worker-sigterm", {}, inject_worker_sigterm, None),
    ("worker-kill9", {}, inject_worker_kill9, None),
    ("worker-crash-steps", {}, inject_worker_crash_steps, None),
    ("leader-kill9", {}, inject_leader_kill9, None),
    ("leader-freeze", {}, inject_leader_freeze, None),
    ("poison-job", {}, inject_poison, after_poison),
    ("callbacks-dup-reorder-forged", {}, inject_callbacks, after_callbacks),
]


# Only when named: the same campaigns with no fault (the checker's control).
EXTRA = [("baseline", {}, inject_none, None)]


def run_one(stack, name, extra, inject, after, index):
    s = Scenario(stack, name, index)
    t0 = time.time()
    outdir = os.path.join(stack.run, "scenarios", name)
    os.makedirs(outdir, exist_ok=True)
    fig = None
    details = []
    try:
        stack.restart_services(extra)
        s.setup([PACED, CAPPED])
        s.start()
        inject(s)
        s.wait_completed()
        if after:
            after(s)
        time.sleep(1.0)   # a late duplicate would reach the carrier now
        outcome_notes(s)
        fig, details = check.check(stack.infra["DIALER_DB_URL"], s.sim, s.camps, MINUTE_MS, RING_S,
                                   foreign_prefixes=["+1555%s" % RUN_TAG], jitter_ms=PACE_JITTER_MS)
        # the other scenarios' numbers are not this one's concern
        details = [d for d in details]
    except Exception as e:  # the scenario itself broke: a failure, with the reason
        s.problems.append("error: %s" % e)
    if fig is None:
        fig = dict(lost=0, duplicated=0, unexpected=0, over_attempts=0, over_pace=0, over_concurrency=0,
                   completed="no")
    ok = check.passed(fig) and not s.problems
    text = check.line(name, fig)
    if not ok and check.passed(fig):
        text = text[: -len("PASS")] + "FAIL"
    text += " (%d s)" % round(time.time() - t0)
    print(text, flush=True)
    with open(os.path.join(outdir, "check.txt"), "w") as f:
        f.write(text + "\n")
        f.write("campaigns: %s\nseconds: %.1f\n" % (" ".join(s.camps), time.time() - t0))
        for p in s.problems:
            f.write("problem: %s\n" % p)
        for n in s.notes:
            f.write("info: %s\n" % n)
        for d in details:
            f.write(d + "\n")
    if not ok:
        # the evidence: the carrier's log and the attempts, as they were
        try:
            with open(os.path.join(outdir, "sim-calls.json"), "w") as f:
                json.dump(s.sim_calls(), f)
            with open(os.path.join(outdir, "attempts.json"), "w") as f:
                json.dump(s.db("SELECT a.*, c.phone_number, c.status AS call_status, c.outcome AS call_outcome,"
                               " iso_utc(a.dialed_at) AS dialed_iso FROM call_attempts a JOIN calls c"
                               " ON c.id = a.call_id WHERE a.campaign_id IN (%s) ORDER BY a.created_at"
                               % check.quote_list(s.camps)), f)
        except Exception as e:
            s.problems.append("could not save the evidence: %s" % e)
        # a short why under the line; the rest is in check.txt
        why = s.problems + [d for d in details if not d.startswith(("info:", "note:"))]
        print("  %s" % why[0][:220] if why else "  (no detail)", flush=True)
        print("  details: %s" % outdir, flush=True)
    # this scenario's logs go with its results; the next starts afresh
    logs = os.path.join(stack.run, "logs")
    if os.path.isdir(logs):
        os.rename(logs, os.path.join(outdir, "logs"))
    # whatever did not finish must not run into the next scenario
    if not ok:
        for c in s.camps:
            try:
                s.call("POST", "/v1/campaigns/%s/cancel" % c)
            except Exception:
                pass
    return ok


def main():
    run = os.path.abspath(sys.argv[1])
    only = sys.argv[2:]
    stack = Stack(run)
    failed = 0
    passed = 0
    names = [sc[0] for sc in SCENARIOS + EXTRA]
    for n in only:
        if n not in names:
            sys.exit("unknown scenario %s (have: %s)" % (n, " ".join(names)))
    for i, (name, extra, inject, after) in enumerate(SCENARIOS + EXTRA):
        if (only and name not in only) or (not only and i >= len(SCENARIOS)):
            continue
        if run_one(stack, name, extra, inject, after, i + 1):
            passed += 1
        else:
            failed += 1
    stack.services_stop()
    with open(os.path.join(run, "summary"), "w") as f:
        f.write("%d %d\n" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
