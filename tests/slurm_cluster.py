"""A one-node SLURM on localhost for tests and developers: munged + slurmctld + slurmd from Debian's
``slurm-wlm`` and ``munge``, every file (config, key, state, spool, logs, sockets) in one folder.

    python tests/slurm_cluster.py start /tmp/molre-slurm     # prints: export SLURM_CONF=/tmp/molre-slurm/slurm.conf
    export SLURM_CONF=/tmp/molre-slurm/slurm.conf
    sinfo; sbatch --wrap 'hostname'; squeue
    python tests/slurm_cluster.py stop /tmp/molre-slurm

It installs nothing (``apt-get install -y slurm-wlm munge`` does; ``.ci/run`` runs it when they are missing)
and needs no cgroups (``proctrack/linuxproc``, ``task/none``) and no accounting database (``sacct`` is not
available; ``squeue`` and ``scontrol`` are). Daemons run as the calling user — root in CI and in containers.
Its own munged listens on a socket inside the folder, so a system munged (if any) is left alone.
"""
from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "mungekey")
SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def _which(name: str) -> str | None:
    return shutil.which(name) or next((f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_resources() -> tuple[int, int]:
    """CPUs and memory (MB) slurmd reports for this machine (``slurmd -C``), so the node is not drained."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(tok.split("=", 1) for tok in out.split() if "=" in tok)
    return int(fields["CPUs"]), int(fields["RealMemory"])


SLURM_CONF = """\
ClusterName=molre-local
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket,cred_expire=10
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=30
KillWait=30
OverTimeLimit=0
InactiveLimit=0
SchedulerParameters=sched_interval=2,bf_interval=2
MessageTimeout=10
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""


@dataclass
class LocalSlurm:
    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """Environment for client commands (sbatch, squeue, scontrol) and for submitit."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def log_tail(self, n: int = 20) -> str:
        parts = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log"):
            path = self.root / "log" / name
            if path.is_file():
                parts.append(f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-n:]))
        return "\n".join(parts)


def missing_programs() -> list[str]:
    return [p for p in DAEMONS + ("sbatch", "squeue", "scontrol") if _which(p) is None]


def start(root: str | Path, timeout: float = 60.0) -> LocalSlurm:
    """Write the config into ``root`` and start munged, slurmctld and slurmd; returns when the node is idle."""
    missing = missing_programs()
    if missing:
        raise RuntimeError(f"missing {missing}: apt-get install -y slurm-wlm munge")
    root = Path(root).resolve()
    stop(root)
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "munge", 0o700)
    key = root / "munge" / "munge.key"
    if not key.exists():
        subprocess.run([_which("mungekey"), "--create", "--keyfile", str(key)], check=True, capture_output=True)
    os.chmod(key, 0o600)
    subprocess.run([_which("munged"), "--force", "--key-file", str(key), "--socket", str(root / "munge" / "munge.socket"),
                    "--pid-file", str(root / "munge" / "munged.pid"), "--log-file", str(root / "log" / "munged.log"),
                    "--seed-file", str(root / "munge" / "munged.seed")], check=True, capture_output=True)
    host = socket.gethostname().split(".")[0]
    cpus, mem = _node_resources()
    (root / "slurm.conf").write_text(SLURM_CONF.format(
        host=host, root=root, user=getpass.getuser(), cpus=cpus, mem=mem, ctld_port=_free_port(), slurmd_port=_free_port()))
    cluster = LocalSlurm(root)
    env = cluster.env
    for daemon in ("slurmctld", "slurmd"):
        args = [_which(daemon), "-f", str(cluster.conf)] + (["-c", "-i"] if daemon == "slurmctld" else [])
        proc = subprocess.run(args, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{daemon} did not start ({proc.returncode}): {proc.stderr.strip()}\n{cluster.log_tail()}")
    deadline = time.time() + timeout
    state = ""
    while time.time() < deadline:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True)
        state = out.stdout.strip()
        if out.returncode == 0 and state in ("idle", "mixed", "allocated"):
            return cluster
        time.sleep(0.5)
    raise RuntimeError(f"local SLURM node not idle after {timeout:.0f} s (state {state!r})\n{cluster.log_tail()}")


def stop(root: str | Path) -> None:
    """Stop the daemons started by :func:`start` in ``root`` (by their pid files); the folder is kept."""
    root = Path(root)
    if (root / "slurmctld.pid").is_file() and (root / "slurm.conf").is_file():
        # jobs first: slurmstepd outlives slurmd, so a running job would keep its processes after the stop
        env = LocalSlurm(root).env
        subprocess.run(["scancel", "--full", "-u", getpass.getuser()], env=env, capture_output=True, timeout=60)
        deadline = time.time() + 90
        while time.time() < deadline:
            out = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True, timeout=60)
            if out.returncode != 0 or not out.stdout.strip():
                break
            time.sleep(1)
    for pid_file in (root / "slurmd.pid", root / "slurmctld.pid", root / "munge" / "munged.pid"):
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pid_file.unlink(missing_ok=True)
            continue
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python tests/slurm_cluster.py start|stop FOLDER")
        return 2
    if argv[0] == "stop":
        stop(argv[1])
        return 0
    try:
        cluster = start(argv[1])
    except RuntimeError as err:
        print(f"error: {err}")
        return 1
    print(f"export SLURM_CONF={cluster.conf}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
