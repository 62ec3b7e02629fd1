"""sr_report: see man sr_report; the work is done by the shared flow (sarra/flow/engine.py) with the
'report' preset of sarra/flow/presets.py."""

import sys

from sarra.commands.consumer import run


def main(argv=None) -> int:
    return run("report", argv)


if __name__ == "__main__":
    sys.exit(main())
