"""The load generator behind ``zmqfail client bench``.

Pure parts (histogram, order mix, outage extraction, result merging, history
merging) are kept apart from the parts that own sockets and processes
(``worker``, ``runner``) so that the figures a bench reports can be tested
without a cluster.
"""
