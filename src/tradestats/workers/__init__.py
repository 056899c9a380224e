"""gunicorn worker classes for ``--server gunicorn`` (servers/gunicorn.py), each fixed where the
stock one fails us; neither is hardened against hostile clients (the README says why).

* ``meinheld.MeinheldWorker``: meinheld's greenlet worker (imported only when chosen).
* ``gthread.ThreadWorker``: gunicorn's thread-pool worker.

Both die with their master (``servers/lifecycle.die_with_master``); gthread answers gunicorn's
own errors as JSON (``json_errors.py``; meinheld parses and answers them itself).
"""
