"""`python -m camid` entry point."""

from __future__ import annotations

import sys

from camid.cli import main

if __name__ == "__main__":
    sys.exit(main())
