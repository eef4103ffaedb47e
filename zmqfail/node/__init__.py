"""The I/O shell around the pure core: sockets, poll loop, files, signals."""
