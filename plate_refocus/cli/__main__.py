"""``python -m plate_refocus.cli``: the same as the ``plate-refocus`` command."""

import sys

from . import main

sys.exit(main())
