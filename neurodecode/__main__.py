"""``python -m neurodecode`` is the ``neurodecode`` command."""

import sys

from neurodecode.cli import main

if __name__ == "__main__":
    sys.exit(main())
