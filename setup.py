"""Kept for tools that call `setup.py`; the package is declared in pyproject.toml."""
from setuptools import setup

setup()
