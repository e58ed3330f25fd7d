"""A toy comcloak plugin: a float64 backend and a tiny classifier, registered through entry points."""
