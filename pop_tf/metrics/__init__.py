"""Evaluation metrics (protocols: docs/metrics.md): numpy in, floats out.

- `pop_tf.metrics.fid`: Fréchet distance between Gaussian fits of feature activations, and the
  Inception feature extractor that produces them; `fid_inception` is the 2015-12-05 graph of
  published FID and `fid_convert` converts pytorch-fid's weights for it.
- `pop_tf.metrics.lpips`: LPIPS on VGG16 or AlexNet and the LPIPS-diversity protocol;
  `lpips_convert` converts the published linear layers and torchvision backbones.
- `pop_tf.metrics.ndb`: Number of statistically Different Bins and the Jensen-Shannon divergence
  between k-means bin histograms (Richardson & Weiss 2018).
- `pop_tf.metrics.kid`: Kernel Inception Distance (unbiased cubic-kernel MMD², Bińkowski et al. 2018).
- `pop_tf.metrics.precision_recall`: improved precision and recall on k-NN manifolds
  (Kynkäänniemi et al. 2019).
- `pop_tf.metrics.feature_diversity`: mean feature distance between samples of one input.
- `pop_tf.metrics.attributes`: the attribute judge of pop_tf's synthetic data (readings of shape,
  colour, pattern and sleeve, the true popularity uplift, the `*_synth` figures).

The submodules are not imported here, so that importing the numpy-only maths never loads
TensorFlow.
"""
