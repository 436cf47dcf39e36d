#!/usr/bin/env python3
"""Quire against Talonic's official Python SDK (unmodified, ../shared/clients/talonic-python).

Run `python sdk_check.py` (tests/compat/run_sdk.sh builds the venv, starts Quire and the keys).
Every public method of `Talonic` and its resources is called at least once, a few through
`AsyncTalonic`, and every error class the SDK knows is provoked. Each check asserts the shape
Talonic documents (the SDK's generated models, see the spec next to the SDK notes), not just
"no exception". One line per check, `PASS name: detail` or `FAIL name: detail`, then
`N passed, M failed`; exit 1 when M > 0. Diagnostics that are not checks go to stderr.

Environment
  TALONIC_BASE_URL    Quire's base URL, e.g. http://127.0.0.1:8080            (required)
  TALONIC_API_KEY     a key with every scope: extract, read, write             (required)
  QUIRE_READONLY_KEY  a key with only the `read` scope (403 checks)            (required)
  QUIRE_LIMITED_KEY   a key whose rate limit is 2 per minute (429 checks)      (required)
  QUIRE_SAMPLE_PDF    a small text PDF (default: ../shared/corpora/pdf-sample-files/
                      002-trivial-libre-office-writer/002-trivial-libre-office-writer.pdf
                      relative to the repository)
  QUIRE_MAX_BODY      the server's --max-body / --max-upload in bytes (default 1048576);
                      the 413 check uploads twice that
  SDK_CHECK_TIMEOUT   seconds to wait for a job or an asynchronous extraction (default 60)
  SDK_CHECK_TRACE     set to print a traceback for every failing check (stderr)

429 design. The limited key's bucket holds 2 tokens and gets one back every 30 s.
`ratelimit.429 without retries` spends the two tokens with a max_retries=0 client; the third call
must raise TalonicRateLimitError whose rate_limit says limit=2, remaining=0 and a reset_at in the
future. Right after, `ratelimit.429 with retries` starts in a background thread (its wait overlaps
the other checks; its line is printed at the end): a max_retries=3 client calls once more. The
server answers 429 with Retry-After = seconds until the next token (<= 30); the SDK must sleep
that long and retry, and the call must SUCCEED, no sooner than (reset_at - now - 1.5) s and
within 70 s. A client or server that does not honour Retry-After burns the 3 retries in at most
3.5 s of jittered backoff and raises: that fails the check.

Documents are created through `extract`. While Quire has no /v1/extract, the document checks
still run on documents uploaded with a raw POST /v1/documents (said on stderr), so they report
their own endpoints rather than the missing one.
"""
from __future__ import annotations

import asyncio
import csv
import io
import os
import re
import sys
import threading
import time
import traceback
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import httpx

from talonic import (
    AsyncTalonic,
    Talonic,
    TalonicAuthError,
    TalonicError,
    TalonicNotFoundError,
    TalonicRateLimitError,
    TalonicValidationError,
)
from talonic._types.rate_limit import RateLimitInfo

# ----------------------------------------------------------------------------- configuration

BASE_URL = os.environ.get("TALONIC_BASE_URL", "").rstrip("/")
API_KEY = os.environ.get("TALONIC_API_KEY", "")
READONLY_KEY = os.environ.get("QUIRE_READONLY_KEY", "")
LIMITED_KEY = os.environ.get("QUIRE_LIMITED_KEY", "")
REPO = Path(__file__).resolve().parents[2]
SAMPLE_PDF = os.environ.get(
    "QUIRE_SAMPLE_PDF",
    str(
        REPO.parent
        / "shared/corpora/pdf-sample-files/002-trivial-libre-office-writer"
        / "002-trivial-libre-office-writer.pdf"
    ),
)
MAX_BODY = int(os.environ.get("QUIRE_MAX_BODY", str(1024 * 1024)))
WAIT = float(os.environ.get("SDK_CHECK_TIMEOUT", "60"))

TOKEN = f"sdkcheck{uuid.uuid4().hex[:8]}"  # unique per run: finds this run's documents
SCHEMA_KEYS = ["invoice_number", "vendor_name", "total_amount", "invoice_date"]
SCHEMA = {
    "type": "object",
    "properties": {
        "invoice_number": {"type": "string", "description": "The invoice number"},
        "vendor_name": {"type": "string", "description": "Who issued the invoice"},
        "total_amount": {"type": "number", "description": "Total including tax"},
        "invoice_date": {"type": "string", "format": "date"},
    },
}  # no `required`: the SDK fills it with every property key
INVOICE_TXT = (
    "INVOICE\n"
    "Invoice number: INV-2024-0042\n"
    "Vendor name: Acme Corp\n"
    "Invoice date: 2024-03-15\n"
    "Total amount: 1250.00 EUR\n"
)
INVOICE2_TXT = (
    "INVOICE\n"
    "Invoice number: INV-2024-0077\n"
    "Vendor name: Globex GmbH\n"
    "Invoice date: 2024-05-02\n"
    "Total amount: 99.90 EUR\n"
)

EXTRACTION_STATUS = {"processing", "complete", "failed"}
DOCUMENT_STATUS = {"pending", "processing", "completed", "error"}
JOB_STATUS = {"pending", "queued", "processing", "complete", "failed"}
JOB_TERMINAL = {"complete", "failed", "cancelled"}

# ----------------------------------------------------------------------------- harness

PASSED = 0
FAILED = 0
S: dict[str, Any] = {}  # ids shared between checks


def note(msg: str) -> None:
    print(f"  note: {msg}", file=sys.stderr, flush=True)


def short(v: Any, n: int = 120) -> str:
    s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def describe(e: BaseException) -> str:
    if isinstance(e, TalonicError):
        return (
            f"{type(e).__name__} status={e.status} code={e.code!r} "
            f"message={short(e.message, 160)}"
        )
    if isinstance(e, AssertionError):
        return str(e) or "assertion failed"
    if isinstance(e, httpx.HTTPStatusError):
        return f"httpx.HTTPStatusError {e.response.status_code}: {short(e.response.text, 160)}"
    return f"{type(e).__name__}: {short(str(e), 200)}"


def report(name: str, ok: bool, detail: str) -> None:
    global PASSED, FAILED
    detail = detail.replace("\n", " ")
    if ok:
        PASSED += 1
        print(f"PASS {name}: {detail}", flush=True)
    else:
        FAILED += 1
        print(f"FAIL {name}: {detail}", flush=True)


def check(name: str, fn: Callable[[], Any]) -> Any:
    """Run one check. fn returns a detail string (or (detail, value)); raising fails it."""
    try:
        out = fn()
    except Exception as e:  # noqa: BLE001 - every failure is a report line
        if os.environ.get("SDK_CHECK_TRACE"):
            traceback.print_exc()
        report(name, False, describe(e))
        return None
    detail, value = (out if isinstance(out, tuple) else (out, None))
    report(name, True, detail or "ok")
    return value


def need(key: str) -> Any:
    if S.get(key) is None:
        raise AssertionError(f"prerequisite missing: {key} (an earlier check failed)")
    return S[key]


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise AssertionError(msg)


# ----------------------------------------------------------------------------- shape validation

NULL = type(None)


def is_uuid(v: Any) -> str | None:
    try:
        uuid.UUID(str(v))
        return None if isinstance(v, str) else "is not a string"
    except ValueError:
        return f"is not a UUID: {short(v)}"


