"""Wire-level helpers of the Stripe stand-in: fixture objects, ids, form decoding, Stripe-shaped errors."""

from __future__ import annotations

import copy
import json
import secrets
import string
import time
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

Json = dict[str, Any]
FIXTURES_DIR = Path(__file__).parent / "fixtures" / "stripe"
_MAP_KEYS = frozenset({"metadata"})  # hashes whose keys may look numeric; never turned into lists
_PERIOD_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}


# ----------------------------------------------------------------------------------------- helpers


@cache
def _fixture_text(name: str) -> str:
    return (FIXTURES_DIR / f"{name}.json").read_text(encoding="utf-8")


def load_fixture(name: str) -> Json:
    """A fresh deep copy of the fixture object `name` (e.g. "checkout.session")."""
    return json.loads(_fixture_text(name))


def new_id(prefix: str, length: int = 24) -> str:
    """A Stripe-looking id such as `cus_Ab3...`."""
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def now() -> int:
    return int(time.time())


def deep_merge(base: Json, overrides: Json) -> Json:
    """A new dict: `base` with `overrides` merged in recursively (dicts merge, anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def decode_form(body: str | bytes) -> Json:
    """Decode a Stripe form body (`a[b][0][c]=1`, `expand[0]=x`, `keys[]=y`) into nested dicts and lists.

    Values stay strings, as on the wire; numeric indices become lists (except under `metadata`)."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    root: Json = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        head, _, rest = key.partition("[")
        parts = [head, *rest[:-1].split("][")] if rest.endswith("]") else [key]
        node = root
        for i, part in enumerate(parts):
            part = part or str(len(node))  # `a[]` appends
            if i == len(parts) - 1:
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):  # `a=1&a[b]=2`: the nested form wins
                    child = node[part] = {}
                node = child
    return _listify(root, "")


def _listify(node: Any, key: str) -> Any:
    if not isinstance(node, dict):
        return node
    out = {k: _listify(v, k) for k, v in node.items()}
    if key not in _MAP_KEYS and out and all(k.isdigit() for k in out):
        return [out[k] for k in sorted(out, key=int)]
    return out


def _to_int(value: Any, default: int | None = None) -> int | None:
    return default if value is None or value == "" else int(value)


def _to_bool(value: Any, default: bool | None = None) -> bool | None:
    return default if value is None else value in (True, "true", "True", "1")


def _merge_metadata(existing: Json | None, new: Any) -> Json:
    """Stripe semantics: keys merge, `metadata[k]=` deletes k, `metadata=` clears all."""
    if new in (None, ""):
        return {} if new == "" else dict(existing or {})
    out = dict(existing or {})
    for key, value in new.items():
        if value == "":
            out.pop(key, None)
        else:
            out[key] = str(value)
    return out


def _list_object(data: list[Json], url: str, has_more: bool = False) -> Json:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


class StripeApiError(Exception):
    """Raised inside handlers; becomes a Stripe-shaped error response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        error: Json = {"type": type_, "message": message}
        if code:
            error["code"] = code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
        if param:
            error["param"] = param
        self.body: Json = {"error": error}


def _missing(kind: str, obj_id: str, *, param: str = "id", status: int = 404) -> StripeApiError:
    return StripeApiError(status, f"No such {kind}: '{obj_id}'", code="resource_missing", param=param)


def _required(params: Json, name: str) -> Any:
    if params.get(name) in (None, ""):
        raise StripeApiError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
    return params[name]
