"""The training runtime shared by every method.

``optim`` (optimiser, parameter groups, LR schedule), ``checkpoint`` (atomic weights-only
states), ``loop`` (the per-worker loop in small steps with hooks and report sinks),
``runtime`` (Ray Train entry point, ``fit``) and ``phases`` (multi-phase
schedules: skip/resume, encoder hand-off through MLflow, registration).
"""
