"""Start, wait for and stop a real TorchServe (``zooserve serve`` / ``zooserve stop``).

We launch TorchServe's Java frontend ourselves rather than through the ``torchserve`` script: that
script keeps one pid file in /tmp for the whole machine, so a second server (tests, benchmarks)
would refuse to start. Each run directory holds its own pid files, logs, rendered
config.properties and TorchServe's token ``key_file.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path

import ts

from zooserve.errors import ServerError
from zooserve.serving.management import Management

KEY_FILE = "key_file.json"


@dataclass(frozen=True)
class Ports:
    inference: int = 8080
    management: int = 8081
    metrics: int = 8082
    grpc_inference: int = 7070
    grpc_management: int = 7071
    exporter: int = 8083  # zooserve handler metrics (prometheus-client multiprocess)
    v2_http: int = 8000  # standard Open Inference Protocol (KServe v2) REST, Triton's ports
    v2_grpc: int = 8001
    v2_metrics: int = 8002


@dataclass(frozen=True)
class ServerConfig:
    model_store: Path = Path("model_store")
    run_dir: Path = Path(".zooserve")
    bind: str = "127.0.0.1"
    ports: Ports = field(default_factory=Ports)
    token_auth: bool = True
    v2: bool = True  # serve the standard v2 protocol (zooserve.serving.v2) next to TorchServe
    extra_properties: tuple[tuple[str, str], ...] = ()

    @property
    def host(self) -> str:
        return "127.0.0.1" if self.bind in ("0.0.0.0", "") else self.bind

    def url(self, api: str = "inference") -> str:
        return f"http://{self.host}:{getattr(self.ports, api)}"

    @property
    def key_file(self) -> Path:
        return self.run_dir / KEY_FILE

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def metrics_dir(self) -> Path:
        return self.run_dir / "prometheus"


def render_properties(cfg: ServerConfig) -> dict[str, str]:
    """The packaged config.properties template with this run's bind address, ports and auth."""
    props: dict[str, str] = {}
    template = resources.files("zooserve.serving").joinpath("config.properties").read_text("utf-8")
    for line in template.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    p, b = cfg.ports, cfg.bind
    props |= {
        "inference_address": f"http://{b}:{p.inference}",
        "management_address": f"http://{b}:{p.management}",
        "metrics_address": f"http://{b}:{p.metrics}",
        "grpc_inference_address": b,
        "grpc_inference_port": str(p.grpc_inference),
        "grpc_management_address": b,
        "grpc_management_port": str(p.grpc_management),
        "model_store": str(cfg.model_store.resolve()),
        "disable_token_authorization": str(not cfg.token_auth).lower(),
        # workers talk to the frontend over /tmp/.ts.sock.<port>: a base per server keeps two
        # servers on one machine (demo + tests + benchmarks) from taking each other's sockets
        "initial_worker_port": str(9000 if p.inference == 8080 else 10000 + (p.inference % 5000) * 10),
    }
    return props | dict(cfg.extra_properties)


def _java_command(config_file: Path, cfg: ServerConfig, models: list[str]) -> list[str]:
    ts_home = Path(ts.__file__).resolve().parents[1]
    java = shutil.which(
        "java",
        path=os.path.join(os.environ.get("JAVA_HOME", ""), "bin") + os.pathsep + os.environ.get("PATH", ""),
    )
    if java is None:
        raise ServerError(
            "java not found: TorchServe needs Java 17 (set JAVA_HOME or install openjdk-17-jre)"
        )
    vmargs = render_properties(cfg).get("vmargs", "").split()
    cmd = [java, f"-Dmodel_server_home={ts_home}", *vmargs, "-cp", f".:{ts_home / 'ts' / 'frontend' / '*'}"]
    cmd += ["org.pytorch.serve.ModelServer", "--python", sys.executable, "-f", str(config_file)]
    cmd += ["-s", str(cfg.model_store.resolve()), "-ncs"]
    cmd += ["-m", *(models or ["ALL"])]
    return cmd


def archives(cfg: ServerConfig, names: list[str]) -> list[str]:
    """``name=name.mar`` for each requested model (all archives in the store when none named)."""
    if not cfg.model_store.is_dir():
        raise ServerError(f"model store {cfg.model_store} does not exist: run `zooserve build MODEL` first")
    available = sorted(p.stem for p in cfg.model_store.glob("*.mar"))
    missing = [n for n in names if n not in available]
    if missing:
        raise ServerError(
            f"no archive for {', '.join(missing)} in {cfg.model_store}: "
            f"run `zooserve build {' '.join(missing)}`"
        )
    chosen = names or available
    if not chosen:
        raise ServerError(f"{cfg.model_store} holds no .mar archives: run `zooserve build MODEL` first")
    return [f"{n}={n}.mar" for n in chosen]


def _pid_file(cfg: ServerConfig, what: str) -> Path:
    return cfg.run_dir / f"{what}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def running_pid(cfg: ServerConfig, what: str = "torchserve") -> int | None:
    f = _pid_file(cfg, what)
    if f.exists():
        pid = int(f.read_text().strip() or 0)
        if pid and _alive(pid):
            return pid
    return None


