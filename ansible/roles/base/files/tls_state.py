"""For each certificate name given: the days it has left (-1: none yet) and what it was last issued for
(its .request file), as JSON. Run by the base role with the venv's Python: CA_DIR NAME..."""

import datetime
import json
import sys
from pathlib import Path

from cryptography import x509

directory, now, state = Path(sys.argv[1]), datetime.datetime.now(datetime.UTC), {}
for name in sys.argv[2:]:
    cert, request = directory / f"{name}.crt", directory / f"{name}.request"
    days = -1
    if cert.exists():
        days = (x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc - now).days
    state[name] = {"days": days, "request": request.read_text() if request.exists() else ""}
print(json.dumps(state))
