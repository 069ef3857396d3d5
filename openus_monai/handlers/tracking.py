"""Bundle hyper-parameters and model files into the MLflow run that ``--tracking mlflow`` opens."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ignite.engine import Engine, Events
from monai.handlers import MLFlowHandler

__all__ = ["MLflowExtrasHandler", "find_mlflow_handler"]

logger = logging.getLogger(__name__)


def find_mlflow_handler(engine: Engine) -> MLFlowHandler | None:
    """The :class:`monai.handlers.MLFlowHandler` attached to ``engine`` (``None`` when tracking is off).

    Ignite has no public way to list an engine's handlers, so this reads ``engine._event_handlers`` for the
    bound ``MLFlowHandler.start`` that ``MLFlowHandler.attach`` registers at ``STARTED``.
    """
    for func, _, _ in engine._event_handlers.get(Events.STARTED, []):
        owner = getattr(func, "__self__", None)
        if isinstance(owner, MLFlowHandler):
            return owner
    return None


class MLflowExtrasHandler:
    """Log what MONAI's default MLflow settings leave out: the bundle's hyper-parameters and its model files.

    ``python -m monai.bundle run ... --tracking mlflow`` appends a :class:`monai.handlers.MLFlowHandler` to
    ``train#handlers`` (``max_epochs``/``epoch_length`` as params, the iteration loss, ``lr_group_*`` and
    ``engine.state.metrics`` as metrics, the executed config as artifact). This handler, also listed in
    ``train#handlers``, finds that handler on the engine at ``STARTED`` and then

    - at the first ``EPOCH_STARTED`` (the run exists by then) logs ``params`` (values as strings, a dict as its
      ``str``; keys the run already has are left as they are, so a resumed run does not fail);
    - at ``COMPLETED``, registered at ``STARTED`` so after every checkpoint saver attached before the run
      (the final checkpoint exists), logs each path of ``artifacts`` (file, or folder recursively) under
      ``artifact_path``; a missing path is a warning, not an error, since training itself succeeded.

    Without ``--tracking`` (or on ranks > 0, where MONAI disables its handler) it does nothing.

    Args:
        params: hyper-parameters to record, e.g. ``{"learning_rate": "@learning_rate", ...}`` in a config.
        artifacts: files or folders to upload at the end of training (e.g. ``models/model.pt``).
        artifact_path: folder of the run's artifacts to put them in.
    """

    def __init__(self, params: Mapping[str, Any] | None = None, artifacts: Sequence[str | os.PathLike] | None = None, artifact_path: str = "models") -> None:
        self.params = dict(params or {})
        self.artifacts = [] if artifacts is None else [artifacts] if isinstance(artifacts, (str, os.PathLike)) else list(artifacts)
        self.artifact_path = artifact_path
        self.mlflow: MLFlowHandler | None = None
        self.run_id: str | None = None

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self._started, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self._started)

    def _started(self, engine: Engine) -> None:
        self.mlflow = find_mlflow_handler(engine)
        if self.mlflow is None:
            return
        if not engine.has_event_handler(self._log_params, Events.EPOCH_STARTED):
            engine.add_event_handler(Events.EPOCH_STARTED, self._log_params)
        if not engine.has_event_handler(self._log_artifacts, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self._log_artifacts)

    def _log_params(self, engine: Engine) -> None:
        run = self.mlflow.cur_run if self.mlflow is not None else None
        if run is None or self.run_id == run.info.run_id:
            return
        self.run_id = run.info.run_id
        import mlflow.entities  # only reached with --tracking mlflow, which needs mlflow installed

        logged = self.mlflow.client.get_run(self.run_id).data.params
        params = {k: str(v) for k, v in self.params.items() if k not in logged}
        if params:
            batch = [mlflow.entities.Param(k, v) for k, v in params.items()]
            self.mlflow.client.log_batch(run_id=self.run_id, params=batch)

    def _log_artifacts(self, engine: Engine) -> None:
        if self.mlflow is None or self.run_id is None:
            return
        for path in map(str, self.artifacts):
            if os.path.isfile(path):
                self.mlflow.client.log_artifact(self.run_id, path, self.artifact_path)
            elif os.path.isdir(path):
                self.mlflow.client.log_artifacts(self.run_id, path, self.artifact_path)
            else:
                logger.warning("MLflow artifact %s does not exist; not logged", path)
