"""sr_winnow: see man sr_winnow; the work is done by the shared flow (sarra/flow/engine.py) with the
'winnow' preset of sarra/flow/presets.py."""

import sys

from sarra.commands.consumer import run


def main(argv=None) -> int:
    return run("winnow", argv)


if __name__ == "__main__":
    sys.exit(main())
