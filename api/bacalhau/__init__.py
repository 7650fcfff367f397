"""The Bacalhau-style front door: Bacalhau's v1 orchestrator API over core job templates."""
