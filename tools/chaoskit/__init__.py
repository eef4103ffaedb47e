"""The pieces of `tools/chaos`: the seeded schedule of faults, the faults
done to real node processes, the campaign that runs them under `zmqfail
client bench` load, and the table of what each kind of fault cost. The
verdict itself is the library's run checker (zmqfail/runcheck.py), shared
with the process tests. Campaign code only: nothing in zmqfail imports it."""
