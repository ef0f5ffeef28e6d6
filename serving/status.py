"""TF Serving's status codes and the one error type the server core raises."""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """TensorFlow's canonical error codes (tensorflow.error.Code); gRPC uses the same numbers."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class ServingError(Exception):
    """A request failed with a TF Serving status code; REST and gRPC both translate it.

    Args:
        code: the status code, as TF Serving would return it.
        message: what is wrong, in words a client can act on.
    """

    def __init__(self, code: Code, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code.name}: {message}")


def invalid_argument(message: str) -> ServingError:
    """Build an INVALID_ARGUMENT error (HTTP 400).

    Args:
        message: what is wrong with the request.
    """
    return ServingError(Code.INVALID_ARGUMENT, message)
