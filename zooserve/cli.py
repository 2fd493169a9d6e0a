"""The ``zooserve`` command. User mistakes print one line and exit 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from zooserve.attention_plot import render_attention
from zooserve.bench import command as bench
from zooserve.bench import tune
from zooserve.client import Client
from zooserve.errors import ServerError, UnknownModel, UserError, ZooError
from zooserve.export.archive import read_member
from zooserve.export.build import BuildOptions, build
from zooserve.export.formats import FORMATS
from zooserve.manifest import Manifest
from zooserve.models import registry
from zooserve.models.params import count_params
from zooserve.serving import server
from zooserve.specs import Decode, Evaluation, Precision, Weights

DEFAULT_STORE = Path("model_store")
DEFAULT_RUN_DIR = Path(".zooserve")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zooserve", description="Serve the classic networks with TorchServe.")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("models", help="table of the registry")
    m.add_argument("--all", action="store_true", help="include the tiny test variants")
    m.add_argument("--store", type=Path, default=DEFAULT_STORE)

    b = sub.add_parser("build", help="export models and pack TorchServe archives")
    b.add_argument("models", nargs="+", metavar="MODEL")
    b.add_argument("--format", default="aoti", choices=list(FORMATS))
    b.add_argument(
        "--weights", type=Path, help="state_dict (.pth), HF directory (bert) or checkpoint (captioning)"
    )
    b.add_argument("--word-map", type=Path, help="word map JSON for a Show-Attend-Tell checkpoint")
    b.add_argument(
        "--trust-pickle", action="store_true", help="allow the reference captioning checkpoint format"
    )
    b.add_argument("--dense", action="store_true", help="FC-to-conv model for dense (multi-scale) evaluation")
    b.add_argument(
        "--evaluation",
        choices=list(Evaluation),
        help="serving mode (default: dense with --dense, else center)",
    )
    b.add_argument("--precision", default="fp32", choices=list(Precision))
    b.add_argument(
        "--decode",
        choices=list(Decode),
        help="JPEG decode: fast (DCT-scaled to the model's size, the default) or exact (full size, "
        "torchvision's pixels); also the serving option `decode` in model-config.yaml",
    )
    b.add_argument("--calibration", type=Path, help="folder of images for int8 calibration")
    b.add_argument("--name", help="archive/served name (serve one model in several variants)")
    b.add_argument("--out", type=Path, default=DEFAULT_STORE)

    s = sub.add_parser("serve", help="start TorchServe in the background; return once every model is ready")
    s.add_argument("models", nargs="*", metavar="MODEL")
    _server_args(s)
    s.add_argument("--timeout", type=float, default=300.0)
    s.add_argument("--foreground", action="store_true", help="stay in front (containers)")

    st = sub.add_parser("stop", help="stop the server started by `zooserve serve`")
    st.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)

    pr = sub.add_parser("predict", help="predict over REST (default) or gRPC")
    pr.add_argument("model")
    pr.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, or text for bert")
    pr.add_argument("--grpc", action="store_true")
    pr.add_argument("--topk", type=int)
    pr.add_argument("--attention", type=Path, metavar="OUT.png", help="captioning: render attention maps")
    pr.add_argument("--host", default="127.0.0.1")
    pr.add_argument("--port", type=int, default=8080)
    pr.add_argument("--grpc-port", type=int, default=7070)
    pr.add_argument("--v2", action="store_true", help="through the standard Open Inference Protocol (v2)")
    pr.add_argument("--v2-port", type=int, default=8000)
    pr.add_argument("--v2-grpc-port", type=int, default=8001)
    pr.add_argument("--key-file", type=Path, default=DEFAULT_RUN_DIR / server.KEY_FILE)

    bench.add_arguments(sub.add_parser("bench", help="benchmarks: model-only, served, stock TorchServe"))
    tune.add_arguments(sub.add_parser("tune", help="measure workers x threads x batch on the served path"))
    return p


def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-store", type=Path, default=DEFAULT_STORE)
    p.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    p.add_argument("--bind", default="127.0.0.1", help="listen address (0.0.0.0 inside containers)")
    p.add_argument("--no-token-auth", action="store_true", help="disable TorchServe token authorization")
    for f in fields(server.Ports):
        p.add_argument(f"--{f.name.replace('_', '-')}-port", type=int, default=f.default)
    p.add_argument(
        "--no-gateway",
        action="store_true",
        help="TorchServe alone on the public ports: no admission, deadlines, request ids or v2 protocol",
    )
    p.add_argument(
        "--enable-model-api", action="store_true", help="allow registering store archives at run time"
    )
    p.add_argument("--token-expiry-min", type=int, default=server.DEFAULT_TOKEN_EXPIRY_MIN)
    p.add_argument("--otlp-endpoint", help="export OpenTelemetry traces to this OTLP/gRPC host:port")


def _server_config(args: argparse.Namespace) -> server.ServerConfig:
    ports = server.Ports(**{f.name: getattr(args, f"{f.name}_port") for f in fields(server.Ports)})
    return server.ServerConfig(
        args.model_store,
        args.run_dir,
        args.bind,
        ports,
        token_auth=not args.no_token_auth,
        gateway=not args.no_gateway,
        model_api=args.enable_model_api,
        token_expiry_min=args.token_expiry_min,
        otlp_endpoint=args.otlp_endpoint,
    )


def archive_manifest(store: Path, name: str) -> Manifest | None:
    mar = store / f"{name}.mar"
    if not mar.is_file():
        return None
    return Manifest.from_json(json.loads(read_member(mar)), source=str(mar))


def cmd_models(args: argparse.Namespace) -> None:
    rows = [("name", "task", "params", "input", "formats", "default weights", "built (store)")]
    for spec in registry.list_models(tiny=None if args.all else False):
        inp = (
            f"{spec.input.channels}x{spec.input.size}"
            if spec.input
            else "text"
            if spec.task.takes_text
            else "-"
        )
        try:
            man = archive_manifest(args.store, spec.name)
        except ZooError:
            man = None  # built by another zooserve version: shown as not built
        built = f"{man.format}/{man.precision}, {man.weights}" if man else "-"
        default = spec.default_weights + (" (!)" if spec.default_weights == Weights.RANDOM else "")
        rows.append((spec.name, spec.task, count_params(spec), inp, ",".join(spec.formats), default, built))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print("\n(!) random weights: predictions are meaningless until you build with --weights PATH")


def cmd_build(args: argparse.Namespace) -> None:
    if (args.weights is not None or args.name) and len(args.models) > 1:
        raise UserError("--weights and --name apply to one model: build one MODEL at a time with them")
    opts = BuildOptions(
        format=args.format,
        weights=args.weights,
        dense=args.dense,
        precision=args.precision,
        word_map=args.word_map,
        trust_pickle=args.trust_pickle,
        evaluation=args.evaluation,
        calibration=args.calibration,
        archive_name=args.name,
        serving={"decode": args.decode} if args.decode else {},
    )
    for name in args.models:
        res = build(name, opts, out=args.out)
        weights = res.manifest.weights
        warn = "  (RANDOM weights: predictions are meaningless)" if weights == Weights.RANDOM else ""
        print(
            f"built {name}: {res.archive} [{opts.format}, {opts.precision}, weights={weights}] "
            f"in {res.seconds:.0f}s{warn}"
        )


def cmd_serve(args: argparse.Namespace) -> None:
    cfg = _server_config(args)

    def ready() -> None:
        print(
            f"zooserve ready: REST {cfg.url('inference')}  gRPC {cfg.host}:{cfg.ports.grpc_inference}  "
            f"management {cfg.url('management')}  token {cfg.key_file}",
            flush=True,
        )
        print(
            f"metrics: {cfg.url('metrics')}/metrics (TorchServe), {cfg.url('exporter')}/metrics (handler)"
            + (f", {cfg.url('gateway_metrics')}/metrics (gateway)" if cfg.gateway else ""),
            flush=True,
        )
        if cfg.gateway:
            print(
                f"Open Inference Protocol (v2): REST {cfg.url('v2_http')}/v2  "
                f"gRPC {cfg.host}:{cfg.ports.v2_grpc}",
                flush=True,
            )

    server.start(cfg, args.models, timeout=args.timeout, foreground=args.foreground, on_ready=ready)


def cmd_stop(args: argparse.Namespace) -> None:
    cfg = server.ServerConfig(run_dir=args.run_dir)
    print("TorchServe stopped." if server.stop(cfg) else "TorchServe was not running.")


def _read_input(model: str, item: str) -> bytes | str:
    """A file's bytes; else the argument itself as text, for text models (and served names the
    registry does not know, which may be text models)."""
    path = Path(item)
    if path.is_file():
        return path.read_bytes()
    try:
        takes_text = registry.get(model).task.takes_text
    except UnknownModel:
        takes_text = True
    if takes_text:
        return item
    raise UserError(f"input file not found: {item}")


def cmd_predict(args: argparse.Namespace) -> None:
    client = Client(
        args.host,
        args.port,
        args.grpc_port,
        key_file=args.key_file,
        protocol="v2" if args.v2 else "torchserve",
        v2_port=args.v2_port,
        v2_grpc_port=args.v2_grpc_port,
    )
    headers = {"X-Topk": str(args.topk)} if args.topk else {}
    if args.attention:
        headers["X-Attention"] = "1"
    for item in args.inputs:
        data = _read_input(args.model, item)
        result = client.predict(args.model, data, headers=headers, grpc=args.grpc)
        if args.attention and isinstance(data, bytes):
            render_attention(data, result["tokens"], result.pop("attention"), args.attention)
            print(f"attention maps written to {args.attention}", file=sys.stderr)
        print(json.dumps({"input": item if isinstance(data, bytes) else item[:60], **result}))


COMMANDS = {
    "models": cmd_models,
    "build": cmd_build,
    "serve": cmd_serve,
    "stop": cmd_stop,
    "predict": cmd_predict,
    "bench": bench.main,
    "tune": tune.main,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except ZooError as e:
        text = f"zooserve: error: {e.type}: {e}"
        # one line for the user's mistakes; a server that failed to start keeps its log tail
        print(text if isinstance(e, ServerError) else text.splitlines()[0], file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
