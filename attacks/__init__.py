"""comcloak.attacks."""
