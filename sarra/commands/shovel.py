"""sr_shovel: see man sr_shovel; the work is done by the shared flow (sarra/flow.py) with the
'shovel' preset of sarra/components.py."""

import sys

from sarra.commands.consumer import run


def main(argv=None) -> int:
    return run("shovel", argv)


if __name__ == "__main__":
    sys.exit(main())
