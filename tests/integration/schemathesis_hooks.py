"""schemathesis hooks and checks for a run against taskboard (docs/contracts.md).

Loaded by the schemathesis CLI in its own process (``hooks`` in schemathesis.toml), from
tests/integration/test_taskboard_schemathesis.py or by hand. What only the caller knows
comes from the environment (all optional, so a bare run works):

- ``TASKBOARD_ST_URL`` and ``TASKBOARD_ST_TOKEN``: the server and the bearer token the run
  sends, to read a task's current ETag before a PATCH;
- ``TASKBOARD_ST_IDENTITY``: ``demo``, ``none`` or ``stranger``; ``none`` must never get
  a 2xx from an operation that needs a token;
- ``TASKBOARD_ST_WORKSPACE``: the demo workspace, where half the calls go;
- ``TASKBOARD_ST_FOREIGN``: workspaces the caller is no member of (comma-separated),
  where a quarter of the calls go and where any 2xx is a failure;
- ``TASKBOARD_ST_ASSIGNEE`` and ``TASKBOARD_ST_NEWCOMER``: a user who is a member of the
  caller's workspaces, and one who is a member of none;
- ``TASKBOARD_ST_TASK``: a task of the demo workspace.

Every deviation from schemathesis's own behaviour is narrow and says why next to it.
"""

from __future__ import annotations

import os
import re
from typing import Any, Final

import httpx
import schemathesis
from email_validator import SPECIAL_USE_DOMAIN_NAMES
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, HookContext, Response
from schemathesis.checks import positive_data_acceptance, use_after_free
from schemathesis.generation.meta import TestPhase
from schemathesis.openapi.checks import RejectedPositiveData, UseAfterFree

from taskboard.api.routes import IF_MATCH_PATTERN

_TASK: Final = "/api/workspaces/{ws}/tasks/{task_id}"
_RESTORE: Final = _TASK + "/restore"
# The writes that take If-Match (PATCH requires it; DELETE and restore when sent).
_CONDITIONAL: Final = (_TASK, _RESTORE)
_MAX_ID: Final = 2**63 - 1
_IF_MATCH_MAX: Final = 100


def _env(name: str) -> str | None:
    return os.environ.get(f"TASKBOARD_ST_{name}") or None


def _mail_reaches(body: dict[str, Any]) -> None:
    """An email at a special-use top-level domain moves to ``.com``; nothing else changes.

    The document says "format: email", and its description that addresses at special-use
    or reserved domains (.test, .local, .invalid …) are refused, since no mail can reach
    them: a JSON Schema format cannot say that, and schemathesis draws from a list of
    top-level domains that includes "test". Only that label changes, so an address that
    breaks the format some other way (a negative case) still does.
    """
    email = body.get("email")
    if not isinstance(email, str) or email.count("@") != 1:
        return
    local, domain = email.split("@")
    head, dot, top = domain.rpartition(".")
    if top.lower() in SPECIAL_USE_DOMAIN_NAMES:
        body["email"] = f"{local}@{head}{dot}com" if dot else f"{local}@{top}.com"


def _valid_id(value: object) -> bool:
    """An id the document allows: an integer in range (``3.0`` is one to JSON Schema)."""
    if type(value) is float and value.is_integer():
        value = int(value)
    return type(value) is int and 1 <= value <= _MAX_ID


def _real_ids(body: Any) -> None:
    """Ids in a body name rows: replace a schema-valid one with a row that exists.

    The document can say an id is an integer in range, not which rows exist, so a drawn
    ``assignee_id`` or ``user_id`` is almost never a user (422 ``member``/``exists``, which
    tests/integration/test_taskboard_hostile.py proves). Invalid ids stay, so a negative
    case stays negative.
    """
    assignee, newcomer = _env("ASSIGNEE"), _env("NEWCOMER")
    items = body.get("items") if isinstance(body, dict) else None
    for item in [body, *items] if isinstance(items, list) else [body]:
        if not isinstance(item, dict):
            continue
        if assignee and _valid_id(item.get("assignee_id")):
            item["assignee_id"] = int(assignee)
        if newcomer and _valid_id(item.get("user_id")):
            item["user_id"] = int(newcomer)


