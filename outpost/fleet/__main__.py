"""python -m outpost.fleet up|down|status [--inventory inventory.toml]"""
import argparse
import os
import sys
from pathlib import Path

from outpost.errors import OutpostError
from outpost.fleet import from_inventory
from outpost.inventory import load as load_inventory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m outpost.fleet",
                                     description="Start, stop or list the local fleet's hosts.")
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--inventory", type=Path,
                        default=Path(os.environ.get("OUTPOST_INVENTORY", "inventory.toml")))
    args = parser.parse_args(argv)
    try:
        fleet = from_inventory(load_inventory(args.inventory))
        if args.command == "up":
            started = fleet.up()
            print(f"started: {', '.join(started) or 'none (all up)'}")
        elif args.command == "down":
            stopped = fleet.down()
            print(f"stopped: {', '.join(stopped) or 'none (all down)'}")
        else:
            for host in fleet.hosts.values():
                print(f"{host.name}\t{host.address}\t{'up' if fleet.is_up(host.name) else 'down'}")
    except OutpostError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
