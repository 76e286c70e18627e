"""Train any registered method: ``python jobs/train.py --method coclr --variant debug [--stage S] [--set k=v]``.

Through Ray: ``ray job submit --working-dir . -- python jobs/train.py --method supervised --variant debug``.
Each phase of the method's schedule trains on Ray Train, logs to MLflow and registers its
encoders as ``<model_name>-<key>@<phase>``; re-submitting resumes. ``--print-config`` shows
the resolved config. See :mod:`pipelines.train.entry`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.train.entry import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
