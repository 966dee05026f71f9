"""
Outbound relay: the durable queue (:mod:`.queue`), MX resolution
(:mod:`.mx`), the SMTP client (:mod:`.client`), delivery status
notifications (:mod:`.bounce`) and the service that runs them
(:mod:`.runner`).  docs/relay.md describes it for operators.
"""
