import sys

from keyline_client.cli import main

sys.exit(main())
