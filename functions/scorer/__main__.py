import sys

from functions.scorer.server import prefork, serve

sys.exit(serve(prefork()))
