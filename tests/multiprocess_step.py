"""One process of a 2-process run joined by jax.distributed on localhost (used by test_train.py).

  python tests/multiprocess_step.py PORT PROCESS_ID OUT.npz

Each process has 2 CPU devices (4 in all). Both run the first minibatch of the tiny experiment
(every phase) on the global mesh; process 0 writes the resulting state.
"""

import os
import sys

os.environ['XLA_FLAGS'] = ' '.join(
    [f for f in os.environ.get('XLA_FLAGS', '').split() if 'device_count' not in f] +
    ['--xla_force_host_platform_device_count=2'])

port, process_id, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

from sg2jax.cli import configure_jax, initialize_distributed  # noqa: E402

configure_jax('highest')
initialize_distributed(f'127.0.0.1:{port}', 2, process_id)

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import tiny_experiment  # noqa: E402
from sg2jax.networks.weights import flatten_variables  # noqa: E402
from sg2jax.sharding import global_batch, replicated  # noqa: E402
from sg2jax.train.build import build  # noqa: E402
from sg2jax.train.state import init_state  # noqa: E402
from sg2jax.train.step import TrainStep  # noqa: E402

assert jax.device_count() == 4 and jax.process_count() == 2
exp = build(tiny_experiment.get_config())
state = jax.jit(lambda: init_state(exp.generator, exp.discriminator, exp.g_tx, exp.d_tx,
                                   exp.loop.seed), out_shardings=replicated(exp.mesh))()
stage = exp.schedule.at(0)
step = TrainStep(exp.models, exp.step_config(stage), exp.mesh)
state, _ = step(state, global_batch(exp.data.next_batch(stage.batch_size), exp.mesh), 0)
if process_id == 0:
  leaves = flatten_variables({'g': state.g, 'g_ema': state.g_ema, 'd': state.d,
                              'pl_mean': state.pl_mean})
  np.savez(out, **{k: np.asarray(jax.device_get(v)) for k, v in leaves.items()})
jax.distributed.shutdown()
