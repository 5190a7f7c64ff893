"""``python -m aoti_cy``: the command line lives in :mod:`aoti_cy.cli`."""

import sys

from aoti_cy.cli import main

if __name__ == "__main__":
    sys.exit(main())
