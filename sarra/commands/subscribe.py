"""sr_subscribe: see man sr_subscribe; the work is done by the shared flow (sarra/flow/engine.py) with the
'subscribe' preset of sarra/flow/presets.py."""

import sys

from sarra.commands.consumer import run


def main(argv=None) -> int:
    return run("subscribe", argv)


if __name__ == "__main__":
    sys.exit(main())
