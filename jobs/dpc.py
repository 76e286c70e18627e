"""DPC on Ray: ``ray job submit --working-dir . -- python jobs/dpc.py --variant demo``.

Runs the whole schedule (per stream, RGB then flow: 5pred3, then 4pred4 from it) or one
phase with ``--stage NAME``; the same as ``jobs/train.py --method dpc``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.train.entry import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(method="dpc"))
