#!/usr/bin/env python3
"""Baseline for the capture → mocks benchmark: the seed's collector algorithm in Python.

Written here from seed 003's description (not copied from anywhere): regex patterns applied
recursively by `sanitize_data`, header and password-field rules from the seed's table,
`generate_hash` exactly as the seed shows it, an OrderedDict LRU of 10,000 keys, and a
WireMock mapping dict serialised with json.dumps (what the seed pushes to Redis).

Input: a JSONL corpus (our documented shape, bodies as JSON text). Output: one JSON line with
the timing of sanitize + dedupe + generate over the whole corpus, single process (one core).
"""

import hashlib
import json
import re
import sys
import time
from collections import OrderedDict
from urllib.parse import parse_qsl, urlsplit

# The seed's sanitization table, as regular expressions.
SENSITIVE_PATTERNS = [
    (re.compile(p), r)
    for p, r in [
        (r"Bearer\s+eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*", "SANITIZED_JWT"),
        (r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*", "SANITIZED_JWT"),
        (r"\b(?:\d[ -]?){12,18}\d\b", "SANITIZED_CARD"),
        (r"\b\d{3}\.\d{3}\.\d{3}-\d{2}\b", "SANITIZED_DOCUMENT"),
        (r"\b\d{2}\.\d{3}\.\d{3}/\d{4}-\d{2}\b", "SANITIZED_DOCUMENT"),
        (r"\+\d{2}\s?\d{2}\s?\d{4,5}-?\d{4}", "SANITIZED_PHONE"),
        (r"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}", "SANITIZED_EMAIL"),
    ]
]
PASSWORD_FIELDS = ("password", "passwd", "pwd")
HEADER_WORDS = ("key", "token", "secret")
COOKIE_HEADERS = ("cookie", "set-cookie")


def sanitize_data(data):
    if isinstance(data, dict):
        return {
            k: ("SANITIZED_PASSWORD" if k.lower() in PASSWORD_FIELDS else sanitize_data(v))
            for k, v in data.items()
        }
    elif isinstance(data, list):
        return [sanitize_data(item) for item in data]
    elif isinstance(data, str):
        for pattern, replacement in SENSITIVE_PATTERNS:
            data = pattern.sub(replacement, data)
        return data
    else:
        return data


def sanitize_headers(headers):
    out = {}
    for k, v in headers.items():
        lk = k.lower()
        if lk == "authorization" or lk in COOKIE_HEADERS or any(w in lk for w in HEADER_WORDS):
            out[k] = "SANITIZED_HEADER"
        else:
            out[k] = sanitize_data(v)
    return out


class Request:
    def __init__(self, method, path, query, headers, body):
        self.method, self.path, self.query, self.headers, self.body = method, path, query, headers, body


def generate_hash(request):
    # Exactly the seed's algorithm.
    normalized = {
        "method": request.method.upper(),
        "path": request.path,
        "query": sorted(request.query.items()) if request.query else [],
        "body": json.dumps(request.body, sort_keys=True) if request.body else "",
    }
    if len(normalized["body"]) > 1024:
        normalized["body"] = normalized["body"][:1024]
    hash_input = json.dumps(normalized, sort_keys=True)
    return hashlib.sha256(hash_input.encode()).hexdigest()


class Deduplicator:
    def __init__(self, capacity=10000):
        self.capacity = capacity
        self.cache = OrderedDict()

    def is_duplicate(self, request):
        key = generate_hash(request)
        if key in self.cache:
            self.cache.move_to_end(key)
            return True, key
        self.cache[key] = True
        if len(self.cache) > self.capacity:
            self.cache.popitem(last=False)
        return False, key


def parse_body(text):
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def generate_wiremock_mapping(req, resp, key):
    request = {"method": req.method}
    if req.query:
        request["urlPath"] = req.path
        request["queryParameters"] = {k: {"equalTo": v} for k, v in req.query.items()}
    else:
        request["url"] = req.path
    if req.body is not None:
        request["bodyPatterns"] = [
            {"equalToJson": json.dumps(req.body), "ignoreArrayOrder": True, "ignoreExtraElements": True}
        ]
    response = {"status": resp["status"], "headers": resp["headers"]}
    if isinstance(resp["body"], (dict, list)):
        response["jsonBody"] = resp["body"]
    elif resp["body"] is not None:
        response["body"] = resp["body"]
    return {"id": key[:8] + "-" + key[8:12] + "-" + key[12:16] + "-" + key[16:20] + "-" + key[20:32],
            "request": request, "response": response, "metadata": {"dedupeKey": key}}


def main(path):
    raw = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    total_bytes = sum(
        len(x["request"].get("body") or "") + len(x["response"].get("body") or "") for x in raw
    )
    dedup = Deduplicator()
    out = []
    start = time.perf_counter()
    for x in raw:
        rq, rs = x["request"], x["response"]
        parts = urlsplit(rq["url"])
        req = Request(
            rq["method"],
            sanitize_data(parts.path),
            {k: sanitize_data(v) for k, v in parse_qsl(parts.query)},
            sanitize_headers(rq.get("headers", {})),
            sanitize_data(parse_body(rq.get("body"))),
        )
        resp = {
            "status": rs["status"],
            "headers": sanitize_headers(rs.get("headers", {})),
            "body": sanitize_data(parse_body(rs.get("body"))),
        }
        dup, key = dedup.is_duplicate(req)
        if not dup:
            out.append(json.dumps(generate_wiremock_mapping(req, resp, key)))
    seconds = time.perf_counter() - start
    print(json.dumps({"exchanges": len(raw), "bytes": total_bytes, "seconds": seconds, "unique": len(out)}))


if __name__ == "__main__":
    main(sys.argv[1])
