"""Symbols sharded over several tradestats nodes behind HAProxy (README, "Cluster").

placement.py: which node owns a symbol (the rule every node and the HAProxy configuration share);
move.py: moving a symbol between nodes while serving; haproxy.py: the HAProxy configuration;
cli.py: ``tradestats-cluster``.
"""
