"""The on-device entry point of an edgex bundle (numpy + one runtime; no TensorFlow, no edgex):

    python -m devices predict IMAGE...      top classes of images
    python -m devices bench [--json]        latency statistics in the edgex bench schema
        [--interleave MODEL]                 ... of two models timed in turn, with their latency ratio
    python -m devices eval [--json]         accuracy on the evaluation set packed into the bundle
    python -m devices verify                check every file against the manifest
    python -m devices info [--json]         what this device is
    python -m devices check [--json]        which installed runtime loads and runs the model (in a child process)

predict, bench and eval load the model in a child process first: when the runtime crashes there (a signal), the
next installed runtime is tried, and one line says which version crashed with which signal.

Run it from the bundle folder (or pass --bundle DIR). Defaults (model, threads, device) come from the manifest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devices.errors import EdgexError
from devices.files import json_text


def _bundle(args) -> tuple[Path, dict]:
    from devices.bundle import BundleError, read_manifest

    root = Path(args.bundle)
    try:
        return root, read_manifest(root)
    except BundleError as exc:
        raise EdgexError(str(exc)) from exc


def _settings(args, root: Path, manifest: dict) -> tuple[Path, str, int | None]:
    defaults = manifest.get("defaults", {})
    model = root / (args.model or manifest["model"])
    return model, args.device or defaults.get("device", "cpu"), args.threads or defaults.get("threads")


def _load(args, root: Path, manifest: dict, model: Path | None = None, runtime_options: str | None = None):
    """(model, its path, milliseconds the load took): loaded with the runtime that a smoke test in a child process
    found to run it, unless --no-check; ``runtime_options``: the loader's keyword arguments as JSON."""
    import json
    import time

    import devices
    from devices.smoke import checked_runtime

    default, device, threads = _settings(args, root, manifest)
    model = model or default
    try:
        options = json.loads(runtime_options or "{}")
    except ValueError as exc:
        raise EdgexError(f"runtime options must be a JSON object, got {runtime_options!r}") from exc
    if not args.no_check:
        chosen = checked_runtime(model, device=device, threads=threads, bundle=root)
        options.update({"interpreter": chosen.interpreter} if chosen.interpreter else {})
    start = time.perf_counter()
    loaded = devices.load_model(model, device=device, threads=threads, **options)
    return loaded, model, (time.perf_counter() - start) * 1e3


def cmd_predict(args) -> int:
    import numpy as np

    from devices.metadata import read_metadata
    from devices.preprocess import load_image

    root, manifest = _bundle(args)
    model, path, _ = _load(args, root, manifest)
    meta = read_metadata(path)
    shape = meta.input_shape or model.inputs[0].shape[1:]
    names = meta.class_names
    preprocessing = meta.input_preprocessing
    results = []
    for image in args.images:
        x = preprocessing.apply(load_image(image, (int(shape[0]), int(shape[1])))[None])
        scores = model.predict(x)[0]
        top = np.argsort(-scores)[: args.top]
        results.append(
            {
                "image": image,
                "top": [
                    {"class": names[i] if i < len(names) else str(i), "index": int(i), "score": float(scores[i])}
                    for i in top
                ],
            }
        )
    if args.json:
        print(json_text(results), end="")
    else:
        for r in results:
            best = ", ".join(f"{t['class']} {t['score']:.3f}" for t in r["top"])
            print(f"{r['image']}: {best}")
    return 0


def cmd_bench(args) -> int:
    from devices.bench import BenchConfig, measure, results_to_json

    root, manifest = _bundle(args)
    import time

    config = BenchConfig(warmup=args.warmup, runs=args.runs, min_seconds=args.min_seconds, max_seconds=args.max_seconds)
    if args.interleave:
        return _bench_interleaved(args, root, manifest, config)
    start = time.perf_counter()
    model, path, _ = _load(args, root, manifest, runtime_options=args.options)
    load_ms = (time.perf_counter() - start) * 1e3
    result = measure(model, config, load_ms=load_ms)
    result = result.with_extra(label=Path(path).name, target=manifest.get("target", ""))
    if args.json:
        print(json_text(results_to_json([result])), end="")
    else:
        lat = result.latency
        print(
            f"{path.name} on {result.device} ({result.runtime_version}, {result.threads or 'default'} threads): "
            f"p50 {lat.p50:.3f} ms, p90 {lat.p90:.3f} ms, p99 {lat.p99:.3f} ms, CV {lat.cv:.1%}, "
            f"{result.images_per_s:.1f} img/s"
            + ("" if result.valid else f" (NOT VALID: {'; '.join(result.invalid_reasons)})")
        )
    return 0


