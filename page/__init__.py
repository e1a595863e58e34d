"""The page's own pieces beside app.py: what it says about its model (about), many photos at once (batch),
visitors' corrections (feedback), who a visitor is and their limits (ratelimit), only uploaded files opened
(uploads), memory handed back after bursts (resources), and a clean stop on SIGTERM (shutdown).

They build on the `cnn` library and ship with the app (a clone, a Space), not with `pip install .`.
"""
