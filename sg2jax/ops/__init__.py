"""Pure JAX ops of StyleGAN2: NHWC arrays and static Python arguments, no Flax, no config."""

from sg2jax.ops.bias_act import bias_act, default_gain
from sg2jax.ops.conv2d import conv2d, transposed_conv2d
from sg2jax.ops.conv_resample import conv2d_resample
from sg2jax.ops.equalized import equalized_conv2d, equalized_dense, weight_gain
from sg2jax.ops.mbstd import minibatch_stddev
from sg2jax.ops.modconv import modulated_conv2d, modulated_conv2d_single
from sg2jax.ops.normalize import normalize_2nd_moment
from sg2jax.ops.upfirdn import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d
