"""comcloak.models."""
