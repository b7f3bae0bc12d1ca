"""``python -m se_viz.dataset DIR --out OUT``: ``se-viz analyze``, as a module that
``python -m paddle.distributed.launch ... -m se_viz.dataset`` can start on every rank.

An entry point, not a layer: it only hands its arguments to the command line.
"""

import sys

if __name__ == "__main__":  # not when a spawned decode worker imports this module
    from se_viz.cli import main

    sys.exit(main(["analyze", *sys.argv[1:]]))