def _bench_interleaved(args, root: Path, manifest: dict, config) -> int:
    """The bundle's model (or --model) and --interleave OTHER timed in turn; the second row carries the ratio."""
    from devices.bench import results_to_json
    from devices.interleave import interleave

    first, first_path, _ = _load(args, root, manifest, runtime_options=args.options)
    with first:
        second, second_path, _ = _load(args, root, manifest, root / args.interleave, args.interleave_options)
        with second:
            runs = interleave([first, second], config)
    ratio = runs.ratio(0, 1)
    a, b = (r.with_extra(label=p.name) for r, p in zip(runs.results, (first_path, second_path)))
    if args.json:
        print(json_text(results_to_json([a, b.with_extra(interleaved=ratio.to_dict())])), end="")
    else:
        print(ratio.describe(first_path.name, second_path.name))
    return 0


def cmd_eval(args) -> int:
    import numpy as np

    from devices.evaluate import accuracy_from_scores
    from devices.metadata import read_metadata

    root, manifest = _bundle(args)
    if not manifest.get("eval"):
        raise EdgexError("this bundle has no evaluation set (build it with edgex deploy --eval-data ...)")
    data = np.load(root / manifest["eval"])
    model, path, _ = _load(args, root, manifest)
    meta = read_metadata(path)
    preprocessing = meta.input_preprocessing
    scores = np.concatenate(
        [model.predict(preprocessing.apply(data["images"][i : i + 64])) for i in range(0, len(data["labels"]), 64)]
    )
    names = meta.class_names_or_indices(scores.shape[1])
    accuracy = accuracy_from_scores(scores, data["labels"], names)
    if args.json:
        print(json_text(accuracy.to_dict()), end="")
    else:
        print(
            f"{path.name}: top-1 {100 * accuracy.top1:.2f}%, top-5 {100 * accuracy.top5:.2f}% "
            f"on {accuracy.samples} samples"
        )
    return 0


def cmd_check(args) -> int:
    from devices.smoke import RuntimeCrashed, requirements_fallback, smoke_test

    root, manifest = _bundle(args)
    model, device, threads = _settings(args, root, manifest)
    report = smoke_test(model, device=device, threads=threads, fallback=requirements_fallback(root))
    chosen = report.chosen
    if args.json:
        print(json_text(report.to_dict()), end="")
        return 0 if chosen is not None else RuntimeCrashed.exit_code
    if chosen is None:
        raise RuntimeCrashed(report.line())
    print(report.line() or f"{model.name} loads and runs with {chosen.version}")
    return 0


def cmd_verify(args) -> int:
    from devices.bundle import main as bundle_main

    return bundle_main(["verify", str(args.bundle)])


def cmd_info(args) -> int:
    from dataclasses import asdict

    from devices import available_devices, sysinfo

    data = {
        "environment": sysinfo.environment(),
        "packages": sysinfo.package_versions(),
        "devices": [asdict(d) for d in available_devices(probe_tensorflow=False)],
    }
    print(json_text(data).rstrip() if args.json else "\n".join(f"{k}: {v}" for k, v in data["environment"].items()))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m devices", description="Run an edgex bundle on this device.")
    sub = top.add_subparsers(dest="command", required=True)

    def common(p, model=True, check=True):
        p.add_argument("--bundle", default=".", help="bundle folder (default: current folder)")
        if model:
            p.add_argument("--model", help="model file inside the bundle (default: the manifest's)")
            p.add_argument("--device", help="cpu, edgetpu[:usb|pci], delegate:PATH (default: the target's)")
            p.add_argument("--threads", type=int, help="runtime threads (default: the target's cores)")
        if model and check:
            p.add_argument(
                "--no-check",
                action="store_true",
                help="skip loading the model in a child process first (a runtime that crashes then ends the runner)",
            )
        p.add_argument("--json", action="store_true", help="print JSON")
        return p

    p = common(sub.add_parser("predict", help="classify images"))
    p.add_argument("images", nargs="+")
    p.add_argument("--top", type=int, default=3)
    p.set_defaults(run=cmd_predict)
    p = common(sub.add_parser("bench", help="latency statistics"))
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--options", help="runtime options as JSON, e.g. '{\"xnnpack\": false}'")
    p.add_argument("--interleave", metavar="MODEL", help="a second model, timed in turn with the first (A B, B A...)")
    p.add_argument("--interleave-options", help="the second model's runtime options as JSON")
    p.set_defaults(run=cmd_bench)
    common(sub.add_parser("eval", help="accuracy on the bundled evaluation set")).set_defaults(run=cmd_eval)
    p = common(sub.add_parser("check", help="which installed runtime loads and runs the model"), check=False)
    p.set_defaults(run=cmd_check)
    common(sub.add_parser("verify", help="check files against the manifest"), model=False).set_defaults(run=cmd_verify)
    common(sub.add_parser("info", help="what this device is"), model=False).set_defaults(run=cmd_info)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except EdgexError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
