"""Sample-quality metrics for GANs and the feature extractors they run on.

`scores`: Fréchet distance, KID, precision/recall, memorisation, class coverage,
each with its spread, on (N, D) features. `report.quality_report`: all of them
for generated images through any extractor (interface in `report`), with floors
(held-out real images) and ceilings (noise). `inception`: FID's InceptionV3 and
its weights loader; `convert_inception`: the one-time weight conversion.
"""

from jaxgan.evaluation.distances import inside_any_ball, kth_neighbour_sq_radius, nearest_neighbours
from jaxgan.evaluation.inception import (FIDInceptionV3, inception_extractor,
                                         load_inception_params)
from jaxgan.evaluation.report import (Extractor, Reference, quality_report,
                                      save_nearest_neighbours)
from jaxgan.evaluation.scores import (ClassCoverage, Memorisation, PrecisionRecall, Score,
                                      class_coverage, flatten_pixels, frechet_distance,
                                      frechet_distance_from_stats, frechet_distance_with_spread,
                                      gaussian_stats, kernel_inception_distance, memorisation,
                                      memorisation_pixels, memorisation_threshold,
                                      polynomial_kernel, precision_recall)
