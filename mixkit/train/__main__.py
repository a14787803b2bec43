"""``python -m mixkit.train`` (and ``accelerate launch -m mixkit.train``)."""
import sys

from . import main

sys.exit(main())
