"""``python -m tradestats``: the same as ``tradestats-serve``."""
from tradestats.server import main

main()
