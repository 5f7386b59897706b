"""Real engines for the end-to-end tests: a private Docker daemon and a one-node Slurm cluster.

Each engine is started by the test with its own state under a temp dir, talks only over loopback or unix
sockets, and is stopped by pid (also on failure). When an engine cannot run here, the test is skipped with
the reason and the command that installs it (``scripts/e2e`` installs the Debian packages)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fleet_helpers import REPO, pid_alive, wait_until

CACHE = Path(os.environ.get("GYMFLEET_E2E_CACHE", Path.home() / ".cache" / "gymfleet-e2e"))
BASE_TAR = CACHE / "base-bookworm.tar"
BASE_IMAGE = "gymfleet-e2e-base:bookworm"
IMAGE = "gymfleet:e2e"
WHEELHOUSE = REPO / "docker" / "wheelhouse"
INSTALL_HINT = (
    "run scripts/e2e (it installs the Debian packages: docker.io slurmctld slurmd slurm-client munge ...)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need_root_and(*programs: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to start the engine daemons")
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed; {INSTALL_HINT}")


def stop_pid(pid: int, grace_s: float = 10.0, *, group: bool = False) -> None:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL; for a process (group) this test started."""
    kill = os.killpg if group else os.kill
    with contextlib.suppress(ProcessLookupError, PermissionError):
        kill(pid, signal.SIGTERM)
    if not wait_until(lambda: not pid_alive(pid), grace_s, 0.1):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 5.0, 0.1)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def run(cmd: Sequence[str], timeout_s: float, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout_s, **kwargs)  # type: ignore[call-overload]


# ---------------------------------------------------------------------------------------------------- docker
@dataclass
class DockerEngine:
    root: Path
    proc: subprocess.Popen[bytes] | None = None
    docker_bin: str = field(
        default_factory=lambda: (
            "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")
        )
    )

    @property
    def host(self) -> str:
        return f"unix://{self.root}/docker.sock"

    def docker(
        self, *args: str, timeout_s: float = 120.0, check: bool = True, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.docker_bin, "-H", self.host, *args]
        try:
            done = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            if check:
                raise
            return subprocess.CompletedProcess(cmd, 124, "", f"timed out after {timeout_s}s")
        result = subprocess.CompletedProcess(
            cmd, done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args[:3])} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                f"{result.stderr[-3000:]}"
            )
        return result

    def log(self) -> str:
        path = self.root / "dockerd.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@contextlib.contextmanager
