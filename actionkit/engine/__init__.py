"""Training and testing engine: checkpoints (safe load, atomic save), LR schedules, optimizers,
distributed helpers, logging, the training loop and the MMAction2 ``tools/train.py`` / ``tools/test.py``
command lines (:mod:`actionkit.engine.entry`).  Submodules are imported on use."""
