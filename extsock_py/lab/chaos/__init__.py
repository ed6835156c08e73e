"""`make chaos`: a seeded schedule of faults of every kind against extsock managing two
connections that share gateways, with invariants checked all the time (issue 26).

Pure parts: `schedule` (the faults), `invariants` (the checks on samples), `summary` (the
text report). Lab parts: `runner` (faults, samples, traffic), `timeline` (the PNG), `cli`.
"""
