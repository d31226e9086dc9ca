"""``python -m cli``: the ``popularity`` command without its console script."""

import sys

from cli.main import main

sys.exit(main())
