"""gunicorn worker classes as tradestats runs them, each fixed where the stock one fails us.

* ``gthread.ThreadWorker``: gunicorn's threaded worker, stopping on every signal without a hang.
* ``meinheld.MeinheldWorker``: meinheld's greenlet worker (imported only when chosen).

Both die with their master (``lifecycle.die_with_master``), so no worker outlives it.
"""
