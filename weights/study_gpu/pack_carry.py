"""Pack what the device call needs into ``.gpu/`` (ignored by git; the call carries it): the corpus's kept images as
JPEG (quality 92), longest side at most 384 px, with a datalist of relative paths, and BUSI's images (at most
160 px) with its labels.csv for the k-NN monitor. The sizes and the lossy format are the 64 MiB transfer limit's:
the PNGs at 384 px alone are 69 MB. Every view is resized to 128 or 64 px in training, the monitor's to 128 px.

    python weights/study_gpu/pack_carry.py runs/corpus ../shared/data/busi .gpu
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from PIL import Image

MAX_SIDE = 384


def shrink(src: Path, dst: Path, max_side: int = MAX_SIDE) -> None:
    """Copy an 8-bit image to JPEG (quality 92), downscaled (never upscaled) so its longest side is at most ``max_side``."""
    image = Image.open(src)
    image.load()
    scale = max_side / max(image.size)
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BOX)
    dst.parent.mkdir(parents=True, exist_ok=True)
    image.save(dst, quality=92)


def main(corpus: str, busi: str, out: str) -> None:
    corpus_dir, busi_dir, out_dir = Path(corpus), Path(busi), Path(out)
    data = json.loads((corpus_dir / "datalist.json").read_text())
    entries = []
    for i, entry in enumerate(data["pretraining"]):
        name = f"images/{entry['source']}/{i:05d}.jpg"
        shrink(corpus_dir / entry["image"], out_dir / "corpus" / name)
        entries.append({"image": name, "source": entry["source"]})
    (out_dir / "corpus" / "datalist.json").write_text(json.dumps({"pretraining": entries, "sources": data["sources"]}, indent=1))
    with open(busi_dir / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        source, row["image"] = busi_dir / row["image"], str(Path(row["image"]).with_suffix(".jpg"))
        shrink(source, out_dir / "busi_monitor" / row["image"], max_side=160)
    with open(out_dir / "busi_monitor" / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "label", "split"])
        writer.writeheader()
        writer.writerows({k: row[k] for k in ("image", "label", "split")} for row in rows)
    print(f"{len(entries)} corpus images, {len(rows)} BUSI images -> {out_dir}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
