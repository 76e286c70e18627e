"""A private PostgreSQL cluster for the local stack (infra/local/stack.py).

Debian/Ubuntu packages put the server binaries in /usr/lib/postgresql/<major>/bin. The cluster
lives in ``<state>/pg``, listens on 127.0.0.1 only, and authenticates with scram-sha-256; the
password reaches initdb through a file that is deleted at once and clients through
``PGPASSWORD``, never through an argument. PostgreSQL refuses to run as root, so as root
initdb/pg_ctl run as the ``postgres`` system user (``runuser``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

PG_SYSTEM_USER = "postgres"


def pg_bindir() -> Path | None:
    """The newest PostgreSQL server binaries (Debian: /usr/lib/postgresql/<major>/bin)."""
    dirs = [Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin") if Path(d, "pg_ctl").exists()]
    dirs.sort(key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    if dirs:
        return dirs[-1]
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


def as_pg_user(cmd: list[str]) -> list[str]:
    """Run as the PostgreSQL system user when we are root (initdb and postgres refuse root)."""
    return ["runuser", "-u", PG_SYSTEM_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def pg_usable() -> bool:
    """PostgreSQL binaries exist and, as root, so does the system user to run them as."""
    if pg_bindir() is None:
        return False
    if os.geteuid() != 0:
        return True
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        return False
    return shutil.which("runuser") is not None


def own_by_pg(path: Path) -> None:
    """As root, hand ``path`` to the PostgreSQL system user (its data dir must be its own)."""
    if os.geteuid() == 0:
        pw = pwd.getpwnam(PG_SYSTEM_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def pg_up(state: Path, port: int, password: str) -> dict:
    """initdb (scram-sha-256, password from a file), start on 127.0.0.1:port, create `mlflow`.

    Returns:
        The record ``down`` needs: postmaster PID, data dir, binaries, version, log file.

    Raises:
        RuntimeError: no PostgreSQL binaries.
        subprocess.CalledProcessError: initdb, pg_ctl or createdb failed (stderr captured).
    """
    bindir, pgdir = pg_bindir(), state / "pg"
    if bindir is None:
        raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl)")
    pgdir.mkdir(mode=0o700)
    (pgdir / "run").mkdir(mode=0o700)
    pwfile = pgdir / "pwfile"
    pwfile.write_text(password)
    pwfile.chmod(0o600)
    for path in (pgdir, pgdir / "run", pwfile):
        own_by_pg(path)
    run = {"cwd": pgdir, "check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    try:
        subprocess.run(as_pg_user([str(bindir / "initdb"), "-D", str(pgdir / "data"), "-U", "vidray",
                                   "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                                   "--locale=C"]), **run)
    finally:
        pwfile.unlink()
    with open(pgdir / "data" / "postgresql.conf", "a") as conf:
        conf.write(f"\nport = {port}\nlisten_addresses = '127.0.0.1'\n"
                   f"unix_socket_directories = '{pgdir / 'run'}'\n")
    subprocess.run(as_pg_user([str(bindir / "pg_ctl"), "start", "-D", str(pgdir / "data"), "-w", "-t", "60",
                               "-l", str(pgdir / "postgres.log")]), **run)
    # The password reaches createdb (and later MLflow) as PGPASSWORD, never as an argument.
    subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "vidray", "mlflow"],
                   env={**os.environ, "PGPASSWORD": password}, **run)
    postmaster = int((pgdir / "data" / "postmaster.pid").read_text().split()[0])
    return {"pid": postmaster, "data": str(pgdir / "data"), "bindir": str(bindir),
            "version": bindir.parent.name, "log": str(pgdir / "postgres.log")}


def pg_down(rec: dict) -> None:
    """``pg_ctl stop -m fast`` on the recorded data directory."""
    subprocess.run(as_pg_user([str(Path(rec["bindir"]) / "pg_ctl"), "stop", "-D", rec["data"], "-m", "fast",
                               "-w", "-t", "30"]), cwd="/", check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
