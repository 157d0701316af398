"""Verifies one received webhook with the Standard Webhooks reference library.

Usage: verify_webhook.py SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE < body
Prints `verified` and exits 0, or prints why not and exits 1. Exits 3 when the
`standardwebhooks` package is missing (scripts/setup installs it).
"""

import sys

try:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError
except ImportError as e:
    print(f"standardwebhooks is not installed ({e}); run scripts/setup "
          "or `python3 -m pip install standardwebhooks==1.1.0`")
    sys.exit(3)

secret, msg_id, timestamp, signature = sys.argv[1:5]
body = sys.stdin.buffer.read()
headers = {
    "webhook-id": msg_id,
    "webhook-timestamp": timestamp,
    "webhook-signature": signature,
}
try:
    Webhook(secret).verify(body, headers, json_parse=False)
except WebhookVerificationError as e:
    print(f"rejected: {e}")
    sys.exit(1)
print("verified")
