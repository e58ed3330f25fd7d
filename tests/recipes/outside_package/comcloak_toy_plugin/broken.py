"""A plugin that fails to import: comcloak must leave it out with one warning and go on."""

raise RuntimeError("comcloak_toy_plugin.broken is broken on purpose")
