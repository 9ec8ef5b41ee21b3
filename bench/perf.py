"""`plugserve bench` as a script: `python bench/perf.py --model super_resolution --concurrency 1:8`.

The harness lives in plugserve.perf (package; see `plugserve bench --help`); this file keeps the entry
point next to locustfile.py for those who look for benchmarks under bench/.
"""

import sys

from plugserve.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
