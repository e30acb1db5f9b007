"""MMAction2-compatible training entry: ``python tools/train.py CONFIG [--validate --seed 0 ...]``."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from actionkit.engine.entry import train_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(train_main(sys.argv[1:]) or 0)
