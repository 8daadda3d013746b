"""Sample-quality metrics for GANs.

`scores`: Fréchet distance, KID, precision/recall, memorisation, class coverage,
each with its spread, on (N, D) features; `distances`: blockwise nearest neighbours.
"""

from jaxgan.evaluation.distances import inside_any_ball, kth_neighbour_sq_radius, nearest_neighbours
from jaxgan.evaluation.scores import (ClassCoverage, Memorisation, PrecisionRecall, Score,
                                      class_coverage, flatten_pixels, frechet_distance,
                                      frechet_distance_from_stats, frechet_distance_with_spread,
                                      gaussian_stats, kernel_inception_distance, memorisation,
                                      memorisation_pixels, memorisation_threshold,
                                      polynomial_kernel, precision_recall)
