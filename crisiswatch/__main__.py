"""`python -m crisiswatch` is the `crisiswatch` command."""

from crisiswatch.cli import main

raise SystemExit(main())
