"""The Falcon WSGI layer, one module per concern:

* ``app``: ``create_app``, the wiring;
* ``resources``: the endpoints;
* ``inputs``: parsing and validating requests;
* ``errors``: ``{"detail"}`` errors.
"""
from tradestats.web.app import create_app

__all__ = ["create_app"]
