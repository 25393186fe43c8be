import sys

from functions.trainer.cli import main

sys.exit(main())
