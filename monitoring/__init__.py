"""The batch side of monitoring: the request store, drift statistics, reports and the retrain cooldown.

Flows run it; the service only writes to the request store. It never imports ``serving``.
"""
