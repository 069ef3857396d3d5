"""Find a bundle's folder whether it runs from its own directory or from the repository root."""

from __future__ import annotations

from pathlib import Path

__all__ = ["resolve_bundle_root"]

_REPO_BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def _is_bundle(folder: Path, name: str) -> bool:
    return folder.name == name and (folder / "configs" / "metadata.json").is_file()


def resolve_bundle_root(name: str, start: str | Path | None = None) -> str:
    """The folder of bundle ``name``: the working directory if it is the bundle, else ``./bundles/name``,
    else ``./name``, else the copy beside this package in a source checkout.

    Args:
        name: the bundle's folder name, e.g. ``"openus_seg"``.
        start: where to start looking (default: the working directory).

    Raises:
        FileNotFoundError: none of those places holds the bundle (pass ``--bundle_root`` explicitly).
    """
    cwd = Path(start or Path.cwd()).resolve()
    candidates = [cwd, cwd / "bundles" / name, cwd / name, _REPO_BUNDLES / name]
    for folder in candidates:
        if _is_bundle(folder, name):
            return str(folder)
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"bundle {name!r} not found (looked in {looked}); pass --bundle_root PATH")
