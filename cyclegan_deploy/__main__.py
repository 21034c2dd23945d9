import sys

from cyclegan_deploy.cli import main

sys.exit(main())
