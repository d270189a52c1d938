"""Read an extraction batch (JSON) on stdin; print the body that acknowledges all of it.

    curl -s -X POST ... /v1/extractors/NAME/batches | python3 examples/ack_body.py
"""

import json
import sys

batch = json.load(sys.stdin)
print(json.dumps({"ids": [item["feed_id"] for item in batch["items"]]}))
