"""The one error type: every error cnnlab raises for bad input derives from :class:`CnnlabError`.

A face (the command line, the web explorer) catches ``CnnlabError`` once and shows its message as one line;
anything else is a bug in cnnlab. A message names the bad value and what would be valid.
"""

from __future__ import annotations

__all__ = ["CnnlabError", "NonFiniteError"]


class CnnlabError(ValueError):
    """Bad input, a bad file, or a refused request: the message says which and what would be valid."""


class NonFiniteError(CnnlabError):
    """A model's outputs are NaN or infinite (its weights are broken, or training diverged); exit code 1."""
