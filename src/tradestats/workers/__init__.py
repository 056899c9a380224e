"""gunicorn worker classes as tradestats runs them, each fixed where the stock one fails us.

* ``buffered.BufferedWorker`` (the default): gunicorn's gthread loop without its threads; reads
  each request whole before serving it and writes without blocking (``framing.py`` tells when a
  request is whole). Hardened against hostile clients; stops on every signal without a hang.
* ``meinheld.MeinheldWorker``: meinheld's greenlet worker (imported only when chosen).

Both die with their master (``lifecycle.die_with_master``), so no worker outlives it.
"""