def start(
    cfg: ServerConfig, models: list[str], timeout: float = 300.0, foreground: bool = False
) -> subprocess.Popen:
    """Start TorchServe (+ the metrics exporter) and return once every model has a ready worker."""
    if running_pid(cfg):
        raise ServerError(f"TorchServe is already running from {cfg.run_dir} (zooserve stop)")
    mars = archives(cfg, models)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    cfg.log_dir.mkdir(exist_ok=True)
    shutil.rmtree(cfg.metrics_dir, ignore_errors=True)
    cfg.metrics_dir.mkdir()
    cfg.key_file.unlink(missing_ok=True)
    config_file = cfg.run_dir / "config.properties"
    config_file.write_text("".join(f"{k}={v}\n" for k, v in render_properties(cfg).items()), "utf-8")
    env = os.environ | {
        "LOG_LOCATION": str(cfg.log_dir.resolve()),
        "METRICS_LOCATION": str(cfg.log_dir.resolve()),
        "PROMETHEUS_MULTIPROC_DIR": str(cfg.metrics_dir.resolve()),
    }
    with open(cfg.log_dir / "exporter.log", "ab") as log:
        exporter = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zooserve.serving.exporter",
                "--port",
                str(cfg.ports.exporter),
                "--bind",
                cfg.bind,
                "--dir",
                str(cfg.metrics_dir.resolve()),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
    _pid_file(cfg, "exporter").write_text(str(exporter.pid))
    with open(cfg.log_dir / "stdout.log", "ab") as out:
        proc = subprocess.Popen(
            _java_command(config_file.resolve(), cfg, mars),
            cwd=cfg.run_dir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _pid_file(cfg, "torchserve").write_text(str(proc.pid))
    try:
        wait_ready(cfg, [m.split("=")[0] for m in mars], timeout, proc)
        if cfg.v2:
            from zooserve.serving.v2 import process as v2

            max_bytes = int(render_properties(cfg).get("max_request_size", 6553500)) + 65536
            front = v2.spawn(cfg, env, max_bytes)
            _pid_file(cfg, "v2").write_text(str(front.pid))
            v2.wait_ready(cfg, read_keys(cfg).get("inference"), 60, front)
    except BaseException:
        stop(cfg)
        raise
    if foreground:
        _forward_signals(cfg)
        proc.wait()
        stop(cfg)
    return proc


def _forward_signals(cfg: ServerConfig) -> None:
    def handler(signum: int, _frame: object) -> None:
        stop(cfg)
        sys.exit(0)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def read_keys(cfg: ServerConfig) -> dict[str, str]:
    """TorchServe's tokens: {"inference": ..., "management": ...} (empty when auth is off)."""
    if not cfg.token_auth or not cfg.key_file.exists():
        return {}
    try:
        data = json.loads(cfg.key_file.read_text("utf-8"))
    except ValueError:  # TorchServe is still writing it
        return {}
    return {k: v["key"] for k, v in data.items() if isinstance(v, dict) and "key" in v}


def _log_tail(cfg: ServerConfig, lines: int = 25) -> str:
    texts = []
    for name in ("stdout.log", "model_log.log", "ts_log.log"):
        f = cfg.log_dir / name
        if f.exists():
            texts += [f"--- {name}"] + f.read_text("utf-8", errors="replace").splitlines()[-lines:]
    return "\n".join(texts)


def wait_ready(
    cfg: ServerConfig, models: list[str], timeout: float, proc: subprocess.Popen | None = None
) -> None:
    """Poll the management API until each model has a READY worker; fail with the log tail."""
    deadline = time.monotonic() + timeout
    pending = list(models)
    while pending:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"TorchServe exited with code {proc.returncode}\n{_log_tail(cfg)}")
        if time.monotonic() > deadline:
            raise ServerError(
                f"models not ready after {timeout:.0f}s: {', '.join(pending)}\n{_log_tail(cfg)}"
            )
        keys = read_keys(cfg)
        if cfg.token_auth and not keys:
            time.sleep(0.5)
            continue
        mgmt = Management(cfg.url("management"), keys.get("management"), timeout=5)
        pending = [name for name in pending if not mgmt.ready(name)]
        if pending:
            time.sleep(0.5)


def stop(cfg: ServerConfig, timeout: float = 30.0) -> bool:
    """Stop the v2 front-end, TorchServe, its workers and the exporter. True if something was running."""
    stopped = False
    for what in ("v2", "torchserve", "exporter"):
        pid = running_pid(cfg, what)
        if pid is not None:
            _terminate_group(pid, timeout)
            stopped = True
        _pid_file(cfg, what).unlink(missing_ok=True)
    cfg.key_file.unlink(missing_ok=True)
    return stopped


def _terminate_group(pid: int, timeout: float) -> None:
    """SIGTERM the process group (frontend + Python workers), SIGKILL what is left after timeout."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    """Any non-zombie process left in the group (zombies wait for a parent that may be us)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on loopback (tests, benchmarks and tuning run side servers)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def on_free_ports(cfg: ServerConfig) -> ServerConfig:
    return replace(cfg, ports=Ports(*free_ports(len(fields(Ports)))))


def management(cfg: ServerConfig) -> Management:
    """The management API client of a running server, with its token."""
    return Management(cfg.url("management"), read_keys(cfg).get("management"))
