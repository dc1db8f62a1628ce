"""One module per step kind (registry.py maps `kind:` to the Step class); base.py is what a step is."""
