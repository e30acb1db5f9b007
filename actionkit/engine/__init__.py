"""Training and testing engine: checkpoints (safe load, atomic save), LR schedules, optimizers,
distributed helpers, logging, the training loop, and the training / testing jobs of MMAction2's
``tools/train.py`` / ``tools/test.py`` as functions (:mod:`actionkit.engine.run`; their command lines are in
:mod:`actionkit.cli`).  Submodules are imported on use."""
