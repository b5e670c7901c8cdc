"""``python -m annoloop``: the client's verbs, for machines with the client alone."""

import sys

from annoloop.client.cli import main

sys.exit(main())
