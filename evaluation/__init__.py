"""comcloak.evaluation: the three protocols side by side — paper (224x224, the published setting), archive
(full-resolution cloak, platform chains) and platform (profiles and attacker views, the one protection is judged by)
— with their reports, plots and the demo's comparison sheet (docs/DESIGN.md §3)."""
