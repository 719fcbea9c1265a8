//! Helpers for Turnpike's end-to-end tests (they live in `tests/tests/`).
