"""Sends raw (non-JSON) messages with the official Svix Python SDK's `message_in_raw`.

Usage: python raw_compat.py BASE_URL TOKEN RECEIVER_URL

Makes an application and an endpoint at RECEIVER_URL for `py.raw`, sends an XML body and a
plain-text body, each with its content type, and prints the endpoint's secret and the two
message ids; the Rust test that runs it checks that the receiver got both bodies byte for
byte, with their content types and valid signatures.
"""

import sys
from importlib.metadata import version

from svix.api import ApplicationIn, EndpointIn, Svix, SvixOptions

try:  # 2.x
    from svix.api.message import message_in_raw
except ImportError:  # 1.x
    from svix.api import message_in_raw

XML = '<?xml version="1.0"?>\n<reading  unit="C">  21.5 </reading>\n'
TEXT = "motion at  the door\r\nsecond line, not minified\n"

base_url, token, receiver_url = sys.argv[1:4]
sdk = version("svix")
major = int(sdk.split(".")[0])
client = Svix(token, SvixOptions(server_url=base_url))

app = client.application.create(ApplicationIn(name="raw", uid="py-raw"))
if major >= 2:
    endpoint_in = EndpointIn(url=receiver_url, event_types=["py.raw"])
else:
    endpoint_in = EndpointIn(url=receiver_url, version=1, filter_types=["py.raw"])
endpoint = client.endpoint.create(app.id, endpoint_in)
secret = client.endpoint.get_secret(app.id, endpoint.id).key

xml = client.message.create(app.id, message_in_raw("py.raw", XML, "application/xml"))
text = client.message.create(app.id, message_in_raw("py.raw", TEXT, "text/plain; charset=utf-8"))
if client.message.get(app.id, text.id).event_type != "py.raw":
    sys.exit(f"svix {sdk}: the raw message is not listed")
print(f"svix {sdk}: raw {secret} {xml.id} {text.id}")
