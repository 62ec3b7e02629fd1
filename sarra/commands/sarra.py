"""sr_sarra: see man sr_sarra; the work is done by the shared flow (sarra/flow/engine.py) with the
'sarra' preset of sarra/flow/presets.py."""

import sys

from sarra.commands.consumer import run


def main(argv=None) -> int:
    return run("sarra", argv)


if __name__ == "__main__":
    sys.exit(main())