def short_tmp_dir(prefix: str) -> Iterator[Path]:
    """A temp dir with a short path: unix sockets (containerd's, munge's) must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def docker_engine() -> Iterator[DockerEngine]:
    """dockerd with its own data/exec roots and socket, no iptables, no bridge; stopped by pid on exit."""
    need_root_and("dockerd", "containerd", "runc")
    with short_tmp_dir("gfd-") as root, _docker_engine(root) as engine:
        yield engine


@contextlib.contextmanager
def _docker_engine(root: Path) -> Iterator[DockerEngine]:
    for sub in ("data", "exec"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    engine = DockerEngine(root)
    with open(root / "dockerd.log", "wb") as log:
        engine.proc = subprocess.Popen(
            [
                "dockerd",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--default-ulimit",
                "nofile=1024:1024",
                "--default-ulimit",
                "nproc=4096:4096",
                "--data-root",
                str(root / "data"),
                "--exec-root",
                str(root / "exec"),
                "-H",
                engine.host,
                "--pidfile",
                str(root / "docker.pid"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        up = wait_until(
            lambda: (
                engine.proc.poll() is None  # type: ignore[union-attr]
                and (root / "docker.sock").exists()
                and engine.docker("version", timeout_s=10, check=False).returncode == 0
            ),
            60.0,
            0.5,
        )
        if not up:
            pytest.skip(f"dockerd did not start here (rc={engine.proc.poll()}):\n{engine.log()}")
        yield engine
    finally:
        containerd = _read_pid(root / "exec" / "containerd" / "containerd.pid")
        if engine.proc.poll() is None:
            with contextlib.suppress(Exception):
                ids = engine.docker("ps", "-aq", timeout_s=20, check=False).stdout.split()
                if ids:
                    engine.docker("rm", "-f", *ids, timeout_s=60, check=False)
            stop_pid(engine.proc.pid, 20.0)
        engine.proc.wait(10)
        if containerd and pid_alive(containerd):
            stop_pid(containerd, 10.0)
        # overlay mounts left by a killed daemon would make the temp dir undeletable
        with open("/proc/mounts") as fh:
            mounts = [line.split()[1] for line in fh if str(root) in line]
        for mount in sorted(mounts, reverse=True):
            run(["umount", "-l", mount], 10)


def ensure_base_tarball() -> Path:
    """A Debian bookworm rootfs with python3 + venv, made once with debootstrap and cached as a tarball."""
    if BASE_TAR.exists():
        return BASE_TAR
    need_root_and("debootstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    rootfs = CACHE / "rootfs-build"
    shutil.rmtree(rootfs, ignore_errors=True)
    done = run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            "bookworm",
            str(rootfs),
            os.environ.get("GYMFLEET_E2E_DEBIAN_MIRROR", "http://deb.debian.org/debian"),
        ],
        900,
    )
    if done.returncode != 0:
        shutil.rmtree(rootfs, ignore_errors=True)
        pytest.skip(f"debootstrap failed (no Debian mirror?):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / junk).glob("*"):
            if path.is_file():
                path.unlink()
    tmp_tar = BASE_TAR.with_suffix(".tmp")
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tmp_tar), "."], check=True, timeout=600)
    tmp_tar.replace(BASE_TAR)
    shutil.rmtree(rootfs, ignore_errors=True)
    return BASE_TAR


def ensure_wheelhouse(python: str) -> None:
    """Wheels of gymfleet's dependencies for an offline image build (the build has no network here).

    Rebuilt only when pyproject.toml changed since the last build (a stamp file records its hash); wheels
    already there are reused, so only what pyproject.toml added is fetched.
    """
    import hashlib

    stamp = WHEELHOUSE / ".pyproject.sha256"
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == digest:
        return
    done = run(
        [
            python,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--find-links",
            str(WHEELHOUSE),
            "--wheel-dir",
            str(WHEELHOUSE),
            str(REPO),
            "setuptools>=68",
            "wheel",
        ],
        900,
    )
    if done.returncode != 0:
        pytest.skip(f"could not build the wheelhouse (no package index?):\n{done.stderr[-2000:]}")
    for wheel in WHEELHOUSE.glob("gymfleet-*.whl"):
        wheel.unlink()  # the image installs gymfleet from the source tree
    stamp.write_text(digest + "\n")


def build_image(engine: DockerEngine, python: str) -> dict[str, float]:
    """Import the base rootfs and build docker/Dockerfile offline; returns the seconds each step took."""
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    tarball = ensure_base_tarball()
    ensure_wheelhouse(python)
    timings["prepare_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    engine.docker("import", "-", BASE_IMAGE, stdin=tarball.read_bytes(), timeout_s=300)
    timings["import_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    engine.docker(
        "build",
        "--pull=false",
        "--network",
        "none",
        "--build-arg",
        f"BASE_IMAGE={BASE_IMAGE}",
        "--build-arg",
        "PIP_INSTALL_ARGS=--no-index",
        "-f",
        str(REPO / "docker" / "Dockerfile"),
        "-t",
        IMAGE,
        str(REPO),
        timeout_s=900,
    )
    timings["build_s"] = time.monotonic() - t0
    return timings


# ----------------------------------------------------------------------------------------------------- slurm
@dataclass
class SlurmCluster:
    root: Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def cmd(
        self, *args: str, timeout_s: float = 30.0, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run(list(args), timeout_s, env=self.env, cwd=cwd)

    def logs(self) -> str:
        out = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log"):
            path = self.root / name
            if path.exists():
                out.append(f"--- {name}\n" + path.read_text(errors="replace")[-2500:])
        return "\n".join(out)


def _slurm_conf(root: Path, node: str, ctld_port: int, slurmd_port: int) -> str:
    cpus = os.cpu_count() or 1
    return f"""ClusterName=gymfleet-e2e
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
MinJobAge=600
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=e2e Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


@contextlib.contextmanager
def slurm_cluster() -> Iterator[SlurmCluster]:
    """munged + slurmctld + slurmd, one node, config and state under a temp dir; stopped by pid on exit."""
    need_root_and("munged", "slurmctld", "slurmd", "sbatch", "scontrol")
    with short_tmp_dir("gfs-") as root, _slurm_cluster(root) as cluster:
        yield cluster


@contextlib.contextmanager
def _slurm_cluster(root: Path) -> Iterator[SlurmCluster]:
    for sub in ("munge", "state", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "munge", 0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    node = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, node, free_port(), free_port()))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = SlurmCluster(root, env)
    try:
        with open(root / "munged.out", "wb") as out:
            cluster.procs["munged"] = subprocess.Popen(
                [
                    "munged",
                    "--foreground",
                    "--force",
                    f"--key-file={key}",
                    f"--socket={root}/munge/munge.socket",
                    f"--pid-file={root}/munge/munged.pid",
                    f"--log-file={root}/munged.log",
                    f"--seed-file={root}/munge/munged.seed",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not wait_until(lambda: (root / "munge" / "munge.socket").exists(), 15.0, 0.1):
            pytest.skip(f"munged did not start here:\n{cluster.logs()}")
        for daemon in ("slurmctld", "slurmd"):
            with open(root / f"{daemon}.out", "wb") as out:
                cluster.procs[daemon] = subprocess.Popen(
                    [daemon, "-D", "-f", str(conf)],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

        def node_idle() -> bool:
            if any(p.poll() is not None for p in cluster.procs.values()):
                return True
            state = cluster.cmd("sinfo", "-h", "-o", "%t", timeout_s=10).stdout.strip()
            return state.startswith("idle")

        if not wait_until(node_idle, 60.0, 0.5) or any(p.poll() is not None for p in cluster.procs.values()):
            pytest.skip(f"the one-node Slurm cluster did not come up here:\n{cluster.logs()}")
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.cmd("scancel", "--full", "--user=root", timeout_s=10)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = cluster.procs.get(name)
            if proc is not None and proc.poll() is None:
                stop_pid(proc.pid, 15.0)
                proc.wait(5)
