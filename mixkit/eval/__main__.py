"""``python -m mixkit.eval``: the same as the ``mixkit-eval`` console script."""

import sys

from .cli import main

sys.exit(main())
