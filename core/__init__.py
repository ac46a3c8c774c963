"""Plumbing with no domain, shared by the apps: set-based SQL (``bulk``), periodic locks
(``locks``), formula-safe streamed CSV (``csvio``), link tokens (``tokens``), batching
(``batching``) and start-up hooks (``hooks``). It imports no app of Relay."""
