"""`python -m tusingest` runs the command line."""

from tusingest.cli import main

raise SystemExit(main())
