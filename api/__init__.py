"""The REST API's shared parts, an edge layer: what every API answer has in common.

errors (the JSON error body), parsers (bounded JSON bodies), throttles (rates from settings),
handlers (DRF's exception handler and Django's 400/404/500 handlers: JSON, never HTML, on API
paths), schema (OpenAPI entries for errors and list parameters), pagination, ordering.
"""
