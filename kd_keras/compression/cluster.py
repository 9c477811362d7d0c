"""Weight clustering (TF-MOT ``cluster_weights``) of chosen layers.

    clustered = cluster_model(student, select_layers(student, "cluster"), clusters=16)
    Distiller(clustered, teacher).fit(...)       # no callback needed
    shared_weights_student = strip_clustering(clustered)

After stripping, every clustered kernel holds at most `clusters` distinct
values (per output channel with ``per_channel=True``). Clustering starts from
the model's current weights, so it is meant for a trained student; from
scratch it still runs, the centroids then come from the initializer's values.

After pruning, pass ``preserve_sparsity=True`` (sparsity-preserving
clustering): zero weights stay zero and one centroid is pinned at 0, which
also keeps a 2:4 pattern intact.
"""

import tensorflow_model_optimization as tfmot

from kd_keras.compression import wrappers
from kd_keras.compression.config import CLUSTER_INITS
from kd_keras.keras_compat import keras

_CentroidInit = tfmot.clustering.keras.CentroidInitialization
CENTROID_INIT = {
    "kmeans++": _CentroidInit.KMEANS_PLUS_PLUS,
    "linear": _CentroidInit.LINEAR,
    "density-based": _CentroidInit.DENSITY_BASED,
    "random": _CentroidInit.RANDOM,
}


def cluster_model(
    model, layer_names, clusters=16, init="kmeans++", per_channel=False, preserve_sparsity=False
):
    """Wraps `layer_names` of a copy of `model` in TF-MOT's ``ClusterWeights``.

    Args:
      model: functional keras.Model without TF-MOT wrappers (not modified).
      layer_names: names of the layers to cluster (see ``select_layers``).
      clusters: number of centroids per kernel (per channel with
        `per_channel`), >= 2.
      init: centroid initialization, one of CLUSTER_INITS.
      per_channel: cluster each output channel of a convolution separately.
      preserve_sparsity: keep zero weights at zero (after pruning).

    Returns:
      the clustering model (a new functional keras.Model).

    Raises:
      ValueError: wrapped `model`, unknown layer name, `clusters` < 2 or an
        unknown `init`.
    """
    wrappers.check_plain(model, "cluster_model()")
    if not isinstance(clusters, int) or isinstance(clusters, bool) or clusters < 2:
        raise ValueError(f"clusters must be an integer >= 2, got {clusters!r}.")
    if init not in CENTROID_INIT:
        raise ValueError(f"init must be one of {CLUSTER_INITS}, got {init!r}.")
    names = set(layer_names)
    missing = names - {l.name for l in model.layers}
    if missing:
        raise ValueError(f"Model '{model.name}' has no layers {sorted(missing)}.")

    def wrap(layer):
        if layer.name in names:
            return tfmot.clustering.keras.cluster_weights(
                layer,
                number_of_clusters=clusters,
                cluster_centroids_init=CENTROID_INIT[init],
                preserve_sparsity=bool(preserve_sparsity),
                cluster_per_channel=bool(per_channel),
            )
        return layer

    copy = wrappers.fresh_copy(model)
    return keras.models.clone_model(copy, clone_function=wrap)


def strip_clustering(model):
    """The model with clustering wrappers replaced by layers holding the clustered weights."""
    return tfmot.clustering.keras.strip_clustering(model)
