"""``python -m orchestra``: the ``orchestra`` command."""

import sys

from orchestra.transport.cli import main

sys.exit(main())
