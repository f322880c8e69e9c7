"""User-facing errors: each names the file at fault and the fix."""

from __future__ import annotations


class MlcbuildError(Exception):
    """An error caused by the user's input, printed without a traceback by the CLI.

    Args:
        message: what is wrong.
        path: the file at fault (recipe, target descriptor, weight shard), if any.
        fix: one sentence telling the user what to do.
    """

    def __init__(self, message: str, *, path: str | None = None, fix: str | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class RecipeError(MlcbuildError):
    """A recipe file is malformed or names something unknown."""


class TargetError(MlcbuildError):
    """A target descriptor is malformed, unknown, or its backend cannot be generated."""


class CacheError(MlcbuildError):
    """The build cache is corrupt or cannot be written."""


class CompileError(MlcbuildError):
    """A valid recipe cannot be compiled for the chosen target as asked."""
