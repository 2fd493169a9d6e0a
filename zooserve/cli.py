"""The ``zooserve`` command. User mistakes print one line and exit 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

from zooserve.errors import ServerError, UserError, ZooError

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
    b.add_argument("--format", default="aoti", choices=["aoti", "torchscript", "tensorrt"])
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
        choices=["center", "dense", "tencrop"],
        help="serving mode (default: dense with --dense, else center)",
    )
    b.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int8", "fp16"])
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
    pr.add_argument("--key-file", type=Path, default=DEFAULT_RUN_DIR / "key_file.json")

    # bench and tune own their flags (their modules keep heavy imports inside functions)
    from zooserve import bench, tune

    bench.add_arguments(sub.add_parser("bench", help="benchmarks: model-only, served, stock TorchServe"))
    tune.add_arguments(sub.add_parser("tune", help="measure workers x threads x batch on the served path"))
    return p


def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-store", type=Path, default=DEFAULT_STORE)
    p.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    p.add_argument("--bind", default="127.0.0.1", help="listen address (0.0.0.0 inside containers)")
    p.add_argument("--no-token-auth", action="store_true", help="disable TorchServe token authorization")
    for name, port in (("inference", 8080), ("management", 8081), ("metrics", 8082),
                       ("grpc-inference", 7070), ("grpc-management", 7071), ("exporter", 8083),
                       ("v2-http", 8000), ("v2-grpc", 8001), ("v2-metrics", 8002)):  # fmt: skip
        p.add_argument(f"--{name}-port", type=int, default=port)
    p.add_argument(
        "--no-v2", action="store_true", help="do not serve the standard v2 protocol (ports 8000/8001)"
    )


def _server_config(args: argparse.Namespace) -> Any:
    from zooserve.server import Ports, ServerConfig

    ports = Ports(**{f: getattr(args, f"{f}_port") for f in Ports.__dataclass_fields__})
    return ServerConfig(
        args.model_store, args.run_dir, args.bind, ports, token_auth=not args.no_token_auth, v2=not args.no_v2
    )


def archive_meta(store: Path, name: str) -> dict[str, Any] | None:
    mar = store / f"{name}.mar"
    if not mar.is_file():
        return None
    with zipfile.ZipFile(mar) as z:
        return json.loads(z.read("zooserve.json"))


def cmd_models(args: argparse.Namespace) -> None:
    from zooserve.models import registry
    from zooserve.models.params import count_params

    rows = [("name", "task", "params", "input", "formats", "default weights", "built (store)")]
    for spec in registry.list_models(tiny=None if args.all else False):
        inp = (
            f"{spec.input.channels}x{spec.input.size}"
            if spec.input
            else "text"
            if spec.task == "classify-text"
            else "-"
        )
        meta = archive_meta(args.store, spec.name)
        built = f"{meta['format']}/{meta['precision']}, {meta['weights']}" if meta else "-"
        default = spec.default_weights + (" (!)" if spec.default_weights == "random" else "")
        rows.append((spec.name, spec.task, count_params(spec), inp, ",".join(spec.formats), default, built))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print("\n(!) random weights: predictions are meaningless until you build with --weights PATH")


def cmd_build(args: argparse.Namespace) -> None:
    from zooserve.export.build import BuildOptions, build

    serving = {"calibration": str(args.calibration)} if args.calibration else {}
    opts = BuildOptions(
        format=args.format, weights=args.weights, dense=args.dense, precision=args.precision,
        word_map=args.word_map, trust_pickle=args.trust_pickle, evaluation=args.evaluation, serving=serving,
        archive_name=args.name,
    )  # fmt: skip
    if (args.weights is not None or args.name) and len(args.models) > 1:
        raise UserError("--weights and --name apply to one model: build one MODEL at a time with them")
    for name in args.models:
        res = build(name, opts, out=args.out)
        warn = "  (RANDOM weights: predictions are meaningless)" if res.meta["weights"] == "random" else ""
        print(
            f"built {name}: {res.archive} [{opts.format}, {opts.precision}, weights={res.meta['weights']}] in {res.seconds:.0f}s{warn}"
        )


def cmd_serve(args: argparse.Namespace) -> None:
    from zooserve import server

    cfg = _server_config(args)
    server.start(cfg, args.models, timeout=args.timeout, foreground=args.foreground)
    print(f"TorchServe ready: REST {cfg.url('inference')}  gRPC {cfg.host}:{cfg.ports.grpc_inference}  "
          f"metrics {cfg.url('metrics')}/metrics, {cfg.url('exporter')}/metrics  token {cfg.key_file}")  # fmt: skip
    if cfg.v2:
        print(f"Open Inference Protocol (v2): REST {cfg.url('v2_http')}/v2  gRPC {cfg.host}:{cfg.ports.v2_grpc}  "
              f"metrics {cfg.url('v2_metrics')}/metrics")  # fmt: skip


def cmd_stop(args: argparse.Namespace) -> None:
    from zooserve import server

    cfg = server.ServerConfig(run_dir=args.run_dir)
    print("TorchServe stopped." if server.stop(cfg) else "TorchServe was not running.")


def _read_input(model: str, item: str) -> bytes | str:
    path = Path(item)
    if path.is_file():
        return path.read_bytes()
    if model.endswith("bert"):
        return item  # literal text
    raise UserError(f"input file not found: {item}")


def cmd_predict(args: argparse.Namespace) -> None:
    from zooserve.client import Client

    client = Client(args.host, args.port, args.grpc_port, key_file=args.key_file)
    headers = {"X-Topk": str(args.topk)} if args.topk else {}
    if args.attention:
        headers["X-Attention"] = "1"
    for item in args.inputs:
        data = _read_input(args.model, item)
        result = client.predict(args.model, data, headers=headers, grpc=args.grpc)
        if args.attention and isinstance(data, bytes):
            from zooserve.runtime.attention_plot import render_attention

            render_attention(data, result["tokens"], result.pop("attention"), args.attention)
            print(f"attention maps written to {args.attention}", file=sys.stderr)
        print(json.dumps({"input": item if isinstance(data, bytes) else item[:60], **result}))


def cmd_bench(args: argparse.Namespace) -> None:
    from zooserve import bench

    bench.main(args)


def cmd_tune(args: argparse.Namespace) -> None:
    from zooserve import tune

    tune.main(args)


COMMANDS = {"models": cmd_models, "build": cmd_build, "serve": cmd_serve, "stop": cmd_stop,
            "predict": cmd_predict, "bench": cmd_bench, "tune": cmd_tune}  # fmt: skip


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
