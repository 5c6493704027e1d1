"""`python -m slimcore`: the same CLI as the `slimcore` script (torchrun needs a module)."""

import sys

from .commands.cli import main

sys.exit(main())
