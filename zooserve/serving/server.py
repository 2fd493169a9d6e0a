"""Start, wait for and stop a server (``zooserve serve`` / ``zooserve stop``): TorchServe, the
gateway in front of it, and the handler-metrics exporter.

We launch TorchServe's Java frontend ourselves rather than through the ``torchserve`` script: that
script keeps one pid file in /tmp for the whole machine, so a second server (tests, benchmarks)
would refuse to start. Each run directory (created 0700 before anything is written to it) holds
its own pid files, logs, rendered config.properties, worker sockets and TorchServe's token
``key_file.json`` (0600). With the gateway (the default) TorchServe listens on private loopback
ports and the gateway on the public ones; ``gateway=False`` puts TorchServe on them directly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import ts

from zooserve.errors import ServerError
from zooserve.serving import processes, properties
from zooserve.serving.gateway import process as gateway
from zooserve.serving.management import Management
from zooserve.serving.processes import free_ports

KEY_FILE = "key_file.json"
NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"  # served names, as the build allows them
DEFAULT_TOKEN_EXPIRY_MIN = 24 * 60  # the gateway renews both tokens at half their lifetime
UNIX_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; TorchServe appends "/.ts.sock.NNNNN"


@dataclass(frozen=True)
class Ports:
    inference: int = 8080
    management: int = 8081
    metrics: int = 8082  # TorchServe's own metrics
    grpc_inference: int = 7070
    grpc_management: int = 7071
    exporter: int = 8083  # zooserve handler metrics (prometheus-client multiprocess)
    v2_http: int = 8000  # the standard Open Inference Protocol, as Triton
    v2_grpc: int = 8001
    gateway_metrics: int = 8002


@dataclass(frozen=True)
class ServerConfig:
    model_store: Path = Path("model_store")
    run_dir: Path = Path(".zooserve")
    bind: str = "127.0.0.1"
    ports: Ports = field(default_factory=Ports)
    token_auth: bool = True
    gateway: bool = True
    model_api: bool = False  # registering models at run time (tune/bench servers)
    token_expiry_min: int = DEFAULT_TOKEN_EXPIRY_MIN
    otlp_endpoint: str | None = None  # OpenTelemetry traces from the gateway, off by default
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


def on_free_ports(cfg: ServerConfig) -> ServerConfig:
    return replace(cfg, ports=Ports(*free_ports(len(fields(Ports)))))


def archives(cfg: ServerConfig, names: list[str]) -> list[str]:
    """``name=name.mar`` for each requested model (all archives in the store when none named)."""
    bad = [n for n in names if not re.fullmatch(NAME, n)]
    if bad:
        raise ServerError(f"not a model name: {bad[0][:64]!r} (letters, digits, '_', '-', '.')")
    if not cfg.model_store.is_dir():
        raise ServerError(f"model store {cfg.model_store} does not exist: run `zooserve build MODEL` first")
    available = sorted(p.stem for p in cfg.model_store.glob("*.mar") if re.fullmatch(NAME, p.stem))
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


def running_pid(cfg: ServerConfig, what: str = "torchserve") -> int | None:
    return processes.read_pid(_pid_file(cfg, what))


def _prepare_run_dir(cfg: ServerConfig) -> Path:
    """The run dir, 0700 before anything is written to it; returns the worker sockets' dir."""
    cfg.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(cfg.run_dir, 0o700)
    cfg.log_dir.mkdir(exist_ok=True)
    shutil.rmtree(cfg.metrics_dir, ignore_errors=True)
    cfg.metrics_dir.mkdir()
    cfg.key_file.unlink(missing_ok=True)
    sockets = cfg.run_dir.resolve() / "sockets"
    if len(str(sockets)) > UNIX_SOCKET_PATH_MAX - 20:  # too deep for a unix socket path
        sockets = Path(tempfile.mkdtemp(prefix="zooserve-"))
        (cfg.run_dir / "sockets.path").write_text(str(sockets))
    sockets.mkdir(mode=0o700, exist_ok=True)
    return sockets


def _listen(cfg: ServerConfig) -> tuple[properties.Listen, gateway.Upstream | None]:
    """Where TorchServe listens: private loopback ports behind the gateway, else the public ones."""
    p, b = cfg.ports, cfg.bind
    metrics = f"{b}:{p.metrics}"
    if not cfg.gateway:
        return properties.Listen(
            f"{b}:{p.inference}", f"{b}:{p.management}", metrics, b, p.grpc_inference, p.grpc_management
        ), None
    up = gateway.Upstream(*free_ports(4))
    local = "127.0.0.1"
    return properties.Listen(
        f"{local}:{up.inference}",
        f"{local}:{up.management}",
        metrics,
        local,
        up.grpc_inference,
        up.grpc_management,
    ), up


def render_properties(cfg: ServerConfig, sockets: Path) -> tuple[dict[str, str], gateway.Upstream | None]:
    """TorchServe's config.properties for ``cfg``, and the private ports behind the gateway."""
    listen, upstream = _listen(cfg)
    props = properties.render(
        listen,
        cfg.model_store,
        sockets,
        cfg.token_auth,
        cfg.model_api,
        cfg.token_expiry_min,
        dict(cfg.extra_properties),
    )
    return props, upstream


