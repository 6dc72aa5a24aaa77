"""`python -m sg2jax.explore --network NETWORK`: explore a network in the browser (the command in
`__main__.py`, the HTTP server in `server.py`, the page in `static/`)."""
