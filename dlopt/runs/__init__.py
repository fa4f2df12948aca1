"""`dlopt runs`: find, compare and aggregate finished runs, read from their folders as data.

listing.py reads one run folder into a row (kind, status, overrides, metrics) and formats tables; the sweep
summary (dlopt/summary.py) reads its runs through it too. groups.py aggregates runs by knobs (mean ± sd, Welch's
t-test against the best group, the axis plot); compare.py diffs the resolved configs of a few runs and overlays
their curves. Listing imports neither torch nor numpy.
"""