def _spawn(cmd: list[str], cfg: ServerConfig, what: str, env: dict[str, str], log: str) -> subprocess.Popen:
    with open(cfg.log_dir / log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=cfg.run_dir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    processes.write_pid(_pid_file(cfg, what), proc)
    return proc


def _java_command(
    config_file: Path, cfg: ServerConfig, props: dict[str, str], models: list[str]
) -> list[str]:
    ts_home = Path(ts.__file__).resolve().parents[1]
    java_home = os.path.join(os.environ.get("JAVA_HOME", ""), "bin")
    java = shutil.which("java", path=java_home + os.pathsep + os.environ.get("PATH", ""))
    if java is None:
        raise ServerError(
            "java not found: TorchServe needs Java 17 (set JAVA_HOME or install openjdk-17-jre)"
        )
    cmd = [java, f"-Dmodel_server_home={ts_home}", *props.get("vmargs", "").split()]
    cmd += ["-cp", f".:{ts_home / 'ts' / 'frontend' / '*'}", "org.pytorch.serve.ModelServer"]
    cmd += ["--python", sys.executable, "-f", str(config_file), "-s", str(cfg.model_store.resolve()), "-ncs"]
    return [*cmd, "-m", *(models or ["ALL"])]


def start(
    cfg: ServerConfig,
    models: list[str],
    timeout: float = 300.0,
    foreground: bool = False,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Start everything and return once every model has a warm, ready worker behind a ready
    gateway. ``foreground``: then stay until a process exits or a signal arrives, stop the rest,
    and raise ServerError if TorchServe or the gateway died on its own."""
    if running_pid(cfg):
        raise ServerError(f"TorchServe is already running from {cfg.run_dir} (zooserve stop)")
    mars = archives(cfg, models)
    sockets = _prepare_run_dir(cfg)
    props, upstream = render_properties(cfg, sockets)
    config_file = cfg.run_dir / "config.properties"
    config_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()), "utf-8")
    env = os.environ | {
        "LOG_LOCATION": str(cfg.log_dir.resolve()),
        "METRICS_LOCATION": str(cfg.log_dir.resolve()),
        "PROMETHEUS_MULTIPROC_DIR": str(cfg.metrics_dir.resolve()),
        "ZOOSERVE_REQUEST_LOG": str((cfg.log_dir / "requests.jsonl").resolve()),
    }
    exporter = [
        sys.executable,
        "-m",
        "zooserve.serving.exporter",
        "--port",
        str(cfg.ports.exporter),
        "--bind",
        cfg.bind,
        "--dir",
        str(cfg.metrics_dir.resolve()),
    ]
    running = {"exporter": _spawn(exporter, cfg, "exporter", env, "exporter.log")}
    try:
        running["torchserve"] = _spawn(
            _java_command(config_file.resolve(), cfg, props, mars), cfg, "torchserve", env, "stdout.log"
        )
        names = [m.split("=")[0] for m in mars]
        wait_ready(cfg, names, timeout, running["torchserve"], props["management_address"])
        if cfg.key_file.exists():
            os.chmod(cfg.key_file, 0o600)
        if upstream is not None:
            gw_env = {k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
            command = gateway.command(gateway.write_config(cfg, upstream, props))
            running["gateway"] = _spawn(command, cfg, "gateway", gw_env, gateway.LOG)
            gateway.wait_ready(cfg, read_keys(cfg).get("inference"), timeout, running["gateway"])
    except BaseException:
        stop(cfg)
        raise
    if on_ready is not None:
        on_ready()
    if foreground:
        _stay_in_front(cfg, running)


def _stay_in_front(cfg: ServerConfig, running: dict[str, subprocess.Popen]) -> None:
    """Wait until a signal (a clean stop) or until a process exits (ServerError); stop the rest."""
    signalled: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        signalled.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    while not signalled:
        dead = [name for name, proc in running.items() if proc.poll() is not None]
        if dead:
            stop(cfg)
            raise ServerError(f"{', '.join(dead)} exited on its own; stopped the rest\n{_log_tail(cfg)}")
        time.sleep(0.5)
    stop(cfg)


def read_keys(cfg: ServerConfig) -> dict[str, str]:
    """TorchServe's tokens: {"inference": ..., "management": ..., "API": ...} (empty with auth off)."""
    if not cfg.token_auth or not cfg.key_file.exists():
        return {}
    try:
        data = json.loads(cfg.key_file.read_text("utf-8"))
    except ValueError:  # TorchServe is still writing it
        return {}
    return {k: v["key"] for k, v in data.items() if isinstance(v, dict) and "key" in v}


def management(cfg: ServerConfig) -> Management:
    """The management API client of a running server (through the gateway when it has one)."""
    return Management(cfg.url("management"), read_keys(cfg).get("management"))


def _log_tail(cfg: ServerConfig, lines: int = 25) -> str:
    texts = []
    for name in ("stdout.log", gateway.LOG, "model_log.log", "ts_log.log"):
        f = cfg.log_dir / name
        if f.exists():
            texts += [f"--- {name}"] + f.read_text("utf-8", errors="replace").splitlines()[-lines:]
    return "\n".join(texts)


def wait_ready(
    cfg: ServerConfig,
    models: list[str],
    timeout: float,
    proc: subprocess.Popen | None = None,
    management_url: str | None = None,
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
        mgmt = Management(management_url or cfg.url("management"), keys.get("management"), timeout=5)
        pending = [name for name in pending if not mgmt.ready(name)]
        if pending:
            time.sleep(0.5)


def stop(cfg: ServerConfig, timeout: float = 30.0) -> bool:
    """Stop the gateway, TorchServe (and its workers) and the exporter. True if one was running."""
    stopped = False
    for what in ("gateway", "torchserve", "exporter"):
        pid = running_pid(cfg, what)
        if pid is not None:
            processes.terminate_group(pid, timeout)
            stopped = True
        _pid_file(cfg, what).unlink(missing_ok=True)
    cfg.key_file.unlink(missing_ok=True)
    moved = cfg.run_dir / "sockets.path"
    if moved.exists():
        shutil.rmtree(moved.read_text().strip(), ignore_errors=True)
        moved.unlink()
    return stopped
