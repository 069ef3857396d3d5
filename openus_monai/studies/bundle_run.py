"""One study run in a process of its own: train a bundle, then evaluate it, in one Python start.

``python -m openus_monai.studies.bundle_run SPEC.json`` reads ``{"bundle_root", "steps": [{"config_files":
[...]}, ...], "overrides": {...}}`` and runs each step as a bundle workflow
(:func:`~openus_monai.studies.label_efficiency.run_bundle_workflow`), as ``python -m monai.bundle run`` would
with the same files and overrides, but paying the imports once for training and evaluation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .label_efficiency import run_bundle_workflow


def main(argv: list[str] | None = None) -> None:
    """Run the steps of the spec file named by the one argument."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m openus_monai.studies.bundle_run SPEC.json")
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    root = Path(spec["bundle_root"])
    logging_conf = root / "configs" / "logging.conf"
    for step in spec["steps"]:
        run_bundle_workflow(root, step["config_files"], spec["overrides"],
                            logging_file=str(logging_conf) if logging_conf.is_file() else None)


if __name__ == "__main__":
    main()
