"""The pieces of `tools/bench`: the flows it measures (zmqfail, the bare ZeroMQ
flows, the peers), the client processes that load them, the accounting of what
was acknowledged and how fast, and the process bookkeeping that ends everything
a run started. Benchmark code only: nothing in zmqfail imports it."""
