"""Latency and agreement of the exported formats of a bundle's network, on the CPU.

For ``network_def`` of a bundle's ``inference.json`` (random weights; ``--tiny`` adds ``tiny.json``), at
``--size`` (default the config's ``image_size``): eager PyTorch (fastest scan backend), TorchScript by
scripting (the loop-free scan), and, with ``--onnx``, ONNX Runtime (CPU) from one ``torch.onnx`` (dynamo)
export at that size (an ONNX file takes the size it was exported at; ``optimize=False``: the onnxscript optimiser
doubles the export time and changes neither numbers nor ONNX Runtime latency). Prints a Markdown table: format,
export seconds, max |difference| to eager, median seconds per image (batch 1)::

    python -m benchmarks.bench_exports --bundle openus_seg --tiny --size 64 --onnx
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._measure import median_seconds

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="openus_seg", choices=["openus_seg", "openus_cls", "openus_pretrain"])
    parser.add_argument("--tiny", action="store_true", help="add configs/tiny.json")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--onnx", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from monai.bundle import ConfigParser

    folder = REPO / "bundles" / args.bundle / "configs"
    config = ConfigParser()
    config.read_config([str(folder / "inference.json")] + ([str(folder / "tiny.json")] if args.tiny else []))
    size = args.size or config.get_parsed_content("image_size")
    size = size[0] if isinstance(size, (list, tuple)) else int(size)
    torch.manual_seed(0)
    net = config.get_parsed_content("network_def").eval()
    x = torch.rand(1, 1, size, size)
    rows = []
    with torch.no_grad():
        eager = net(x)
        rows.append(("eager (PyTorch)", "-", 0.0, median_seconds(lambda: net(x), args.repeats)))
        start = time.perf_counter()
        scripted = torch.jit.script(net)
        export_s = time.perf_counter() - start
        rows.append(("TorchScript (scripted)", f"{export_s:.1f}", (scripted(x) - eager).abs().max().item(),
                     median_seconds(lambda: scripted(x), args.repeats)))
    if args.onnx:
        import onnxruntime as ort

        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "model.onnx")
            start = time.perf_counter()
            torch.onnx.export(net, (x,), path, input_names=["image"], output_names=["pred"], dynamo=True, optimize=False)
            export_s = time.perf_counter() - start
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            feed = {"image": x.numpy()}
            got = torch.from_numpy(session.run(None, feed)[0])
            rows.append(("ONNX Runtime (CPU)", f"{export_s:.1f}", (got - eager).abs().max().item(),
                         median_seconds(lambda: session.run(None, feed), args.repeats)))
    print(f"{args.bundle}{' + tiny.json' if args.tiny else ''}, {size} x {size}, batch 1, {args.threads} thread(s)")
    print("| format | export s | max abs diff to eager | s / image |")
    print("|---|---|---|---|")
    for name, export_s, diff, seconds in rows:
        print(f"| {name} | {export_s} | {diff:.1e} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
