"""Evaluation metrics (SPEC §8): numpy in, floats out.

- `pop_tf.metrics.fid`: Fréchet distance between Gaussian fits of feature activations, and the
  InceptionV3 feature extractor that produces them.
- `pop_tf.metrics.ndb`: Number of statistically Different Bins and the Jensen-Shannon divergence
  between k-means bin histograms (Richardson & Weiss 2018).

The submodules are not imported here, so that importing the numpy-only maths never loads
TensorFlow.
"""
