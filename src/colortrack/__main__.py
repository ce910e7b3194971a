from colortrack.cli import main

raise SystemExit(main())
