"""What the tests and the benchmarks run on: private services (Redis, PostgreSQL databases),
deployments of real worker processes, the chaos cluster and its scenarios, a CPU hog.

Not part of the installed package; imported from the checkout by ``tests`` and ``bench``.
"""
