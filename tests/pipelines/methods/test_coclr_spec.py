"""CoCLR's presets follow the authors' README: LR steps per phase, epochs, batch and workers."""

from pipelines.config import apply_overrides
from pipelines.methods import get_method
from pipelines.train.optim import lr_factor


def test_phases_step_the_lr_as_the_authors_and_the_demo_keeps_it_constant():
    spec = get_method("coclr")
    ucf = spec.variants["ucf101"]()
    assert (ucf.loop.batch_size, ucf.scaling.num_workers, ucf.scaling.use_gpu) == (32, 4, True)
    phases = {p.name: p for p in spec.phases(ucf)}
    init = apply_overrides(ucf.optim, phases["infonce_rgb"].optim_overrides)
    cycle = apply_overrides(ucf.optim, phases["coclr_rgb_c2"].optim_overrides)
    assert (init.schedule, init.milestones, phases["infonce_rgb"].epochs) == ("step", (250, 280), 300)
    assert (cycle.milestones, phases["coclr_rgb_c2"].epochs) == ((80,), 100)
    assert [lr_factor(e * 10, 10, 300, init) for e in (249, 250, 280)] == [1.0, 0.1, 0.1 ** 2]
    k400 = {p.name: p for p in spec.phases(spec.variants["k400"]())}
    assert (k400["infonce_flow"].epochs, k400["coclr_rgb_c1"].epochs) == (300, 50)
    assert apply_overrides(ucf.optim, k400["coclr_rgb_c1"].optim_overrides).milestones == (40,)
    assert all(not p.optim_overrides for p in spec.phases(spec.variants["demo"]()))
