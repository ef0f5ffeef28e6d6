"""rnnkit's user-facing layer: the `rnnkit` command line and the web page."""
