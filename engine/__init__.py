"""comcloak.engine."""
