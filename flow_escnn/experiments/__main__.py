"""``python -m flow_escnn.experiments``: see :mod:`flow_escnn.experiments._cli`."""
import sys

from flow_escnn.experiments._cli import main

if __name__ == "__main__":
    sys.exit(main())
