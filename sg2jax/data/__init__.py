"""Training data: image sources (folder, zip, LMDB, tfds) and the grain input pipeline."""
