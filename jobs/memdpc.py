"""MemDPC on Ray: ``ray job submit --working-dir . -- python jobs/memdpc.py --variant demo``.

Runs the whole schedule (one 5pred3 phase per stream, RGB then flow) or one phase with
``--stage NAME``; the same as ``jobs/train.py --method memdpc``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.train.entry import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(method="memdpc"))
