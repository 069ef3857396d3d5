"""benchmarks/monitor_table.py: the pretraining monitor read back from a bundle log."""

from __future__ import annotations

import pytest

from benchmarks.monitor_table import monitor_table, read_monitor

LOG = """\
2026-12-04 13:59:31,509 - INFO - Epoch[1] Metrics -- epoch_loss_cls: 6.6700 epoch_loss_patch: 5.4000 monitor_entropy_ratio: 0.7900 monitor_feature_std: 1.2e-03
2026-12-04 13:59:38,262 - openus_monai.handlers.representation_monitor - INFO - epoch 2: knn_acc 0.5622
2026-12-04 13:59:38,263 - INFO - Epoch[2] Metrics -- epoch_loss_cls: 1.1800 monitor_knn_acc: 0.5622
2026-12-04 13:59:40,000 - INFO - Epoch[2] Metrics -- epoch_loss_cls: 1.2500 monitor_knn_acc: 0.5622
2026-12-04 13:59:45,000 - INFO - Epoch[3] Metrics -- epoch_loss_cls: 4.6800
"""


def test_reads_epochs_and_knn_last_record_wins(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(LOG)
    epochs, knn = read_monitor(log)
    assert epochs[1]["epoch_loss_patch"] == 5.4 and epochs[1]["monitor_feature_std"] == pytest.approx(1.2e-3)
    assert epochs[2]["epoch_loss_cls"] == 1.25  # a resumed run's repeat of epoch 2
    assert knn == {2: 0.5622}
    rows = monitor_table(log, every=2).splitlines()
    assert [r.split(" | ")[0] for r in rows[2:]] == ["| 1", "| 2", "| 3"]  # first, every 2nd, last
    assert rows[3].endswith("| 0.562 |") and rows[4].endswith("| - |")
    assert "| 6.67 | 5.40 | - | 0.79 |" in rows[2]


def test_refuses_a_log_without_metrics(tmp_path):
    log = tmp_path / "other.log"
    log.write_text("nothing here\n")
    with pytest.raises(ValueError, match="other.log"):
        monitor_table(log)
