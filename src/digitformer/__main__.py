from digitformer.cli import main

raise SystemExit(main())
