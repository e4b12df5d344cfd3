"""`python -m edge_runtime` is `edge-classify`."""

from .cli import main

raise SystemExit(main())
