"""Drives a running Kait server with the official Svix Python SDK, unchanged.

Usage: python svix_compat.py BASE_URL TOKEN RECEIVER_URL

Runs the same push-core scenario against whatever `svix` version the interpreter has: the
current SDK (2.x: `eventTypes`, `throttleRate`, `set_headers`) and the older one (1.x:
`filterTypes`, `rateLimit`, `version`, `update_headers`). Exits non-zero on the first mismatch;
the Rust test that runs it checks what the receiver got.
"""

import sys
import time
from importlib.metadata import version

from svix.api import (
    ApplicationIn,
    EndpointHeadersIn,
    EndpointIn,
    EndpointSecretRotateIn,
    EventTypeIn,
    MessageIn,
    Svix,
    SvixOptions,
)

base_url, token, receiver_url = sys.argv[1:4]
sdk = version("svix")
major = int(sdk.split(".")[0])
client = Svix(token, SvixOptions(server_url=base_url))


def check(condition, what):
    if not condition:
        sys.exit(f"svix {sdk}: {what}")


app = client.application.create(ApplicationIn(name="python", uid=f"py-{major}"))
check(app.id.startswith("app_"), f"app id {app.id}")
check(client.application.get(f"py-{major}").id == app.id, "get by uid")
check(any(a.id == app.id for a in client.application.list().data), "app listed")

client.event_type.create(EventTypeIn(name="py.event", description="from python"))
check(client.event_type.get("py.event").description == "from python", "event type")

if major >= 2:
    endpoint_in = EndpointIn(url=receiver_url, event_types=["py.event"], throttle_rate=50)
else:
    endpoint_in = EndpointIn(url=receiver_url, version=1, filter_types=["py.event"], rate_limit=50)
endpoint = client.endpoint.create(app.id, endpoint_in)
check(endpoint.id.startswith("ep_"), f"endpoint id {endpoint.id}")
filters = endpoint.event_types if major >= 2 else endpoint.filter_types
check(list(filters) == ["py.event"], f"event type filter {filters}")

old_secret = client.endpoint.get_secret(app.id, endpoint.id).key
client.endpoint.rotate_secret(app.id, endpoint.id, EndpointSecretRotateIn())
new_secret = client.endpoint.get_secret(app.id, endpoint.id).key
check(new_secret != old_secret and new_secret.startswith("whsec_"), "secret rotated")

set_headers = getattr(client.endpoint, "set_headers", None) or client.endpoint.update_headers
set_headers(app.id, endpoint.id, EndpointHeadersIn(headers={"X-Python": sdk}))
check(client.endpoint.get_headers(app.id, endpoint.id).headers == {"X-Python": sdk}, "headers")

message = client.message.create(
    app.id, MessageIn(event_type="py.event", payload={"sdk": sdk}, event_id=f"py-{sdk}")
)
check(message.id.startswith("msg_"), f"message id {message.id}")
check(client.message.get(app.id, message.id).event_id == f"py-{sdk}", "message by id")

deadline = time.time() + 10
attempts = client.message_attempt.list_by_msg(app.id, message.id)
while not attempts.data and time.time() < deadline:
    time.sleep(0.05)
    attempts = client.message_attempt.list_by_msg(app.id, message.id)
check(attempts.data and attempts.data[0].response_status_code == 200, "attempt recorded")
by_endpoint = client.message_attempt.list_by_endpoint(app.id, endpoint.id)
check(by_endpoint.data[0].msg_id == message.id, "attempts by endpoint")
destinations = client.message_attempt.list_attempted_destinations(app.id, message.id)
check(destinations.data[0].id == endpoint.id, "attempted destinations")
sent_here = client.message_attempt.list_attempted_messages(app.id, endpoint.id)
check(sent_here.data[0].id == message.id, "attempted messages")
client.message_attempt.resend(app.id, message.id, endpoint.id)

messages = client.message.list(app.id)
check(messages.data[0].id == message.id and messages.done, "message list")

if major >= 2:
    # Svix Ingest (issue 13): incoming sources through `svix.ingest.source`.
    from svix.models import IngestSourceIn

    source = client.ingest.source.create(
        IngestSourceIn(
            name="GitHub",
            uid="py-github",
            type="github",
            config={"secret": "It's a Secret to Everybody"},
        )
    )
    check(source.id.startswith("src_"), f"source id {source.id}")
    check(source.ingest_url.startswith(base_url), f"ingest url {source.ingest_url}")
    check("Secret" not in str(source.config), "the source's secret is not shown")
    check(client.ingest.source.get("py-github").id == source.id, "source by uid")
    check(any(s.id == source.id for s in client.ingest.source.list().data), "source listed")
    rotated = client.ingest.source.rotate_token(source.id)
    check(rotated.ingest_url != source.ingest_url, "token rotated")
    replaced = client.ingest.source.upsert(
        source.id, IngestSourceIn(name="GitHub 2", type="github", config={})
    )
    check(replaced.name == "GitHub 2", "source replaced")
    client.ingest.source.delete(source.id)
print(f"svix {sdk}: ok {message.id} {new_secret}")
