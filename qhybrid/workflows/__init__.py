"""Jobs that combine the rest: the demo, quantum-vs-classical comparisons and the data-scarcity
sweep, noisy evaluation on fake backends, sampling runs on IBM Quantum with job records, doctor."""
