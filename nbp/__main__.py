"""`python -m nbp`: the same command line as `nbp`."""
import sys

from nbp.cli import main

sys.exit(main())
