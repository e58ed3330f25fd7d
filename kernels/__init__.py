"""comcloak.kernels."""
