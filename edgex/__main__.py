import sys

from edgex.cli import main

sys.exit(main())
