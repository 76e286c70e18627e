"""A local stack close to production: Ray head, MLflow on PostgreSQL, S3 (moto), on 127.0.0.1.

    eval "$(.venv/bin/python infra/local/stack.py up)"   # prints `export ...` lines
    .venv/bin/python infra/local/stack.py status
    .venv/bin/python infra/local/stack.py down [--purge]

As on the cluster: Ray token authentication with a token file, the dashboard on 127.0.0.1,
MLflow with a SQL backend store (PostgreSQL from the system's packages, its own cluster in
the state dir; sqlite when PostgreSQL is missing) and artifacts proxied to S3, credentials
only in environment variables. Every service runs in its own process group and the state
file (``<state>/stack.json``) records them; ``down`` stops exactly those groups (and
PostgreSQL with ``pg_ctl stop``), nothing found by name, and never a machine-wide Ray stop.
The stack is ephemeral: moto keeps S3 in memory, and ``up`` starts from empty stores.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pgcluster import pg_down, pg_up, pg_usable  # noqa: E402

BIN = Path(sys.executable).parent
# The Ray head runs from the checkout, as from the image's working directory on a cluster:
# `ray job submit -- python jobs/coclr.py ...` finds jobs/ without --working-dir.
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(1, str(ROOT))
from pipelines.local_head import auth_token, free_ports, http_ok, job_server_answers

probe = functools.partial(http_ok, timeout=2.0)  # a health poll: a half-up server must not hold it up

STATE_DIR = Path(os.environ.get("VIDRAY_STACK_DIR") or f"/tmp/vidray-stack-{os.getuid()}")
BUCKET = "vidray-mlflow"
# moto accepts any credentials; these dummies are printed as exports, like real ones would be.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
RAY_PORTS = ("dashboard-agent-listen", "dashboard-agent-grpc", "runtime-env-agent", "metrics-export",
             "ray-client-server", "node-manager", "object-manager")  # all explicit: no clash with other Rays
MARKER = ".vidray-stack"  # marks a state dir as ours: `up` may wipe it, `down --purge` delete it
MAX_RAY_TEMP = 45  # Ray's socket paths (<temp>/session_<date>_<pid>/sockets/...) stay < 108 bytes


def log(msg: str) -> None:
    """Progress goes to stderr, so that stdout holds only the `export` lines."""
    print(f"[stack] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- process groups
def proc_stat(pid: int) -> tuple[int, int] | None:
    """``(pgid, start time in clock ticks)`` of a live process, else None (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":  # a zombie has exited; only its parent's wait is missing
        return None
    return int(fields[2]), int(fields[19])


def group_members(pgid: int, since: int) -> list[int]:
    """Live processes of group ``pgid`` started no earlier than its recorded leader."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := proc_stat(int(entry))) and st[0] == pgid and st[1] >= since:
            members.append(int(entry))
    return members


def spawn(name: str, cmd: list[str], env: dict[str, str], state: Path, cwd: Path | None = None) -> dict:
    """Start ``cmd`` as the leader of a new session (own process group), output to a log file."""
    logfile = state / "logs" / f"{name}.log"
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=cwd or state, start_new_session=True)
    started = proc_stat(proc.pid)
    return {"pid": proc.pid, "pgid": proc.pid, "start": started[1] if started else 0,
            "cmd": cmd[:2], "log": str(logfile)}


def stop_group(name: str, rec: dict, leader_first: bool, grace: float = 10.0) -> None:
    """Stop the recorded group: SIGTERM (to the leader alone when ``leader_first``: ``ray start
    --block`` then shuts its daemons down in order), SIGTERM to what is left, then SIGKILL.
    Only members started after the recorded leader are signalled: a recycled PID is never hit."""
    leader = rec["pid"] if proc_stat(rec["pid"]) == (rec["pgid"], rec["start"]) else None
    steps = [("leader", signal.SIGTERM)] if leader and leader_first else []
    for target, sig in steps + [("group", signal.SIGTERM), ("group", signal.SIGKILL)]:
        members = group_members(rec["pgid"], rec["start"])
        if not members:
            return
        pids = [leader] if target == "leader" else members
        log(f"{name}: {sig.name} to {len(pids)} process(es) of group {rec['pgid']}")
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline and group_members(rec["pgid"], rec["start"]):
            time.sleep(0.2)


# ---------------------------------------------------------------- health checks
def ray_ok(env: dict[str, str], api: str) -> bool:
    """The job API answers with this stack's token (what ``ray job list`` asks, without a CLI start per poll)."""
    return job_server_answers(api, auth_token(env))


def wait_all(checks: dict[str, Callable[[], bool]], procs: dict[str, dict], timeout: float) -> None:
    """Poll every check until all pass.

    Raises:
        RuntimeError: a service's process exited, or ``timeout`` passed.
    """
    pending, deadline = dict(checks), time.time() + timeout
    while pending:
        for name in list(pending):
            if pending[name]():
                log(f"{name}: up")
                del pending[name]
            elif name in procs and proc_stat(procs[name]["pid"]) is None:
                raise RuntimeError(f"{name} exited; see {procs[name]['log']}")
        if pending and time.time() > deadline:
            raise RuntimeError(f"not up within {timeout:.0f}s: {', '.join(pending)}")
        time.sleep(0.5)


# ---------------------------------------------------------------- up / down / status
def exports(st: dict) -> list[str]:
    """The environment a client needs: S3, MLflow, Ray (address, job API, token file)."""
    p = st["ports"]
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{p['s3']}", **S3_ENV,
           "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{p['mlflow']}",
           "RAY_ADDRESS": f"127.0.0.1:{p['gcs']}", "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{p['dashboard']}",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": st["ray_token_path"]}
    return [f"export {k}={v}" for k, v in env.items()]


def save(state: Path, st: dict) -> None:
    """Write the state file (mode 600: it names the token file and the PIDs)."""
    path = state / "stack.json"
    path.write_text(json.dumps(st, indent=2))
    path.chmod(0o600)


def load(state: Path) -> dict | None:
    """The recorded stack, or None."""
    path = state / "stack.json"
    return json.loads(path.read_text()) if path.exists() else None


def prepare_state(state: Path) -> None:
    """A fresh state dir; 711 as root so that the `postgres` user can reach its own subdir."""
    if len(str(state / "ray")) > MAX_RAY_TEMP:
        raise SystemExit(f"state dir {state} is too long for Ray's socket paths; use a shorter one")
    if state.exists() and any(state.iterdir()):
        if not (state / MARKER).exists():  # never wipe a directory this script did not create
            raise SystemExit(f"{state} is not empty and not a stack state dir; choose another --state-dir")
        shutil.rmtree(state)
    state.mkdir(parents=True, mode=0o700, exist_ok=True)
    (state / MARKER).touch()
    state.chmod(0o711 if os.geteuid() == 0 else 0o700)
    (state / "logs").mkdir(mode=0o700)


def start_services(state: Path, st: dict, num_cpus: int) -> dict[str, Callable[[], bool]]:
    """Start moto, PostgreSQL (or sqlite), MLflow and the Ray head, recording each at once."""
    p, base = st["ports"], {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_", "MLFLOW_"))}
    base["PATH"] = f"{BIN}{os.pathsep}{base.get('PATH', '')}"  # a job's `python` is this venv's
    s3 = f"http://127.0.0.1:{p['s3']}"
    client_env = {**base, **S3_ENV, "AWS_ENDPOINT_URL": s3, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{p['mlflow']}"}
    st["services"]["s3"] = spawn("s3", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(p["s3"])],
                                 base, state)
    save(state, st)
    ray_env = {**client_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": st["ray_token_path"]}
    ports = [f"--{k}-port={p['ray'][i]}" for i, k in enumerate(RAY_PORTS)]
    st["services"]["ray"] = spawn("ray", [
        str(BIN / "ray"), "start", "--head", "--block", f"--port={p['gcs']}", "--node-ip-address=127.0.0.1",
        f"--num-cpus={num_cpus}", "--dashboard-host=127.0.0.1", f"--dashboard-port={p['dashboard']}",
        f"--temp-dir={state / 'ray'}", "--disable-usage-stats",
        "--min-worker-port=0", "--max-worker-port=0",  # workers bind ports the OS picks: no range to clash
        *ports], ray_env, state, cwd=ROOT)
    save(state, st)
    password = secrets.token_urlsafe(24)  # never printed, never in an argument or a log
    if st["db"] == "postgresql":
        st["services"]["postgres"] = pg_up(state, p["postgres"], password)
        save(state, st)
        backend = f"postgresql+psycopg2://vidray@127.0.0.1:{p['postgres']}/mlflow"
    else:
        backend = f"sqlite:///{state / 'mlflow.db'}"
    wait_all({"s3": lambda: probe(f"{s3}/moto-api/")}, st["services"], 30)
    import boto3  # after the server is up; boto3 reads nothing but these arguments

    boto3.client("s3", endpoint_url=s3, region_name=S3_ENV["AWS_REGION"], aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
    mlflow_env = {**client_env, "MLFLOW_S3_ENDPOINT_URL": s3, "MLFLOW_BACKEND_STORE_URI": backend,
                  "PGPASSWORD": password}
    mlflow_env.pop("MLFLOW_TRACKING_URI")
    st["services"]["mlflow"] = spawn("mlflow", [
        str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(p["mlflow"]), "--workers", "1",
        "--artifacts-destination", f"s3://{BUCKET}/artifacts"], mlflow_env, state)
    save(state, st)
    api = f"http://127.0.0.1:{p['dashboard']}"
    return {"mlflow": lambda: probe(f"http://127.0.0.1:{p['mlflow']}/health"),
            "ray": lambda: ray_ok(ray_env, api)}


def up(state: Path, db: str, num_cpus: int, timeout: float) -> int:
    """Start the stack (or report the running one) and print its `export` lines."""
    st = load(state)
    if st and any(alive(n, r) for n, r in st["services"].items()):
        log(f"already up (state {state / 'stack.json'}); `down` first to restart")
        print("\n".join(exports(st)))
        return 0
    why = {"auto": " (no usable PostgreSQL here)", "sqlite": " (--db sqlite)"}.get(db, "")
    if db == "auto":
        db = "postgresql" if pg_usable() else "sqlite"
    elif db == "postgresql" and not pg_usable():
        raise SystemExit("PostgreSQL is not usable here (no initdb/pg_ctl, or no `postgres` user as root)")
    prepare_state(state)
    token = state / "ray_auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    ports = free_ports(5 + len(RAY_PORTS))
    st = {"db": db, "ray_token_path": str(token), "services": {},
          "ports": dict(zip(("s3", "mlflow", "gcs", "dashboard", "postgres"), ports[:5]), ray=ports[5:])}
    save(state, st)
    log(f"state {state}; MLflow backend: {db}" + ("" if db == "postgresql" else why))
    try:
        checks = start_services(state, st, num_cpus)
        wait_all(checks, st["services"], timeout)
    except (RuntimeError, subprocess.CalledProcessError) as err:
        detail = err.stderr.decode(errors="replace")[-2000:] if isinstance(err, subprocess.CalledProcessError) \
            and err.stderr else ""
        log(f"failed: {err} {detail}; stopping what was started")
        down(state, purge=False)
        return 1
    print("\n".join(exports(st)))
    return 0


def alive(name: str, rec: dict) -> bool:
    """The recorded service still has a live process."""
    if name == "postgres":
        st = proc_stat(rec["pid"])
        return st is not None and Path(rec["data"], "postmaster.pid").exists()
    return bool(group_members(rec["pgid"], rec["start"]))


def down(state: Path, purge: bool) -> int:
    """Stop exactly the recorded services: MLflow, Ray, S3 by process group, PostgreSQL by pg_ctl."""
    st = load(state)
    if st is None:
        log(f"nothing recorded in {state}")
        return 0
    services = st["services"]
    for name in ("mlflow", "ray", "s3"):  # MLflow's job runner takes ~10 s to honour SIGTERM: no wait
        if name in services:
            stop_group(name, services[name], leader_first=name == "ray", grace=10.0 if name == "ray" else 3.0)
    if "postgres" in services and Path(services["postgres"]["data"], "postmaster.pid").exists():
        log(f"postgres: pg_ctl stop -m fast ({services['postgres']['data']})")
        pg_down(services["postgres"])
    left = [n for n, r in services.items() if alive(n, r)]
    if left:
        log(f"still running: {', '.join(left)}")
        return 1
    if purge and (state / MARKER).exists():
        shutil.rmtree(state, ignore_errors=True)
    else:
        (state / "stack.json").unlink()
    log("down")
    return 0


def status(state: Path) -> int:
    """One line per recorded service: running or not, and whether it answers."""
    st = load(state)
    if st is None:
        log(f"nothing recorded in {state}")
        return 1
    p, ok = st["ports"], True
    answers = {"s3": lambda: probe(f"http://127.0.0.1:{p['s3']}/moto-api/"),
               "mlflow": lambda: probe(f"http://127.0.0.1:{p['mlflow']}/health"),
               "ray": lambda: probe(f"http://127.0.0.1:{p['dashboard']}/api/gcs_healthz"),
               "postgres": lambda: alive("postgres", st["services"]["postgres"])}
    for name, rec in st["services"].items():
        running = alive(name, rec)
        answering = running and answers[name]()
        ok = ok and answering
        print(f"{name:<9} pid {rec['pid']:<8} {'running' if running else 'stopped'}"
              f"{', answering' if answering else ''}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """CLI: ``up``, ``down``, ``status``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR, help=f"default {STATE_DIR}")
    parser.add_argument("--db", choices=["auto", "postgresql", "sqlite"], default="auto",
                        help="MLflow backend store (auto: PostgreSQL when installed)")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the Ray head")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the services")
    parser.add_argument("--purge", action="store_true", help="down: also delete the state dir")
    args = parser.parse_args(argv)
    state = args.state_dir.absolute()
    if args.command == "up":
        return up(state, args.db, args.num_cpus, args.timeout)
    if args.command == "down":
        return down(state, args.purge)
    return status(state)


if __name__ == "__main__":
    sys.exit(main())
