"""Training: state, the phase steps, the one config reader, and the host loop."""
