"""The pieces of `tools/fuzz`: the frames it sends (frames.py). Tool code
only: nothing in zmqfail imports it."""
