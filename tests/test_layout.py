"""The package's layers (docs/ARCHITECTURE.md): a module imports only from its own unit (top-level
module or subpackage) and from units of lower layers; so no two units import each other."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / 'sg2jax'

# Lowest first. A top-level module or subpackage of sg2jax belongs to exactly one layer.
LAYERS = (
    ('ops', 'storage'),
    ('networks',),
    ('formats',),
    ('feature_nets',),
    ('images', 'sharding', 'topology', 'checkpoint', 'losses', 'data', 'augment'),
    ('train', 'metrics', 'tools'),
    ('cli',),
    ('main', 'eval', 'generate', 'project', 'convert', 'dataset_tool', 'export', 'aot', 'explore'),
)
LAYER_OF = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
  """'sg2jax.train.step' -> 'train'; 'sg2jax' -> ''."""
  parts = module.split('.')
  return parts[1] if len(parts) > 1 else ''


def modules() -> dict[str, Path]:
  out = {}
  for path in sorted(PACKAGE.rglob('*.py')):
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    if parts[-1] == '__init__':
      parts = parts[:-1]
    out['.'.join(parts)] = path
  return out


def imports_of(path: Path) -> set[str]:
  """Every sg2jax module a file imports, at any depth (function-level imports count too)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names if alias.name.startswith('sg2jax'))
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('sg2jax'):
      found.add(node.module)
      found.update(f'{node.module}.{alias.name}' for alias in node.names)
  return {name for name in found if unit_of(name) in LAYER_OF}


MODULES = modules()


def test_every_module_has_a_layer():
  units = {unit_of(name) for name in MODULES} - {''}
  assert units <= set(LAYER_OF), f'modules outside the layers: {sorted(units - set(LAYER_OF))}'


@pytest.mark.parametrize('module', sorted(n for n in MODULES if unit_of(n)))
def test_imports_point_down(module):
  own = unit_of(module)
  wrong = sorted(f'{name} ({unit_of(name)})' for name in imports_of(MODULES[module])
                 if unit_of(name) != own and LAYER_OF[unit_of(name)] >= LAYER_OF[own])
  assert not wrong, (f'{module} ({own}, layer {LAYER_OF[own]}) imports from its own layer or '
                     f'above: {wrong}')
