"""The origin tool's single-file zero-shot mode: one recording, a few labels, no archive."""
