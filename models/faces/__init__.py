"""Face models (detector with landmarks, recogniser) as torch modules; see docs/faces.md."""
