"""Svix Ingest through the official Svix Python SDK, end to end (issue 13).

Usage: python ingest_compat.py BASE_URL TOKEN

Creates GitHub, Stripe, Slack and Svix (Standard Webhooks) sources and an endpoint for each with
`svix.ingest` (unchanged SDK), then posts requests to each source's `ingestUrl` signed the way
each provider signs (Python's own `hmac`, and the `standardwebhooks` library), plus bad and
replayed ones. A receiver in this process checks that exactly the good requests arrive, byte
for byte, re-signed by Kait, verifying each with the independent `standardwebhooks` library.
Exits non-zero on the first mismatch.
"""

import base64
import hashlib
import hmac
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook
from svix.api import Svix, SvixOptions
from svix.models import IngestEndpointIn, IngestSourceIn

base_url, token = sys.argv[1:3]
client = Svix(token, SvixOptions(server_url=base_url))
received = []
arrived = threading.Condition()


def check(condition, what):
    if not condition:
        sys.exit(f"ingest: {what}")


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        with arrived:
            received.append((self.path, dict(self.headers), body))
            arrived.notify_all()
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=server.serve_forever, daemon=True).start()
receiver_url = f"http://127.0.0.1:{server.server_port}"


def wire(kind, config):
    source = client.ingest.source.create(IngestSourceIn(name=kind, type=kind, config=config))
    endpoint = client.ingest.endpoint.create(
        source.id, IngestEndpointIn(url=f"{receiver_url}/{kind}", description=kind)
    )
    check(endpoint.id.startswith("ep_"), f"endpoint id {endpoint.id}")
    check(client.ingest.endpoint.get(source.id, endpoint.id).url.endswith(kind), "endpoint get")
    check(
        any(e.id == endpoint.id for e in client.ingest.endpoint.list(source.id).data),
        "endpoint listed",
    )
    secret = client.ingest.endpoint.get_secret(source.id, endpoint.id).key
    return source.ingest_url, secret


def post(url, body, headers):
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def hex_hmac(secret, *parts):
    return hmac.new(secret.encode(), b"".join(parts), hashlib.sha256).hexdigest()


now = int(time.time())
github_secret, stripe_secret = "It's a Secret to Everybody", "whsec_py_stripe"
slack_secret, standard_secret = "py-slack-secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
github_url, github_key = wire("github", {"secret": github_secret})
stripe_url, stripe_key = wire("stripe", {"secret": stripe_secret})
slack_url, slack_key = wire("slack", {"secret": slack_secret})
standard_url, standard_key = wire("svix", {"secret": standard_secret})

good = []
body = b'{"zen": "Design for failure.", "hook_id": 1}'
headers = {
    "Content-Type": "application/json",
    "X-GitHub-Event": "ping",
    "X-GitHub-Delivery": "py-delivery-1",
    "X-Hub-Signature-256": "sha256=" + hex_hmac(github_secret, body),
}
check(post(github_url, body, headers) == 200, "github accepted")
good.append(("/github", body, github_key))
check(post(github_url, body, headers) == 200, "github retry answered")  # de-duplicated
bad = dict(headers, **{"X-Hub-Signature-256": "sha256=" + hex_hmac("wrong", body)})
check(post(github_url, b'{"forged": 1}', bad) == 401, "forged github refused")

body = b'{"id":"evt_py","type":"payment_intent.succeeded"}'
signature = hex_hmac(stripe_secret, str(now).encode(), b".", body)
headers = {"Content-Type": "application/json", "Stripe-Signature": f"t={now},v1={signature}"}
check(post(stripe_url, body, headers) == 200, "stripe accepted")
good.append(("/stripe", body, stripe_key))
old = now - 3600
replayed = b'{"id":"evt_old","type":"charge.refunded"}'
signature = hex_hmac(stripe_secret, str(old).encode(), b".", replayed)
headers = {"Content-Type": "application/json", "Stripe-Signature": f"t={old},v1={signature}"}
check(post(stripe_url, replayed, headers) == 401, "replayed stripe refused")

body = b"token=x&command=%2Fdeploy&text=now"
signature = hex_hmac(slack_secret, b"v0:", str(now).encode(), b":", body)
headers = {
    "Content-Type": "application/x-www-form-urlencoded",
    "X-Slack-Request-Timestamp": str(now),
    "X-Slack-Signature": f"v0={signature}",
}
check(post(slack_url, body, headers) == 200, "slack accepted")
good.append(("/slack", body, slack_key))

body = b'{"type":"invoice.created","data":{"n":1}}'
sent_at = datetime.now(tz=timezone.utc)
signature = Webhook(standard_secret).sign("msg_py_1", sent_at, body.decode())
headers = {
    "Content-Type": "application/json",
    "webhook-id": "msg_py_1",
    "webhook-timestamp": str(int(sent_at.timestamp())),
    "webhook-signature": signature,
}
check(post(standard_url, body, headers) == 200, "standard webhooks accepted")
good.append(("/svix", body, standard_key))
headers["webhook-signature"] = "v1,"
check(post(standard_url, b'{"type":"x"}', headers) == 401, "empty signature refused")

deadline = time.time() + 20
with arrived:
    while len(received) < len(good) and time.time() < deadline:
        arrived.wait(0.1)
for path, body, key in good:
    matches = [r for r in received if r[0] == path and r[2] == body]
    check(len(matches) == 1, f"{path} forwarded once, as sent: {received}")
    _, got_headers, got_body = matches[0]
    lower = {name.lower(): value for name, value in got_headers.items()}
    Webhook(key).verify(got_body, lower, json_parse=False)
# Nothing else arrives: a last good request comes after every refused one.
body = b'{"zen": "last", "hook_id": 2}'
headers = {
    "Content-Type": "application/json",
    "X-GitHub-Event": "ping",
    "X-GitHub-Delivery": "py-delivery-2",
    "X-Hub-Signature-256": "sha256=" + hex_hmac(github_secret, body),
}
check(post(github_url, body, headers) == 200, "last github accepted")
with arrived:
    while len(received) < len(good) + 1 and time.time() < deadline:
        arrived.wait(0.1)
time.sleep(0.5)
check(len(received) == len(good) + 1, f"only good requests are forwarded: {len(received)}")
print(f"ingest {len(good) + 1} forwarded, verified with standardwebhooks; refused ones never")
