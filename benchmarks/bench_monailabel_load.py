"""Load test of a running MONAI Label server: concurrent inference requests per served model.

For each model, one request per image alone gives the reference answers; then ``--requests`` requests over
the same images (round robin), ``--concurrency`` at a time, each timed from sending to the full answer. A
request is correct when its answer equals the reference for its image: the mask PNG byte for byte
(``output=image``), the class probabilities as JSON (``output=json``, MONAI Label's timing field left out).
Prints a Markdown table: model, requests, concurrency, p50, p90 and max seconds, all correct. Start the
server as the README says (``monailabel start_server --app monailabel_app ... --conf models
openus_seg,openus_cls``), then::

    python -m benchmarks.bench_monailabel_load --url http://127.0.0.1:8000 --models openus_seg,openus_cls

The images default to the server's first ``--max-images`` studies (``GET /datastore/?output=all``).
``tests/test_monailabel.py`` runs :func:`load_test` against its own server.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np

TIMEOUT = 300  # s, per request

#: what each model returns for the comparison: a mask image, or class probabilities as JSON
OUTPUTS = {"openus_seg": "image", "openus_cls": "json"}


def infer(url: str, model: str, image: str, output: str) -> tuple[float, bytes]:
    """``POST /infer/<model>?image=<image>&output=<output>``: (seconds to the full answer, the answer).

    For ``output=json`` the answer is the result without MONAI Label's ``latencies`` (different every call),
    re-serialised with sorted keys, so equal results give equal bytes.
    """
    query = urllib.parse.urlencode({"image": image, "output": output})
    req = urllib.request.Request(f"{url}/infer/{model}?{query}", data=b"", method="POST")
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
        body = r.read()
    seconds = time.perf_counter() - start
    if output == "json":
        result = json.loads(body)
        result.pop("latencies", None)
        body = json.dumps(result, sort_keys=True).encode()
    return seconds, body


def load_test(url: str, model: str, images: list[str], requests: int = 20, concurrency: int = 20,
              output: str | None = None) -> dict:
    """``requests`` inference requests of ``model`` over ``images``, ``concurrency`` at a time.

    Returns:
        ``{"model", "requests", "concurrency", "p50", "p90", "max"}`` (seconds per request, client side),
        ``"correct"`` (how many answers equal their image's single-request answer), ``"all_correct"``,
        ``"wrong"`` (the images of the wrong answers) and ``"reference"`` (``{image: answer}``).
    """
    output = output or OUTPUTS.get(model, "json")
    reference = {image: infer(url, model, image, output)[1] for image in images}
    order = [images[i % len(images)] for i in range(requests)]
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(lambda image: infer(url, model, image, output), order))
    seconds = np.array([s for s, _ in results])
    wrong = [image for image, (_, answer) in zip(order, results) if answer != reference[image]]
    return {
        "model": model,
        "requests": requests,
        "concurrency": concurrency,
        "p50": float(np.percentile(seconds, 50)),
        "p90": float(np.percentile(seconds, 90)),
        "max": float(seconds.max()),
        "correct": requests - len(wrong),
        "all_correct": not wrong,
        "wrong": wrong,
        "reference": reference,
    }


def markdown_table(rows: list[dict]) -> str:
    """The results of :func:`load_test` as a Markdown table."""
    lines = [
        "| model | requests | concurrency | p50 s | p90 s | max s | all correct |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['requests']} | {r['concurrency']} | {r['p50']:.3f} | {r['p90']:.3f} | "
            f"{r['max']:.3f} | {'yes' if r['all_correct'] else 'no'} ({r['correct']}/{r['requests']}) |"
        )
    return "\n".join(lines)


def study_ids(url: str, max_images: int) -> list[str]:
    """The first ``max_images`` studies of the server's datastore, sorted."""
    with urllib.request.urlopen(f"{url}/datastore/?output=all", timeout=TIMEOUT) as r:
        objects = json.loads(r.read())["objects"]
    return sorted(objects)[:max_images]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--models", default="openus_seg,openus_cls", help="comma-separated served models")
    parser.add_argument("--images", default="", help="comma-separated study ids (default: the first studies)")
    parser.add_argument("--max-images", type=int, default=4)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    url = args.url.rstrip("/")
    images = [i for i in args.images.split(",") if i] or study_ids(url, args.max_images)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    rows = [load_test(url, model, images, args.requests, args.concurrency) for model in models]
    print(f"{len(images)} images ({', '.join(images)}), {url}\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
