from digitformer.apps.cli import main

raise SystemExit(main())
