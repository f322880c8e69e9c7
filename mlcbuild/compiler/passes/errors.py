"""Carrying an :class:`mlcbuild.errors.MlcbuildError` raised inside a pass out through TVM's FFI
(which would turn it into a ``tvm.error.InternalError``)."""

from __future__ import annotations

import contextlib
import threading

from mlcbuild.errors import MlcbuildError

_PENDING = threading.local()


def raise_in_pass(error: MlcbuildError) -> None:
    """Raise a user error inside a TVM pass: TVM's FFI turns it into a ``RuntimeError``,
    and :func:`user_errors` around the build raises the original again (exit 2, no traceback)."""
    _PENDING.error = error
    raise error


@contextlib.contextmanager
def user_errors():
    """Re-raise an :class:`MlcbuildError` raised in a pass (:func:`raise_in_pass`) as itself."""
    _PENDING.error = None
    try:
        yield
    except Exception as e:
        pending = getattr(_PENDING, "error", None)
        if pending is not None and pending.message in str(e):
            raise pending from None
        raise
    finally:
        _PENDING.error = None
