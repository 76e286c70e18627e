"""Detection pretraining, finetuning and Charades evaluation on Ray:
``ray job submit --working-dir . -- python jobs/detection.py --variant debug``.

Runs the schedule of ``--set policy=...`` (``cls``, ``single``, ``joint`` (default), ``ensemble``,
``freeze``, ``mixup``, ``cutmix`` or ``none``): each pretraining phase, then its finetuning, then
scores the registered detectors on whole test videos (25-point MAP / WAP, every-frame mAP,
logged with per-class AP bars and timelines). The same as ``jobs/train.py --method detection``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.train.entry import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(method="detection"))
