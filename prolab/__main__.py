import sys

from prolab.cli import main

sys.exit(main())
