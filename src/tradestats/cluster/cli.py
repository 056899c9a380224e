"""``tradestats-cluster``: a local cluster of tradestats nodes behind HAProxy, the HAProxy
configuration for a real one, and moving a symbol between nodes (README, "Cluster").

    tradestats-cluster up --nodes 3 --port 9000 --data-dir DIR     # in the foreground
    tradestats-cluster haproxy-config --node node1=http://10.0.0.1:8000 --node ...
    tradestats-cluster move AAPL --to node2 --data-dir DIR
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tradestats.cluster.haproxy import DEFAULT_MAX_BODY_BYTES, haproxy_config
from tradestats.cluster.placement import Placement

#: Options of ``up`` handed to every node as they are, with the cluster's defaults: a node of a
#: cluster holds a few dozen symbols (the server's own default is 10), and one worker each
#: keeps a local trial of several nodes within a small machine's cores.
NODE_OPTIONS = {
    "--max-symbols": ("50", "symbols per node"),
    "--max-k": (None, "largest window 10^max_k (node default 8)"),
    "--max-batch": (None, "most values in one batch (node default 10000)"),
    "--workers": ("1", "worker processes per node"),
    "--api-key-file": (None, "every node's API key file"),
    "--sync": (None, "sync every batch to disk (1/0)"),
    "--log-level": (None, "the nodes' log level"),
    "--access-log": (None, "the nodes' access logs (1/0)"),
}


def parse_node(text: str) -> tuple[str, str]:
    name, equals, url = text.partition("=")
    if not equals or not name or not url:
        raise argparse.ArgumentTypeError(f"expected NAME=URL, not {text!r}")
    return name, url


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def port_number(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1..65535, not {value}")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="tradestats-cluster", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="run a local cluster in the foreground (Ctrl-C stops it)")
    up.add_argument("--nodes", type=positive,
                    help="number of nodes node1..nodeN (needed the first time; then "
                         "DIR/placement.json decides)")
    up.add_argument("--port", type=port_number, required=True,
                    help="HAProxy's port; new nodes listen on the next ones (PORT+1..PORT+N)")
    up.add_argument("--data-dir", type=Path, required=True,
                    help="the cluster's directory: placement, configuration, logs, each "
                         "node's data")
    up.add_argument("--host", default="127.0.0.1", help="address HAProxy listens on")
    up.add_argument("--restart-delay", type=float, default=1.0, metavar="SECONDS",
                    help="wait before restarting a node that died (default 1; longer after "
                         "quick deaths in a row)")
    up.add_argument("--max-body-bytes", type=positive, default=DEFAULT_MAX_BODY_BYTES,
                    help="largest /add_batch/ body (nodes and HAProxy)")
    for flag, (default, meaning) in NODE_OPTIONS.items():
        given = f"default {default}; " if default is not None else ""
        up.add_argument(flag, default=default, help=f"{meaning} ({given}passed to each node)")

    config = commands.add_parser("haproxy-config",
                                 help="print the HAProxy configuration of a real deployment")
    nodes = config.add_mutually_exclusive_group(required=True)
    nodes.add_argument("--node", type=parse_node, action="append", metavar="NAME=URL",
                       help="a node, in rule order (repeat for each)")
    nodes.add_argument("--placement", type=Path, help="a placement.json to take the nodes from")
    config.add_argument("--bind", default=":80", help="what HAProxy listens on (default :80)")
    config.add_argument("--maps-dir", type=Path, default=Path("/etc/haproxy/tradestats"),
                        help="where the maps (and placement.json) live (default "
                             "/etc/haproxy/tradestats)")
    config.add_argument("--stats-socket", type=Path,
                        help="HAProxy's runtime API socket, through which a move switches a "
                             "symbol's route (default MAPS_DIR/haproxy.sock)")
    config.add_argument("--user", default="haproxy",
                        help="user and group HAProxy drops to ('' for none)")
    config.add_argument("--log", default="/dev/log", help="where HAProxy logs ('' for nowhere)")
    config.add_argument("--max-body-bytes", type=positive, default=DEFAULT_MAX_BODY_BYTES,
                        help="the nodes' --max-body-bytes")
    config.add_argument("--write-maps", action="store_true",
                        help="also write MAPS_DIR/placement.json and its maps (not over an "
                             "existing placement.json: pass it as --placement)")

    move = commands.add_parser("move", help="move a symbol to another node while serving")
    move.add_argument("symbol")
    move.add_argument("--to", required=True, metavar="NAME", help="the node to move it to")
    move.add_argument("--data-dir", type=Path, required=True,
                      help="the cluster's directory (holding placement.json and haproxy.sock)")
    return top


def fail(message: str, status: int = 2) -> int:
    print(f"tradestats-cluster: {message}", file=sys.stderr)
    return status


def print_config(args: argparse.Namespace) -> int:
    try:
        placement = Placement.read(args.placement) if args.placement else Placement(args.node)
        maps_dir = args.maps_dir.absolute()
        text = haproxy_config(placement, bind=args.bind, maps_dir=maps_dir,
                              stats_socket=args.stats_socket or maps_dir / "haproxy.sock",
                              user=args.user or None, log=args.log or None,
                              max_body_bytes=args.max_body_bytes)
    except (OSError, ValueError, KeyError) as error:
        return fail(str(error))
    if args.write_maps:
        target = maps_dir / "placement.json"
        if args.node and target.exists():
            return fail(f"{target} exists (with its overrides): pass it as --placement")
        maps_dir.mkdir(parents=True, exist_ok=True)
        placement.write(target)
    sys.stdout.write(text)
    return 0


def move(args: argparse.Namespace) -> int:
    data_dir = args.data_dir.absolute()
    if not (data_dir / "placement.json").exists():
        return fail(f"no cluster in {data_dir} (no placement.json)")
    from tradestats.cluster.move import move_symbol  # only this command needs it
    try:
        print(move_symbol(data_dir, args.symbol, args.to))
    except (OSError, ValueError, KeyError) as error:
        return fail(str(error), 1)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "up":
        from tradestats.cluster.local import run_local_cluster
        return run_local_cluster(args)
    if args.command == "haproxy-config":
        return print_config(args)
    return move(args)


if __name__ == "__main__":
    sys.exit(main())
