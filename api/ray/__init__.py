"""The Ray-style front door: Ray's job submission REST API and the seed's Submit Job, for
Ray's own `JobSubmissionClient` and `ray job` CLI (api/ray/views.py, wire.py, tail.py)."""
