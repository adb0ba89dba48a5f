import sys

from facerecon.server.main import main

sys.exit(main())
