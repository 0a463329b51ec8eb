"""The estimators behind the three targets: ``exact`` (ideal), ``aer`` (fake backends with noise),
``runtime`` (IBM Quantum and its local testing mode), and the PUB plumbing they share."""
