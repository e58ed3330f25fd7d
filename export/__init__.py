"""comcloak.export."""
