"""Small expressions the bundles' JSON configs evaluate: the run's process count, a selection of metric handlers,
the command-line spelling of "off" for options that can be switched off (:func:`optional`), and the refusal of
encoder options by a network that has no such encoder (:func:`refuse_encoder_options`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ignite import distributed as idist

__all__ = ["OFF_WORDS", "optional", "pick_metrics", "refuse_encoder_options", "set_num_threads", "world_size"]

#: what switches an option off on the command line (MONAI's runner drops ``--key None`` overrides silently)
OFF_WORDS = ("none", "null", "off")


def world_size() -> int:
    """Processes in the run (1 without torch.distributed)."""
    return idist.get_world_size()


def pick_metrics(metrics: Mapping[str, Any], keep: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> dict:
    """Select metric handlers by name, e.g. the key metric (``keep=[name]``) and the others (``exclude=[name]``).

    Args:
        metrics: ``{name: metric handler}`` (a config's metric section).
        keep: the names to keep, in this order (default: all but ``exclude``).
        exclude: the names to leave out.

    Returns:
        the selected ``{name: handler}``.

    Raises:
        ValueError: a name in ``keep`` or ``exclude`` is not in ``metrics`` (lists the available names).
    """
    for name in [*(keep or ()), *exclude]:
        if name not in metrics:
            raise ValueError(f"metric {name!r} is not one of {sorted(metrics)} (check key_metric)")
    names = list(keep) if keep is not None else [k for k in metrics if k not in exclude]
    return {k: metrics[k] for k in names}


def optional(value: Any) -> Any:
    """``value``, or None when it says "off": None, or a string ``none`` / ``null`` / ``off`` (any case).

    ``python -m monai.bundle run ... --max_train_images None`` does nothing: MONAI's runner drops overrides whose
    value is None, so the config's value stays. The configs read every option that can be switched off
    through this function, so that ``--max_train_images none`` (or ``0`` where documented) lifts the limit.
    """
    if isinstance(value, str) and value.strip().lower() in OFF_WORDS:
        return None
    return value


def set_num_threads(num_threads: Any) -> None:
    """``torch.set_num_threads(num_threads)``, unless it is off (see :func:`optional`) or 0: then PyTorch's default stays."""
    import torch

    num_threads = optional(num_threads)
    if num_threads:
        torch.set_num_threads(int(num_threads))


def refuse_encoder_options(network: str, pretrained: Any = None, freeze_encoder: Any = False) -> None:
    """Stop a run that gives encoder options to a network without a (pretrainable) encoder.

    The baseline configs (MONAI's ``BasicUNet``, ``DenseNet121``) evaluate this before building their network,
    so that ``--pretrained FILE`` or ``--freeze_encoder true`` with a baseline is an error rather than silently
    ignored.

    Args:
        network: the network's name, for the message.
        pretrained: the bundle's ``pretrained`` option; empty or "off" (see :func:`optional`) is accepted.
        freeze_encoder: the bundle's ``freeze_encoder`` option; false (or ``"false"``) is accepted.

    Raises:
        ValueError: ``pretrained`` names a file, or ``freeze_encoder`` is true.
    """
    if optional(pretrained) not in (None, ""):
        raise ValueError(
            f"pretrained={pretrained!r} was given, but {network} (a baseline config) has no pretrained encoder to load it "
            "into; leave pretrained empty with this config, or drop the baseline config to fine-tune the OpenUS encoder"
        )
    if str(freeze_encoder).strip().lower() in ("true", "yes", "1"):
        raise ValueError(f"freeze_encoder is set, but {network} (a baseline config) has no separate encoder to freeze")
