"""Pure batch domain: request lines, tokens, splitting, pricing, the SDK client, result parsing.

No Dagster import anywhere below this package: it is usable from a plain script.
"""
