import sys

from functions.event_display import prefork, serve

sys.exit(serve(prefork()))
