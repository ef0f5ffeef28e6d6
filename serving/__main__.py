"""`python -m serving FLAGS` is `rnnkit serve FLAGS` without the rest of rnnkit."""

import sys

from serving.command_line import main

if __name__ == "__main__":
    sys.exit(main())
