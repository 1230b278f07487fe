"""``python -m ardiq``: see :mod:`ardiq._cli`."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
