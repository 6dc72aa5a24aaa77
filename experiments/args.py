"""The one parser of config-file arguments: `--config experiments/FILE.py:key=value,key=value`."""

from typing import Any, Sequence


def parse_arg(arg: str | None, usage: str, **choices: Sequence[Any]) -> dict[str, Any]:
  """`'g=resnet,d=orig'` -> `{'g': 'resnet', 'd': 'orig'}`, each value checked against its choices.

  Args:
    arg: the text after `FILE.py:` (None or '' for none).
    usage: how the error message starts, e.g. 'demo.py takes'.
    **choices: every accepted key with its allowed values (compared as lower-case strings).

  Returns:
    The keys given, with the matching choice as value.

  Raises:
    ValueError: a part without `=`, an unknown key, or a value that is not one of its choices
      (one line that lists what is accepted).
  """
  accepted = ','.join(f'{key}={"|".join(map(str, values))}' for key, values in choices.items())
  out = {}
  for part in (arg or '').split(','):
    if not part.strip():
      continue
    key, sep, value = part.partition('=')
    key, value = key.strip(), value.strip().lower()
    options = {str(option).lower(): option for option in choices.get(key, ())}
    if not sep or key not in choices or value not in options:
      raise ValueError(f'{usage} {accepted}, got {arg!r}')
    out[key] = options[value]
  return out
