"""Ray Tune sweeps over any registered method: ``jobs/tune.py --method M --num-samples N``.

- :mod:`~pipelines.tune.space`: search spaces over dotted config keys (typed domains, their
  ``--space`` text form, ``MethodSpec.sweep`` defaults);
- :mod:`~pipelines.tune.trial`: one trial, a Tune function trainable that runs the method's
  phases (:func:`pipelines.train.phases.run_phases`) with epoch-end reports forwarded to Tune;
- :mod:`~pipelines.tune.sweep`: the driver (settings, Tuner or ``Tuner.restore``, the MLflow
  parent run, the callback that cleans up after stopped trials);
- :mod:`~pipelines.tune.schedulers`: ASHA whose rungs survive a restore, HyperBand and PBT,
  on the epochs a trial has trained;
- :mod:`~pipelines.tune.pbt`: a PBT trial, one phase trained in the trial's process with
  checkpoints reported to Tune, restarted from a donor's checkpoint under its own values;
- :mod:`~pipelines.tune.results`: how each trial ended, the results, the best trial;
- :mod:`~pipelines.tune.prune`: after the sweep, the checkpoints nothing will read are deleted;
- :mod:`~pipelines.tune.tracking`: MLflow parent/child bookkeeping and ``@best`` in the registry;
- :mod:`~pipelines.tune.resources`: concurrency from the cluster's CPUs, and the release of
  what a stopped trial leaves behind (its Train worker group's placement group).

Submodules are imported where used: a method's spec module imports :mod:`.space`, and
importing the rest here would import the method registry from inside itself. User guide:
``docs/tuning.md``.
"""
