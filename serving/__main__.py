"""`python -m serving FLAGS` is `rnnkit serve FLAGS`: one CLI, one logging setup."""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
