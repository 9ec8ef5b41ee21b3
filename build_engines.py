#!/usr/bin/env python3
"""Build model_repository/ from models.yaml: the same as `plugserve build` (see `--help`)."""

import sys

from plugserve.cli import main

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]]))