def _current_etag(case: Case[Any]) -> str | None:
    url, token = _env("URL"), _env("TOKEN")
    parameters = case.path_parameters or {}
    if url is None or token is None or not all(map(_valid_id, parameters.values())):
        return None
    current = httpx.get(
        url + _TASK.format(**parameters), headers={"Authorization": f"Bearer {token}"}
    )
    return current.headers.get("etag") if current.status_code == 200 else None


@schemathesis.hook
def flatmap_path_parameters(
    context: HookContext, path_parameters: dict[str, Any] | None
) -> st.SearchStrategy[dict[str, Any] | None]:
    """A valid workspace (and task) id becomes one that exists: the demo's, or a foreign
    workspace's (one the caller is no member of), or stays as drawn.

    A drawn id is almost never a row, so without this nearly every call under a
    workspace is a 404: the demo user would never create a task for the stateful phase
    to follow, and no caller would knock on a door that is not theirs.
    """
    if not isinstance(path_parameters, dict):  # a negative case may have none at all
        return st.just(path_parameters)
    real = {"ws": _env("WORKSPACE"), "task_id": _env("TASK")}
    swapped = {
        name: int(value)
        for name, value in real.items()
        if value is not None and _valid_id(path_parameters.get(name))
    }
    if not swapped:
        return st.just(path_parameters)
    choices = [path_parameters, path_parameters | swapped, path_parameters | swapped]
    if "ws" in swapped:
        choices += [path_parameters | swapped | {"ws": foreign} for foreign in _foreign()]
    return st.sampled_from(choices)


def _foreign() -> list[int]:
    return [int(ws) for ws in (_env("FOREIGN") or "").split(",") if ws.strip()]


@schemathesis.hook
def before_call(context: HookContext, case: Case[Any], kwargs: dict[str, Any]) -> None:
    """Real references and reachable emails in bodies; a write's If-Match the current ETag."""
    if isinstance(case.body, dict):
        _real_ids(case.body)
        _mail_reaches(case.body)
    if case.operation.path not in _CONDITIONAL or case.headers is None:
        return
    sent = case.headers.get("If-Match")
    # The stateful phase follows the document's links, which carry the ETag of the
    # response before; elsewhere a schema-valid If-Match is replaced by the current one,
    # so the write reaches the service instead of stopping at 412. An invalid one stays.
    phase = case.meta.phase.name if case.meta is not None else None
    if phase == TestPhase.STATEFUL or not isinstance(sent, str) or len(sent) > _IF_MATCH_MAX:
        return
    if re.search(IF_MATCH_PATTERN, sent) is not None:
        etag = _current_etag(case)
        if etag is not None:
            case.headers["If-Match"] = etag


# Refusals of a schema-valid request that depend on state the document cannot describe,
# by (method, path, status, rule); each with its reason. Anything else is still a failure.
_STATE_REFUSALS: Final[dict[tuple[str, str, int, str | None], str]] = {
    # A cursor is opaque and signed: only one the server issued for the same query is a
    # cursor at all. The document says so; no schema can.
    ("GET", "/api/workspaces/{ws}/tasks", 422, "cursor"): "cursor not issued",
    ("GET", "/api/workspaces/{ws}/audit", 422, "cursor"): "cursor not issued",
    ("GET", "/api/me/notifications", 422, "cursor"): "cursor not issued",
    # A push subscription's endpoint must be a public https URL that answers as a push
    # service, and its key a point on P-256: no pattern says either (SSRF rules, curve
    # arithmetic); the errors name the field.
    **{
        ("POST", "/api/me/push-subscriptions", 422, rule): "endpoint or keys not usable"
        for rule in ("public_https", "p256_key", "auth_secret")
    },
    # cursor and page exclude each other: OpenAPI has no way to say two query parameters
    # may not come together, so both descriptions say it.
    ("GET", "/api/workspaces/{ws}/tasks", 422, "exclusive"): "cursor with page",
    # A sort field given twice: a pattern could say it only with back-references, which
    # generators do not follow; the description says it.
    ("GET", "/api/workspaces/{ws}/tasks", 422, "duplicate"): "sort field twice",
    # An If-Match naming two versions ("1", "2"): one write expects one version. The
    # same kind of rule between values; the description says it.
    ("PATCH", _TASK, 422, "single_etag"): "two versions",
    # If-Match compares with the task's current version (RFC 9110 §13.1.1): a stale,
    # weak or non-version tag is well formed and fails the precondition. Which tag is
    # current is state. The same for DELETE and restore, where If-Match is optional (a
    # deleted task has no ETag to read before a restore).
    **{
        (method, path, 412, rule): "weak, non-version or stale tag"
        for method, path in (("PATCH", _TASK), ("DELETE", _TASK), ("POST", _RESTORE))
        for rule in ("strong_etag", None)
    },
    ("DELETE", _TASK, 422, "single_etag"): "two versions",
    ("POST", _RESTORE, 422, "single_etag"): "two versions",
    # A silence ends after now and within the configured maximum of now: the clock and
    # the settings are state. A =~ or !~ value must compile as a regex (at most 256
    # characters, a rule between op and value), and one matcher at least must not match
    # empty labels (a rule across matchers); each description says it.
    **{
        ("POST", "/api/ops/silences", 422, rule): "time, regex or matcher-set rule"
        for rule in ("after_start", "max_duration", "regex", "max_length", "matches_empty")
    },
}


