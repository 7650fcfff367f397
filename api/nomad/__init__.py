"""The Nomad-style front door: parameterized jobs and dispatch over Nomad's `/v1` API, for
python-nomad and `crunch job dispatch` (api/nomad/views.py, wire.py)."""
