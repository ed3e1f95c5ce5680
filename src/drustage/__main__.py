"""``python -m drustage``: the command line."""

from drustage.cli import main

raise SystemExit(main())