def _rule(response: Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    rule = body.get("rule") if isinstance(body, dict) else None
    return rule if isinstance(rule, str) else None


def _mislabelled(case: Case[Any], response: Response) -> bool:
    """A "valid" case whose If-Match breaks the document's own pattern, refused for it.

    schemathesis's coverage phase draws an optional header's values without its
    ``pattern`` (DELETE's and restore's If-Match: ``0``) and still calls them valid;
    the document says they are not, and the 422 names that header and rule.
    """
    sent = case.headers.get("If-Match") if case.headers else None
    return (
        response.status_code == 422
        and _rule(response) == "etag"
        and isinstance(sent, str)
        and re.search(IF_MATCH_PATTERN, sent) is None
    )


@schemathesis.check
def positive_data_acceptance_but_state(
    ctx: CheckContext, response: Response, case: Case[Any]
) -> bool | None:
    """schemathesis's positive_data_acceptance, but for the refusals of _STATE_REFUSALS."""
    try:
        positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        key = (case.operation.method.upper(), case.operation.path, response.status_code)
        if (*key, _rule(response)) in _STATE_REFUSALS or _mislabelled(case, response):
            return None
        raise
    return None


@schemathesis.check
def stranger_gets_nothing(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """No 2xx under a workspace the caller is no member of, and none without a token."""
    if not 200 <= response.status_code < 300:
        return None
    identity, path = _env("IDENTITY"), case.formatted_path
    for workspace in _foreign():
        if (path + "/").startswith(f"/api/workspaces/{workspace}/"):
            raise AssertionError(f"{identity} got {response.status_code} on {case.method} {path}")
    if identity == "none" and case.operation.definition.raw.get("security"):
        raise AssertionError(f"no token, yet {response.status_code} on {case.method} {path}")
    return None


def _restored_after_delete(ctx: CheckContext, case: Case[Any]) -> bool:
    """Whether the task ``case`` reads was restored after it was last deleted."""
    target = case.formatted_path
    restored = False
    for earlier in ctx.internals.find_all_cases():
        if earlier.id == case.id:
            break
        answer = ctx.internals.find_response(case_id=earlier.id)
        if answer is None or not 200 <= answer.status_code < 300:
            continue
        method, path = earlier.method.upper(), earlier.formatted_path
        if method == "DELETE" and path == target:
            restored = False
        elif method == "POST" and path == f"{target}/restore":
            restored = True
    return restored


@schemathesis.check
def use_after_free_but_restore(
    ctx: CheckContext, response: Response, case: Case[Any]
) -> bool | None:
    """schemathesis's use_after_free, knowing that restore brings a deleted task back.

    ``POST …/tasks/{id}/restore`` undeletes (docs/taskboard.md), so a GET after DELETE
    and then restore is a 200. schemathesis counts a POST as re-creating a resource only
    on a path that is a prefix of the deleted one, and restore's is longer: it reported
    DELETE → restore → GET as a use after free. Forgiven only when such a restore of the
    same task succeeded after its last successful DELETE.
    """
    try:
        use_after_free(ctx, response, case)
    except UseAfterFree:
        if _restored_after_delete(ctx, case):
            return None
        raise
    return None
