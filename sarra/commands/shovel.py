"""sr_shovel: see man sr_shovel; the work is done by the shared flow (sarra/flow/engine.py) with the
'shovel' preset of sarra/flow/presets.py."""

import sys

from sarra.commands.consumer import run


def main(argv=None) -> int:
    return run("shovel", argv)


if __name__ == "__main__":
    sys.exit(main())
