"""`python -m cbatch.admin`: the `cbatch` command."""

import sys

from cbatch.admin.cli import main

sys.exit(main())
