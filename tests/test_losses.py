"""Losses, R1 and path-length regularization against the official StyleGAN2Loss (loss_*.npz).

G = G_skip, D = D_resnet in training mode (non-fused modconv, the official noise replayed),
no style mixing; gradients are of the per-phase losses with gain 1 (no lazy interval).
"""

import jax
import jax.numpy as jnp
import pytest

from goldens import (assert_matches_golden, assert_trees_match_golden, golden_network, load, nchw,
                     nhwc)
from sg2jax import losses
from sg2jax.formats.official import ada_to_variables

R1_GAMMA, PL_WEIGHT = 10.0, 2.0


@pytest.fixture(scope='module')
def setup():
  g, gv = golden_network('G_skip', 'G_skip_params.npz', fused_modconv=False)
  d, dv = golden_network('D_resnet', 'D_resnet_params.npz')
  io = load('loss_io.npz')
  order = ['b4.conv1'] + [f'b{r}.conv{i}' for r in (8, 16, 32) for i in (0, 1)]
  synth_noise = [nhwc(io[f'synth_noise/synthesis.{n}']) for n in order]
  pl_synth_noise = [nhwc(io[f'pl_synth_noise/synthesis.{n}']) for n in order]
  # The golden holds randn / sqrt(H * W); path_lengths takes the unit noise.
  pl_unit_noise = nhwc(io['pl_noise']) * 32
  return dict(g=g, gv=gv, d=d, dv=dv, io=io, z=jnp.asarray(io['gen_z']),
              real=nhwc(io['real_img']), synth_noise=synth_noise,
              pl_synth_noise=pl_synth_noise, pl_unit_noise=pl_unit_noise)


def g_main_loss(s, g_params):
  v = {**s['gv'], 'params': g_params}
  img = s['g'].apply(v, s['z'], noise=s['synth_noise'])
  return losses.g_nonsaturating_loss(s['d'].apply(s['dv'], img)).mean()


def d_main_loss(s, d_params, fake_img):
  v = {**s['dv'], 'params': d_params}
  real_loss, fake_loss = losses.d_logistic_loss(s['d'].apply(v, s['real']),
                                                s['d'].apply(v, fake_img))
  return real_loss.mean() + fake_loss.mean()


def d_reg_loss(s, d_params):
  v = {**s['dv'], 'params': d_params}
  penalty, _ = losses.r1_penalty(lambda x: s['d'].apply(v, x), s['real'])
  return (penalty * (R1_GAMMA / 2)).mean()


def g_pl_lengths(s, g_params):
  v = {**s['gv'], 'params': g_params}
  ws = s['g'].apply(v, s['z'][:4], method='map')
  synthesize = lambda w: s['g'].apply(v, w, noise=s['pl_synth_noise'], method='synthesize')
  return ws, losses.path_lengths(synthesize, ws, s['pl_unit_noise'])


def g_reg_loss(s, g_params):
  _, (lengths, _) = g_pl_lengths(s, g_params)
  penalty, _ = losses.path_length_penalty(lengths, jnp.float32(0.0))
  return (penalty * PL_WEIGHT).mean()


def test_generator_forward_in_training_mode(setup):
  s, io = setup, setup['io']
  ws, state = s['g'].apply(s['gv'], s['z'], update_w_avg=True, mutable=['stats'], method='map')
  assert_matches_golden(ws, io['gen_ws'], 'gen_ws')
  assert_matches_golden(state['stats']['mapping']['w_avg'], io['w_avg_after_Gmain'], 'w_avg')
  img = s['g'].apply(s['gv'], ws, noise=s['synth_noise'], method='synthesize')
  assert_matches_golden(nchw(img), io['gen_img'], 'gen_img')


def test_logistic_losses(setup):
  s, io = setup, setup['io']
  fake_logits = s['d'].apply(s['dv'], nhwc(io['gen_img']))
  real_logits = s['d'].apply(s['dv'], s['real'])
  assert_matches_golden(fake_logits, io['gen_logits'], 'gen_logits')
  assert_matches_golden(real_logits, io['real_logits'], 'real_logits')
  assert_matches_golden(losses.g_nonsaturating_loss(fake_logits), io['loss_Gmain'], 'loss_Gmain')
  real_loss, fake_loss = losses.d_logistic_loss(real_logits, fake_logits)
  assert_matches_golden(real_loss, io['loss_Dreal'], 'loss_Dreal')
  assert_matches_golden(fake_loss, io['loss_Dgen'], 'loss_Dgen')


def test_r1_penalty(setup):
  s, io = setup, setup['io']
  penalty, grads = losses.r1_penalty(lambda x: s['d'].apply(s['dv'], x), s['real'])
  assert_matches_golden(nchw(grads), io['r1_grads'], 'r1_grads')
  assert_matches_golden(penalty, io['r1_penalty'], 'r1_penalty')
  assert_matches_golden(penalty * (R1_GAMMA / 2), io['loss_Dr1'], 'loss_Dr1')


def test_path_length_penalty(setup):
  s, io = setup, setup['io']
  ws, (lengths, img) = jax.jit(lambda p: g_pl_lengths(s, p))(s['gv']['params'])
  assert_matches_golden(ws, io['pl_ws'], 'pl_ws')
  assert_matches_golden(nchw(img), io['pl_img'], 'pl_img')
  assert_matches_golden(lengths, io['pl_lengths'], 'pl_lengths')
  penalty, pl_mean = losses.path_length_penalty(lengths, io['pl_mean_before'])
  assert_matches_golden(pl_mean, io['pl_mean_after'], 'pl_mean')
  assert_matches_golden(penalty, io['pl_penalty'], 'pl_penalty')
  assert_matches_golden(penalty * PL_WEIGHT, io['loss_Gpl'], 'loss_Gpl')
  _, example = losses.path_length_penalty(lengths, io['pl_mean_example_prev'])
  assert_matches_golden(example, io['pl_mean_example_next'], 'pl_mean update from 0.5')


@pytest.mark.parametrize('phase', ['Gmain', 'Dmain', 'Dreg', 'Greg'])
def test_parameter_gradients(setup, phase):
  s = setup
  if phase == 'Gmain':
    grads = jax.jit(jax.grad(lambda p: g_main_loss(s, p)))(s['gv']['params'])
  elif phase == 'Dmain':
    fake = nhwc(s['io']['gen_img'])
    grads = jax.jit(jax.grad(lambda p: d_main_loss(s, p, fake)))(s['dv']['params'])
  elif phase == 'Dreg':
    grads = jax.jit(jax.grad(lambda p: d_reg_loss(s, p)))(s['dv']['params'])
  else:
    grads = jax.jit(jax.grad(lambda p: g_reg_loss(s, p)))(s['gv']['params'])
  # Gradients map to sg2jax layouts exactly as the parameters do (transposes and flips).
  ref = ada_to_variables(load(f'loss_grads_{phase}.npz'), phase[0])['params']
  assert_trees_match_golden(grads, ref, f'{phase} gradient')
