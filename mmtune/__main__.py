"""`python -m mmtune` is the `mmtune` command."""

import sys

from mmtune.cli.main import main

sys.exit(main())
