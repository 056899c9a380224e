"""What serves HTTP: each module here wraps the WSGI app (web/) in one server, and nothing else.

* ``granian.py`` (the default): granian, a Rust HTTP/1.1 and HTTP/2 server (hyper) with TLS,
  worker processes and respawn; hardened against hostile clients (tests/test_http_hostile.py).
* ``gunicorn.py`` (``--server gunicorn``): gunicorn with meinheld or gthread workers, as the
  design first named it; safe only behind a buffering proxy (the README says why).

Both call ``ServeSettings.create_app`` inside each worker, so every worker maps the data
directory itself, and both make every worker die with its master (``lifecycle.py``).
"""
