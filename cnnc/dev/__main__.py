import sys

from .harness import make_parser, run

sys.exit(run(make_parser().parse_args()))
