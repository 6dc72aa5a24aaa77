"""Feature networks of the metrics (FID/KID/IS Inception-v3, P/R VGG16, LPIPS) and their loaders."""

from sg2jax.feature_nets.inception import InceptionV3, load_inception_weights
from sg2jax.feature_nets.lpips import LPIPS, load_lpips_weights
from sg2jax.feature_nets.vgg16 import VGG16, load_vgg16_weights
