"""`python -m harness.cli` = `harness`."""
import sys

from harness.cli import main

sys.exit(main())