def is_ts(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"is {type(v).__name__}, want an ISO 8601 string"
    try:
        d = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return f"is not ISO 8601: {short(v)}"
    return None if d.tzinfo else f"has no time zone: {v}"


def one_of(*values: Any) -> Callable[[Any], str | None]:
    def f(v: Any) -> str | None:
        return None if v in values else f"= {short(v)}, want one of {list(values)}"

    return f


def unit_interval(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"is {type(v).__name__} {short(v)}, want a number"
    return None if 0 <= v <= 1 else f"= {v}, want 0..1"


def number(v: Any) -> str | None:
    return None if isinstance(v, (int, float)) and not isinstance(v, bool) else (
        f"is {type(v).__name__} {short(v)}, want a number"
    )


def integer(v: Any) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) else (
        f"is {type(v).__name__} {short(v)}, want an integer"
    )


def conforms(obj: Any, spec: dict[str, Any], where: str = "body") -> None:
    """spec: key -> type | tuple of types | validator(v) -> msg|None. A key ending in `?` is
    optional (absent or null is fine); a required key may be null only if NULL is in its types."""
    if not isinstance(obj, dict):
        raise AssertionError(f"{where} is {type(obj).__name__} {short(obj)}, want an object")
    bad: list[str] = []
    for raw, t in spec.items():
        opt = raw.endswith("?")
        k = raw.rstrip("?")
        if k not in obj:
            if not opt:
                bad.append(f"{where}.{k} missing")
            continue
        v = obj[k]
        if v is None:
            if not opt and not (isinstance(t, tuple) and NULL in t):
                bad.append(f"{where}.{k} is null")
            continue
        if isinstance(t, (type, tuple)):
            types = t if isinstance(t, tuple) else (t,)
            ok = isinstance(v, types) and not (
                isinstance(v, bool) and bool not in types
            )
            if not ok:
                want = "|".join(x.__name__ for x in types)
                bad.append(f"{where}.{k} is {type(v).__name__} {short(v, 60)}, want {want}")
        else:
            msg = t(v)
            if msg:
                bad.append(f"{where}.{k} {msg}")
    if bad:
        raise AssertionError("; ".join(bad[:8]) + (f" (+{len(bad) - 8} more)" if len(bad) > 8 else ""))


PAGINATION = {"total": integer, "limit": integer, "has_more": bool, "next_cursor": (str, NULL)}


def paginated(body: Any, where: str = "body") -> list[dict[str, Any]]:
    conforms(body, {"data": list, "pagination": dict}, where)
    conforms(body["pagination"], PAGINATION, f"{where}.pagination")
    return body["data"]


DOCUMENT = {
    "id": is_uuid,
    "filename": str,
    "status": one_of(*DOCUMENT_STATUS),
    "created_at": is_ts,
    "pages?": integer,
    "size_bytes?": integer,
    "mime_type?": str,
    "type_detected?": str,
    "language_detected?": str,
    "error?": str,
    "source?": dict,
    "field_count?": integer,
    "triage?": dict,
    "metadata?": dict,
    "extraction_count?": integer,
    "latest_extraction_id?": is_uuid,
    "processing_log?": list,
    "links?": dict,
}
EXTRACTION = {
    "id": is_uuid,
    "status": one_of(*EXTRACTION_STATUS),
    "document": dict,
    "data": dict,
    "confidence": dict,
    "locked_fields?": list,
    "processing?": dict,
    "created_at?": is_ts,
    "links?": dict,
}
EXTRACTION_ITEM = {
    "id?": is_uuid,
    "status?": one_of(*EXTRACTION_STATUS),
    "document_id?": is_uuid,
    "document_filename?": str,
    "confidence_overall?": number,
    "created_at?": is_ts,
    "links?": dict,
}
SCHEMA_RESPONSE = {
    "id": is_uuid,
    "name": str,
    "definition": dict,
    "description?": str,
    "field_count?": integer,
    "version?": integer,
    "created_at?": is_ts,
    "updated_at?": is_ts,
    "links?": dict,
}
FIELD = {
    "id": is_uuid,
    "canonical_name": str,
    "display_name": str,
    "data_type": str,
    "tier": integer,
    "cluster_name?": str,
    "occurrence_count": integer,
    "master_instruction?": str,
    "created_at": is_ts,
    "updated_at?": is_ts,
    "links": dict,
}
JOB = {
    "id": is_uuid,
    "status": one_of(*JOB_STATUS),
    "name?": str,
    "progress?": integer,
    "schema?": dict,
    "document_count?": integer,
    "completed_documents?": integer,
    "grid_stats?": dict,
    "error?": dict,
    "created_at?": is_ts,
    "started_at?": is_ts,
    "completed_at?": is_ts,
    "links?": dict,
}


def data_matches_schema(data: Any, where: str, keys: list[str] = SCHEMA_KEYS) -> None:
    expect(isinstance(data, dict), f"{where} is {type(data).__name__}, want an object")
    expect(
        set(data) == set(keys),
        f"{where} keys {sorted(data)} != schema keys {sorted(keys)}",
    )


def confidence_ok(conf: Any, where: str, required: bool = True) -> None:
    conforms(conf, {"overall" if required else "overall?": unit_interval, "fields?": dict}, where)
    for k, v in (conf.get("fields") or {}).items():
        expect(k in SCHEMA_KEYS, f"{where}.fields has a key outside the schema: {k}")
        expect(unit_interval(v) is None, f"{where}.fields.{k} {unit_interval(v)}")


def row_id(row: dict[str, Any]) -> Any:
    return row.get("id") or row.get("document_id")


def expect_error(fn: Callable[[], Any], cls: type[TalonicError], status: int) -> str:
    try:
        r = fn()
    except TalonicError as e:
        expect(
            type(e) is cls and e.status == status,
            f"want {cls.__name__} {status}, got {describe(e)}",
        )
        expect(
            not (status == 404 and e.message == "No such route"),
            "404 only because the route does not exist yet (No such route)",
        )
        expect(bool(e.code), f"error body has no `code` ({describe(e)})")
        expect(bool(e.request_id), f"error body has no `request_id` ({describe(e)})")
        return f"{cls.__name__} {e.status} code={e.code}"
    body = getattr(r, "data", r)
    raise AssertionError(f"want {cls.__name__} {status}, call succeeded: {short(body)}")


def iso(d: datetime) -> str:
    return d.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# ----------------------------------------------------------------------------- fallbacks

def raw_upload(filename: str, content: bytes, mime: str) -> str:
    """POST /v1/documents outside the SDK: only to give document checks something to read."""
    r = httpx.post(
        f"{BASE_URL}/v1/documents",
        headers={"Authorization": f"Bearer {API_KEY}"},
        files={"file": (filename, content, mime)},
        timeout=60,
    )
    r.raise_for_status()
    return r.json()["id"]


def settle_extract(c: Talonic, body: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate a 200 (sync) or 202 (async) extract answer; return the extraction (sync shape)."""
    if "extraction_id" in body:
        conforms(
            body,
            {
                "extraction_id": is_uuid,
                "request_id": str,
                "status": one_of("complete"),
                "document": dict,
                "data": dict,
                "schema?": dict,
                "confidence?": dict,
                "processing?": dict,
                "links?": dict,
            },
            where,
        )
        conforms(
            body["document"],
            {"id": is_uuid, "filename?": str, "pages?": integer, "size_bytes?": integer,
             "type_detected?": str, "language_detected?": str},
            f"{where}.document",
        )
        return body
    # 202 ExtractAsyncResponse
    conforms(
        body,
        {"request_id": str, "status": one_of("processing"), "job": dict, "document": dict},
        where,
    )
    conforms(
        body["job"],
        {"id": is_uuid, "status": one_of("queued"), "poll_url": str, "estimated_seconds?": integer},
        f"{where}.job",
    )
    conforms(body["document"], {"id": is_uuid}, f"{where}.document")
    job_id, doc_id = body["job"]["id"], body["document"]["id"]
    poll_url = body["job"]["poll_url"]
    m = re.fullmatch(r"(?:https?://[^/]+)?/v1/(jobs|extractions)/([^/?#]+)", poll_url)
    expect(m is not None, f"{where}.job.poll_url {poll_url!r}: neither /v1/jobs/{{id}} "
           "nor /v1/extractions/{id}, so the SDK has no call to poll it")
    kind, pid = m.group(1), m.group(2)
    note(f"{where}: answered 202 async; polling {poll_url}")
    deadline = time.monotonic() + WAIT
    while True:
        if kind == "jobs":
            st = c.jobs.get(pid).data.get("status")
            done = st in JOB_TERMINAL
        else:
            st = c.extractions.get(pid).data.get("status")
            done = st in {"complete", "failed"}
        if done:
            break
        expect(time.monotonic() < deadline, f"{where}: {poll_url} still {st} after {WAIT}s")
        time.sleep(0.5)
    if kind == "jobs":
        items = paginated(c.extractions.list(document_id=doc_id).data, f"{where} extractions")
        expect(items, f"{where}: no extraction for document {doc_id} after job {job_id} ended ({st})")
        pid = items[0]["id"]
    ext = c.extractions.get(pid).data
    return {
        "extraction_id": ext["id"],
        "status": ext["status"],
        "document": ext["document"],
        "data": ext["data"],
        "confidence": ext.get("confidence"),
        "markdown": body.get("markdown") or ext.get("markdown"),
    }


def extraction_checks(r_body: dict[str, Any], where: str, keys: list[str] = SCHEMA_KEYS) -> str:
    data_matches_schema(r_body["data"], f"{where}.data", keys)
    conf = r_body.get("confidence")
    expect(conf is not None, f"{where}.confidence missing (callers read confidence.overall)")
    confidence_ok(conf, f"{where}.confidence")
    return f"extraction {r_body['extraction_id']} confidence {conf['overall']}"


# ----------------------------------------------------------------------------- checks

def run_rate_limit_checks() -> threading.Thread | None:
    lim = Talonic(api_key=LIMITED_KEY, base_url=BASE_URL, max_retries=0, timeout=30)
    seen: dict[str, Any] = {}

    def no_retry() -> str:
        oks = []
        for i in range(5):
            try:
                r = lim.documents.list(limit=1)
                oks.append(r.rate_limit)
            except TalonicRateLimitError as e:
                seen["t"] = time.time()
                rl = e.rate_limit
                expect(e.status == 429, f"status {e.status}")
                expect(isinstance(rl, RateLimitInfo), f"rate_limit on the error is {rl!r}")
                expect(rl.limit == 2, f"rate_limit.limit = {rl.limit}, want 2")
                expect(rl.remaining == 0, f"rate_limit.remaining = {rl.remaining}, want 0")
                expect(rl.reset_at >= int(seen["t"]), f"reset_at {rl.reset_at} is in the past")
                expect(rl.reset_at <= seen["t"] + 31, f"reset_at {rl.reset_at} > 30 s away")
                expect(bool(e.code) and bool(e.request_id), f"no code/request_id: {describe(e)}")
                seen["reset_at"] = rl.reset_at
                expect(
                    all(isinstance(x, RateLimitInfo) and x.limit == 2 for x in oks),
                    f"successful calls' rate_limit: {oks}",
                )
                return f"call {i + 1} -> 429 code={e.code} rate_limit={rl}"
        raise AssertionError("5 calls with a 2/min key and no 429")

    check("ratelimit.429 without retries", no_retry)
    lim.close()
    if "reset_at" not in seen:
        report("ratelimit.429 with retries (honours Retry-After)", False,
               "prerequisite: no 429 seen without retries")
        return None

    def with_retries() -> None:
        c3 = Talonic(api_key=LIMITED_KEY, base_url=BASE_URL, max_retries=3, timeout=30)
        start = time.time()
        want_wait = seen["reset_at"] - start - 1.5
        try:
            r = c3.documents.list(limit=1)
            took = time.time() - start
            ok = took >= want_wait and took <= 70 and isinstance(r.data.get("data"), list)
            seen["retry"] = (
                ok,
                f"succeeded after {took:.1f}s (next token due in {want_wait + 1.5:.1f}s)",
            )
        except Exception as e:  # noqa: BLE001
            took = time.time() - start
            seen["retry"] = (False, f"raised after {took:.1f}s: {describe(e)}")
        finally:
            c3.close()

    t = threading.Thread(target=with_retries, daemon=True)
    t.seen = seen  # type: ignore[attr-defined]
    t.start()
    return t


def run_schema_setup(c: Talonic) -> None:
    def create() -> str:
        r = c.schemas.create(name=f"{TOKEN} invoice", definition=SCHEMA, description="sdk check")
        conforms(r.data, SCHEMA_RESPONSE)
        props = r.data["definition"].get("properties")
        expect(isinstance(props, dict), f"definition.properties is {short(props)}")
        expect(set(props) == set(SCHEMA_KEYS), f"definition.properties keys {sorted(props)}")
        expect(r.data["name"] == f"{TOKEN} invoice", f"name {r.data['name']!r}")
        S["schema_id"] = r.data["id"]
        S["short_id"] = r.data.get("short_id")
        S["schema_version"] = r.data.get("version")
        return f"id={r.data['id']} short_id={r.data.get('short_id')}"

    check("schemas.create", create)


def run_extract_checks(c: Talonic) -> None:
    txt_name = f"{TOKEN}-invoice.txt"

    def extract_txt() -> str:
        r = c.extract(file_data=INVOICE_TXT.encode(), filename=txt_name, schema=SCHEMA)
        S["extract_resp"] = r
        body = settle_extract(c, r.data, "extract")
        S["doc_txt"] = body["document"]["id"]
        S["ext_txt"] = body["extraction_id"]
        S["ext_txt_body"] = body
        if isinstance(body["document"].get("filename"), str):
            expect(
                body["document"]["filename"] == txt_name,
                f"document.filename {body['document']['filename']!r} != {txt_name!r}",
            )
        return extraction_checks(body, "extract") + f" document {S['doc_txt']}"

    check("extract.txt (file_data, inline JSON Schema)", extract_txt)

    def txt_values() -> str:
        d = need("ext_txt_body")["data"]
        want = {
            "invoice_number": "INV-2024-0042",
            "vendor_name": "Acme Corp",
            "total_amount": 1250,
            "invoice_date": "2024-03-15",
        }
        bad = {k: d.get(k) for k, v in want.items() if d.get(k) != v}
        expect(not bad, f"values differ: {bad}")
        expect(number(d["total_amount"]) is None, "total_amount is not a JSON number")
        return "all four values extracted, total_amount a number"

    check("extract.txt values", txt_values)

    def rl_headers() -> str:
        r = need("extract_resp")
        rl = r.rate_limit
        expect(isinstance(rl, RateLimitInfo), "X-RateLimit-* headers missing or not integers")
        expect(rl.limit > 0 and 0 <= rl.remaining <= rl.limit, f"{rl}")
        expect(abs(rl.reset_at - time.time()) < 86400, f"reset_at {rl.reset_at} is not Unix seconds")
        return f"{rl}"

    check("headers.X-RateLimit-* on extract", rl_headers)

    def cost_headers() -> str:
        r = need("extract_resp")
        expect(r.cost is not None, "no X-Talonic-Cost-Credits header (integer) on extract")
        expect(r.cost.cost_credits >= 0, f"{r.cost}")
        return f"{r.cost}"

    check("headers.X-Talonic-Cost-* on extract", cost_headers)

    def extract_pdf() -> str:
        expect(Path(SAMPLE_PDF).is_file(), f"QUIRE_SAMPLE_PDF {SAMPLE_PDF} is not a file")
        r = c.extract(file_path=SAMPLE_PDF, schema=SCHEMA)
        body = settle_extract(c, r.data, "extract")
        S["doc_pdf"] = body["document"]["id"]
        S["ext_pdf"] = body["extraction_id"]
        doc = body["document"]
        if doc.get("filename") is not None:
            expect(doc["filename"] == Path(SAMPLE_PDF).name, f"document.filename {doc['filename']!r}")
        if doc.get("pages") is not None:
            expect(doc["pages"] >= 1, f"document.pages {doc['pages']}")
        return extraction_checks(body, "extract") + f" pages={doc.get('pages')}"

    check("extract.pdf (file_path)", extract_pdf)

    def extract_schema_id() -> str:
        sid = need("schema_id")
        r = c.extract(
            file_data=INVOICE2_TXT.encode(),
            filename=f"{TOKEN}-second.txt",
            schema_id=sid,
        )
        body = settle_extract(c, r.data, "extract")
        S["doc_3"] = body["document"]["id"]
        if isinstance(body.get("schema"), dict) and body["schema"].get("id") is not None:
            expect(body["schema"]["id"] == sid, f"schema.id {body['schema']['id']} != {sid}")
        detail = extraction_checks(body, "extract")
        expect(body["data"].get("invoice_number") == "INV-2024-0077",
               f"invoice_number {body['data'].get('invoice_number')!r}")
        return detail

    check("extract.schema_id", extract_schema_id)

    def include_markdown() -> str:
        # The SDK sends the multipart part as str(True) == "True" (Node sends "true").
        r = c.extract(
            file_data=INVOICE_TXT.replace("0042", "0055").encode(),
            filename=f"{TOKEN}-md.txt",
            schema=SCHEMA,
            include_markdown=True,
        )
        body = settle_extract(c, r.data, "extract")
        md = body.get("markdown")
        expect(isinstance(md, str), f"`markdown` is {short(md)} with include_markdown")
        expect("INV-2024-0055" in md, f"markdown lacks the text: {short(md)}")
        return f"{len(md)} chars"

    check("extract.include_markdown (multipart \"True\")", include_markdown)

    def extract_document_id() -> str:
        doc, sid = need("doc_txt"), need("schema_id")
        r = c.extract(document_id=doc, schema_id=sid)
        body = settle_extract(c, r.data, "extract")
        expect(body["document"]["id"] == doc, f"document.id {body['document']['id']} != {doc}")
        expect(body["extraction_id"] != S.get("ext_txt"), "same extraction id as the first extract")
        return extraction_checks(body, "extract")

    check("extract.document_id (JSON body)", extract_document_id)

    # Fallbacks so the document checks exercise their own endpoints while /v1/extract is missing.
    if S.get("doc_txt") is None:
        try:
            S["doc_txt"] = raw_upload(txt_name, INVOICE_TXT.encode(), "text/plain")
            note(f"extract failed: uploaded {txt_name} with POST /v1/documents for document checks")
        except Exception as e:  # noqa: BLE001
            note(f"fallback upload failed: {describe(e)}")
    if S.get("doc_pdf") is None and Path(SAMPLE_PDF).is_file():
        try:
            S["doc_pdf"] = raw_upload(Path(SAMPLE_PDF).name, Path(SAMPLE_PDF).read_bytes(),
                                      "application/pdf")
            note("extract.pdf failed: uploaded the PDF with POST /v1/documents")
        except Exception as e:  # noqa: BLE001
            note(f"fallback upload failed: {describe(e)}")
    if S.get("doc_3") is None:
        try:
            S["doc_3"] = raw_upload(f"{TOKEN}-second.txt", INVOICE2_TXT.encode(), "text/plain")
        except Exception as e:  # noqa: BLE001
            note(f"fallback upload failed: {describe(e)}")


def run_async_checks() -> None:
    async def main() -> dict[str, Any]:
        async with AsyncTalonic(api_key=API_KEY, base_url=BASE_URL, timeout=60) as ac:
            names = ["async.extract", "async.search", "async.credits.get_balance",
                     "async.documents.get", "async.schemas.list"]
            coros = [
                ac.extract(file_data=INVOICE_TXT.replace("0042", "0099").encode(),
                           filename=f"{TOKEN}-async.txt", schema=SCHEMA),
                ac.search(TOKEN, limit=5),
                ac.credits.get_balance(),
                ac.documents.get(S["doc_txt"]) if S.get("doc_txt") else asyncio.sleep(0, None),
                ac.schemas.list(),
            ]
            got = await asyncio.gather(*coros, return_exceptions=True)
            return dict(zip(names, got))

    try:
        res = asyncio.run(main())
    except Exception as e:  # noqa: BLE001
        report("async.client", False, describe(e))
        return

    def unwrap(name: str) -> Any:
        v = res[name]
        if isinstance(v, BaseException):
            raise v
        expect(v is not None, "prerequisite missing: doc_txt")
        return v.data

    def a_extract() -> str:
        d = unwrap("async.extract")
        if "extraction_id" in d:
            conforms(d, {"extraction_id": is_uuid, "status": one_of("complete"),
                         "document": dict, "data": dict}, "extract")
            data_matches_schema(d["data"], "extract.data")
            expect(d["data"].get("invoice_number") == "INV-2024-0099",
                   f"invoice_number {d['data'].get('invoice_number')!r}")
            return f"extraction {d['extraction_id']}"
        conforms(d, {"request_id": str, "status": one_of("processing"), "job": dict,
                     "document": dict}, "extract(202)")
        return f"202 job {d['job'].get('id')}"

    def a_search() -> str:
        d = unwrap("async.search")
        conforms(d, {"documents": list, "fieldMatches?": list, "sources?": list,
                     "schemas?": list, "fields?": list}, "search")
        return f"{len(d['documents'])} documents"

    def a_credits() -> str:
        d = unwrap("async.credits.get_balance")
        conforms(d, {"balance_credits": number}, "balance")
        return f"balance_credits={d['balance_credits']}"

    def a_doc() -> str:
        d = unwrap("async.documents.get")
        conforms(d, DOCUMENT, "document")
        expect(d["id"] == S["doc_txt"], f"id {d['id']}")
        return f"status={d['status']}"

    def a_schemas() -> str:
        items = paginated(unwrap("async.schemas.list"), "schemas")
        return f"{len(items)} schemas"

    check("async.extract", a_extract)
    check("async.search", a_search)
    check("async.credits.get_balance", a_credits)
    check("async.documents.get", a_doc)
    check("async.schemas.list", a_schemas)


def run_search_and_credits(c: Talonic) -> None:
    def search() -> str:
        r = c.search(TOKEN, limit=5)
        d = r.data
        conforms(d, {"documents": list, "fieldMatches": list, "sources": list,
                     "schemas": list, "fields": list}, "search")
        expect(len(d["documents"]) <= 5, f"limit=5 but {len(d['documents'])} documents")
        for i, item in enumerate(d["documents"]):
            conforms(item, {"id": is_uuid, "filename?": str, "status?": str}, f"documents[{i}]")
        return f"{len(d['documents'])} documents, {len(d['schemas'])} schemas"

    check("search (shape, all five collections)", search)

    def search_finds() -> str:
        doc = need("doc_txt")
        ids = [row_id(x) for x in c.search(TOKEN, limit=20).data.get("documents", [])]
        expect(doc in ids, f"document {doc} (filename contains {TOKEN}) not in {ids}")
        return "found by filename token"

    check("search finds this run's document", search_finds)

    def search_empty() -> str:
        d = c.search("zz-no-such-thing-" + TOKEN).data
        for k in ("documents", "fieldMatches", "sources", "schemas", "fields"):
            expect(d.get(k) == [], f"{k} = {short(d.get(k))}, want []")
        return "all empty arrays"

    check("search without matches", search_empty)

    def credits() -> str:
        r = c.credits.get_balance()
        conforms(
            r.data,
            {"balance_credits": number, "balance_eur?": number, "burn_rate_30d_credits?": number,
             "projected_runway_days?": number, "tier?": str, "tier_resets_at?": is_ts},
            "balance",
        )
        return short(r.data, 160)

    check("credits.get_balance", credits)


def run_document_checks(c: Talonic) -> None:
    def get() -> str:
        doc = need("doc_txt")
        d = c.documents.get(doc).data
        conforms(d, DOCUMENT, "document")
        expect(d["id"] == doc, f"id {d['id']} != {doc}")
        expect(d["filename"] == f"{TOKEN}-invoice.txt", f"filename {d['filename']!r}")
        S["doc_txt_created"] = d["created_at"]
        S["doc_txt_status"] = d["status"]
        return f"status={d['status']} mime={d.get('mime_type')}"

    check("documents.get", get)

    def markdown() -> str:
        doc = need("doc_txt")
        d = c.documents.get_markdown(doc).data
        conforms(d, {"markdown": str, "document_id?": is_uuid}, "markdown")
        expect("INV-2024-0042" in d["markdown"], f"markdown lacks the text: {short(d['markdown'])}")
        if "document_id" in d:
            expect(d["document_id"] == doc, f"document_id {d['document_id']}")
        return f"{len(d['markdown'])} chars"

    check("documents.get_markdown", markdown)

    def listing() -> str:
        doc = need("doc_txt")
        items = paginated(c.documents.list(limit=100).data, "documents")
        for i, item in enumerate(items[:5]):
            conforms(item, DOCUMENT, f"data[{i}]")
        expect(doc in [x.get("id") for x in items], f"{doc} not listed")
        return f"{len(items)} documents"

    check("documents.list", listing)

    def paging() -> str:
        first = c.documents.list(limit=1).data
        items = paginated(first, "page1")
        p = first["pagination"]
        expect(len(items) == 1 and p["limit"] == 1, f"limit=1 gave {len(items)} rows, limit {p['limit']}")
        expect(p["has_more"] is True and isinstance(p["next_cursor"], str),
               f"≥2 documents exist but pagination={p}")
        second = c.documents.list(limit=1, cursor=p["next_cursor"]).data
        items2 = paginated(second, "page2")
        expect(len(items2) == 1 and items2[0]["id"] != items[0]["id"], "page 2 repeats page 1")
        return f"total={p['total']}"

    check("documents.list limit+cursor", paging)

    def f_status() -> str:
        doc = need("doc_txt")
        st = S.get("doc_txt_status") or "completed"
        items = paginated(c.documents.list(status=st, limit=100).data, "documents")
        wrong = [x.get("status") for x in items if x.get("status") != st]
        expect(not wrong, f"status={st} returned other statuses {wrong}")
        expect(doc in [x.get("id") for x in items], f"{doc} ({st}) not listed")
        other = "error" if st != "error" else "completed"
        items = paginated(c.documents.list(status=other, limit=100).data, "documents")
        expect(doc not in [x.get("id") for x in items], f"{doc} listed under status={other}")
        return f"status={st} includes it, status={other} does not"

    check("documents.list status filter", f_status)

    def f_search() -> str:
        doc = need("doc_txt")
        items = paginated(c.documents.list(search=f"{TOKEN}-invoice", limit=100).data, "documents")
        ids = [x.get("id") for x in items]
        expect(doc in ids, f"{doc} not found by search")
        if S.get("doc_pdf"):
            expect(S["doc_pdf"] not in ids, "the PDF matched a search for another filename")
        return f"{len(items)} match"

    check("documents.list search filter", f_search)

    def f_after_before() -> str:
        doc = need("doc_txt")
        created = datetime.fromisoformat(
            (S.get("doc_txt_created") or iso(datetime.now(timezone.utc))).replace("Z", "+00:00")
        )
        past, future = iso(created - timedelta(minutes=5)), iso(datetime.now(timezone.utc) + timedelta(days=1))
        ids = lambda **kw: [x.get("id") for x in paginated(c.documents.list(limit=100, **kw).data)]  # noqa: E731
        expect(doc in ids(after=past), f"after={past} excludes it")
        expect(ids(after=future) == [], f"after={future} is not empty")
        expect(doc in ids(before=future), f"before={future} excludes it")
        expect(doc not in ids(before=past), f"before={past} includes it")
        return "after/before bound created_at"

    check("documents.list after/before filters", f_after_before)

    def f_source() -> str:
        need("doc_txt")
        items = paginated(c.documents.list(source_id=str(uuid.uuid4()), limit=100).data, "documents")
        expect(items == [], f"unknown source_id returned {len(items)} documents")
        return "unknown source -> empty page"

    check("documents.list source_id filter", f_source)


def run_extraction_checks(c: Talonic) -> None:
    def listing() -> str:
        items = paginated(c.extractions.list(limit=100).data, "extractions")
        for i, x in enumerate(items[:5]):
            conforms(x, EXTRACTION_ITEM, f"data[{i}]")
        expect(need("ext_txt") in [x.get("id") for x in items], "this run's extraction not listed")
        return f"{len(items)} extractions"

    check("extractions.list", listing)

    def by_doc() -> str:
        doc = need("doc_txt")
        items = paginated(c.extractions.list(document_id=doc).data, "extractions")
        expect(items, "no extraction for the document")
        wrong = [x.get("document_id") for x in items if x.get("document_id") != doc]
        expect(not wrong, f"other documents' extractions: {wrong}")
        expect(need("ext_txt") in [x.get("id") for x in items], "first extraction missing")
        return f"{len(items)} for the document"

    check("extractions.list document_id filter", by_doc)

    def get() -> str:
        ext, doc = need("ext_txt"), need("doc_txt")
        d = c.extractions.get(ext).data
        conforms(d, EXTRACTION, "extraction")
        conforms(d["document"], {"id": is_uuid, "filename?": str, "pages?": integer}, "extraction.document")
        expect(d["id"] == ext and d["document"]["id"] == doc, f"ids {d['id']} / {d['document']['id']}")
        data_matches_schema(d["data"], "extraction.data")
        confidence_ok(d["confidence"], "extraction.confidence")
        return f"status={d['status']} overall={d['confidence']['overall']}"

    check("extractions.get", get)

    def get_data() -> str:
        d = c.extractions.get_data(need("ext_txt")).data
        data_matches_schema(d, "data")
        expect(d.get("invoice_number") == "INV-2024-0042", f"invoice_number {d.get('invoice_number')!r}")
        return "bare data object"

    check("extractions.get_data (JSON)", get_data)

    def get_csv() -> str:
        text = c.extractions.get_data(need("ext_txt"), format="csv")
        expect(isinstance(text, str), f"{type(text)}")
        rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
        expect(len(rows) >= 2, f"want a header and a row, got {short(text)}")
        expect(set(SCHEMA_KEYS) <= set(rows[0]), f"header {rows[0]} lacks the schema keys")
        expect("INV-2024-0042" in rows[1], f"row {rows[1]}")
        return f"header {rows[0]}"

    check("extractions.get_data (format=csv)", get_csv)

    def patch() -> str:
        ext = need("ext_txt")
        r = c.extractions.patch(ext, corrections=[{"field": "vendor_name", "value": "Acme Corporation",
                                                   "reason": "sdk check"}])
        expect(isinstance(r.data, dict), f"answer {short(r.data)}")
        d = c.extractions.get(ext).data
        expect(d["data"].get("vendor_name") == "Acme Corporation",
               f"after patch vendor_name={d['data'].get('vendor_name')!r}")
        expect("vendor_name" in (d.get("locked_fields") or []),
               f"locked_fields={d.get('locked_fields')} lacks vendor_name")
        f = (d.get("confidence") or {}).get("fields") or {}
        if "vendor_name" in f:
            expect(f["vendor_name"] == 1.0, f"confidence.fields.vendor_name={f['vendor_name']}, want 1.0")
        return f"answer {short(r.data, 80)}; locked {d.get('locked_fields')}"

    check("extractions.patch ({field, value})", patch)

    def patch_path() -> str:
        ext = need("ext_txt")
        c.extractions.patch(ext, corrections=[{"path": "invoice_date", "value": "2024-03-16"}])
        got = c.extractions.get(ext).data["data"].get("invoice_date")
        expect(got == "2024-03-16", f"invoice_date={got!r} after a {{path, value}} correction")
        return "the SDK test's {path, value} form works too"

    check("extractions.patch ({path, value})", patch_path)


def run_re_extract_and_filter(c: Talonic) -> None:
    def re_extract() -> str:
        doc = need("doc_pdf")
        before = len(paginated(c.extractions.list(document_id=doc).data))
        r = c.documents.re_extract(doc, schema=SCHEMA)
        conforms(r.data, {"id": is_uuid, "status": str, "message?": str}, "re-extract")
        deadline = time.monotonic() + min(WAIT, 20)
        while True:
            after = len(paginated(c.extractions.list(document_id=doc).data))
            if after > before:
                break
            expect(time.monotonic() < deadline, f"no new extraction ({before} -> {after})")
            time.sleep(0.5)
        return f"{short(r.data, 100)}; extractions {before} -> {after}"

    check("documents.re_extract (schema)", re_extract)

    def re_extract_id() -> str:
        r = c.documents.re_extract(need("doc_txt"), schema_id=need("schema_id"))
        conforms(r.data, {"id": is_uuid, "status": str, "message?": str}, "re-extract")
        return short(r.data, 100)

    check("documents.re_extract (schema_id)", re_extract_id)

    def hits(body: Any) -> list[Any]:
        conforms(body, {"data": list, "total": integer}, "filter")
        return [row_id(x) for x in body["data"]]

    def f_eq() -> str:
        doc = need("doc_txt")
        need("ext_txt")
        body = c.documents.filter(
            conditions=[{"fieldId": "invoice_number", "operator": "eq", "value": "INV-2024-0042"}]
        ).data
        ids = hits(body)
        expect(doc in ids, f"{doc} not in {ids}")
        expect(S.get("doc_3") not in ids, "INV-2024-0077 matched eq INV-2024-0042")
        return f"total={body['total']}"

    check("documents.filter eq (fieldId = schema field name)", f_eq)

    def f_field_uuid() -> str:
        doc = need("doc_txt")
        fields = paginated(c.fields.list(search="invoice_number").data)
        fid = next((f["id"] for f in fields if f.get("canonical_name") == "invoice_number"), None)
        expect(fid is not None, "no registry field invoice_number")
        ids = hits(c.documents.filter(
            conditions=[{"fieldId": fid, "operator": "contains", "value": "2024-0042"}]).data)
        expect(doc in ids, f"{doc} not in {ids}")
        return f"fieldId={fid}"

    check("documents.filter contains (fieldId = field UUID)", f_field_uuid)

    def f_alias() -> str:
        doc = need("doc_txt")
        ids = hits(c.documents.filter(
            conditions=[{"field": "invoice_number", "operator": "is_not_empty"}],
            sort={"field": "total_amount", "direction": "desc"}, limit=50).data)
        expect(doc in ids, f"{doc} not in {ids}")
        if S.get("doc_3") in ids:
            expect(ids.index(doc) < ids.index(S["doc_3"]), "sort desc by total_amount not honoured")
        return "`field` alias + sort"

    check("documents.filter {field, …} as the SDK's own test writes it", f_alias)

    def f_range() -> str:
        doc = need("doc_txt")
        ids = hits(c.documents.filter(conditions=[
            {"fieldId": "total_amount", "operator": "between", "value": 1000, "valueTo": 2000}]).data)
        expect(doc in ids, f"between 1000 and 2000 misses 1250: {ids}")
        ids = hits(c.documents.filter(conditions=[
            {"fieldId": "total_amount", "operator": "gt", "value": 5000}]).data)
        expect(doc not in ids, "gt 5000 matches 1250")
        return "between/gt on a number field"

    check("documents.filter between/gt", f_range)


def run_field_checks(c: Talonic) -> None:
    def listing() -> str:
        items = paginated(c.fields.list(limit=100).data, "fields")
        expect(items, "the registry is empty after extracting with a schema")
        for i, x in enumerate(items[:5]):
            conforms(x, FIELD, f"data[{i}]")
        names = [x.get("canonical_name") for x in items]
        expect(set(SCHEMA_KEYS) <= set(names), f"schema fields missing from {names}")
        S["field"] = next(x for x in items if x.get("canonical_name") == "invoice_number")
        return f"{len(items)} fields"

    check("fields.list", listing)

    def search() -> str:
        items = paginated(c.fields.list(search="invoice").data)
        expect(items, "search=invoice found nothing")
        wrong = [x.get("canonical_name") for x in items
                 if "invoice" not in (x.get("canonical_name", "") + " " + (x.get("display_name") or "")).lower()]
        expect(not wrong, f"search=invoice returned {wrong}")
        return f"{len(items)} matches"

    check("fields.list search", search)

    def tier() -> str:
        t = need("field").get("tier")
        expect(isinstance(t, int), f"field has no integer tier: {t!r}")
        items = paginated(c.fields.list(tier=str(t), limit=100).data)
        wrong = [x.get("tier") for x in items if x.get("tier") != t]
        expect(items and not wrong, f"tier={t} gave {len(items)} rows, other tiers {wrong}")
        return f"tier={t}: {len(items)}"

    check("fields.list tier", tier)

    def cluster() -> str:
        items = paginated(c.fields.list(limit=100).data)
        named = next((x["cluster_name"] for x in items if x.get("cluster_name")), None)
        if named:
            got = paginated(c.fields.list(cluster=named, limit=100).data)
            wrong = [x.get("cluster_name") for x in got if x.get("cluster_name") != named]
            expect(got and not wrong, f"cluster={named!r}: {len(got)} rows, others {wrong}")
            return f"cluster={named!r}: {len(got)}"
        got = paginated(c.fields.list(cluster="no-such-cluster", limit=100).data)
        expect(got == [], f"unknown cluster returned {len(got)} fields")
        return "no clustered field; unknown cluster -> empty"

    check("fields.list cluster", cluster)

    def get() -> str:
        f = need("field")
        d = c.fields.get(f["id"]).data
        conforms(d, {**FIELD, "recent_occurrences?": list}, "field")
        expect(d["id"] == f["id"], f"id {d['id']}")
        occ = d.get("recent_occurrences") or []
        expect(len(occ) <= 20, f"{len(occ)} recent_occurrences (max 20)")
        for i, o in enumerate(occ[:3]):
            conforms(o, {"document_id?": is_uuid, "created_at?": is_ts}, f"recent_occurrences[{i}]")
        return f"{d['canonical_name']} occurrences={d['occurrence_count']}"

    check("fields.get", get)

    def similar() -> str:
        f = need("field")
        d = c.fields.similar(f["id"], limit=5).data
        conforms(d, {"data": list}, "similar")
        expect(len(d["data"]) <= 5, f"limit=5 gave {len(d['data'])}")
        for i, x in enumerate(d["data"]):
            conforms(x, {"id": is_uuid, "canonical_name": str, "similarity?": number}, f"data[{i}]")
            expect(x["id"] != f["id"], "a field is listed as similar to itself")
        return f"{len(d['data'])} similar"

    check("fields.similar", similar)


def run_job_checks(c: Talonic) -> None:
    def create() -> str:
        docs = [need("doc_txt"), need("doc_pdf")]
        r = c.jobs.create(schema_id=need("schema_id"), document_ids=docs)
        conforms(r.data, {"id": is_uuid, "status": one_of("pending"), "message?": str,
                          "links": dict}, "job")
        conforms(r.data["links"], {"self": str, "results": str}, "job.links")
        S["job"] = r.data["id"]
        return f"id={r.data['id']} status={r.data['status']}"

    check("jobs.create", create)

    def poll() -> str:
        job = need("job")
        deadline = time.monotonic() + WAIT
        seen = []
        while True:
            d = c.jobs.get(job).data
            conforms(d, JOB, "job")
            if not seen or seen[-1] != d["status"]:
                seen.append(d["status"])
            if d["status"] in JOB_TERMINAL:
                break
            expect(time.monotonic() < deadline, f"still {d['status']} after {WAIT}s ({seen})")
            time.sleep(0.5)
        expect(d["status"] == "complete", f"ended {d['status']} error={d.get('error')}")
        expect(d.get("document_count") == 2, f"document_count={d.get('document_count')}")
        expect(d.get("completed_documents") == 2, f"completed_documents={d.get('completed_documents')}")
        if isinstance(d.get("schema"), dict) and d["schema"].get("id"):
            expect(d["schema"]["id"] == S["schema_id"], f"schema.id {d['schema']['id']}")
        S["job_done"] = d
        return " -> ".join(seen)

    check("jobs.get (poll to a terminal status)", poll)

    def results() -> str:
        job = need("job")
        need("job_done")
        d = c.jobs.get_results(job).data
        conforms(d, {"job_id": is_uuid, "job_status": one_of(*JOB_STATUS), "total_rows": integer,
                     "data": list, "schema?": dict, "links?": dict}, "results")
        expect(d["job_id"] == job and d["job_status"] == "complete", f"{d['job_id']} {d['job_status']}")
        expect(d["total_rows"] == len(d["data"]) == 2, f"total_rows={d['total_rows']} rows={len(d['data'])}")
        by_doc = {}
        for i, row in enumerate(d["data"]):
            conforms(row, {"id?": is_uuid, "document_id": is_uuid, "filename?": str, "status?": str,
                           "values": dict, "confidence?": number, "validation_flags?": list},
                     f"data[{i}]")
            data_matches_schema(row["values"], f"data[{i}].values")
            by_doc[row["document_id"]] = row
        expect(set(by_doc) == {S["doc_txt"], S["doc_pdf"]}, f"rows for {sorted(by_doc)}")
        got = by_doc[S["doc_txt"]]["values"].get("invoice_number")
        expect(got == "INV-2024-0042", f"txt row invoice_number={got!r}")
        return f"{d['total_rows']} rows"

    check("jobs.get_results", results)

    def listing() -> str:
        job = need("job")
        items = paginated(c.jobs.list(limit=100).data, "jobs")
        for i, x in enumerate(items[:5]):
            conforms(x, JOB, f"data[{i}]")
        expect(job in [x.get("id") for x in items], "job not listed")
        done = [x.get("id") for x in paginated(c.jobs.list(status="complete", limit=100).data)]
        failed = [x.get("id") for x in paginated(c.jobs.list(status="failed", limit=100).data)]
        expect(job in done, "status=complete misses the finished job")
        expect(job not in failed, "status=failed lists a complete job")
        return f"{len(items)} jobs; status filter ok"

    check("jobs.list (+ status filter)", listing)

    def cancel_done() -> str:
        job = need("job")
        before = need("job_done")
        d = c.jobs.cancel(job).data
        conforms(d, JOB, "job")
        expect(d["id"] == job and d["status"] == "complete", f"cancel changed it: {d['status']}")
        expect(d.get("completed_at") == before.get("completed_at"), "completed_at changed")
        return "finished job returned unchanged"

    check("jobs.cancel (finished job)", cancel_done)

    def cancel_running() -> str:
        r = c.jobs.create(schema_id=need("schema_id"), document_ids=[need("doc_txt")])
        job = r.data["id"]
        d = c.jobs.cancel(job).data
        expect(isinstance(d, dict) and d.get("id") == job, f"answer {short(d)}")
        expect(d.get("status") in {"cancelled", "complete", "failed"},
               f"status after cancel = {d.get('status')!r}")
        again = c.jobs.get(job).data.get("status")
        expect(again == d["status"], f"cancel said {d['status']}, get says {again}")
        return f"status={d['status']}"

    check("jobs.cancel (fresh job)", cancel_running)


def run_schema_checks(c: Talonic) -> None:
    def listing() -> str:
        items = paginated(c.schemas.list().data, "schemas")
        for i, x in enumerate(items[:5]):
            conforms(x, SCHEMA_RESPONSE, f"data[{i}]")
        expect(need("schema_id") in [x.get("id") for x in items], "created schema not listed")
        return f"{len(items)} schemas"

    check("schemas.list", listing)

    def get() -> str:
        sid = need("schema_id")
        d = c.schemas.get(sid).data
        conforms(d, SCHEMA_RESPONSE, "schema")
        expect(d["id"] == sid, f"id {d['id']}")
        expect(set(d["definition"].get("properties", {})) == set(SCHEMA_KEYS), "properties differ")
        return f"version={d.get('version')}"

    check("schemas.get", get)

    def get_short() -> str:
        short_id = need("short_id")
        expect(re.fullmatch(r"SCH-[0-9A-F]{8}", short_id) is not None, f"short_id {short_id!r}")
        d = c.schemas.get(short_id).data
        expect(d.get("id") == S["schema_id"], f"{short_id} found {d.get('id')}")
        return short_id

    check("schemas.get by short_id", get_short)

    def update_name() -> str:
        sid = need("schema_id")
        r = c.schemas.update(sid, name=f"{TOKEN} invoice v2")
        conforms(r.data, SCHEMA_RESPONSE, "schema")
        d = c.schemas.get(sid).data
        expect(d["name"] == f"{TOKEN} invoice v2", f"name {d['name']!r}")
        props = d["definition"].get("properties") or {}
        expect(set(props) == set(SCHEMA_KEYS), f"definition not kept: properties {sorted(props)}")
        v0 = S.get("schema_version")
        if isinstance(v0, int) and isinstance(d.get("version"), int):
            expect(d["version"] > v0, f"version {v0} -> {d['version']}")
        return f"name changed, definition kept, version {v0} -> {d.get('version')}"

    check("schemas.update (PUT, name only)", update_name)

    def update_def() -> str:
        sid = need("schema_id")
        new = {"type": "object", "properties": {**SCHEMA["properties"], "due_date": {"type": "string"}}}
        c.schemas.update(sid, definition=new)
        d = c.schemas.get(sid).data
        props = d["definition"].get("properties") or {}
        expect(set(props) == set(SCHEMA_KEYS) | {"due_date"}, f"properties {sorted(props)}")
        expect(d["name"] == f"{TOKEN} invoice v2", f"name not kept: {d['name']!r}")
        return "definition replaced, name kept"

    check("schemas.update (PUT, definition only)", update_def)

    def delete() -> str:
        r = c.schemas.create(name=f"{TOKEN} throwaway", definition={"type": "object", "properties": {"x": {"type": "string"}}})
        sid = r.data["id"]
        d = c.schemas.delete(sid).data
        conforms(d, {"deleted": bool, "id": is_uuid}, "deleted")
        expect(d["deleted"] is True and d["id"] == sid, f"{d}")
        expect_error(lambda: c.schemas.get(sid), TalonicNotFoundError, 404)
        return "deleted; get -> 404"

    check("schemas.delete", delete)


def run_delete_document(c: Talonic) -> None:
    def delete() -> str:
        doc = need("doc_3")
        d = c.documents.delete(doc).data
        conforms(d, {"deleted": bool, "id": is_uuid}, "deleted")
        expect(d["deleted"] is True and d["id"] == doc, f"{d}")
        expect_error(lambda: c.documents.get(doc), TalonicNotFoundError, 404)
        ids = [x.get("id") for x in paginated(c.documents.list(limit=100).data)]
        expect(doc not in ids, "deleted document still listed")
        return "deleted; get -> 404; not listed"

    check("documents.delete", delete)


def run_error_checks(c: Talonic) -> None:
    bad = Talonic(api_key="tlnc_live_" + "x" * 40, base_url=BASE_URL, max_retries=0)
    ro = Talonic(api_key=READONLY_KEY, base_url=BASE_URL, max_retries=0)
    c0 = Talonic(api_key=API_KEY, base_url=BASE_URL, max_retries=0, timeout=60)

    check("error.401 unknown key", lambda: expect_error(bad.documents.list, TalonicAuthError, 401))
    check("error.403 read-only key: extract", lambda: expect_error(
        lambda: ro.extract(file_data=b"Invoice number: X-1\n", filename="ro.txt", schema=SCHEMA),
        TalonicAuthError, 403))
    check("error.403 read-only key: schemas.create", lambda: expect_error(
        lambda: ro.schemas.create(name="ro", definition=SCHEMA), TalonicAuthError, 403))
    check("error.403 read-only key: documents.re_extract", lambda: expect_error(
        lambda: ro.documents.re_extract(S.get("doc_txt") or str(uuid.uuid4()), schema=SCHEMA),
        TalonicAuthError, 403))

    def ro_reads() -> str:
        paginated(ro.documents.list(limit=1).data)
        conforms(ro.documents.filter(
            conditions=[{"fieldId": "invoice_number", "operator": "is_not_empty"}]).data,
            {"data": list, "total": integer}, "filter")
        return "documents.list and documents.filter allowed"

    check("read-only key can list and filter", ro_reads)

    unknown = str(uuid.uuid4())
    for name, fn in [
        ("documents.get", lambda: c0.documents.get(unknown)),
        ("documents.get_markdown", lambda: c0.documents.get_markdown(unknown)),
        ("extractions.get", lambda: c0.extractions.get(unknown)),
        ("jobs.get", lambda: c0.jobs.get(unknown)),
        ("jobs.cancel", lambda: c0.jobs.cancel(unknown)),
        ("schemas.get", lambda: c0.schemas.get(unknown)),
        ("fields.get", lambda: c0.fields.get(unknown)),
    ]:
        check(f"error.404 {name} unknown id", lambda fn=fn: expect_error(fn, TalonicNotFoundError, 404))

    def csv_404() -> str:
        try:
            c0.extractions.get_data(unknown, format="csv")
        except httpx.HTTPStatusError as e:
            expect(e.response.status_code == 404, f"status {e.response.status_code}")
            expect("No such route" not in e.response.text,
                   "404 only because the route does not exist yet (No such route)")
            return "httpx.HTTPStatusError 404 (the SDK's csv path bypasses TalonicError)"
        raise AssertionError("succeeded")

    check("error.404 extractions.get_data csv unknown id", csv_404)

    for name, fn in [
        ("documents.list bad cursor", lambda: c0.documents.list(cursor="not-a-cursor")),
        ("documents.list limit=0", lambda: c0.documents.list(limit=0)),
        ("extract schema without properties", lambda: c0.extract(
            file_data=b"Invoice number: X-1\n", filename="bad.txt",
            schema={"type": "object", "properties": {}})),
        ("documents.filter unknown operator", lambda: c0.documents.filter(
            conditions=[{"fieldId": "invoice_number", "operator": "no_such_op", "value": 1}])),
        ("jobs.create malformed document id", lambda: c0.jobs.create(
            schema_id=S.get("schema_id") or unknown, document_ids=["not-a-uuid"])),
        ("extractions.patch unknown field", lambda: c0.extractions.patch(
            need("ext_txt"), corrections=[{"field": "no_such_field", "value": 1}])),
    ]:
        check(f"error.400 {name}", lambda fn=fn: expect_error(fn, TalonicValidationError, 400))

    def too_large() -> str:
        big = b"A" * (2 * MAX_BODY)
        return expect_error(
            lambda: c0.extract(file_data=big, filename="big.txt", schema=SCHEMA),
            TalonicValidationError, 413)

    check("error.413 extract of a file over the limit", too_large)
    for x in (bad, ro, c0):
        x.close()


def main() -> int:
    missing = [k for k, v in [("TALONIC_BASE_URL", BASE_URL), ("TALONIC_API_KEY", API_KEY),
                              ("QUIRE_READONLY_KEY", READONLY_KEY),
                              ("QUIRE_LIMITED_KEY", LIMITED_KEY)] if not v]
    if missing:
        print(f"missing environment: {', '.join(missing)}", file=sys.stderr)
        return 2
    print(f"# Quire at {BASE_URL}; run token {TOKEN}", file=sys.stderr)
    retry_thread = run_rate_limit_checks()
    with Talonic(api_key=API_KEY, base_url=BASE_URL, timeout=60) as c:
        run_schema_setup(c)
        run_extract_checks(c)
        run_async_checks()
        run_search_and_credits(c)
        run_document_checks(c)
        run_extraction_checks(c)
        run_re_extract_and_filter(c)
        run_field_checks(c)
        run_job_checks(c)
        run_schema_checks(c)
        run_delete_document(c)
        run_error_checks(c)
    if retry_thread is not None:
        retry_thread.join(timeout=75)
        ok, detail = retry_thread.seen.get("retry", (False, "did not finish within 75 s"))  # type: ignore[attr-defined]
        report("ratelimit.429 with retries (honours Retry-After)", ok, detail)
    print(f"{PASSED} passed, {FAILED} failed", flush=True)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
