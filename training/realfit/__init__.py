"""Real photos with 3D targets: the ICT head fitted to real landmarks (CFP, 300-W).

`annotations` reads the photos and their landmarks, `correspondence` maps each landmark
scheme onto the head, `fitter` fits the head (one photo alone, or one identity across all
of a person's views), `build` writes the cache that `dataset` turns into training batches.
"""
