"""Verifies captured webhook requests with the official libraries.

The integration tests capture what the worker sends and pipe it here, so that
the signatures are checked by the code receivers run (standardwebhooks, Finch's
SDK) rather than by a second copy of our own signing code. Run it through
scripts/webhook-verify, which installs the pinned libraries.

Input (stdin): {"format": "standard"|"finch", "secrets": ["..."],
                "requests": [{"headers": {"name": "value"}, "body": "..."}]}
Output (stdout): {"results": [{"secret": i, "request": j, "ok": bool,
                               "error": "..." or null}]}
Exit: 0 if every (secret, request) pair verified, 1 if any did not,
2 on bad input.

Both libraries reject a timestamp more than 5 minutes from now, so verify
soon after capturing.
"""

import json
import sys

from finch import Finch
from standardwebhooks.webhooks import Webhook


def bad_input(message):
    print(f"webhook-verify: {message}", file=sys.stderr)
    sys.exit(2)


def parse_input():
    try:
        data = json.load(sys.stdin)
    except ValueError as err:
        bad_input(f"stdin is not JSON: {err}")
    if not isinstance(data, dict) or data.get("format") not in ("standard", "finch"):
        bad_input('expected an object with "format": "standard" or "finch"')
    secrets, requests = data.get("secrets"), data.get("requests")
    if not (isinstance(secrets, list) and secrets and all(isinstance(s, str) for s in secrets)):
        bad_input('"secrets" must be a non-empty list of strings')
    if not (isinstance(requests, list) and requests):
        bad_input('"requests" must be a non-empty list')
    parsed = []
    for j, request in enumerate(requests):
        headers = request.get("headers") if isinstance(request, dict) else None
        body = request.get("body") if isinstance(request, dict) else None
        if not (isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())):
            bad_input(f"request {j}: \"headers\" must be an object of strings")
        if not isinstance(body, str):
            bad_input(f"request {j}: \"body\" must be a string (the raw body)")
        # Both libraries already match names case-insensitively, but each keeps
        # only one of two names that differ in case: refuse the ambiguity.
        lowered = {name.lower(): value for name, value in headers.items()}
        if len(lowered) != len(headers):
            bad_input(f"request {j}: a header name appears twice (ignoring case)")
        parsed.append((lowered, body))
    return data["format"], secrets, parsed


def main():
    fmt, secrets, requests = parse_input()
    # The Finch client is only a holder for the webhooks resource: building it
    # makes no request, and verification reads neither the access token nor
    # the base URL (dummies, so nothing from the environment is needed).
    with Finch(access_token="unused", base_url="http://127.0.0.1:9") as finch:
        results = []
        for i, secret in enumerate(secrets):
            for j, (headers, body) in enumerate(requests):
                try:
                    if fmt == "standard":
                        # json_parse=False: the check is the signature alone,
                        # as with Finch's verify_signature below.
                        Webhook(secret).verify(body, headers, json_parse=False)
                    else:
                        # secret= always given, so FINCH_WEBHOOK_SECRET is never read.
                        finch.webhooks.verify_signature(body, headers, secret=secret)
                    error = None
                except Exception as err:  # any failure of either library is a failed pair
                    error = f"{type(err).__name__}: {err}"
                results.append({"secret": i, "request": j, "ok": error is None, "error": error})
    json.dump({"results": results}, sys.stdout)
    sys.stdout.write("\n")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
