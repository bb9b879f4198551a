"""The root app's paths: the health probes, the metrics and the operators' status page."""

from __future__ import annotations

from tusingest.api.openapi.primitives import (
    Json,
    header,
    json_content,
    object_,
    operation,
    response,
    string,
)

_SEE_STATUS = {"Location": header("/status", required=True)}


def _html() -> Json:
    return {"text/html": {"schema": string()}}


def root_paths() -> Json:
    element = object_(
        {
            "mode": string(),
            "capacity_status": string(),
            "healthy": {"type": "boolean"},
            "breaker": string(enum=["closed", "half_open", "open"]),
            "usable": {"type": "boolean"},
        }
    )
    health = object_(
        {
            "status": string(enum=["ok", "degraded", "fail"]),
            "checks": object_(
                {
                    "database": string(),
                    "redis": string(),
                    "elements": {"type": "object", "additionalProperties": element},
                    "registry": {"type": "object", "additionalProperties": string()},
                    "admin_module": string(),
                    "node": string(enum=["draining"]),
                },
                optional=("database", "redis", "admin_module", "elements", "registry", "node"),
            ),
        }
    )
    return {
        "/health/live": {
            "get": operation(
                "live",
                "health",
                "Liveness",
                {200: response("Alive", json_content(object_({"status": string(enum=["ok"])})))},
                public=True,
            )
        },
        "/health/ready": {
            "get": operation(
                "ready",
                "health",
                "Readiness: database, Redis (when configured) and the writable elements",
                {
                    200: response(
                        "ok, or degraded (uploads can still be stored)", json_content(health)
                    ),
                    503: response(
                        "fail: no database, no element to store on, or shutting down",
                        json_content(health),
                    ),
                },
                public=True,
            )
        },
        "/status": {
            "get": operation(
                "statusPage",
                "operators",
                "The operators' status page (HTML); the sign-in form without a valid session",
                {
                    200: response("The page", _html()),
                    401: response("The sign-in form", _html()),
                    403: response("The sign-in form: the token is not an admin's", _html()),
                },
                public=True,
            )
        },
        "/status/login": {
            "post": operation(
                "statusLogin",
                "operators",
                "Sign in to the status page: an admin's token into an HttpOnly, "
                "SameSite=Strict cookie",
                {
                    303: response("Signed in: to /status", headers=_SEE_STATUS),
                    400: response("No token in the form", _html()),
                    401: response("The token is not valid", _html()),
                    403: response("The token is not an admin's", _html()),
                    413: response("The form is too large", _html()),
                },
                body={
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": object_({"token": string()})
                        }
                    },
                },
                public=True,
            )
        },
        "/status/logout": {
            "post": operation(
                "statusLogout",
                "operators",
                "Sign out of the status page (the cookie is removed)",
                {303: response("To /status", headers=_SEE_STATUS)},
                public=True,
            )
        },
        "/metrics": {
            "get": operation(
                "metrics",
                "health",
                "Prometheus metrics",
                {
                    200: response(
                        "Text exposition format 0.0.4", {"text/plain": {"schema": string()}}
                    )
                },
                public=True,
            )
        },
    }
