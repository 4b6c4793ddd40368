import sys

from jaxnets_cli.main import main

sys.exit(main())
