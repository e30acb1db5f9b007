"""MMAction2-compatible test entry: ``python tools/test.py CONFIG CKPT --eval mAP --out results.csv``."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from actionkit.engine.entry import test_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(test_main(sys.argv[1:]) or 0)
