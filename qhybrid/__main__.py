"""``python -m qhybrid ...`` (and ``torchrun ... -m qhybrid train ...``): the ``qhybrid`` command."""

import sys

from qhybrid.cli import main

if __name__ == "__main__":
    sys.exit(main())
