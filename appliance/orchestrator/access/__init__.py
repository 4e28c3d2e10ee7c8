"""Access control: the access secret, the pairing cookie, Origin checks and rate limits (docs/access.md).

``gate`` decides; ``secret`` keeps the secret and signs cookies; ``addresses`` says who a client is and
which names are the appliance's own; ``limits`` counts per address; ``trust_page`` serves /trust;
``commands`` is `appliance access`."""
