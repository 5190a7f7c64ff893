"""The parts of serving a model that do not depend on a serving framework:
dynamic batching, strict JSON decoding, the weight-rollout protocol, and
deadlines with retries of idempotent calls. ``aoti_cy.ray`` builds its
Ray Serve deployment on them; they import and run without Ray.
"""

from aoti_cy.serving._batching import Request, group_requests, merge, split
from aoti_cy.serving._deadline import (DEFAULT_CALL_TIMEOUT_S, DEFAULT_CONTROL_TIMEOUT_S,
                                       CallTimeoutError, CoordinatorTimeoutError,
                                       call_with_retries)
from aoti_cy.serving._json import call_from_json, leaf_dtypes, to_json
from aoti_cy.serving._json_values import JSONInputError, tensor_from_json
from aoti_cy.serving._rollout import POLL_S, STALE_S, STATES, RolloutProtocol

__all__ = ["CallTimeoutError", "CoordinatorTimeoutError", "DEFAULT_CALL_TIMEOUT_S",
           "DEFAULT_CONTROL_TIMEOUT_S", "JSONInputError", "POLL_S", "Request",
           "RolloutProtocol", "STALE_S", "STATES", "call_from_json", "call_with_retries",
           "group_requests", "leaf_dtypes", "merge", "split", "tensor_from_json", "to_json"]
