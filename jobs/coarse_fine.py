"""Coarse-Fine Networks on Ray: ``ray job submit --working-dir . -- python jobs/coarse_fine.py --variant debug``.

Runs the two-stage schedule (:mod:`pipelines.methods.coarse_fine`): optional classification pretraining
of the X3D (``pretrain_epochs``), stage 1 (the Coarse stream with Grid Pool alone, the Fine stream
alone), stage 2 (both, fused, new fusion layers at 10x LR; ``--set method.freeze_fine=true`` freezes
the Fine stream), then scores the registered X3D, Coarse-only and Coarse-Fine models on whole test
videos (25-point MAP / WAP, every-frame mAP). ``--set method.mode=fine_fine`` trains the Fine-Fine
baseline instead. The same as ``jobs/train.py --method coarse_fine``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.train.entry import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(method="coarse_fine"))
