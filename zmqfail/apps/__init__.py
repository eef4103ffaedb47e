"""Applications shipped with zmqfail: the order engine (the default) and a ledger.

Each is a package whose ``create(settings)`` builds the application (see
``zmqfail.app``) and whose ``workload(settings, seed)`` builds the request mix
the bench and the demo send. Nothing else in zmqfail knows them by name except
``zmqfail.app.SHIPPED``.
"""
