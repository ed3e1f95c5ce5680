"""``python -m drustage.cli``: the command line."""

from drustage.cli import main

raise SystemExit(main())
