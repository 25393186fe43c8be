"""The event-display sink: a CloudEvents receiver that logs every event (score replies, dead letters) as a JSON
line and appends it to ``EVENT_DISPLAY_FILE``. Run it with ``python -m functions.event_display``."""

from functions.event_display.records import sink_events_path
from functions.event_display.server import prefork, serve

__all__ = ["prefork", "serve", "sink_events_path"]
