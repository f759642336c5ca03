"""``python -m orchestra``: the ``orchestra`` command."""

import sys

from orchestra.console import main

sys.exit(main())
