from runhistory.service.cli import main

raise SystemExit(main())
