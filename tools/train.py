"""MMAction2-compatible training entry: ``python tools/train.py CONFIG [--validate --seed 0 ...]``.

Errors print their message alone (``--debug`` or ``ACTIONKIT_DEBUG=1``: the traceback); see
:func:`actionkit.cli.run_command`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from actionkit.cli import run_command  # noqa: E402
from actionkit.cli.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_command(main, sys.argv[1:], "train.py"))
