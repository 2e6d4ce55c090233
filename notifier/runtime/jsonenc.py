"""A str as a JSON string, byte for byte what ``json.dumps`` writes for it.

Public API only: ``JSONEncoder.encode`` given a str returns the C string
encoder's result directly (no iteration, no buffer); against calling
``json.encoder.encode_basestring*`` (undocumented) that is one more Python call
per string, a few per publish (bench/README.md).
"""

from __future__ import annotations

import json

# ensure_ascii=False: non-Latin text stays compact, as the stored events are.
json_string = json.JSONEncoder(ensure_ascii=False).encode
# ensure_ascii=True: what json.dumps and Flask's jsonify write.
ascii_json_string = json.JSONEncoder().encode
