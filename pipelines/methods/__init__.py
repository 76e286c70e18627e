"""Method specs (:mod:`pipelines.methods.spec`), one module per method, registered here.

Adding a method: its ``vidmodels`` module, its recipe, a spec module here, and one line below.
"""

from pipelines.methods import coarse_fine, coclr, detection, dpc, memdpc, supervised
from pipelines.methods.spec import METHODS, MethodSpec, Phase, TrainJob, get_method, register

__all__ = ["METHODS", "MethodSpec", "Phase", "TrainJob", "get_method", "register"]

register(coclr.SPEC)
register(supervised.SPEC)
register(dpc.SPEC)
register(memdpc.SPEC)
register(detection.SPEC)
register(coarse_fine.SPEC)
