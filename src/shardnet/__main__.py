import sys

from shardnet.cli import main

sys.exit(main())
