"""Tests of each module of plugins/, one file per module (tests/unit/test_meta.py checks it)."""
