"""File formats sg2jax reads and writes: torch pickles and state dicts, the official TF and
stylegan2-ada-pytorch network pickles (numpy only, nothing executed)."""
