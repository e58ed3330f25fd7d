"""comcloak.codecs."""
